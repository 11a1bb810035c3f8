"""``clipy_qdrant.training``: its config, the learning-rate schedule, the ``clipy train``
options generated from the config, and catalog trainings through the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipy_qdrant.errors import ConfigError
from clipy_qdrant.training import TrainConfig
from ingest.cli import app

REFERENCE = Path(__file__).parent / "data" / "train_reference.json"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- schedule


def _learning_rates(total_steps: int, max_lr: float = 0.01) -> list[float]:
    import torch

    from clipy_qdrant.training.contrastive import one_cycle_schedule

    weight = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([weight], lr=max_lr)
    schedule = one_cycle_schedule(optimiser, max_lr, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimiser.param_groups[0]["lr"])
        weight.sum().backward()
        optimiser.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("total_steps", [1, 2, 3, 5, 9, 10, 11, 19, 20])
def test_the_schedule_runs_any_number_of_steps_and_reaches_its_peak(total_steps: int) -> None:
    rates = _learning_rates(total_steps)
    assert len(rates) == total_steps
    assert all(0.0 < rate <= 0.01 * (1 + 1e-9) for rate in rates)
    assert max(rates) == pytest.approx(0.01)
    if total_steps > 2:  # it decays after the peak
        assert rates[-1] < max(rates)


def test_the_schedule_is_torchs_one_cycle_when_the_warm_up_has_room() -> None:
    import torch

    weight = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([weight], lr=0.01)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=0.01, total_steps=40, pct_start=0.1, anneal_strategy="cos"
    )
    want = []
    for _ in range(40):
        want.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        torch_schedule.step()
    assert _learning_rates(40) == want


def test_the_schedule_refuses_zero_steps() -> None:
    with pytest.raises(ConfigError, match="at least 1 step"):
        _learning_rates(0)


# --------------------------------------------------------------------------- config


def test_settings_block_holds_the_model_shaping_fields_only() -> None:
    settings = TrainConfig().settings()
    assert "epochs" not in settings and "seed" not in settings
    assert settings["dim"] == 256 and settings["colour_seeds"] == 3
    assert list(settings)[-3:] == ["backbone", "resolution", "pooling"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 1}, "batch size must be >= 2"),
        ({"validation_fold": 5}, r"validation fold must be 1\.\.4"),
        ({"type_temperature": 0.0}, "temperature must be > 0"),
        ({"colour_seeds": 0}, "colour heads need seeds >= 1"),
        ({"type_seeds": 0}, "type head needs seeds >= 1"),
    ],
)
def test_config_refuses_settings_that_cannot_train(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


# --------------------------------------------------------------------------- clipy train options


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """``clipy train``'s configs, with training replaced by a recorder."""
    import clipy_qdrant.training as training

    configs: list[TrainConfig] = []

    def record(products: object, out: object, config: TrainConfig, **kwargs: object) -> object:
        configs.append(config)
        return training.TrainReport(
            out_dir=str(out), train_products=0, heldout_products=0, epochs=0, seed=0, settings={}
        )

    monkeypatch.setattr(training, "train_fashion_encoder", record)
    return configs


def _tiny_catalog(tmp_path: Path) -> list[str]:
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = ["id,productDisplayName,baseColour"]
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "images" / f"{i}.jpg")
        rows.append(f"{i},Shirt {i},Red")
    (tmp_path / "styles.csv").write_text("\n".join(rows) + "\n")
    return [str(tmp_path / "styles.csv"), "--images", str(tmp_path / "images")]


