"""What both platform readers share: cell values (HTML, prices, term lists), the row and
product-draft records, :class:`RowIssue`, :class:`PlatformCatalog` and the product builder."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from clipy_qdrant.errors import ConfigError, InputError
from clipy_qdrant.store.base import FieldType
from ingest.catalog import Catalog
from ingest.fetch import check_url
from ingest.records import Product
from ingest.values import render_template, template_fields

Platform = Literal["shopify", "woocommerce"]

#: The description is cut to about this many characters in the embedded text.
DESCRIPTION_CHARS = 300

_PRICE = re.compile(r"\d+(\.\d+)?|\d{1,3}(,\d{3})+(\.\d+)?")
_SLUG = re.compile(r"[^a-z0-9]+")
_TERM_SPLIT = re.compile(r"(?<!\\),")


def header_key(name: str) -> str:
    """A header name as compared: BOM and extra spaces dropped, case folded."""
    return " ".join(name.replace("\ufeff", "").split()).casefold()


# --------------------------------------------------------------------------- values


class _TextExtractor(HTMLParser):
    # Block-level tags separate words; inline ones (b, span, a…) do not.
    _BREAKS = frozenset(
        "p br div li ul ol tr td th h1 h2 h3 h4 h5 h6 section article table blockquote".split()  # noqa: SIM905
    )
    _HIDDEN = frozenset({"script", "style", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment: tags dropped, entities unescaped, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.parts).split())


def parse_price(cell: str) -> float | None:
    """``"19.99"`` / ``"1,299.00"`` -> float; ``""`` -> None; anything else raises ValueError."""
    text = cell.strip()
    if not text:
        return None
    if not _PRICE.fullmatch(text):
        raise ValueError(f"bad price {cell!r}")
    return float(text.replace(",", ""))


def split_terms(cell: str) -> list[str]:
    """A comma-separated list (``\\,`` is a comma inside a term), stripped, empties dropped,
    duplicates dropped (first kept)."""
    terms = (t.replace("\\,", ",").strip() for t in _TERM_SPLIT.split(cell))
    return list(dict.fromkeys(t for t in terms if t))


def category_path(term: str) -> str:
    """``"Clothing>Tshirts "`` -> ``"Clothing > Tshirts"``."""
    return " > ".join(p.strip() for p in term.split(">") if p.strip())


def slug(name: str) -> str:
    return _SLUG.sub("_", name.casefold()).strip("_")


def cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit].rsplit(" ", 1)[0]
    return head.rstrip(" ,;:.")


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class RowIssue:
    """A row (or one field of it) that could not be used, and why."""

    file: str
    row: int
    line: int
    field: str
    reason: str
    product_id: str = ""

    def message(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


@dataclass
class Row:
    row: int
    line: int
    cells: dict[str, str]

    def get(self, name: str) -> str:
        return self.cells.get(name, "").strip()


@dataclass
class Draft:
    """A product being assembled from its rows."""

    product_id: str
    first: Row
    fields: dict[str, Any] = field(default_factory=dict)
    prices: list[float] = field(default_factory=list)
    compare_at: list[float] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)
    images: list[tuple[int | None, int, str]] = field(
        default_factory=list
    )  # (position, order, url)
    error: RowIssue | None = None

    def add_option(self, name: str, value: str) -> None:
        if name and value:
            values = self.options.setdefault(slug(name), [])
            if value not in values:
                values.append(value)


class PlatformCatalog(Catalog):
    """The products of a platform export, in file order; iterate for :class:`Product` records.

    A :class:`ingest.catalog.Catalog` like the others (``source``, ``total``, ``limit``).
    ``issues`` lists every :class:`RowIssue`; iterating yields them as products with ``error``
    set, after the products. ``total`` counts both, so the pipeline's progress bar is exact.
    """

    def __init__(
        self,
        path: Path,
        platform: Platform,
        products: list[Product],
        issues: list[RowIssue],
        limit: int | None = None,
    ) -> None:
        super().__init__(str(path), limit)
        self.path = path
        self.kind = platform
        self.products = products
        self.issues = issues

    def _count(self) -> int:
        return len(self.products) + len(self.issues)

    def _rows(self) -> Iterator[Product]:
        yield from self.products
        for issue in self.issues:
            yield Product(
                product_id=issue.product_id,
                text="",
                row=issue.row,
                line=issue.line,
                source=issue.file,
                error=issue.message(),
            )

    def indexed_fields(self) -> dict[str, FieldType]:
        """Payload indexes for this export: keyword for string and string-list fields with
        few distinct values, float for prices, bool for flags."""
        kinds: dict[str, FieldType] = {}
        distinct: dict[str, set[str]] = {}
        for product in self.products:
            for key, value in product.metadata.items():
                if key in ("description", "name", "image_url", "image_urls", "skus"):
                    continue
                if isinstance(value, bool):
                    kinds[key] = "bool"
                elif isinstance(value, float):
                    kinds[key] = "float"
                elif isinstance(value, str | list):
                    kinds[key] = "keyword"
                    values = [value] if isinstance(value, str) else value
                    distinct.setdefault(key, set()).update(str(v) for v in values)
        many = max(50, len(self.products) // 2)
        return {k: v for k, v in sorted(kinds.items()) if len(distinct.get(k, ())) <= many}


def read_rows(
    path: Path, columns: Mapping[str, tuple[str, ...]]
) -> tuple[list[Row], dict[str, str]]:
    """Rows as ``{our name: cell}`` (other columns under their lower-cased header), and
    ``{our name: the file's header}`` for messages."""
    wanted = {header_key(alias): name for name, aliases in columns.items() for alias in aliases}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: empty CSV file (no header row)")
            names = [wanted.get(header_key(h), header_key(h)) for h in header]
            headers = {
                name: h.replace("\ufeff", "").strip() for name, h in zip(names, header, strict=True)
            }
            rows: list[Row] = []
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    rows.append(Row(len(rows), start, dict(zip(names, cells, strict=False))))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
    return rows, headers


class RowBuilder:
    """Shared by both platforms: issues, URL checks, prices and the final Product."""

    def __init__(self, path: Path, headers: Mapping[str, str], text_template: str | None) -> None:
        self.path = path
        self.headers = headers
        self.source = str(path)
        self.issues: list[RowIssue] = []
        self.text_template = text_template
        if text_template is not None:
            template_fields(text_template)  # refuses a malformed template now

    def issue(self, row: Row, column: str, reason: str, product_id: str = "") -> RowIssue:
        found = RowIssue(
            self.source, row.row, row.line, self.headers.get(column, column), reason, product_id
        )
        self.issues.append(found)
        return found

    def price(self, draft: Draft, row: Row, name: str, column: str) -> float | None:
        try:
            return parse_price(row.get(name))
        except ValueError as exc:
            self.issue(row, column, str(exc), draft.product_id)
            return None

    def url(self, draft: Draft, row: Row, url: str, column: str) -> str | None:
        problem = check_url(url)
        if problem is None:
            return url
        self.issue(row, column, f"{problem}: {url!r}", draft.product_id)
        return None

    def product(self, draft: Draft, text_fields: Sequence[str]) -> Product:
        # Fields named "_…" feed the text only; the rest is the payload.
        meta = {
            k: v
            for k, v in draft.fields.items()
            if v not in (None, "", []) and not k.startswith("_")
        }
        if draft.prices:
            meta["price_min"], meta["price_max"] = min(draft.prices), max(draft.prices)
        if draft.compare_at:
            meta["compare_at_price_max"] = max(draft.compare_at)
        for name, values in draft.options.items():
            meta[f"option_{name}"] = values
        if draft.skus:
            meta["skus"] = list(dict.fromkeys(draft.skus))
        ordered = sorted(draft.images, key=lambda i: (i[0] is None, i[0] or 0, i[1]))
        urls = list(dict.fromkeys(url for _, _, url in ordered))
        at_one = [url for position, _, url in draft.images if position == 1]
        first = at_one[0] if at_one else (draft.images[0][2] if draft.images else None)
        if first is not None:
            meta["image_url"] = first
            meta["image_urls"] = urls
        return Product(
            product_id=draft.product_id,
            text=self.text({**draft.fields, **meta, "id": draft.product_id}, text_fields),
            metadata=meta,
            row=draft.first.row,
            line=draft.first.line,
            source=self.source,
            image_url=first,
        )

    def check_template(self, products: Sequence[Product]) -> None:
        """Refuse a text template naming a field that no product of the export has."""
        if self.text_template is None or not products:
            return
        known = {"id"}.union(*(p.metadata for p in products))
        unknown = [n for n in template_fields(self.text_template) if n not in known]
        if unknown:
            raise ConfigError(
                f"text template field {unknown[0]!r} is not a field of {self.source}; "
                f"fields: {', '.join(sorted(known))}"
            )

    def text(self, meta: Mapping[str, Any], text_fields: Sequence[str]) -> str:
        if self.text_template is not None:
            context = {
                k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in meta.items()
            }
            return render_template(self.text_template, context)
        attributes: list[str] = []
        for name in text_fields:
            value = meta.get(name)
            for item in value if isinstance(value, list) else [value]:
                if item and str(item) not in attributes:
                    attributes.append(str(item))
        text = str(meta.get("name", ""))
        if attributes:
            text += ", " + " ".join(attributes)
        description = cut_text(str(meta.get("description", "")), DESCRIPTION_CHARS)
        if description:
            text += ". " + description
        return text
