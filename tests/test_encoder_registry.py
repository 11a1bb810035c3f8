"""The encoder registry: names, errors, lazy built-ins, and the protocol's explicit members."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder, register_fake

from clipy_qdrant.encoders import Encoder, get_encoder, register_encoder, registered_encoders
from clipy_qdrant.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_names_are_errors_that_list_the_known_ones() -> None:
    register_fake()
    assert {"clip", "fashion-mini", "fake"} <= set(registered_encoders())
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'; known: .*fashion-mini"):
        get_encoder("nope")


def test_registered_factories_get_the_spec_and_take_precedence() -> None:
    seen: list[str] = []

    def factory(spec: str) -> Encoder:
        seen.append(spec)
        return FakeEncoder(8)

    register_encoder("clip-test", factory)
    assert get_encoder("clip-test:arg@abc").info.dim == 8  # not taken for a CLIP id
    assert seen == ["clip-test:arg@abc"]


def test_encoders_state_what_search_and_evaluation_read() -> None:
    fake = FakeEncoder()
    assert isinstance(fake, Encoder)
    assert fake.default_hubness == 0.0 and fake.trained_split is None


def test_importing_the_registry_loads_no_encoder_and_has_no_cycle() -> None:
    code = (
        "import sys, clipy_qdrant.encoders as e\n"
        "assert not any(m.startswith(('clipy_qdrant.encoders.fashion', 'clipy_qdrant.encoders.clip',"
        " 'torch', 'sentence_transformers')) for m in sys.modules), sorted(sys.modules)\n"
        "import clipy_qdrant.encoders.fashion.heads, clipy_qdrant.encoders.fashion.towers\n"
        "import clipy_qdrant.encoders.clip\n"
    )
    for module in ("", "clipy_qdrant.encoders.fashion.model_dir"):
        prelude = f"import {module}\n" if module else ""
        run = subprocess.run(
            [sys.executable, "-c", prelude + (code if not module else "")],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr


@pytest.mark.slow
def test_fashion_mini_states_its_training_split_and_hubness() -> None:
    encoder = get_encoder("fashion-mini")
    assert isinstance(encoder, Encoder)
    assert encoder.default_hubness == 1.0
    assert encoder.trained_split is not None and "% 5 == 0" in encoder.trained_split


@pytest.mark.slow
def test_threads_cap_the_built_in_encoders_runtime_sessions() -> None:
    """``threads`` reaches fashion-mini's ONNX Runtime sessions (one intra-op thread here);
    without it the runtime picks its own count."""
    capped = get_encoder("fashion-mini", threads=1)
    capped.encode_texts(["red shirt"])
    session = capped.text_tower.session()  # type: ignore[attr-defined]
    assert session.get_session_options().intra_op_num_threads == 1
    free = get_encoder("fashion-mini")
    free.encode_texts(["red shirt"])
    assert free.text_tower.session().get_session_options().intra_op_num_threads == 0  # type: ignore[attr-defined]
