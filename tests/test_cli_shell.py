"""The CLI's shared shell: a light import, settings precedence (flag > env > default), and
fusion weights built by the one constructor (``FusionConfig.from_weights``) for the search
flags and the eval's settings alike."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipy_qdrant.errors import ConfigError
from clipy_qdrant.eval.runner import parse_fusion_spec
from clipy_qdrant.fusion import FusionConfig
from ingest.cli import app
from ingest.cli.shell import build_settings, fusion_config

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sentence_transformers", "onnxruntime", "qdrant_client", "qdrant_edge")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_importing_the_cli_loads_no_heavy_library() -> None:
    """``clipy --help`` stays instant: model and Qdrant libraries load only in commands."""
    probe = f"import sys, ingest.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert all(command in result.stdout for command in ("ingest", "search", "info", "eval"))


@pytest.mark.parametrize(
    ("field", "env", "flag", "default"),
    [
        ("store", "/from/env", "/from/flag", Path("./clipy-data")),
        ("qdrant_url", "http://env:6333", "http://flag:6333", None),
        ("encoder", "fake:64", "fake", None),
        ("collection", "env-products", "flag-products", "products"),
    ],
)
def test_settings_flag_beats_env_beats_default(
    monkeypatch: pytest.MonkeyPatch, field: str, env: str, flag: str, default: object
) -> None:
    variable = f"CLIPY_{field.upper()}"
    monkeypatch.delenv(variable, raising=False)
    assert getattr(build_settings(**{field: None}), field) == default
    monkeypatch.setenv(variable, env)
    expected_env = Path(env) if field == "store" else env
    assert getattr(build_settings(**{field: None}), field) == expected_env
    value = Path(flag) if field == "store" else flag
    assert getattr(build_settings(**{field: value}), field) == value


def test_a_setting_of_the_wrong_type_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^bad setting .*: store: ") as raised:
        build_settings(store=["not", "a", "path"])
    assert "\n" not in str(raised.value)


def test_cli_store_flag_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """End to end: ``clipy info`` reports the store that the precedence picks."""
    monkeypatch.delenv("CLIPY_QDRANT_URL", raising=False)
    monkeypatch.setenv("CLIPY_STORE", str(tmp_path / "env-store"))
    code, out, err = run("info", "--json")
    assert code == 0, err
    assert json.loads(out)["store"] == str(tmp_path / "env-store")
    code, out, err = run("info", "--json", "--store", str(tmp_path / "flag-store"))
    assert code == 0, err
    assert json.loads(out)["store"] == str(tmp_path / "flag-store")
    monkeypatch.setenv("CLIPY_QDRANT_URL", ":memory:")
    code, out, err = run("info", "--json", "--store", str(tmp_path / "flag-store"))
    assert code == 0, err
    assert json.loads(out)["store"] == ":memory:"  # a server URL replaces the embedded store


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--w-image", "1.5"], "w_image given alone must be within [0, 1]"),
        (["--w-text", "-1"], "w_text given alone must be within [0, 1]"),
        (["--w-text", "nan"], "w_text given alone must be within [0, 1]"),
        (["--w-text", "-1", "--w-image", "1"], "fusion weights must be >= 0"),
        (["--w-text", "0", "--w-image", "0"], "at least one of w_text and w_image"),
        (["--fusion", "max"], "unknown fusion method 'max'"),
    ],
)
def test_bad_search_weights_are_one_line_usage_errors(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    code, out, err = run("search", "red", "--store", str(tmp_path / "none"), *flags)
    assert code == 2 and out == ""
    assert err.startswith("clipy: error: ") and message in err
    assert err.strip().count("\n") == 0
    assert not (tmp_path / "none").exists()  # refused before any store is opened


WEIGHT_INPUTS: list[tuple[float | None, float | None]] = [
    (None, None),
    (None, 0.8),
    (0.3, None),
    (None, 0.0),
    (1.0, None),
    (1.0, 2.0),
    (None, 1.5),
    (-1.0, None),
    (None, -0.25),
    (0.0, 0.0),
    (-1.0, 0.5),
    (math.inf, 0.5),
]


def _spec(w_text: float | None, w_image: float | None) -> str:
    parts = ["method=rrf"]
    parts += [f"w_text={w_text}"] if w_text is not None else []
    parts += [f"w_image={w_image}"] if w_image is not None else []
    return ",".join(parts)


def _outcome(build: Callable[[], FusionConfig]) -> FusionConfig | str:
    try:
        return build()
    except ConfigError as exc:
        return str(exc).removeprefix("fusion setting ").split(": ", 1)[-1]


@pytest.mark.parametrize(("w_text", "w_image"), WEIGHT_INPUTS)
def test_cli_and_eval_build_weights_alike(w_text: float | None, w_image: float | None) -> None:
    """The search flags and an eval A/B setting give the same config, or the same error."""
    expected = _outcome(lambda: FusionConfig.from_weights("rrf", w_text=w_text, w_image=w_image))
    from_eval = _outcome(lambda: parse_fusion_spec(_spec(w_text, w_image)))
    assert from_eval == expected
    if isinstance(expected, FusionConfig):
        assert fusion_config("rrf", w_text, w_image) == expected
    else:
        args = ["search", "red", "--fusion", "rrf", "--store", "/nonexistent/clipy"]
        args += ["--w-text", str(w_text)] if w_text is not None else []
        args += ["--w-image", str(w_image)] if w_image is not None else []
        code, _, err = run(*args)
        assert code == 2 and err.strip() == f"clipy: error: {expected}"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--methods", "weighted,max"], "unknown fusion method 'max'"),
        (["--step", "0.3"], "weight step must divide 1 evenly"),
    ],
)
def test_bad_eval_grid_is_a_one_line_usage_error(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    code, out, err = run("eval", "run", str(tmp_path / "q.jsonl"), "--store", str(tmp_path), *flags)
    assert code == 2 and out == ""
    assert err.startswith("clipy: error: ") and message in err
    assert err.strip().count("\n") == 0


@pytest.mark.parametrize("url", [None, ":memory:"])
def test_the_search_beam_width_setting_reaches_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str | None
) -> None:
    """``CLIPY_HNSW_EF`` sets the store's search beam on both backends (``clipy info`` shows
    it); unset, the store's default; not a positive integer, a one-line error."""
    from clipy_qdrant.store.qdrant import DEFAULT_HNSW_EF

    flags = ["info", "--json", "--store", str(tmp_path / "store")]
    flags += ["--qdrant-url", url] if url else []
    monkeypatch.delenv("CLIPY_HNSW_EF", raising=False)
    code, out, err = run(*flags)
    assert code == 0, err
    assert json.loads(out)["hnsw_ef"] == DEFAULT_HNSW_EF
    monkeypatch.setenv("CLIPY_HNSW_EF", "48")
    code, out, err = run(*flags)
    assert code == 0, err
    assert json.loads(out)["hnsw_ef"] == 48
    monkeypatch.setenv("CLIPY_HNSW_EF", "0")
    code, out, err = run(*flags)
    assert code != 0
    assert "hnsw_ef" in err and len(err.strip().splitlines()) == 1


def test_open_store_refuses_a_beam_below_one() -> None:
    from clipy_qdrant.store import open_store

    with pytest.raises(ConfigError, match=r"hnsw_ef must be >= 1 \(got 0\)"):
        open_store(url=":memory:", hnsw_ef=0)


def test_open_store_takes_the_beam_width_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Library callers (benchmarks included) get ``CLIPY_HNSW_EF`` too; an argument wins."""
    from clipy_qdrant.store import open_store

    monkeypatch.setenv("CLIPY_HNSW_EF", "256")
    with open_store(url=":memory:") as store:
        assert store.hnsw_ef == 256
    with open_store(url=":memory:", hnsw_ef=32) as store:
        assert store.hnsw_ef == 32
