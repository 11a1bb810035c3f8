"""The ``clipy`` command: a thin shell over the library and the ingest pipeline.

Each command parses its flags, makes one library call and renders the result. The shared
shell (the Typer ``app``, option types, settings, error handling) is ``ingest.cli.shell``;
each command group is a module that registers on that ``app``:

- ``ingest.cli.ingest``: ``clipy ingest``
- ``ingest.cli.search``: ``clipy search``, ``clipy facets`` and ``clipy info``
- ``ingest.cli.store``: ``clipy copy``
- ``ingest.cli.train``: ``clipy train`` and ``clipy train-query-words``
- ``ingest.cli.eval``: ``clipy eval make-queries | run | ab``
- ``ingest.cli.serve``: ``clipy serve`` (the HTTP API and search page)
- ``ingest.cli.verify``: ``clipy verify``

``main()`` imports only the module of the command it runs (``clipy search`` never imports the
training or evaluation code, which a one-shot query would pay for at every start);
``clipy --help`` and an unknown command import them all. ``from ingest.cli import app`` gives
the app with every command registered.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

__all__ = ["COMMAND_MODULES", "app", "main", "register_commands"]

#: The module that registers each top-level command.
COMMAND_MODULES = {
    "ingest": "ingest.cli.ingest",
    "search": "ingest.cli.search",
    "facets": "ingest.cli.search",
    "info": "ingest.cli.search",
    "serve": "ingest.cli.serve",
    "copy": "ingest.cli.store",
    "verify": "ingest.cli.verify",
    "train": "ingest.cli.train",
    "train-query-words": "ingest.cli.train",
    "eval": "ingest.cli.eval",
}


def register_commands(names: Sequence[str] | None = None) -> typer.Typer:
    """The shared app with the commands ``names`` registered (every command when None or
    when a name is not a command: ``--help`` and typos then see the whole command list)."""
    from ingest.cli.shell import app

    if names is None or any(name not in COMMAND_MODULES for name in names):
        names = list(COMMAND_MODULES)
    for module in dict.fromkeys(COMMAND_MODULES[name] for name in names):
        importlib.import_module(module)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return register_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: registers the command named on the command line, runs it."""
    args = sys.argv[1:]
    register_commands(args[:1] if args else None)()
