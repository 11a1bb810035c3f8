"""One base exception; a user sees its message as one line, never a traceback."""

from __future__ import annotations


class ClipyError(Exception):
    """Base of every error clipy raises on purpose. The message is shown to users as is."""


class ConfigError(ClipyError):
    """A setting, flag or argument is wrong."""


class FilterError(ClipyError):
    """A filter expression cannot be parsed or applied."""


class EncoderError(ClipyError):
    """An encoder cannot be loaded or cannot encode its input."""


class EncoderMismatchError(ClipyError):
    """The store was written by another encoder (name or dimension) than the one in use."""


class StoreError(ClipyError):
    """The vector store cannot be opened, read or written."""


class InputError(ClipyError):
    """A catalog, query file or image is unreadable or malformed."""


class UnknownProductError(ClipyError):
    """A product id names no stored product."""


class UnknownFieldError(FilterError):
    """A filter or facet names a payload field that the store does not index."""


def is_engine_panic(exc: BaseException) -> bool:
    """A Rust panic inside an engine binding (qdrant-edge), raised as pyo3's
    ``PanicException``: a ``BaseException``, so ``except Exception`` lets it through."""
    return type(exc).__name__ == "PanicException"
