"""Ingest on Ray (``ingest.distributed``) in Ray's local mode, against the plain pipeline: the
same store (ids, vectors, payloads, thumbnails, lexical vectors) and the same report, bad rows
reported once, a killed driver resumed by a re-run, and the CLI's ``--ray`` options. The server
tier (``CLIPY_TEST_QDRANT_URL``) runs the CLI into a Qdrant server, where the actors write.

The fake encoder reaches the Ray workers by value (``ray.cloudpickle.register_pickle_by_value``):
the workers cannot import the tests folder.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import fake_encoder
import numpy as np
import pytest
from fake_encoder import FakeEncoder, register_fake
from test_ingest import good_rows, jpeg, write_csv, write_synthetic_parquet
from typer.testing import CliRunner

from clipy_qdrant.errors import ConfigError, EncoderError
from clipy_qdrant.store import open_store
from clipy_qdrant.store.base import VectorStore
from ingest.cli import app
from ingest.distributed import RayOptions, RayRunner, run_ray_ingest
from ingest.pipeline import (
    DUPLICATE_ID,
    ENCODE_FAILED,
    MISSING_IMAGE,
    NO_ID,
    UNREADABLE_IMAGE,
    IngestReport,
    run_ingest,
)
from ingest.readers import open_catalog

try:
    import ray
    import ray.data
except ImportError:  # the optional extra is not installed: only the "no Ray" test runs
    ray = None

needs_ray = pytest.mark.skipif(
    ray is None, reason="Ray is an optional extra: pip install 'clipy-qdrant[ray]'"
)

TESTS = Path(__file__).resolve().parent
#: One actor, one CPU: on a 2-core machine Ray Data's own tasks still get a CPU.
OPTIONS = RayOptions(actors=1, batch_size=8)

if ray is not None:
    # The workers cannot import the tests folder: the encoders travel by value.
    ray.cloudpickle.register_pickle_by_value(fake_encoder)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module; each worker registers the fake encoder (for the CLI,
    whose actors build their encoder with ``get_encoder(spec)``)."""
    assert ray is not None
    ray.init(
        num_cpus=3,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": register_fake},
    )
    yield
    ray.shutdown()


