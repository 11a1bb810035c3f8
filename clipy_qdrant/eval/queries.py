"""Evaluation queries: the model and its JSONL files (read and write).

One query per JSONL line (a file people can read and edit)::

    {"id": "ki-0001", "set": "known-item", "text": "Kipsta Men Jersey Red",
     "relevant": ["15970"], "gallery": "all"}
    {"id": "img-at-15970", "set": "image/articleType", "image": "product:15970",
     "exclude": ["15970"], "relevant": {"articleType": ["Jerseys"]}}

Keys:

- ``id`` (required, unique in a run) and ``set`` (the query set it is reported under;
  default ``"custom"``).
- ``text`` and/or ``image`` (at least one). ``image`` is a file path (relative paths are
  relative to the JSONL file's folder) or ``product:<id>``, a catalog product whose
  *stored* image vector is used as the query (the catalog images are not in the store).
- ``filters`` (optional): ``{"gender": ["Men"], "year": {"gte": 2015}}`` or a list of
  ``"field=value"`` strings (the ``--filter`` syntax); applied to the search, and relevant
  products must satisfy them too.
- ``relevant`` (required): a list of product ids, or a metadata rule
  ``{"articleType": ["Jeans"], "baseColour": ["Blue", "Navy Blue"]}`` (a product is
  relevant when every field has one of the listed values).
- ``exclude`` (optional): product ids never returned nor counted (e.g. the query product).
- ``gallery`` (optional): ``"all"`` (every product) or ``"heldout"`` (only held-out
  products are searched and can be relevant); absent means the run's default split.

The generators that write such queries from the catalog payloads live in
:mod:`~clipy_qdrant.eval.catalog_queries` (and the shopper and photo sets beside it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clipy_qdrant.errors import ClipyError, InputError
from clipy_qdrant.filters import Filter, filter_from_mapping, parse_filter

Gallery = Literal["all", "heldout"]
GALLERIES: tuple[str, ...] = ("all", "heldout")
PRODUCT_REF = "product:"

_KEYS = {"id", "set", "text", "image", "filters", "relevant", "exclude", "gallery"}


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query and what counts as a correct answer to it."""

    id: str
    set: str = "custom"
    text: str | None = None
    image: str | None = None  # a file path or "product:<id>"
    filters: Mapping[str, Any] | tuple[str, ...] | None = None
    relevant_ids: tuple[str, ...] | None = None
    relevant_rule: Mapping[str, Any] | None = None
    exclude: tuple[str, ...] = ()
    gallery: Gallery | None = None

    def __post_init__(self) -> None:
        if not self.text and not self.image:
            raise InputError(f"query {self.id!r} has neither text nor image")
        if (self.relevant_ids is None) == (self.relevant_rule is None):
            raise InputError(f"query {self.id!r} needs relevance: a list of ids or a rule")
        if self.gallery is not None and self.gallery not in GALLERIES:
            raise InputError(f"query {self.id!r}: gallery must be 'all' or 'heldout'")
        self.filter()  # fail early on a malformed filter
        self.relevance_filter()

    @property
    def image_product(self) -> str | None:
        """The product id of a ``product:<id>`` image reference, else ``None``."""
        if self.image and self.image.startswith(PRODUCT_REF):
            return self.image[len(PRODUCT_REF) :]
        return None

    def filter(self) -> Filter | None:
        """The search filter of this query."""
        try:
            if self.filters is None:
                return None
            if isinstance(self.filters, Mapping):
                return filter_from_mapping(self.filters)
            return parse_filter(self.filters)
        except (ClipyError, TypeError, ValueError) as exc:
            raise InputError(f"query {self.id!r}: bad filters: {exc}") from None

    def relevance_filter(self) -> Filter | None:
        """The metadata rule as a filter (``None`` for id relevance)."""
        if self.relevant_rule is None:
            return None
        try:
            return filter_from_mapping(self.relevant_rule)
        except (ClipyError, TypeError, ValueError) as exc:
            raise InputError(f"query {self.id!r}: bad relevance rule: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSONL form (keys with default values left out)."""
        out: dict[str, Any] = {"id": self.id, "set": self.set}
        if self.text is not None:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = self.image
        if self.filters is not None:
            out["filters"] = (
                dict(self.filters) if isinstance(self.filters, Mapping) else list(self.filters)
            )
        if self.exclude:
            out["exclude"] = list(self.exclude)
        out["relevant"] = (
            list(self.relevant_ids)
            if self.relevant_ids is not None
            else dict(self.relevant_rule or {})
        )
        if self.gallery is not None:
            out["gallery"] = self.gallery
        return out


def query_from_json(obj: Any, *, base_dir: Path | None = None) -> EvalQuery:
    """Build a query from its JSON object; raises :class:`InputError` (without location)."""
    if not isinstance(obj, dict):
        raise InputError("a query must be a JSON object")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}"
        )
    qid = obj.get("id")
    if not isinstance(qid, str | int) or isinstance(qid, bool) or str(qid) == "":
        raise InputError("'id' must be a non-empty string")
    text, image = obj.get("text"), obj.get("image")
    for key, value in (("text", text), ("image", image), ("set", obj.get("set", "custom"))):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{key!r} must be a string")
    if image and not image.startswith(PRODUCT_REF) and base_dir is not None:
        image = str((base_dir / image) if not Path(image).is_absolute() else Path(image))
    filters = obj.get("filters")
    if filters is not None and not isinstance(filters, dict):
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise InputError("'filters' must be an object or a list of 'field=value' strings")
        filters = tuple(filters)
    relevant = obj.get("relevant")
    relevant_ids: tuple[str, ...] | None = None
    relevant_rule: dict[str, Any] | None = None
    if isinstance(relevant, list):
        relevant_ids = tuple(str(r) for r in relevant)
    elif isinstance(relevant, dict):
        relevant_rule = relevant
    else:
        raise InputError("'relevant' must be a list of product ids or a metadata rule object")
    exclude = obj.get("exclude", [])
    if not isinstance(exclude, list):
        raise InputError("'exclude' must be a list of product ids")
    return EvalQuery(
        id=str(qid),
        set=str(obj.get("set", "custom")),
        text=text,
        image=image,
        filters=filters,
        relevant_ids=relevant_ids,
        relevant_rule=relevant_rule,
        exclude=tuple(str(e) for e in exclude),
        gallery=obj.get("gallery"),
    )


