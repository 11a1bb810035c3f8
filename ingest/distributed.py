"""Ingest with the encoder running on Ray (``clipy ingest CATALOG --ray [--ray-address ADDRESS]``).

Ray is an optional extra (``pip install 'clipy-qdrant[ray]'``). The run is
:func:`ingest.pipeline.run_ingest` with :class:`RayRunner` as its batch runner, so the
checks, the report, thumbnails, hubness and the HNSW build are those of the plain ingest:

- the driver reads the catalog and runs :meth:`~ingest.pipeline._BatchWriter.check` on each
  batch: bad rows are reported there, and products already stored with the same content hash
  are skipped before any work is sent;
- the products left (id, text, image bytes) go into a Ray dataset, a window of
  ``window`` products at a time; ``map_batches`` runs :class:`EncodeActor` in a pool of
  ``actors`` actors (each loads the encoder once, per window), which decodes the images,
  encodes texts and images in batches of ``batch_size`` and makes the thumbnails;
- the results are written one of two ways. Into the embedded store (one process holds its
  folder) they stream back to the driver, which upserts them through the same writer as the
  plain pipeline (``store_encoded``). Into a Qdrant server (``worker_store``: how a worker
  opens it) each actor upserts its own batches (vectors, payload, content hash, lexical
  vector, thumbnail) with its own client and sends back only ids, outcomes and issues, so
  the writes scale with the server instead of the driver.

Either way the driver keeps the report, the progress bar and the resumable skip, and before
the first product is sent it marks the hubness values stale and fixes the BM25 constants
from the texts of the first batch to encode, so every writer writes lexical vectors with the
same constants. (The plain pipeline takes those of its first written batch: the same texts
unless one of those products fails to decode or encode.) The vocabulary, hubness and HNSW build run on the driver
at the end, as in the plain ingest.

A window is checked (files read, hashed, looked up in the store) before its encoding starts,
so a window's reading and encoding do not overlap; encoding and the writes do.

A killed run leaves whole result batches stored with their content hashes, so re-running
skips them. Images that do not decode or products the encoder fails on come back as issues
and are reported once, like the plain pipeline's.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.base import Encoder
from clipy_qdrant.errors import ClipyError, ConfigError, EncoderError, StoreError
from clipy_qdrant.lexical import Bm25Params, document_vector
from clipy_qdrant.store.base import (
    IMAGE,
    LEXICAL_TEXT_KEY,
    TEXT,
    PointRecord,
    Thumbnail,
    VectorStore,
)
from clipy_qdrant.thumbnails import image_url_of, make_thumbnail
from ingest.pipeline import (
    ENCODE_FAILED,
    UNREADABLE_IMAGE,
    IngestReport,
    _BatchWriter,
    _decode,
    _first_line,
    run_ingest,
)
from ingest.records import Product

INSTALL_HINT = "pip install 'clipy-qdrant[ray]'"
#: ``--ray`` with no address: start a local Ray instance in this process.
LOCAL = "local"
#: Products per Ray dataset: the actor pool (one encoder load per actor) lives for a window,
#: and a window's image bytes sit in Ray's object store.
DEFAULT_WINDOW = 20_000

EncoderFactory = Callable[[], Encoder]
#: Opens the target store on a Ray worker (pickled to the workers), e.g.
#: ``functools.partial(open_store, url=..., api_key=..., collection=...)``.
StoreFactory = Callable[[], VectorStore]

#: ``fatal_kind`` of a result batch that stops the run.
FATAL_ENCODER = "encoder"
FATAL_STORE = "store"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray: {INSTALL_HINT}") from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the encoding runs."""

    #: ``local`` (start Ray in this process), ``auto`` (the cluster this machine belongs to)
    #: or a cluster address such as ``ray://head:10001``.
    address: str = LOCAL
    actors: int = 1
    batch_size: int = 64
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    window: int = DEFAULT_WINDOW

    def check(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"--ray-actors must be >= 1, got {self.actors}")
        if self.batch_size < 1:
            raise ConfigError(f"--ray-batch-size must be >= 1, got {self.batch_size}")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise ConfigError("CPUs and GPUs per actor must be >= 0")
        if self.window < 1:
            raise ConfigError(f"window must be >= 1, got {self.window}")


