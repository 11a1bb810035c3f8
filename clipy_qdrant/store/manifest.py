"""The shard manifest: sizes and checksums of the engine's files, written when a store closes
cleanly and checked before the engine opens them again.

qdrant-edge reads some of its segment files without checking them: a damaged immutable id
tracker can make it allocate the length it reads and abort the process, a damaged deletion
list silently hides products, a damaged payload index can panic. So that such a file gives
one clear error instead, :class:`~clipy_qdrant.store.edge.EdgeStore` keeps
``<store>/shard-manifest.json``:

- written (atomically) after the engine has flushed and closed the shard, when the session
  wrote anything or the store had no manifest;
- removed before the first write of a session, so a store killed while writing has no
  manifest, and the next open checks nothing and resumes (no false alarm); its next clean
  close writes a fresh one;
- checked before the engine loads the shard: every listed file must exist with its size
  (any truncation or extension), and the files in :func:`checksummed` must have their CRC-32;
  unless the WAL has changed since (a write by a process that does not keep the manifest):
  then the manifest no longer applies, nothing is checked and the next close writes one.

JSON files (the engine parses them, and rewrites ``segment.json`` with another key order on
every load), journals (applied and removed when the engine loads) and the WAL (the engine
recovers from a damaged WAL) are left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "shard-manifest.json"
_VERSION = 1
_CHUNK = 1 << 20

#: File names (in a payload index folder) whose CRC-32 is kept, besides the id tracker's
#: and the vector indexes' files: the index maps the engine trusts when it loads them.
_PAYLOAD_INDEX_FILES = frozenset(
    {
        "point_to_values.bin",
        "values_to_points.bin",
        "data.bin",
        "data_block_index.bin",
        "histogram_borders.bin",
        "deleted.bin",
    }
)


def checksummed(relative: Path) -> bool:
    """Whether the file at ``relative`` (to the shard folder) has its CRC-32 recorded: the id
    tracker, the vector indexes (HNSW graph and links, the sparse inverted index) and the
    payload index maps. The rest (vector matrices, payload pages, flag bitmaps: 200+ MB in
    a full catalog's store) has only its size recorded; ``clipy verify`` reads the vectors
    and payloads themselves."""
    parts = relative.parts
    name = relative.name
    if "id_tracker." in name:  # immutable and mutable segments' trackers
        return True
    if any(part.startswith("vector_index-") for part in parts):
        return True
    return "payload_index" in parts and name in _PAYLOAD_INDEX_FILES


def _transient(name: str) -> bool:
    """JSON (parsed by the engine, ``segment.json`` rewritten on every load), journals (the
    engine applies and removes them when it loads) and hidden temporary files."""
    return name.endswith(".json") or "journal" in name or name.startswith(".")


def _engine_files(shard: Path) -> list[Path]:
    segments = shard / "segments"
    if not segments.is_dir():
        return []
    return sorted(p for p in segments.rglob("*") if p.is_file() and not _transient(p.name))


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _wal_state(shard: Path) -> dict[str, list[int]]:
    """Name, size and modification time of each WAL file: every write to the shard goes
    through the WAL first, and sessions that only read leave it untouched."""
    wal = shard / "wal"
    if not wal.is_dir():
        return {}
    out: dict[str, list[int]] = {}
    for path in sorted(wal.iterdir()):
        info = path.stat()
        out[path.name] = [info.st_size, info.st_mtime_ns]
    return out


def write_manifest(store: Path, shard: Path) -> None:
    """Record the closed shard's files; a failure to write only means no check next time."""
    with contextlib.suppress(OSError):
        files: dict[str, list[int]] = {}
        for path in _engine_files(shard):
            relative = path.relative_to(shard)
            entry = [path.stat().st_size]
            if checksummed(relative):
                entry.append(_crc32(path))
            files[relative.as_posix()] = entry
        data = {"version": _VERSION, "wal": _wal_state(shard), "files": files}
        fd, tmp = tempfile.mkstemp(prefix=".clipy-", suffix=".json", dir=store)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, store / MANIFEST_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def remove_manifest(store: Path) -> None:
    """Mark the shard as being written: the next open checks nothing until a clean close."""
    (store / MANIFEST_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class Damage:
    """A file that differs from the manifest: its path and what differs."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Check:
    """``current``: the manifest describes the shard's last write (there is one, readable, and
    the WAL is as it recorded; otherwise nothing is checked and the next close writes one).
    ``damage``: the first listed file that is missing or differs."""

    current: bool
    damage: Damage | None = None


def check_manifest(store: Path, shard: Path) -> Check:
    """Compare the shard's files with the manifest of its last clean close.

    A WAL that differs from the manifest's means the shard was written by a process that does
    not keep the manifest (a clipy without it, or a direct engine call), or the WAL itself was
    damaged (the engine recovers from that): the manifest no longer applies, so nothing is
    reported, rather than a false alarm about files that were written on purpose."""
    try:
        data = json.loads((store / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = data["files"] if data.get("version") == _VERSION else None
        wal = data["wal"]
        if not isinstance(files, dict) or wal != _wal_state(shard):
            return Check(current=False)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return Check(current=False)
    for relative, entry in files.items():
        path = shard / relative
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return Check(True, Damage(path, "missing"))
        except OSError as exc:
            return Check(True, Damage(path, f"unreadable: {exc.strerror or exc}"))
        if size != entry[0]:
            return Check(
                True, Damage(path, f"{size:,} bytes, {entry[0]:,} when the store was closed")
            )
        if len(entry) > 1:
            try:
                crc = _crc32(path)
            except OSError as exc:
                return Check(True, Damage(path, f"unreadable: {exc.strerror or exc}"))
            if crc != entry[1]:
                return Check(
                    True, Damage(path, "its content differs from when the store was closed")
                )
    return Check(current=True)
