"""The ingest pipeline: catalog products -> (decode, encode) -> store, resumable and kill-safe.

Per batch of ``batch_size`` products:

1. check each product: reader errors, rows without an id and later duplicates of an id are
   reported and skipped (the first occurrence of an id wins); a value that does not fit its
   field's type or payload index is reported and left out of the payload;
2. read the image bytes (file content for image files; a missing file is reported) and compute
   the content hash: sha256 over the encoder name and dimension, the text, the image bytes and
   the metadata;
3. ask the store for the stored hashes of the batch's ids; equal ones are counted as
   ``unchanged`` and skipped (unless ``force``);
4. decode the remaining images in threads (PIL releases the GIL) - this runs while the previous
   batch is being encoded; an unreadable image is reported and skipped;
5. encode texts and images, upsert the batch, and store a thumbnail of each image whose
   product has no image URL (:mod:`clipy_qdrant.thumbnails`; unchanged products keep theirs).

All store calls happen on the calling thread. A killed run leaves whole batches stored (each
upsert is one batch, stored with its content hash), so re-running skips them by hash and every
product ends up stored exactly once (point ids derive from product ids). Thumbnails are written
right after their batch's upsert (a qdrant-client store keeps them in the point's payload, which
an upsert replaces); a run killed between the two leaves that batch without thumbnails, which
``--force`` rewrites.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.base import Encoder
from clipy_qdrant.encoders.images import decode_image
from clipy_qdrant.errors import ConfigError, EncoderError, InputError
from clipy_qdrant.hubness import refresh_hubness
from clipy_qdrant.lexical import Bm25Params
from clipy_qdrant.lexical_store import LexicalWriter, refresh_vocabulary
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.split import SPLIT_FIELD, split_of
from clipy_qdrant.store.base import (
    IMAGE,
    LEXICAL_TEXT_KEY,
    TEXT,
    FieldType,
    PointRecord,
    Thumbnail,
    VectorStore,
)
from clipy_qdrant.thumbnails import image_url_of, make_thumbnail
from ingest.field_types import conform_value, infer_indexed_fields
from ingest.records import Product
from ingest.report import (
    BAD_ROW,
    BAD_VALUE,
    DUPLICATE_ID,
    ENCODE_FAILED,
    MISSING_IMAGE,
    NO_ID,
    NO_IMAGE,
    UNREADABLE_IMAGE,
    IngestReport,
    Issue,
)
from ingest.schema import NAME_FIELD_KEY, SAMPLE_ROWS

#: Products looked at to infer which payload fields get an index.
INFER_SAMPLE = SAMPLE_ROWS


def content_hash(encoder_name: str, dim: int, product: Product, image_data: bytes | None) -> str:
    """sha256 over what determines a stored point: encoder, text, image bytes and metadata."""
    digest = hashlib.sha256()
    for part in (
        f"{encoder_name}\x00{dim}".encode(),
        product.text.encode("utf-8"),
        image_data or b"",
        json.dumps(product.metadata, sort_keys=True, default=str, ensure_ascii=False).encode(),
    ):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _batched(items: Iterable[Product], size: int) -> Iterator[list[Product]]:
    batch: list[Product] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _decode(product: Product, data: bytes | None) -> Image.Image:
    """The product's image, upright and RGB, from the bytes already read for its hash."""
    if data is not None:
        where = f" {product.image_path}" if product.image_path is not None else ""
        return decode_image(data, name=f"{product.where()} image{where}")
    return product.load_image()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class _Pending:
    """A batch whose images are being decoded while the previous batch is encoded."""

    products: list[Product]
    hashes: list[str]
    images: list[Future[Image.Image]]


# --------------------------------------------------------------------------- the run


