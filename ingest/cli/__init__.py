"""The ``clipy`` command: a thin shell over the library and the ingest pipeline.

Each command parses its flags, makes one library call and renders the result. The shared
shell (the Typer ``app``, option types, settings, error handling) is ``ingest.cli.shell``;
each command group is a module that registers on that ``app``:

- ``ingest.cli.ingest``: ``clipy ingest``
- ``ingest.cli.search``: ``clipy search`` and ``clipy info``
- ``ingest.cli.store``: ``clipy copy``
- ``ingest.cli.train``: ``clipy train``
- ``ingest.cli.eval``: ``clipy eval make-queries | run | ab``
- ``ingest.cli.serve``: ``clipy serve`` (the HTTP API and search page)
- ``ingest.cli.verify``: ``clipy verify``
"""

from __future__ import annotations

# Importing a command module registers its commands on ``app``.
from ingest.cli import eval, ingest, search, serve, store, train, verify  # noqa: F401
from ingest.cli.shell import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
