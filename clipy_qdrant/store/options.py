"""How a collection is laid out: sharding, replication, storage, quantization, HNSW graph.

:class:`CollectionOptions` is the one description, set by flags (``clipy ingest --shards 6
--replicas 2 --quantization int8 --on-disk``), ``CLIPY_*`` variables or library arguments.
It is applied when clipy creates a collection, recorded in the store's
:class:`~clipy_qdrant.store.meta.StoreMeta` and read back from there when a store is opened,
so the query-time part (rescoring with the original vectors, oversampling) follows the
collection. The functions below map it to each engine's arguments; they are pure (options in,
engine arguments out), so the mapping is tested without an engine.

Sharding, replication and the write consistency factor exist only on a Qdrant server; the
embedded store (one folder = one shard) refuses them by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clipy_qdrant.errors import ConfigError, StoreError

Quantization = Literal["none", "int8", "binary"]

#: Qdrant's own HNSW defaults (``m``, ``ef_construct``).
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCT = 100

#: Options that only a Qdrant server has, with the flag that sets each.
SERVER_ONLY: dict[str, str] = {
    "shards": "--shards",
    "replicas": "--replicas",
    "write_consistency": "--write-consistency",
}


class CollectionOptions(BaseModel):
    """Layout of a collection, applied at creation (``None``: the engine's default).

    - ``shards`` / ``replicas`` / ``write_consistency``: server only; Qdrant's
      ``shard_number``, ``replication_factor`` and ``write_consistency_factor``.
    - ``on_disk``: keep the original vectors memory-mapped on disk instead of in RAM.
    - ``hnsw_on_disk``: keep the HNSW graph memory-mapped on disk.
    - ``quantization``: ``int8`` (scalar, 4x smaller) or ``binary`` (1 bit per dimension,
      32x smaller) copies of the vectors, kept in RAM (``always_ram``) and searched first.
    - ``rescore`` / ``oversampling``: at query time fetch ``oversampling × limit`` candidates
      by the quantized vectors and re-rank them with the original ones.
    - ``hnsw_m`` / ``hnsw_ef_construct``: the graph's links per node and build beam width.
    - ``fused_vector``: also store each product's fused vector (:mod:`clipy_qdrant.store.fused`),
      which answers weighted fusion with one query for twice the vectors' memory; never with
      quantization.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shards: int | None = Field(default=None, ge=1)
    replicas: int | None = Field(default=None, ge=1)
    write_consistency: int | None = Field(default=None, ge=1)
    on_disk: bool = False
    hnsw_on_disk: bool = False
    quantization: Quantization = "none"
    always_ram: bool = True
    rescore: bool = True
    oversampling: float = Field(default=2.0, ge=1.0)
    hnsw_m: int = Field(default=DEFAULT_HNSW_M, ge=2)
    hnsw_ef_construct: int = Field(default=DEFAULT_HNSW_EF_CONSTRUCT, ge=4)
    fused_vector: bool = True

    @classmethod
    def build(cls, **values: Any) -> CollectionOptions:
        """Options from keyword values (``None``: not given); a bad value is a ``ConfigError``."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"bad collection option: {problems}") from None

    def server_only(self) -> list[str]:
        """The flags of the server-only options that are set."""
        return [flag for name, flag in SERVER_ONLY.items() if getattr(self, name) is not None]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_json(cls, data: Any, where: str) -> CollectionOptions:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise StoreError(
                f"store {where} has unreadable collection options ({exc.errors()[0]['msg']}); "
                "recreate it with --recreate"
            ) from None

    def stores_fused(self) -> bool:
        """Whether a collection created with these options holds the fused vector: when asked
        for and not quantized (int8 clips the image channel's large values in it, and the
        quantization applies to every vector of the collection; :mod:`clipy_qdrant.store.fused`)."""
        return self.fused_vector and self.quantization == "none"

    def describe(self) -> str:
        """One line for ``clipy info``: only what differs from the engine defaults, plus HNSW."""
        parts = []
        if self.shards is not None:
            parts.append(f"shards {self.shards}")
        if self.replicas is not None:
            parts.append(f"replicas {self.replicas}")
        if self.write_consistency is not None:
            parts.append(f"write consistency {self.write_consistency}")
        parts.append("vectors on disk" if self.on_disk else "vectors in RAM")
        if self.hnsw_on_disk:
            parts.append("HNSW on disk")
        if self.quantization != "none":
            rescore = f"rescore x{self.oversampling:g}" if self.rescore else "no rescoring"
            parts.append(f"{self.quantization} quantization ({rescore})")
        if not self.stores_fused():
            parts.append("no fused vector")
        parts.append(f"HNSW m {self.hnsw_m}, ef_construct {self.hnsw_ef_construct}")
        return ", ".join(parts)


def refuse_server_only(options: CollectionOptions, where: str) -> None:
    """Raise ``StoreError`` naming the first server-only option set, for an embedded store."""
    flags = options.server_only()
    if flags:
        raise StoreError(
            f"{flags[0]} applies to a Qdrant server only; the embedded store {where} is one "
            "shard on one machine (use --qdrant-url, or leave the option out)"
        )


# -- qdrant-client (server, local mode) ------------------------------------------------------


def client_collection_kwargs(
    options: CollectionOptions, dim: int, *, fused: bool = False
) -> dict[str, Any]:
    """Arguments of ``QdrantClient.create_collection`` (beside the name and metadata); with
    ``fused``, the fused vector too (dot product: :mod:`clipy_qdrant.store.fused`)."""
    from qdrant_client import models

    from clipy_qdrant.store.base import VECTOR_NAMES
    from clipy_qdrant.store.fused import FUSED, fused_dim

    hnsw = models.HnswConfigDiff(
        m=options.hnsw_m,
        ef_construct=options.hnsw_ef_construct,
        on_disk=options.hnsw_on_disk or None,
    )
    vector = models.VectorParams(
        size=dim,
        distance=models.Distance.COSINE,
        on_disk=options.on_disk or None,
    )
    vectors: dict[str, Any] = {name: vector for name in VECTOR_NAMES}
    if fused:
        vectors[FUSED] = models.VectorParams(
            size=fused_dim(dim),
            distance=models.Distance.DOT,
            on_disk=options.on_disk or None,
        )
    kwargs: dict[str, Any] = {"vectors_config": vectors, "hnsw_config": hnsw}
    quantization = client_quantization(options)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    for name, key in (
        ("shards", "shard_number"),
        ("replicas", "replication_factor"),
        ("write_consistency", "write_consistency_factor"),
    ):
        value = getattr(options, name)
        if value is not None:
            kwargs[key] = value
    return kwargs


def client_quantization(options: CollectionOptions) -> Any:
    from qdrant_client import models

    if options.quantization == "int8":
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, always_ram=options.always_ram
            )
        )
    if options.quantization == "binary":
        return models.BinaryQuantization(
            binary=models.BinaryQuantizationConfig(always_ram=options.always_ram)
        )
    return None


def client_search_params(options: CollectionOptions, hnsw_ef: int, exact: bool) -> Any:
    """``SearchParams`` for a query: the beam width, and rescoring when quantized."""
    from qdrant_client import models

    quantization = None
    if options.quantization != "none":
        quantization = models.QuantizationSearchParams(
            rescore=options.rescore, oversampling=options.oversampling
        )
    return models.SearchParams(hnsw_ef=hnsw_ef, exact=exact, quantization=quantization)


# -- qdrant-edge (embedded) --------------------------------------------------------------------


def edge_vectors(options: CollectionOptions, dim: int, *, fused: bool = False) -> dict[str, Any]:
    """The named dense vectors of a shard, as ``qdrant_edge.EdgeVectorParams``; with ``fused``,
    the fused vector too (dot product: :mod:`clipy_qdrant.store.fused`)."""
    import qdrant_edge as qe

    from clipy_qdrant.store.base import VECTOR_NAMES
    from clipy_qdrant.store.fused import FUSED, fused_dim

    on_disk = options.on_disk or None
    vector = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, on_disk=on_disk)
    vectors = {name: vector for name in VECTOR_NAMES}
    if fused:
        vectors[FUSED] = qe.EdgeVectorParams(
            size=fused_dim(dim), distance=qe.Distance.Dot, on_disk=on_disk
        )
    return vectors


def edge_config(
    options: CollectionOptions,
    dim: int,
    full_scan_threshold_kb: int,
    *,
    lexical: bool = False,
    fused: bool = False,
    search_threads: int | None = None,
) -> Any:
    """``qdrant_edge.EdgeConfig`` for a new shard (server-only options must be unset); with
    ``lexical``, the sparse BM25 vector too (stored term frequencies, IDF applied by the
    engine); with ``fused``, the fused vector; ``search_threads``: the engine's search pool
    (``None``: its default, one thread per CPU)."""
    import qdrant_edge as qe

    from clipy_qdrant.lexical import LEXICAL

    kwargs: dict[str, Any] = {}
    quantization = edge_quantization(options)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if lexical:
        kwargs["sparse_vectors"] = {LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
    return qe.EdgeConfig(
        vectors=edge_vectors(options, dim, fused=fused),
        max_search_threads=search_threads,
        hnsw_config=qe.HnswIndexConfig(
            m=options.hnsw_m,
            ef_construct=options.hnsw_ef_construct,
            # Below this many KB of (matching) vectors a search scans instead of walking
            # the graph: exact and as fast at that size.
            full_scan_threshold=full_scan_threshold_kb,
            on_disk=options.hnsw_on_disk or None,
        ),
        # Edge has no background optimizer: HNSW is built only by build_index(). A tiny
        # threshold makes that call index every segment, whatever the collection size.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        **kwargs,
    )


def edge_load_config(
    options: CollectionOptions, dim: int, search_threads: int, *, fused: bool = False
) -> Any:
    """``qdrant_edge.EdgeConfig`` that loads an existing shard with ``search_threads`` in its
    search pool. The engine checks it against the shard and writes it into the shard's config:
    the vectors are given as the shard was created with them (given vectors replace the
    recorded ones), the fields left unset keep their recorded values."""
    import qdrant_edge as qe

    return qe.EdgeConfig(
        vectors=edge_vectors(options, dim, fused=fused), max_search_threads=search_threads
    )


def edge_quantization(options: CollectionOptions) -> Any:
    import qdrant_edge as qe

    if options.quantization == "int8":
        return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=options.always_ram)
    if options.quantization == "binary":
        return qe.BinaryQuantizationConfig(always_ram=options.always_ram)
    return None


def edge_search_params(options: CollectionOptions, hnsw_ef: int, exact: bool) -> Any:
    """``qdrant_edge.SearchParams`` for a query: the beam width, and rescoring when quantized."""
    import qdrant_edge as qe

    quantization = None
    if options.quantization != "none":
        quantization = qe.QuantizationSearchParams(
            rescore=options.rescore, oversampling=options.oversampling
        )
    return qe.SearchParams(hnsw_ef=hnsw_ef, exact=exact, quantization=quantization)