def read_queries(path: str | Path) -> list[EvalQuery]:
    """Read a JSONL query file (blank lines and ``#`` comment lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such query file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read query file: {exc}") from None
    queries: list[EvalQuery] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        try:
            query = query_from_json(obj, base_dir=path.parent)
        except InputError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        if query.id in seen:
            raise InputError(
                f"{path}:{lineno}: query id {query.id!r} repeats line {seen[query.id]}"
            )
        seen[query.id] = lineno
        queries.append(query)
    return queries


def read_query_files(paths: Iterable[str | Path]) -> list[EvalQuery]:
    """Read several query files; query ids must be unique across all of them."""
    out: list[EvalQuery] = []
    where: dict[str, Path] = {}
    for path in paths:
        for query in read_queries(path):
            if query.id in where:
                raise InputError(f"{path}: query id {query.id!r} also appears in {where[query.id]}")
            where[query.id] = Path(path)
            out.append(query)
    return out


def write_queries(queries: Iterable[EvalQuery], path: str | Path) -> Path:
    """Write queries as JSONL, one per line; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for query in queries:
            fh.write(json.dumps(query.to_json(), ensure_ascii=False) + "\n")
    return path


def write_query_sets(sets: Mapping[str, Sequence[EvalQuery]], out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<name>.jsonl`` for each set; returns the paths."""
    out_dir = Path(out_dir)
    return [write_queries(queries, out_dir / f"{name}.jsonl") for name, queries in sets.items()]


__all__ = [
    "GALLERIES",
    "PRODUCT_REF",
    "EvalQuery",
    "Gallery",
    "query_from_json",
    "read_queries",
    "read_query_files",
    "write_queries",
    "write_query_sets",
]
