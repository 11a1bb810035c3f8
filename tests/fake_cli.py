"""``python tests/fake_cli.py ARGS``: the ``clipy`` command with the fake encoder registered,
for tests that run clipy in a subprocess (kill it, fill its disk, hold its store)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_encoder import register_fake

from ingest.cli import main

if __name__ == "__main__":
    register_fake()
    main()