def bad_catalog(root: Path) -> Path:
    """20 good products, then a corrupt JPEG, a row without id, a missing file, a duplicate
    id and a truncated JPEG (the corrupt ones fail to decode on the Ray workers)."""
    rows = good_rows(root, 20)
    images = root / "images"
    rows += [
        {"id": 30, "gender": "Men", "year": 2011, "productDisplayName": "Corrupt jpeg"},
        {"id": "", "gender": "Men", "year": 2011, "productDisplayName": "No id"},
        {"id": 31, "gender": "Women", "year": 2012, "productDisplayName": "Missing image"},
        {"id": 1, "gender": "Women", "year": 2012, "productDisplayName": "Duplicate of one"},
        {"id": 32, "gender": "Men", "year": 2011, "productDisplayName": "Truncated jpeg"},
        {"id": 33, "gender": "Women", "year": 2012, "productDisplayName": "A png, red shirt"},
    ]
    (images / "30.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    whole = jpeg((10, 200, 10), size=(64, 64))
    (images / "32.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "33.jpg").write_bytes(jpeg((200, 0, 200), size=(300, 400), fmt="PNG"))
    return write_csv(root, rows)


def snapshot(store: VectorStore) -> dict[str, tuple[dict, dict, bytes | None]]:
    """id -> (vectors, payload, thumbnail bytes) of every stored product."""
    out = {}
    for point in store.scroll(with_vectors=True):
        thumb = store.thumbnail(point.product_id)
        out[point.product_id] = (
            point.vectors,
            point.payload,
            thumb.data if thumb is not None else None,
        )
    return out


def assert_same_store(a: VectorStore, b: VectorStore, without_thumbnail: int = 0) -> None:
    """Same ids, payloads, thumbnails and vectors (within 1e-6); at most ``without_thumbnail``
    products of ``b`` lack their thumbnail (a run killed between a batch's upsert and its
    thumbnails leaves that batch without them)."""
    left, right = snapshot(a), snapshot(b)
    assert left.keys() == right.keys() and left
    missing = 0
    for pid, (vectors, payload, thumb) in left.items():
        other_vectors, other_payload, other_thumb = right[pid]
        assert payload == other_payload, pid
        assert thumb is not None, pid
        if other_thumb is None:
            missing += 1
        else:
            assert thumb == other_thumb, pid
        assert vectors.keys() == other_vectors.keys()
        for name, vector in vectors.items():
            np.testing.assert_allclose(vector, other_vectors[name], atol=1e-6)
    assert a.content_hashes(list(left)) == b.content_hashes(list(right))
    assert missing <= without_thumbnail


def lexical_of(store: VectorStore) -> dict[str, Any]:
    """id -> (term ids, weights) of every stored lexical vector."""
    return {
        p.product_id: None if p.lexical is None else (list(p.lexical.indices), p.lexical.values)
        for p in store.scroll(with_vectors=True)
    }


def assert_same_lexical(a: VectorStore, b: VectorStore) -> None:
    """Same BM25 constants, lexical vectors (ids exact, weights within 1e-6) and vocabulary."""
    assert a.bm25_params() == b.bm25_params() is not None
    left, right = lexical_of(a), lexical_of(b)
    assert left.keys() == right.keys()
    for pid, terms in left.items():
        assert terms is not None and right[pid] is not None, pid
        assert terms[0] == right[pid][0], pid
        np.testing.assert_allclose(terms[1], right[pid][1], rtol=1e-6)
    vocabulary_a, vocabulary_b = a.vocabulary(), b.vocabulary()
    assert vocabulary_a is not None and vocabulary_b is not None
    assert vocabulary_a.to_json() == vocabulary_b.to_json()


def issues(report: IngestReport) -> list[tuple[int | None, str, str, str | None]]:
    return [(i.line, i.kind, i.product_id, i.file) for i in report.issues]


@needs_ray
def test_ray_ingest_equals_the_plain_ingest_and_reports_bad_rows_once(
    tmp_path: Path, local_ray: None
) -> None:
    styles = bad_catalog(tmp_path)
    factory = functools.partial(FakeEncoder, 32)
    plain_store = open_store(tmp_path / "plain")
    ray_store = open_store(tmp_path / "ray")
    try:
        plain = run_ingest(
            open_catalog(styles), plain_store, FakeEncoder(), batch_size=4, progress=False
        )
        report = run_ray_ingest(
            open_catalog(styles), ray_store, factory, OPTIONS, batch_size=4, progress=False,
            report_path=tmp_path / "report.json",
        )  # fmt: skip
        assert_same_store(plain_store, ray_store)
        assert_same_lexical(plain_store, ray_store)
        assert report.completed and report.read == plain.read == 26
        assert report.stored == plain.stored == 21
        assert report.skipped == plain.skipped == {
            UNREADABLE_IMAGE: 2, NO_ID: 1, MISSING_IMAGE: 1, DUPLICATE_ID: 1,
        }  # fmt: skip
        # Each bad row once, in input order, with its line and file, as the plain run has them.
        assert issues(report) == issues(plain)
        assert [i[0] for i in issues(report)] == [22, 23, 24, 25, 26]
        assert report.hubness_points == plain.hubness_points == 21
        assert report.index_built
        assert '"stored": 21' in (tmp_path / "report.json").read_text()

        # A re-run sends nothing to Ray: every product is stored unchanged.
        again = run_ray_ingest(
            open_catalog(styles), ray_store, factory, OPTIONS, batch_size=4, progress=False
        )
        assert again.stored == 0 and again.unchanged == 21
        assert len(again.issues) == 5
    finally:
        plain_store.close()
        ray_store.close()


class RefusesPurple(FakeEncoder):
    """Fails on images that are mostly purple (the PNG of the bad catalog), or on every image
    when ``everything``."""

    def __init__(self, everything: bool = False) -> None:
        super().__init__(32)
        self.everything = everything

    def encode_images(self, images, batch_size=32):  # type: ignore[no-untyped-def]
        for image in images:
            r, g, b = image.convert("RGB").getpixel((0, 0))
            if self.everything or (r > 150 and b > 150 and g < 50):
                raise ValueError("cannot encode this image")
        return super().encode_images(images, batch_size)


@needs_ray
def test_encoder_failures_on_the_workers_are_reported_or_stop_the_run(
    tmp_path: Path, local_ray: None
) -> None:
    styles = bad_catalog(tmp_path)
    with open_store(tmp_path / "ray") as store:
        report = run_ray_ingest(
            open_catalog(styles), store, RefusesPurple, OPTIONS, batch_size=8, progress=False
        )
        assert report.stored == 20 and report.skipped[ENCODE_FAILED] == 1
        (failed,) = [i for i in report.issues if i.kind == ENCODE_FAILED]
        assert failed.product_id == "33" and "cannot encode this image" in failed.reason
    with open_store(tmp_path / "broken") as store, pytest.raises(EncoderError) as caught:
        run_ray_ingest(
            open_catalog(styles), store,
            functools.partial(RefusesPurple, everything=True), OPTIONS,
            encoder=FakeEncoder(), progress=False,
        )  # fmt: skip
    assert "failed on a whole batch" in str(caught.value)
    assert "\n" not in str(caught.value)
    # The stopped run's result iterator is closed at once, while Ray is up: left to the
    # garbage collector, its clean-up runs after ray.shutdown() and raises in whatever code
    # is running then (a later test's ast.parse fails with SystemError).
    iterators = [
        frame.f_locals["results"]
        for frame, _ in traceback.walk_tb(caught.value.__traceback__)
        if frame.f_code.co_name == "_encode_window"
    ]
    assert len(iterators) == 1
    assert inspect.getgeneratorstate(iterators[0]) == inspect.GEN_CLOSED


@needs_ray
def test_bad_options_are_refused_before_anything_runs() -> None:
    for options, message in (
        (RayOptions(actors=0), "--ray-actors"),
        (RayOptions(batch_size=0), "--ray-batch-size"),
        (RayOptions(gpus_per_actor=-1), "GPUs"),
    ):
        with pytest.raises(ConfigError, match=message):
            RayRunner(FakeEncoder, options)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import fake_encoder, ray.cloudpickle, time
from fake_encoder import FakeEncoder, register_fake
from clipy_qdrant.store.edge import EdgeStore
from ingest.distributed import RayOptions, run_ray_ingest
from ingest.readers import open_catalog

ray.cloudpickle.register_pickle_by_value(fake_encoder)


class SlowEncoder(FakeEncoder):
    def encode_images(self, images, batch_size=32):
        time.sleep(0.05)
        return super().encode_images(images, batch_size)


class AnnouncingStore(EdgeStore):
    def upsert(self, points):
        super().upsert(points)
        print("stored", len(points), flush=True)


run_ray_ingest(open_catalog(sys.argv[1]), AnnouncingStore(sys.argv[2]), SlowEncoder,
               RayOptions(actors=1, batch_size=20), batch_size=100, progress=False,
               build_index=False)
print("done", flush=True)
"""


@needs_ray
def test_a_killed_driver_resumes_and_the_store_equals_the_plain_ingest(tmp_path: Path) -> None:
    n = 600
    source = write_synthetic_parquet(tmp_path / "ds", n)
    store_dir = tmp_path / "store"
    script = tmp_path / "ray_child.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT.format(tests=str(TESTS))))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Its own process group: the kill takes the driver and the local Ray it started.
    child = subprocess.Popen(
        [sys.executable, str(script), str(source), str(store_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert child.stdout is not None
    stored = last = 0
    try:
        for line in child.stdout:
            assert not line.startswith("done"), "the run finished before it could be killed"
            if line.startswith("stored"):
                last = int(line.split()[1])
                stored += last
                if stored >= 100:
                    os.killpg(child.pid, signal.SIGKILL)
                    break
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err

    with open_store(store_dir) as store, closing(open_store(tmp_path / "plain")) as plain_store:
        after_kill = store.count()
        assert stored <= after_kill < n
        report = run_ray_ingest(
            open_catalog(source), store, functools.partial(FakeEncoder, 32), OPTIONS,
            batch_size=100, progress=False,
        )  # fmt: skip
        assert report.unchanged >= stored and report.stored + report.unchanged == n
        run_ingest(open_catalog(source), plain_store, FakeEncoder(), progress=False)
        assert store.count() == n
        # The batch written last before the kill may lack its thumbnails (pipeline docstring).
        assert_same_store(plain_store, store, without_thumbnail=last)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@needs_ray
def test_cli_ingest_on_ray_takes_its_options_and_equals_the_plain_cli(
    tmp_path: Path, local_ray: None
) -> None:
    register_fake()
    styles = bad_catalog(tmp_path)
    code, _, err = cli(
        "ingest", str(styles), "--store", str(tmp_path / "ray"), "--encoder", "fake",
        "--ray", "--ray-actors", "1", "--ray-batch-size", "5", "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 0, err
    assert "on Ray (local, 1 actor, the driver writes)" in err and "stored 21 products" in err
    assert "skipped 5" in err and "Traceback" not in err
    code, _, err = cli(
        "ingest", str(styles), "--store", str(tmp_path / "plain"), "--encoder", "fake",
        "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 0, err
    with (
        closing(open_store(tmp_path / "plain")) as plain,
        closing(open_store(tmp_path / "ray")) as on_ray,
    ):
        assert_same_store(plain, on_ray)


def test_cli_ray_without_ray_installed_is_one_line_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake()
    styles = write_csv(tmp_path, good_rows(tmp_path, 2))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, out, err = cli(
        "ingest", str(styles), "--store", str(tmp_path / "s"), "--encoder", "fake", "--ray"
    )
    assert code == 1 and out == ""
    assert err.strip() == "clipy: error: --ray needs Ray: pip install 'clipy-qdrant[ray]'"
    assert not (tmp_path / "s").exists()


# -- server tier -------------------------------------------------------------------------------


@pytest.mark.server
@needs_ray
def test_cli_ray_ingest_into_a_server_is_written_by_the_actors_and_equals_the_plain_one(
    tmp_path: Path, local_ray: None
) -> None:
    import uuid

    url = os.environ["CLIPY_TEST_QDRANT_URL"]
    names = {mode: f"clipy_test_ray_{mode}_{uuid.uuid4().hex[:8]}" for mode in ("ray", "plain")}
    register_fake()
    styles = bad_catalog(tmp_path)
    common = ("--qdrant-url", url, "--encoder", "fake", "--report", str(tmp_path / "r.json"))
    try:
        code, _, err = cli(
            "ingest", str(styles), *common, "--collection", names["ray"],
            "--ray", "--ray-actors", "1", "--ray-batch-size", "5",
        )  # fmt: skip
        assert code == 0, err
        assert "on Ray (local, 1 actor, the actors write)" in err
        assert "stored 21 products" in err and "skipped 5" in err and "Traceback" not in err
        code, _, err = cli("ingest", str(styles), *common, "--collection", names["plain"])
        assert code == 0, err
        with (
            closing(open_store(url=url, collection=names["plain"])) as plain,
            closing(open_store(url=url, collection=names["ray"])) as on_ray,
        ):
            assert_same_store(plain, on_ray)
            assert_same_lexical(plain, on_ray)
            assert on_ray.hubness_info() == plain.hubness_info() is not None
        # A re-run finds every product stored unchanged.
        code, _, err = cli(
            "ingest", str(styles), *common, "--collection", names["ray"], "--ray",
        )  # fmt: skip
        assert code == 0, err
        assert "stored 0 products, unchanged 21" in err, err
    finally:
        for name in names.values():
            with closing(open_store(url=url, collection=name)) as store:
                store.delete_collection()
