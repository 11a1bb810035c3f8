"""``python -m ingest.cli``: the ``clipy`` command."""

from __future__ import annotations

from ingest.cli import main

main()