def run_ingest(
    catalog: Iterable[Product],
    store: VectorStore,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    force: bool = False,
    report_path: Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    indexed_fields: Mapping[str, FieldType] | None = None,
    build_index: bool = True,
    decode_threads: int = 2,
    hubness: bool = True,
    thumbnails: bool = True,
    name_field: str | None = None,
    runner: BatchRunner | None = None,
) -> IngestReport:
    """Encode and store every product of ``catalog``; return what happened.

    ``limit`` stops after that many input rows. ``indexed_fields`` are the payload indexes to
    create with the collection (default: inferred from the first products, see
    :func:`infer_indexed_fields`). ``build_index`` builds the HNSW graph at the end when
    anything was written; ``hubness`` first recomputes every product's hubness value
    (:mod:`clipy_qdrant.hubness`) when anything was written or the values are stale (or were
    recorded without the low-hubness threshold). Bad rows
    and unreadable images are skipped and reported, and values that do not fit their field's
    type are reported and left out of the payload; a store written by another encoder raises
    ``EncoderMismatchError`` before anything is written. The JSON report goes to
    ``report_path`` (also when the run is interrupted). ``name_field`` (default: the
    catalog's ``display_field``) is the payload field holding a product's display name; every
    stored product records it under :data:`~ingest.schema.NAME_FIELD_KEY`. ``thumbnails``
    stores each written product's thumbnail with it (so that the store can show its pictures
    without the catalog).

    ``runner`` decodes, encodes and writes the batches (default: in this process, decoding in
    ``decode_threads`` threads while the previous batch is encoded); :mod:`ingest.distributed`
    has one that encodes on a Ray cluster.

    A catalog with no rows raises ``InputError`` before the store is touched; one whose every
    row is skipped raises it after the run (the report is written), and the collection is
    removed again if this run created it.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    info = encoder.info
    report = IngestReport(source=str(getattr(catalog, "source", "")), encoder=info.name)
    started = time.perf_counter()
    total = _total(catalog, limit)

    products: Iterator[Product] = iter(catalog)
    if limit is not None:
        products = itertools.islice(products, limit)
    # Look at the first products to choose the payload indexes, then put them back in front.
    sample = list(itertools.islice(products, INFER_SAMPLE if indexed_fields is None else 1))
    if not sample and limit != 0:
        raise InputError(f"catalog {report.source or 'input'} has no products")
    if indexed_fields is None:
        indexed_fields = infer_indexed_fields(p for p in sample if p.error is None)
    # The held-out split as an indexed field: evaluation filters on it (clipy_qdrant.split).
    indexed_fields = {**indexed_fields, SPLIT_FIELD: "keyword"}
    report.indexed_fields = dict(indexed_fields)
    created = store.encoder_info() is None
    if name_field is None:
        name_field = getattr(catalog, "display_field", None)

    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="product", file=sys.stderr, disable=not progress, dynamic_ncols=True
    )
    # The collection is created (or checked) when the first usable product is ready: rows
    # that are all skipped leave an existing store as it was.
    writer = _BatchWriter(
        store,
        encoder,
        report,
        force=force,
        indexed_fields=indexed_fields,
        name_field=name_field,
        thumbnails=thumbnails,
    )
    try:
        batches = _counted(_batched(itertools.chain(sample, products), batch_size), report)
        if runner is None:
            _run_here(batches, writer, bar, decode_threads)
        else:
            runner(batches, writer, bar)
        report.completed = True
    finally:
        bar.close()
        # Issues are found in two stages (checks, then decoding); list them in input order.
        report.issues.sort(key=lambda i: (i.source, -1 if i.row is None else i.row))
        report.seconds = time.perf_counter() - started
        if report_path is not None:
            report.write(Path(report_path))
    if report.read and not report.stored and not report.unchanged:
        if created:
            # Leave no empty collection behind; one that existed before is never touched.
            store.delete_collection()
        raise InputError(_no_usable_rows(report))
    writer.ensure_collection()
    vocabulary = store.vocabulary() if store.has_lexical() else None
    if store.has_lexical() and (report.stored or vocabulary is None or not vocabulary.documents):
        # The vocabulary's document frequencies must be the engine's: rebuilt from every
        # stored text once the run is over.
        refresh_vocabulary(store)
    hub_info = store.hubness_info()
    # A record without the low-hubness threshold (an older clipy wrote it) is refreshed too.
    hub_stale = hub_info is None or hub_info.low is None
    if hubness and (report.stored or hub_stale) and store.count() > 0:
        hubness_started = time.perf_counter()
        hub = refresh_hubness(store, progress=progress)
        report.hubness_points = hub.points if hub is not None else 0
        report.hubness_seconds = time.perf_counter() - hubness_started
        if report_path is not None:
            report.write(Path(report_path))
    # Built after any write: a product whose payload changes (hubness rewritten on a resume)
    # leaves its indexed segment, which the engine's counters show only after a reload.
    if build_index and (report.stored or report.hubness_points):
        index_started = time.perf_counter()
        store.build_index()
        report.index_built = True
        report.index_seconds = time.perf_counter() - index_started
        if report_path is not None:
            report.write(Path(report_path))
    return report


def _no_usable_rows(report: IngestReport) -> str:
    first = next((i for i in report.issues if i.kind != BAD_VALUE), None)
    reason = f", first: {first.where()}: {first.reason}" if first is not None else ""
    return (
        f"catalog {report.source or 'input'}: no usable rows: "
        f"{report.skipped_total:,} skipped{reason}"
    )


class BatchRunner(Protocol):
    """Turns batches of products into stored points through ``writer``: each batch goes
    through :meth:`_BatchWriter.check`, then its candidates are decoded and encoded and given
    to :meth:`_BatchWriter.store_encoded`; ``bar`` advances by one per product handled."""

    def __call__(
        self, batches: Iterator[list[Product]], writer: _BatchWriter, bar: Any
    ) -> None: ...


def _counted(batches: Iterator[list[Product]], report: IngestReport) -> Iterator[list[Product]]:
    for batch in batches:
        report.read += len(batch)
        yield batch


def _run_here(
    batches: Iterator[list[Product]], writer: _BatchWriter, bar: Any, decode_threads: int
) -> None:
    """The in-process runner: a batch's images decode in threads while the previous batch is
    encoded and written."""
    report = writer.report
    with ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="decode") as pool:
        pending: _Pending | None = None
        for batch in batches:
            next_pending = writer.prepare(batch, pool)
            if pending is not None:
                writer.write(pending)
                bar.update(len(pending.products))
            pending = next_pending
            bar.set_postfix(stored=report.stored, skipped=report.skipped_total, refresh=False)
            bar.update(len(batch) - len(next_pending.products))
        if pending is not None:
            writer.write(pending)
            bar.update(len(pending.products))


def _total(catalog: Iterable[Product], limit: int | None) -> int | None:
    total = getattr(catalog, "total", None)
    if total is None and isinstance(catalog, Sequence):
        total = len(catalog)
    if limit is not None:
        return limit if total is None else min(total, limit)
    return total if isinstance(total, int) else None


class _BatchWriter:
    """Checks, hashes, decodes (in threads), encodes and upserts batches of products."""

    def __init__(
        self,
        store: VectorStore,
        encoder: Encoder,
        report: IngestReport,
        *,
        force: bool,
        indexed_fields: Mapping[str, FieldType],
        name_field: str | None = None,
        thumbnails: bool = True,
    ) -> None:
        self.store = store
        self.thumbnails = thumbnails
        self.encoder = encoder
        self.report = report
        self.force = force
        self.info = encoder.info
        self._marked_stale = False
        self.indexed_fields = indexed_fields
        self.extra_payload = {NAME_FIELD_KEY: name_field} if name_field else {}
        self._collection_ready = False
        self.lexical = LexicalWriter(store)
        #: product id -> where its first occurrence was (later ones are duplicates).
        self.first_seen: dict[str, str] = {}

    def ensure_collection(self) -> None:
        """Create the collection and its payload indexes, or check the encoder that wrote it."""
        if not self._collection_ready:
            self.store.ensure_collection(self.info, self.indexed_fields)
            self._collection_ready = True

    def _skip(self, product: Product, kind: str, reason: str, file: Path | None = None) -> None:
        if file is None and product.image_path is not None:
            file = product.image_path
        self.report.add_issue(
            Issue(
                kind=kind,
                reason=reason,
                source=product.source,
                row=product.row,
                line=product.line,
                product_id=product.product_id,
                file=str(file) if file is not None else None,
            )
        )

    def _conform(self, product: Product) -> None:
        """Make the product's indexed values agree with their index type (``5`` -> ``5.0`` in
        a float field); a value that cannot is moved from the metadata to ``value_errors``."""
        for name, kind in self.indexed_fields.items():
            if name not in product.metadata:
                continue
            value, error = conform_value(product.metadata[name], kind)
            if error is None:
                product.metadata[name] = value
            else:
                del product.metadata[name]
                product.value_errors[name] = f"{error} (the field is indexed as {kind})"

    def _image_data(self, product: Product) -> tuple[bytes | None, bool]:
        """(bytes, ok): the image file's content or the in-record bytes; reports failures."""
        if product.image_bytes is not None:
            return product.image_bytes, True
        if product.image_path is not None:
            try:
                return product.image_path.read_bytes(), True
            except FileNotFoundError:
                self._skip(product, MISSING_IMAGE, f"missing image file {product.image_path}")
            except OSError as exc:
                self._skip(product, UNREADABLE_IMAGE, f"cannot read image file: {_first_line(exc)}")
            return None, False
        if product.image_loader is not None:
            return None, True
        if product.image_url is not None:
            self._skip(product, NO_IMAGE, f"image {product.image_url} was not fetched")
            return None, False
        self._skip(product, NO_IMAGE, "row has no image")
        return None, False

    def prepare(self, batch: list[Product], pool: ThreadPoolExecutor) -> _Pending:
        """Steps 1-4: checks, hashes, the store's hash skip, image decoding submitted to ``pool``."""
        candidates = self.check(batch)
        return _Pending(
            products=[p for p, _, _ in candidates],
            hashes=[h for _, _, h in candidates],
            images=[pool.submit(_decode, p, data) for p, data, _ in candidates],
        )

    def check(self, batch: list[Product]) -> list[tuple[Product, bytes | None, str]]:
        """Steps 1-3: checks, hashes and the store's hash skip; the products left to encode,
        each with its image bytes (``None`` for an in-memory image) and content hash."""
        candidates: list[tuple[Product, bytes | None, str]] = []
        for product in batch:
            if product.error is not None:
                self._skip(product, BAD_ROW, product.error)
                continue
            if not product.product_id:
                self._skip(product, NO_ID, "row has no id")
                continue
            first = self.first_seen.get(product.product_id)
            if first is not None:
                self._skip(
                    product,
                    DUPLICATE_ID,
                    f"duplicate id {product.product_id} (first at {first}; kept that one)",
                )
                continue
            self.first_seen[product.product_id] = product.where()
            self._conform(product)
            for name, reason in product.value_errors.items():
                self.report.add_issue(
                    Issue(
                        kind=BAD_VALUE,
                        reason=f"{reason}; left out of the payload",
                        source=product.source,
                        row=product.row,
                        line=product.line,
                        product_id=product.product_id,
                        field=name,
                    )
                )
            data, ok = self._image_data(product)
            if not ok:
                continue
            candidates.append(
                (product, data, content_hash(self.info.name, self.info.dim, product, data))
            )
        if candidates:
            self.ensure_collection()
        if candidates and not self.force:
            stored = self.store.content_hashes([p.product_id for p, _, _ in candidates])
            fresh = [c for c in candidates if stored.get(c[0].product_id) != c[2]]
            self.report.unchanged += len(candidates) - len(fresh)
            candidates = fresh
        return candidates

    def write(self, pending: _Pending) -> None:
        """Step 5: wait for the decoded images, encode, upsert."""
        products: list[Product] = []
        hashes: list[str] = []
        images: list[Image.Image] = []
        for product, digest, future in zip(
            pending.products, pending.hashes, pending.images, strict=True
        ):
            try:
                image = future.result()
            except InputError as exc:  # names the product and the file itself
                self._skip(product, UNREADABLE_IMAGE, f"unreadable image: {exc}")
                continue
            except Exception as exc:
                self._skip(product, UNREADABLE_IMAGE, f"unreadable image: {_first_line(exc)}")
                continue
            products.append(product)
            hashes.append(digest)
            images.append(image)
        if not products:
            return
        keep, text_vectors, image_vectors = self._encode(products, images)
        self.store_encoded(
            [products[i] for i in keep],
            [hashes[i] for i in keep],
            text_vectors,
            image_vectors,
            lambda j: make_thumbnail(images[keep[j]], hashes[keep[j]]),
        )

    def payload(self, product: Product) -> dict[str, Any]:
        """The stored payload of a product: its metadata, its split, the text the lexical
        channel indexes and the display-name field."""
        return {
            **product.metadata,
            SPLIT_FIELD: split_of(product.product_id),
            LEXICAL_TEXT_KEY: product.text,
            **self.extra_payload,
        }

    def _mark_stale(self) -> None:
        if not self._marked_stale:
            # Hubness values and the vocabulary depend on every stored text: stale from the
            # first write until run_ingest recomputes them, so a run killed after its last
            # write leaves them marked stale and its resume rebuilds them.
            self.store.set_hubness_info(None)
            if self.store.has_lexical():
                self.store.save_vocabulary(Vocabulary())
            self._marked_stale = True

    def begin_writes(self, texts: Sequence[str]) -> Bm25Params | None:
        """Get the store ready for writers other than this one (Ray workers): mark the
        hubness values stale and fix the BM25 constants (those the store records, else
        ``avg_len`` of ``texts``, recorded now). Returns the constants to write lexical
        vectors with; ``None`` for a store without the lexical vector."""
        self.ensure_collection()
        self._mark_stale()
        self.lexical.vectors(texts)
        return self.store.bm25_params() if self.store.has_lexical() else None

    def store_encoded(
        self,
        products: Sequence[Product],
        hashes: Sequence[str],
        text_vectors: np.ndarray,
        image_vectors: np.ndarray,
        thumbnail: Callable[[int], Thumbnail],
    ) -> None:
        """Upsert encoded products (row ``j`` of the vectors is ``products[j]``), then store
        ``thumbnail(j)`` for each one whose metadata has no image URL."""
        sparse = self.lexical.vectors([product.text for product in products])
        points = [
            PointRecord(
                product_id=product.product_id,
                vectors={IMAGE: image_vectors[j], TEXT: text_vectors[j]},
                payload=self.payload(product),
                content_hash=hashes[j],
                lexical=sparse[j],
            )
            for j, product in enumerate(products)
        ]
        if points:
            self._mark_stale()
            self.store.upsert(points)
            self.report.stored += len(points)
            if self.thumbnails:
                self.store.put_thumbnails(
                    {
                        product.product_id: thumbnail(j)
                        for j, product in enumerate(products)
                        if image_url_of(product.metadata) is None
                    }
                )

    def _encode(
        self, products: list[Product], images: list[Image.Image]
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Encode the batch; if that fails, encode one by one to isolate the bad items."""
        texts = [p.text for p in products]
        try:
            return (
                list(range(len(products))),
                self._checked(self.encoder.encode_texts(texts), len(texts)),
                self._checked(self.encoder.encode_images(images), len(images)),
            )
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as batch_exc:
            keep: list[int] = []
            text_rows: list[np.ndarray] = []
            image_rows: list[np.ndarray] = []
            failures: list[tuple[int, BaseException]] = []
            for i, (text, image) in enumerate(zip(texts, images, strict=True)):
                try:
                    text_rows.append(self._checked(self.encoder.encode_texts([text]), 1)[0])
                    image_rows.append(self._checked(self.encoder.encode_images([image]), 1)[0])
                    keep.append(i)
                except Exception as exc:
                    del text_rows[len(keep) :]
                    failures.append((i, exc))
            # Nothing in the batch encodes: the encoder is broken, not the data (a lone
            # product after others were stored is reported as bad instead).
            if not keep and (len(products) > 1 or self.report.stored == 0):
                raise EncoderError(
                    f"encoder {self.info.name} failed on a whole batch "
                    f"(first at {products[0].where()}): {_first_line(batch_exc)}"
                ) from batch_exc
            for i, error in failures:
                self._skip(products[i], ENCODE_FAILED, f"encoder failed: {_first_line(error)}")
            if not keep:
                return (
                    keep,
                    np.zeros((0, self.info.dim), np.float32),
                    np.zeros((0, self.info.dim), np.float32),
                )
            return keep, np.stack(text_rows), np.stack(image_rows)

    def _checked(self, vectors: np.ndarray, n: int) -> np.ndarray:
        array = np.asarray(vectors, dtype=np.float32)
        if array.shape != (n, self.info.dim):
            raise EncoderError(
                f"encoder {self.info.name} returned shape {array.shape}, expected ({n}, {self.info.dim})"
            )
        if not np.isfinite(array).all():
            raise EncoderError(f"encoder {self.info.name} returned non-finite values")
        return array