def test_train_without_options_passes_the_default_config(tmp_path: Path, captured: list) -> None:
    code, _, err = run("train", *_tiny_catalog(tmp_path), "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert captured == [TrainConfig()]


def test_every_config_field_is_a_train_option(tmp_path: Path, captured: list) -> None:
    args = [
        "--epochs=3",
        "--colour-seeds=2",
        "--no-type-head",
        "--text-hidden=64",
        "--validation-fold=1",
        "--appearance-sweep=0.5",
        "--appearance-sweep=3",
        "--lr=0.01",
    ]
    code, _, err = run("train", *_tiny_catalog(tmp_path), "--out", str(tmp_path / "m"), *args)
    assert code == 0, err
    assert captured == [
        TrainConfig(
            epochs=3,
            colour_seeds=2,
            type_head=False,
            text_hidden=64,
            validation_fold=1,
            appearance_sweep=(0.5, 3.0),
            lr=0.01,
        )
    ]
    code, help_text, _ = run("train", "--help")
    words = " ".join(help_text.replace("│", " ").split())
    assert "Advanced" in words
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag[:16] in words, flag  # rich cuts long names in narrow terminals


def test_train_option_bounds_come_from_the_config(tmp_path: Path, captured: list) -> None:
    catalog = _tiny_catalog(tmp_path)
    code, _, err = run("train", *catalog, "--out", "m", "--epochs", "0")
    assert code == 2 and "--epochs" in err
    code, _, err = run("train", *catalog, "--out", "m", "--validation-fold", "7")
    assert code == 1 and err.strip().count("\n") == 0
    assert "validation fold must be 1..4" in err
    assert captured == []


def test_train_needs_an_output_folder(tmp_path: Path, captured: list) -> None:
    code, _, err = run("train", *_tiny_catalog(tmp_path))
    assert code == 2 and "--out is required" in err


# --------------------------------------------------------------------------- catalog trainings


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _catalog() -> Path:
    from clipy_qdrant.config import Settings

    return Settings().catalog


@pytest.mark.slow
@pytest.mark.catalog
def test_default_training_of_the_reference_slice_writes_the_reference_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``clipy train CATALOG --limit 2000`` with every other setting at its default (the
    command in the reference file):

    - from an empty cache and from one holding other texts it writes the same heads, byte for
      byte: a text's cached feature is its own, not its batch's;
    - its word bag is the reference's, byte for byte;
    - what its heads compute (held-out captions scored against pictures) is the reference's
      to 1e-3. CPUs whose kernels compute the tower features to other last bits write other
      bytes: features moved by 1e-5 move these scores by 5e-6 at most, another seed by
      0.07 (0.02 on average).
    """
    from heads_fingerprint import reference_slice, score_fingerprint

    from clipy_qdrant.training.features import cached_text_features

    reference = json.loads(REFERENCE.read_text())
    outputs = []
    for cache in ("empty", "filled by other texts"):
        cache_dir = tmp_path / cache
        monkeypatch.setenv("CLIPY_CACHE_DIR", str(cache_dir))
        if cache != "empty":
            # Words and captions the slice also trains on, in an order no training run uses.
            cached_text_features(
                ["red", "black", "tshirts", "Men Black Casual Shoes", "navy blue", "watches"],
                cache_dir,
                progress=False,
            )
        out = tmp_path / f"model, cache {cache}"
        code, _, err = run("train", str(_catalog()), "--out", str(out), *reference["args"])
        assert code == 0, err
        outputs.append(out)
    first, second = outputs
    assert _sha256(first / "heads.safetensors") == _sha256(second / "heads.safetensors")
    assert _sha256(first / "vocab.txt") == reference["vocab.txt"]
    scores = score_fingerprint(first, reference_slice(_catalog()), tmp_path / "empty")
    moved = max(
        abs(found - recorded)
        for found_row, recorded_row in zip(scores, reference["scores"], strict=True)
        for found, recorded in zip(found_row, recorded_row, strict=True)
    )
    assert moved <= 1e-3, f"the heads' scores moved by {moved:.2e} from the reference's"


def test_a_texts_cached_feature_does_not_depend_on_the_other_texts(tmp_path: Path) -> None:
    from clipy_qdrant.training.features import cached_text_features

    alone = cached_text_features(["Women Red Kurta"], tmp_path / "a", progress=False)
    among = cached_text_features(
        ["a much longer caption that pads any batch it is in to many tokens", "Women Red Kurta"],
        tmp_path / "b",
        progress=False,
    )
    assert alone[0].tobytes() == among[1].tobytes()
    again = cached_text_features(["x", "Women Red Kurta"], tmp_path / "a", progress=False)
    assert again[1].tobytes() == alone[0].tobytes()


@pytest.mark.slow
@pytest.mark.catalog
@pytest.mark.parametrize("epochs", [1, 5])
def test_few_epochs_on_a_small_slice_train(tmp_path: Path, epochs: int) -> None:
    """Two batches an epoch: 5 epochs are 10 steps, where torch's one-cycle schedule alone
    divides by zero."""
    out = tmp_path / "m"
    code, _, err = run(
        "train", str(_catalog()), "--out", str(out), "--limit", "2000", "--epochs", str(epochs),
        "--no-evaluate",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "train_report.json").read_text())
    assert len(report["losses"]) == epochs
    assert (out / "heads.safetensors").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.catalog
def test_a_slice_without_two_training_products_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = run("train", str(_catalog()), "--out", str(tmp_path / "m"), "--limit", "1")
    assert code == 1
    assert err.startswith("clipy: error:") and err.strip().count("\n") == 0
    assert "training needs at least 2" in err