@dataclass(frozen=True)
class WorkerTarget:
    """What an actor needs to write its results itself: how to open the store, and the BM25
    constants the driver fixed (``None``: the store has no lexical vector)."""

    open: StoreFactory
    bm25: Bm25Params | None


class WorkerWriter:
    """Writes an actor's encoded products into the store: one upsert per batch (vectors,
    payload, content hash, lexical vector), then the batch's thumbnails, the order the plain
    pipeline writes them in (a kill between the two leaves a batch without thumbnails,
    which ``--force`` rewrites)."""

    def __init__(self, store: VectorStore, bm25: Bm25Params | None) -> None:
        self.store = store
        self.bm25 = bm25

    def write(
        self,
        ids: Sequence[str],
        hashes: Sequence[str],
        payloads: Sequence[dict[str, Any]],
        text_vectors: np.ndarray,
        image_vectors: np.ndarray,
        thumbnails: dict[str, Thumbnail],
    ) -> None:
        """Upsert the products (row ``j`` of the vectors is ``ids[j]``), then store
        ``thumbnails`` (``{product id: thumbnail}``)."""
        points = [
            PointRecord(
                product_id=pid,
                vectors={IMAGE: image_vectors[j], TEXT: text_vectors[j]},
                payload=payloads[j],
                content_hash=hashes[j],
                lexical=(
                    document_vector(str(payloads[j].get(LEXICAL_TEXT_KEY, "")), self.bm25)
                    if self.bm25 is not None
                    else None
                ),
            )
            for j, pid in enumerate(ids)
        ]
        if points:
            self.store.upsert(points)
        if thumbnails:
            self.store.put_thumbnails(thumbnails)


