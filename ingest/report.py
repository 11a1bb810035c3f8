"""What an ingest did: the products read, stored, unchanged and skipped, each problem with its
file, row and field (:class:`Issue`), and the time of each stage; written as JSON
(``clipy-ingest-report.json``) and summarised on stderr."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.records import place

#: Skip reasons (keys of ``IngestReport.skipped``).
BAD_ROW = "bad_row"
NO_ID = "no_id"
DUPLICATE_ID = "duplicate_id"
NO_IMAGE = "no_image"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
ENCODE_FAILED = "encode_failed"
#: Issue kind of a value left out of a stored product's payload (it does not fit its field's
#: type); not a skip reason: the product is stored without that value.
BAD_VALUE = "bad_value"

#: Issues shown by :meth:`IngestReport.summary_lines` (the JSON report has them all).
SHOWN_ISSUES = 5


@dataclass
class Issue:
    """One problem with an input row: a product that was not stored (``kind`` a skip reason),
    or a value left out of a stored product's payload (``kind`` :data:`BAD_VALUE`, ``field``
    the field)."""

    kind: str
    reason: str
    source: str = ""
    row: int | None = None
    line: int | None = None
    product_id: str = ""
    file: str | None = None
    field: str | None = None

    def where(self) -> str:
        parts = [place(self.source, self.line, self.row)]
        if self.product_id:
            parts.append(f"(id {self.product_id})")
        if self.field is not None:
            parts.append(f"field {self.field}")
        return " ".join(parts)


@dataclass
class IngestReport:
    """What one ingest run did."""

    source: str = ""
    encoder: str = ""
    read: int = 0
    stored: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    #: Values left out of stored products' payloads because they do not fit their field's type.
    bad_values: int = 0
    issues: list[Issue] = field(default_factory=list)
    seconds: float = 0.0
    indexed_fields: dict[str, str] = field(default_factory=dict)
    index_built: bool = False
    #: Seconds spent building the HNSW graph after the load (not part of ``seconds``).
    index_seconds: float = 0.0
    #: Products whose hubness value was (re)computed after the load, and the seconds it took.
    hubness_points: int = 0
    hubness_seconds: float = 0.0
    completed: bool = False
    report_path: str | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def products_per_s(self) -> float:
        """Products stored per second."""
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        """Input rows handled (stored, unchanged or skipped) per second."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def add_issue(self, issue: Issue) -> None:
        self.issues.append(issue)
        if issue.kind == BAD_VALUE:
            self.bad_values += 1
        else:
            self.skipped[issue.kind] = self.skipped.get(issue.kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "encoder": self.encoder,
            "completed": self.completed,
            "read": self.read,
            "stored": self.stored,
            "unchanged": self.unchanged,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": self.skipped_total,
            "bad_values": self.bad_values,
            "seconds": round(self.seconds, 3),
            "products_per_s": round(self.products_per_s, 2),
            "rows_per_s": round(self.rows_per_s, 2),
            "indexed_fields": self.indexed_fields,
            "index_built": self.index_built,
            "index_seconds": round(self.index_seconds, 3),
            "hubness_points": self.hubness_points,
            "hubness_seconds": round(self.hubness_seconds, 3),
            "issues": [asdict(issue) for issue in self.issues],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def write(self, path: Path) -> None:
        """Write the JSON report to ``path`` (its folder is created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        self.report_path = str(path)

    def summary_lines(self, shown_issues: int = SHOWN_ISSUES) -> list[str]:
        """Human summary for stderr: counts, throughput, the first reasons, the report file."""
        state = "" if self.completed else " (interrupted)"
        lines = [
            f"stored {self.stored:,} products, unchanged {self.unchanged:,}, "
            f"skipped {self.skipped_total:,} in {self.seconds:.1f} s "
            f"({self.products_per_s:.1f} products/s){state}"
        ]
        if self.hubness_points:
            lines.append(
                f"hubness of {self.hubness_points:,} products computed in "
                f"{self.hubness_seconds:.1f} s"
            )
        if self.index_built:
            lines.append(f"HNSW index built in {self.index_seconds:.1f} s")
        if self.skipped:
            by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(self.skipped.items()))
            lines.append(f"skipped: {by_reason}")
        if self.bad_values:
            lines.append(
                f"values left out (they do not fit their field's type): {self.bad_values:,}"
            )
        if self.issues:
            for issue in self.issues[:shown_issues]:
                lines.append(f"  {issue.where()}: {issue.reason}")
            if len(self.issues) > shown_issues:
                more = len(self.issues) - shown_issues
                tail = f" (see {self.report_path})" if self.report_path else ""
                lines.append(f"  … and {more:,} more{tail}")
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return lines


# --------------------------------------------------------------------------- helpers
