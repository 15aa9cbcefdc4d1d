"""The lake: Parquet landing of every sync run, and the quarantine of rows the quality gate held.

Layout under ``$GOVX_HOME/lake`` (or ``GOVX_LAKE_DIR``)::

    landing/<source_id>/<run_id>/part-00000.parquet ... manifest.json
    quarantine/<source_id>/<run_id>/rows.parquet

The lake is a local directory or an ``s3://bucket/prefix`` URL (:mod:`exchange.lakefs`). On a
local lake a run's landing folder is written under a temporary name and renamed into place only
once its files and manifest are complete. An object store has no rename: there each part is
written as one whole object and the manifest last, and a folder without a manifest is
unfinished (:func:`read_manifest` raises ``FileNotFoundError``). Either way a landed folder counts
only once the exchange state records its path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from exchange.lakefs import Lake, Location, join, open_file, parquet_file

__all__ = [
    "EXPECTATIONS_COLUMN",
    "REASONS_COLUMN",
    "LandingWriter",
    "Manifest",
    "landed_batches",
    "landing_dir",
    "quarantine_dir",
    "read_manifest",
    "write_quarantine",
]

MANIFEST = "manifest.json"
REASONS_COLUMN = "_govx_reasons"
"""The quarantine file's column of masked reasons, one list per held row."""
EXPECTATIONS_COLUMN = "_govx_expectations"
"""The quarantine file's column naming the expectations each held row failed."""
ROWS_PER_FILE = 1_000_000
COMPRESSION = "zstd"


def landing_dir(source_id: str, run_id: str, lake: Lake | Location | None = None) -> Location:
    """A run's landing folder: a ``Path`` on a local lake, a URL on an object store."""
    return Lake.of(lake).location("landing", source_id, run_id)


def quarantine_dir(source_id: str, run_id: str, lake: Lake | Location | None = None) -> Location:
    """A run's quarantine folder: a ``Path`` on a local lake, a URL on an object store."""
    return Lake.of(lake).location("quarantine", source_id, run_id)


@dataclass(frozen=True)
class Manifest:
    """What a landing folder holds: enough to check it and to resume from it."""

    source_id: str
    run_id: str
    rows: int
    files: list[str]
    schema: list[dict[str, str]]
    cursor_before: Any
    cursor_after: Any
    sha256: str
    written_at: str


def hash_file(path: Location, digest: Any) -> None:
    """Feed the bytes of ``path`` to ``digest`` (a hashlib object), a megabyte at a time."""
    with open_file(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


class LandingWriter:
    """Writes one run's batches as Parquet parts, then a manifest, then publishes the folder."""

    def __init__(
        self,
        source_id: str,
        run_id: str,
        schema: pa.Schema,
        lake: Lake | Location | None = None,
        rows_per_file: int = ROWS_PER_FILE,
    ) -> None:
        self.source_id = source_id
        self.run_id = run_id
        self.schema = schema
        self.lake = Lake.of(lake)
        self.final_dir = self.lake.location("landing", source_id, run_id)
        # where the files are written: a hidden sibling renamed into place on a local lake;
        # the folder itself on an object store (the manifest, written last, finishes it)
        if self.lake.atomic_rename:
            self.tmp_dir = self.lake.location("landing", source_id, f".{run_id}.tmp")
        else:
            self.tmp_dir = self.final_dir
        self.lake.remove(self.tmp_dir)  # what an earlier, aborted attempt left
        self.lake.makedirs(self.tmp_dir)
        self.rows_per_file = rows_per_file
        self.rows = 0
        self._files: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def _open_part(self) -> pq.ParquetWriter:
        name = f"part-{len(self._files):05d}.parquet"
        self._files.append(name)
        self._rows_in_file = 0
        return self.lake.parquet_writer(
            join(self.tmp_dir, name), self.schema, compression=COMPRESSION
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None or self._rows_in_file >= self.rows_per_file:
            if self._writer is not None:
                self._writer.close()
            self._writer = self._open_part()
        self._writer.write_batch(batch.cast(self.schema) if batch.schema != self.schema else batch)
        self._rows_in_file += batch.num_rows
        self.rows += batch.num_rows

    def close(self, cursor_before: Any, cursor_after: Any) -> Manifest:
        """Finish the files, write the manifest (last) and move the folder into place."""
        if self._writer is None:  # an empty run still lands a (schema-only) file
            self._writer = self._open_part()
        self._writer.close()
        digest = hashlib.sha256()
        for name in self._files:
            hash_file(join(self.tmp_dir, name), digest)
        manifest = Manifest(
            source_id=self.source_id,
            run_id=self.run_id,
            rows=self.rows,
            files=list(self._files),
            schema=[{"name": f.name, "type": str(f.type)} for f in self.schema],
            cursor_before=cursor_before,
            cursor_after=cursor_after,
            sha256=digest.hexdigest(),
            written_at=dt.datetime.now(dt.UTC).isoformat(),
        )
        text = json.dumps(asdict(manifest), ensure_ascii=False, indent=2, default=str)
        with self.lake.open(join(self.tmp_dir, MANIFEST), "wb") as handle:
            handle.write(text.encode("utf-8"))
        if self.tmp_dir != self.final_dir:
            self.lake.remove(self.final_dir)
            self.lake.rename(self.tmp_dir, self.final_dir)
        return manifest

    def abort(self) -> None:
        """Drop what was written (the run failed before landing)."""
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(OSError):
            self.lake.remove(self.tmp_dir)


def read_manifest(folder: Location) -> Manifest:
    """Read a landing folder's manifest; ``FileNotFoundError`` if the run never finished landing."""
    with open_file(join(folder, MANIFEST), "rb") as handle:
        data = json.loads(handle.read().decode("utf-8"))
    return Manifest(**data)


def landed_batches(folder: Location, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream a landed run's rows back in record batches (``folder``: a recorded path or URL)."""
    manifest = read_manifest(folder)
    for name in manifest.files:
        yield from parquet_file(join(folder, name)).iter_batches(batch_size=batch_size)


def write_quarantine(
    source_id: str, run_id: str, table: pa.Table, lake: Lake | Location | None = None
) -> Location:
    """Keep held rows (with their masked reasons) for review and replay; returns the file."""
    lake = Lake.of(lake)
    folder = lake.location("quarantine", source_id, run_id)
    lake.makedirs(folder)
    path = lake.location("quarantine", source_id, run_id, "rows.parquet")
    lake.write_parquet(table, path, compression=COMPRESSION)
    return path
