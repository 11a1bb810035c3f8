"""The README's promises: its test command is the one CI runs, and its library example runs."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    commands = [b.strip() for b in _blocks("bash") if "pytest" in b]
    assert len(commands) == 1, "the README gives exactly one test command"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_quick_start_uses_the_default_offline_encoder() -> None:
    main_job = _blocks("bash")[0].strip()
    assert main_job.startswith("pip install torch==2.13.0 && pip install -e .")
    assert "clipy ingest" in main_job and "clipy search" in main_job
    assert "--encoder" not in main_job  # the shipped fashion-mini is the default


@pytest.mark.slow
def test_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.store import open_store
    from ingest.pipeline import run_ingest
    from ingest.records import Product

    products = []
    for i, (colour, rgb) in enumerate([("Red", (200, 20, 30)), ("Blue", (20, 40, 200))] * 4):
        img = Image.new("RGB", (60, 80), (255, 255, 255))
        img.paste(Image.new("RGB", (40, 60), rgb), (10, 10))
        buf = io.BytesIO()
        img.save(buf, "JPEG")
        gender = "Men" if i % 2 == 0 else "Women"
        products.append(
            Product(
                product_id=str(1000 + i),
                text=f"{gender} {colour} Sneakers",
                metadata={
                    "gender": gender,
                    "baseColour": colour,
                    "productDisplayName": f"{gender} {colour} Sneakers",
                },
                image_bytes=buf.getvalue(),
            )
        )
    monkeypatch.chdir(tmp_path)
    store = open_store("./clipy-data")
    run_ingest(products, store, get_encoder("fashion-mini"), progress=False)
    store.close()

    (example,) = [b for b in _blocks("python") if "Searcher" in b]
    exec(compile(example, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # the 4 men's products, k=5
    assert all(line.split()[0] in {"1000", "1002", "1004", "1006"} for line in lines)
    assert lines[0].split()[0] in {"1000", "1004"}  # a red one first