class EncodeActor:
    """Ray Data callable class: loads the encoder once, then decodes, encodes and makes
    thumbnails for each batch of rows (``id``, ``text``, ``image``, ``thumb``). With a
    ``target`` it also opens the store once and writes each batch there itself (the rows
    then carry ``hash`` and the pickled ``payload`` too), returning outcomes without vectors."""

    def __init__(self, factory: EncoderFactory, target: WorkerTarget | None = None) -> None:
        # A failure is sent back with the first batch (as ``fatal``) rather than raised: the
        # driver then stops with the encoder's (or the store's) own one-line message.
        self.failure = ""
        self.failure_kind = FATAL_ENCODER
        self.out: WorkerWriter | None = None
        try:
            self.encoder = factory()
        except Exception as exc:
            self.failure = f"cannot load the encoder on a Ray worker: {_first_line(exc)}"
            return
        if target is not None:
            try:
                self.out = WorkerWriter(target.open(), target.bm25)
            except Exception as exc:
                self.failure_kind = FATAL_STORE
                self.failure = f"cannot open the store on a Ray worker: {_store_message(exc)}"
                return
        self.dim = self.encoder.info.dim
        # The plain pipeline's batch encoding, with its one-by-one retry that isolates the
        # products the encoder fails on; its report collects those failures.
        self.writer = _BatchWriter(
            None,  # type: ignore[arg-type]  # encoding only: the store is never touched
            self.encoder,
            IngestReport(),
            force=True,
            indexed_fields={},
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ids = [str(i) for i in batch["id"]]
        n = len(ids)
        if self.failure:
            return _fatal(ids, self.failure, self.failure_kind)
        kinds = [""] * n
        reasons = [""] * n
        good: list[int] = []
        products: list[Product] = []
        images: list[Image.Image] = []
        for i, (pid, text, data) in enumerate(zip(ids, batch["text"], batch["image"], strict=True)):
            product = Product(product_id=pid, text=str(text))
            try:
                images.append(_decode(product, bytes(data)))
            except Exception as exc:
                kinds[i], reasons[i] = UNREADABLE_IMAGE, f"unreadable image: {_first_line(exc)}"
                continue
            good.append(i)
            products.append(product)
        # Results written here go back as ids and outcomes only: no vectors, no thumbnails.
        width = 1 if self.out is not None else self.dim
        text_out = np.zeros((n, width), np.float32)
        image_out = np.zeros((n, width), np.float32)
        thumbs: list[bytes] = [b""] * n
        ok = np.zeros(n, dtype=bool)
        if products:
            issues_before = len(self.writer.report.issues)
            try:
                keep, text_vectors, image_vectors = self.writer._encode(products, images)
            except ClipyError as exc:
                return _fatal(ids, str(exc), FATAL_ENCODER)
            self.writer.report.stored += len(keep)
            for issue in self.writer.report.issues[issues_before:]:
                i = good[_index_of(products, issue.product_id)]
                kinds[i], reasons[i] = ENCODE_FAILED, issue.reason
            rows = [good[k] for k in keep]
            ok[rows] = True
            if self.out is not None:
                try:
                    self._write(batch, rows, keep, images, text_vectors, image_vectors)
                except Exception as exc:
                    return _fatal(ids, _store_message(exc), FATAL_STORE)
            else:
                for j, (i, k) in enumerate(zip(rows, keep, strict=True)):
                    text_out[i] = text_vectors[j]
                    image_out[i] = image_vectors[j]
                    if batch["thumb"][i]:
                        thumbs[i] = make_thumbnail(images[k]).data
        return {
            "id": np.array(ids, dtype=object),
            "ok": ok,
            "text_vector": text_out,
            "image_vector": image_out,
            "thumbnail": np.array(thumbs, dtype=object),
            "issue_kind": np.array(kinds, dtype=object),
            "issue_reason": np.array(reasons, dtype=object),
            "fatal": np.array([""] * n, dtype=object),
            "fatal_kind": np.array([""] * n, dtype=object),
        }

    def _write(
        self,
        batch: dict[str, np.ndarray],
        rows: list[int],
        keep: list[int],
        images: list[Image.Image],
        text_vectors: np.ndarray,
        image_vectors: np.ndarray,
    ) -> None:
        """Write the encoded rows ``rows`` (``keep``: their index among the decoded images)."""
        assert self.out is not None
        ids = [str(batch["id"][i]) for i in rows]
        hashes = [str(batch["hash"][i]) for i in rows]
        self.out.write(
            ids,
            hashes,
            [pickle.loads(bytes(batch["payload"][i])) for i in rows],
            text_vectors,
            image_vectors,
            {
                pid: make_thumbnail(images[k], digest)
                for pid, digest, i, k in zip(ids, hashes, rows, keep, strict=True)
                if batch["thumb"][i]
            },
        )


def _fatal(ids: list[str], message: str, kind: str) -> dict[str, Any]:
    """A result batch that stops the run with ``message`` (``kind``: whose failure)."""
    n = len(ids)
    empty = np.array([""] * n, dtype=object)
    return {
        "id": np.array(ids, dtype=object),
        "ok": np.zeros(n, dtype=bool),
        "text_vector": np.zeros((n, 1), np.float32),
        "image_vector": np.zeros((n, 1), np.float32),
        "thumbnail": np.array([b""] * n, dtype=object),
        "issue_kind": empty,
        "issue_reason": empty,
        "fatal": np.array([message] * n, dtype=object),
        "fatal_kind": np.array([kind] * n, dtype=object),
    }


def _index_of(products: Sequence[Product], product_id: str) -> int:
    return next(k for k, p in enumerate(products) if p.product_id == product_id)


def _image_bytes(product: Product, data: bytes | None) -> bytes:
    """The bytes an actor decodes: the file or record bytes, or an in-memory image as PNG."""
    if data is not None:
        return data
    buffer = io.BytesIO()
    product.load_image().save(buffer, format="PNG")
    return buffer.getvalue()


def _store_message(exc: BaseException) -> str:
    """A store failure as one line: a ``StoreError`` names the store itself."""
    return str(exc).strip().splitlines()[0] if isinstance(exc, StoreError) else _first_line(exc)


def _ray_message(exc: BaseException) -> str:
    """The first line of a Ray error, without its terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", _first_line(exc))


class RayRunner:
    """A :class:`ingest.pipeline.BatchRunner` that encodes on Ray actors. The results are
    written by the driver, or by the actors themselves when ``worker_store`` (how a worker
    opens the target store) is given."""

    def __init__(
        self,
        factory: EncoderFactory,
        options: RayOptions,
        worker_store: StoreFactory | None = None,
    ) -> None:
        options.check()
        self.factory = factory
        self.options = options
        self.worker_store = worker_store
        self.ray = import_ray()

    def __call__(self, batches: Iterator[list[Product]], writer: _BatchWriter, bar: Any) -> None:
        window: dict[str, tuple[Product, str]] = {}
        rows: list[dict[str, Any]] = []
        target: WorkerTarget | None = None
        begun = False
        for batch in batches:
            candidates = writer.check(batch)
            if candidates and not begun:
                # Before anything is sent: the BM25 constants from the first products to
                # encode (as the plain pipeline's first write fixes them), the hubness stale.
                bm25 = writer.begin_writes([p.text for p, _, _ in candidates])
                if self.worker_store is not None:
                    target = WorkerTarget(self.worker_store, bm25)
                begun = True
            for product, data, digest in candidates:
                try:
                    image = _image_bytes(product, data)
                except Exception as exc:
                    writer._skip(product, UNREADABLE_IMAGE, f"unreadable image: {_first_line(exc)}")
                    bar.update(1)
                    continue
                window[product.product_id] = (product, digest)
                row: dict[str, Any] = {
                    "id": product.product_id,
                    "text": product.text,
                    "image": image,
                    "thumb": writer.thumbnails and image_url_of(product.metadata) is None,
                }
                if target is not None:
                    row["hash"] = digest
                    row["payload"] = pickle.dumps(writer.payload(product))
                rows.append(row)
            bar.update(len(batch) - len(candidates))
            if len(rows) >= self.options.window:
                self._encode_window(rows, window, writer, bar, target)
                rows, window = [], {}
        if rows:
            self._encode_window(rows, window, writer, bar, target)

    def _results(
        self, rows: list[dict[str, Any]], target: WorkerTarget | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """The window's result batches, as the actors finish them (any order)."""
        ray = self.ray
        options = self.options
        # The driver draws its own progress bar on stderr: Ray Data's stay off.
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        dataset = ray.data.from_items(rows, override_num_blocks=_blocks(len(rows), options))
        encoded = dataset.map_batches(
            EncodeActor,
            fn_constructor_args=(self.factory, target),
            batch_size=options.batch_size,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
            batch_format="numpy",
        )
        return iter(encoded.iter_batches(batch_size=None, batch_format="numpy"))

    def _encode_window(
        self,
        rows: list[dict[str, Any]],
        window: dict[str, tuple[Product, str]],
        writer: _BatchWriter,
        bar: Any,
        target: WorkerTarget | None,
    ) -> None:
        results = self._results(rows, target)
        try:
            while True:
                try:
                    out = next(results, None)
                except Exception as exc:
                    raise EncoderError(f"encoding on Ray failed: {_ray_message(exc)}") from exc
                if out is None:
                    break
                if target is None:
                    self._store(out, window, writer)
                else:
                    self._count_written(out, window, writer)
                bar.update(len(out["id"]))
                report = writer.report
                bar.set_postfix(stored=report.stored, skipped=report.skipped_total, refresh=False)
        finally:
            # A run stopped part-way (an encoder failure, Ctrl-C) stops the dataset's
            # execution too, rather than leaving it running in the background.
            close = getattr(results, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _raise_fatal(out: dict[str, np.ndarray]) -> None:
        for message, kind in zip(out["fatal"], out["fatal_kind"], strict=True):
            if message:
                raise (StoreError if kind == FATAL_STORE else EncoderError)(str(message))

    @classmethod
    def _count_written(
        cls,
        out: dict[str, np.ndarray],
        window: dict[str, tuple[Product, str]],
        writer: _BatchWriter,
    ) -> None:
        """Account for a batch the actor wrote itself: stored products, reported issues."""
        cls._raise_fatal(out)
        for i, pid in enumerate(out["id"]):
            product, _ = window[str(pid)]
            if out["ok"][i]:
                writer.report.stored += 1
            else:
                writer._skip(product, str(out["issue_kind"][i]), str(out["issue_reason"][i]))

    @classmethod
    def _store(
        cls,
        out: dict[str, np.ndarray],
        window: dict[str, tuple[Product, str]],
        writer: _BatchWriter,
    ) -> None:
        cls._raise_fatal(out)
        products: list[Product] = []
        hashes: list[str] = []
        thumbs: list[bytes] = []
        rows: list[int] = []
        for i, pid in enumerate(out["id"]):
            product, digest = window[str(pid)]
            if not out["ok"][i]:
                writer._skip(product, str(out["issue_kind"][i]), str(out["issue_reason"][i]))
                continue
            products.append(product)
            hashes.append(digest)
            thumbs.append(bytes(out["thumbnail"][i]))
            rows.append(i)

        def thumbnail(j: int) -> Thumbnail:
            return Thumbnail(thumbs[j], "image/jpeg", hashes[j])

        writer.store_encoded(
            products,
            hashes,
            np.asarray(out["text_vector"][rows], dtype=np.float32),
            np.asarray(out["image_vector"][rows], dtype=np.float32),
            thumbnail,
        )


def _blocks(n: int, options: RayOptions) -> int:
    """Enough blocks that every actor gets work and a block is a few encoding batches."""
    per_block = options.batch_size * 4
    return max(options.actors, min(-(-n // per_block), 200), 1)


def start_ray(options: RayOptions) -> bool:
    """Connect to the cluster (or start a local one); True when this call started Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    # Ray Data warns that its progress bars are off: the driver draws its own.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    if options.address == LOCAL:
        # Logical CPUs for every actor plus one for Ray Data's own tasks: an actor pool that
        # takes every CPU leaves the dataset's input tasks waiting for ever.
        needed = int(np.ceil(options.actors * options.cpus_per_actor)) + 1
        kwargs["address"] = "local"  # a new local instance, whatever RAY_ADDRESS says
        kwargs["num_cpus"] = max(os.cpu_count() or 1, needed)
        if options.gpus_per_actor:
            kwargs["num_gpus"] = int(np.ceil(options.actors * options.gpus_per_actor))
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"cannot connect to Ray at {options.address}: {_first_line(exc)}"
        ) from exc
    return True


def run_ray_ingest(
    catalog: Iterable[Product],
    store: VectorStore,
    factory: EncoderFactory,
    options: RayOptions | None = None,
    *,
    encoder: Encoder | None = None,
    worker_store: StoreFactory | None = None,
    **kwargs: Any,
) -> IngestReport:
    """:func:`ingest.pipeline.run_ingest` with the encoding on Ray: ``factory`` builds the
    encoder in each actor (it is pickled to the workers, so it must be importable there, e.g.
    ``functools.partial(get_encoder, "fashion-mini")``). The driver uses ``encoder`` (default:
    ``factory()``) only for its name and dimension. ``worker_store`` opens ``store``'s
    collection on a worker (a Qdrant server that the workers reach, e.g.
    ``functools.partial(open_store, url=URL, collection=NAME)``): given, the actors write
    their results into it themselves; otherwise the driver writes them. ``kwargs`` go to
    ``run_ingest``. A local Ray started here is shut down at the end."""
    options = options or RayOptions()
    options.check()
    ray = import_ray()
    if encoder is None:
        encoder = factory()
    started = start_ray(options)
    try:
        return run_ingest(
            catalog, store, encoder, runner=RayRunner(factory, options, worker_store), **kwargs
        )
    finally:
        if started:
            ray.shutdown()
