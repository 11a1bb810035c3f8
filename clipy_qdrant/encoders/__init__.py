"""Encoders behind one interface (:mod:`clipy_qdrant.encoders.base`) and the registry of
encoders by name.

A spec is ``name`` or ``name:argument``: ``fashion-mini`` (shipped), ``fashion-mini:<folder>``,
``clip``, ``clip:<hub id or folder>``, ``clip-ViT-B-32`` (any name starting with ``clip-`` is a
CLIP id), or a name given to :func:`register_encoder`. The built-in encoders are imported only
when one is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clipy_qdrant.encoders.base import Encoder, EncoderInfo, l2_normalize
from clipy_qdrant.errors import ConfigError

EncoderFactory = Callable[[str], Encoder]

#: Encoders registered at run time: name -> factory(spec).
_REGISTRY: dict[str, EncoderFactory] = {}


def _fashion_mini(spec: str, cache_dir: Path, threads: int | None, query_words: bool) -> Encoder:
    from clipy_qdrant.encoders.fashion import load_fashion_encoder

    return load_fashion_encoder(
        spec.partition(":")[2] or None,
        cache_dir=cache_dir,
        threads=threads,
        query_words=query_words,
    )


def _clip(spec: str, cache_dir: Path, threads: int | None, query_words: bool) -> Encoder:
    from clipy_qdrant.encoders.clip import DEFAULT_CLIP_MODEL, ClipEncoder

    if threads:
        import torch

        torch.set_num_threads(threads)  # torch's pool is the process's: CLIP runs on it
    return ClipEncoder(spec.partition(":")[2] or DEFAULT_CLIP_MODEL)


#: Built-in encoders: name -> factory(spec, cache folder, intra-op threads or None, query
#: words on; CLIP has no query words table and encodes queries as product texts).
_BUILTINS: dict[str, Callable[[str, Path, int | None, bool], Encoder]] = {
    "fashion-mini": _fashion_mini,
    "clip": _clip,
}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Make ``get_encoder(name)`` / ``get_encoder(f"{name}:arg")`` build an encoder with
    ``factory(spec)``; a registered name takes precedence over a built-in one."""
    _REGISTRY[name] = factory


def registered_factories() -> dict[str, EncoderFactory]:
    """The encoders :func:`register_encoder` added, by name: what another process (a server's
    worker) registers to know the same names."""
    return dict(_REGISTRY)


def registered_encoders() -> list[str]:
    """Every name :func:`get_encoder` knows, built-in and registered."""
    return sorted(set(_BUILTINS) | set(_REGISTRY))


def get_encoder(
    spec: str,
    *,
    cache_dir: Path | None = None,
    threads: int | None = None,
    query_words: bool = False,
) -> Encoder:
    """The encoder ``spec`` names (see the module docstring), or a ConfigError listing the
    known names. ``cache_dir`` is where built-in encoders cache derived files (default:
    :func:`clipy_qdrant.config.default_cache_dir`); ``threads`` caps a built-in encoder's
    intra-op threads (``None``: its runtime's default); ``query_words`` has fashion-mini
    encode query texts with its query words table
    (:mod:`clipy_qdrant.encoders.fashion.query_words`). A registered factory gets the spec
    only.

    ``name@fingerprint`` (an encoder name as a store records it) loads the named encoder; the
    store's encoder check then compares the fingerprints.
    """
    name = spec.partition(":")[0].partition("@")[0]
    if name in _REGISTRY:
        return _REGISTRY[name](spec)
    if name not in _BUILTINS and spec.startswith("clip-"):
        name, spec = "clip", f"clip:{spec}"
    if name not in _BUILTINS:
        raise ConfigError(
            f"unknown encoder {spec!r}; known: {', '.join(registered_encoders())} "
            "(or clip:<model id or path>)"
        )
    if cache_dir is None:
        from clipy_qdrant.config import default_cache_dir

        cache_dir = default_cache_dir()
    return _BUILTINS[name](spec, cache_dir, threads, query_words)


__all__ = [
    "Encoder",
    "EncoderFactory",
    "EncoderInfo",
    "get_encoder",
    "l2_normalize",
    "register_encoder",
    "registered_encoders",
]
