"""Curated datasets: each source's rows merged by primary key, every version kept.

Layout under the lake::

    curated/<dataset_id>/<source_id>/<run_id>.parquet

One file per committed run, holding only the row versions that run changed: keys seen for the
first time, rows whose content differs from the version the exchange held, and deletions (a row
carrying the source's soft-delete flag, or a key a full-refresh snapshot no longer returned).
Every row version carries four bookkeeping columns: ``_govx_key`` (the primary key as text),
``_govx_hash`` (a digest of the row's content), ``_govx_op`` (``upsert`` or ``delete``) and
``_govx_run_id``.

A file is written before its run commits, under a name nothing reads: the file only becomes
part of the dataset when the exchange state's commit transaction (run record, cursor,
quarantine) records its path. A run killed before that leaves a stray file that no query ever
lists, and the run is re-done; this is what makes a run atomic without a lock on the lake.

On a parent node a dataset also holds the runs its children sent up (``dataset`` packages,
:mod:`exchange.dataset_packages`): recorded in the exchange state with their origin, read here
like the node's own.

DuckDB answers the questions: the current rows of a dataset (the latest version of each key,
deletions dropped), the rows as the exchange knew them at any past instant (only runs committed
by then), and the history of one key.

The lake is a local directory or an object store (:mod:`exchange.lakefs`). Locally a row
versions file is written under a hidden ``.partial`` name and renamed into place; on an object
store DuckDB writes it straight to its key (through the registered fsspec filesystem), one
whole object. DuckDB's temporary files and the staged rows stay on local disk either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from exchange.config import SourceConfig
from exchange.lakefs import Lake, Location, join, parquet_file
from exchange.state import ExchangeState, RunRecord

__all__ = [
    "BOOKKEEPING",
    "CuratedDataset",
    "MergeResult",
    "RunMerge",
    "SnapshotRefused",
    "curated_dir",
    "superseded_rows",
]

log = logging.getLogger("govexchange.curated")

KEY, HASH, OP, RUN, ORD, SOURCE = (
    "_govx_key",
    "_govx_hash",
    "_govx_op",
    "_govx_run_id",
    "_govx_ord",
    "_govx_source_id",
)
BOOKKEEPING = (KEY, HASH, OP, RUN)
"""The columns every row versions file adds to the source's own."""
UPSERT, DELETE = "upsert", "delete"
COMPRESSION = "zstd"


class SnapshotRefused(RuntimeError):
    """A key snapshot would delete more of a dataset than the source allows."""


def curated_dir(dataset_id: str, source_id: str, lake: Lake | Location | None = None) -> Location:
    """A source's folder of row versions files: a ``Path`` locally, a URL on an object store."""
    return Lake.of(lake).location("curated", dataset_id, source_id)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _file_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"


def _key_expr(primary_key: Sequence[str]) -> str:
    """The primary key as text: one column as itself, several as a JSON array of texts."""
    parts = [f"CAST({_ident(c)} AS VARCHAR)" for c in primary_key]
    if len(parts) == 1:
        return parts[0]
    return f"CAST(json_array({', '.join(parts)}) AS VARCHAR)"


def _hash_expr(columns: Sequence[str]) -> str:
    """A digest of a row's content: the columns in name order, as JSON."""
    fields = ", ".join(f"{_ident(c)} := {_ident(c)}" for c in sorted(columns))
    return f"md5(CAST(to_json(struct_pack({fields})) AS VARCHAR))"


@dataclass
class MergeResult:
    """What merging one run changed in its curated dataset (``path``: the file to commit)."""

    path: Location | None
    changes: dict[str, int] = field(
        default_factory=lambda: {"new": 0, "changed": 0, "deleted": 0, "unchanged": 0}
    )


class RunMerge:
    """Stage one run's gated rows and write the row versions it changes (not yet committed).

    Feed it the rows that passed the gate with :meth:`add`, then call :meth:`finish` with the
    run's already committed versions; the result's file is what the commit must record.
    """

    def __init__(
        self,
        source: SourceConfig,
        run: RunRecord,
        committed: Sequence[RunRecord],
        lake: Lake | Location | None = None,
    ) -> None:
        self.lake = Lake.of(lake)
        self.source = source
        self.run = run
        self.committed_files = [r.curated_path for r in committed if r.curated_path]
        self.folder = curated_dir(source.dataset, source.id, self.lake)
        # staged on local disk whatever the lake: DuckDB reads it back once, in finish()
        self._staging = self.lake.scratch / "staging" / f"{run.run_id}-{uuid.uuid4().hex[:8]}"
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._columns: list[str] | None = None

    def add(self, table: pa.Table) -> None:
        """Stage rows that passed the quality gate (in landing order)."""
        if self._writer is None:
            self._staging.mkdir(parents=True, exist_ok=True)
            self._columns = list(table.column_names)
            schema = table.schema.append(pa.field(ORD, pa.int64()))
            self._writer = pq.ParquetWriter(self._staging / "passed.parquet", schema)
        if not table.num_rows:
            return
        order = pa.array(range(self._rows, self._rows + table.num_rows), type=pa.int64())
        self._writer.write_table(table.append_column(ORD, order))
        self._rows += table.num_rows

    def _soft_delete_expr(self) -> str:
        rule = self.source.deletes.soft_delete
        if rule is None or self._columns is None or rule.column not in self._columns:
            return "FALSE"
        values = ", ".join(_literal(v.strip()) for v in rule.values)
        return f"coalesce(trim(CAST({_ident(rule.column)} AS VARCHAR)) IN ({values}), FALSE)"

    def _current(self) -> str:
        """The latest committed version of every key of this source (deletions included)."""
        if not self.committed_files:
            return f"SELECT NULL::VARCHAR AS {KEY}, NULL::VARCHAR AS {HASH}, " + (
                f"NULL::VARCHAR AS {OP} WHERE FALSE"
            )
        return (
            f"SELECT * FROM read_parquet({_file_list(self.committed_files)}, "
            f"union_by_name = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {RUN} DESC) = 1"
        )

    def finish(self, landed_files: Sequence[Location] = ()) -> MergeResult:
        """Write the run's row versions file (under a temporary name until committed).

        ``landed_files`` are the run's landed Parquet files; on a full-refresh run of a source
        with ``key_snapshot`` their keys (quarantined rows included) are the source's live keys.
        """
        if self._writer is not None:
            self._writer.close()
        snapshot = self.source.deletes.key_snapshot and self.run.full_refresh
        con = self.lake.duckdb_connect([*self.committed_files, *map(str, landed_files)])
        try:
            con.execute(f"CREATE TEMP TABLE current AS {self._current()}")
            parts: list[str] = []
            counts: dict[str, int] = {"new": 0, "changed": 0, "deleted": 0, "unchanged": 0}
            if self._rows:
                self._stage_incoming(con)
                parts.append(
                    f"SELECT i.* EXCLUDE ({ORD}), NULL::VARCHAR AS {RUN} "
                    f"FROM incoming i LEFT JOIN current c USING ({KEY}) "
                    f"WHERE (c.{KEY} IS NULL AND i.{OP} = '{UPSERT}') "
                    f"OR (c.{KEY} IS NOT NULL AND (c.{HASH} <> i.{HASH} OR c.{OP} <> i.{OP}))"
                )
            if snapshot:
                parts.append(self._hard_deletes(con, landed_files))
            if not parts:
                return MergeResult(None, counts)
            con.execute(
                "CREATE TEMP TABLE delta AS " + " UNION ALL BY NAME ".join(f"({p})" for p in parts)
            )
            counts.update(self._count(con))
            if not con.execute("SELECT count(*) FROM delta").fetchone()[0]:
                return MergeResult(None, counts)
            self.lake.makedirs(self.folder)
            final = self.lake.location(
                "curated", self.source.dataset, self.source.id, f"{self.run.run_id}.parquet"
            )
            target = final
            if self.lake.atomic_rename:
                target = join(self.folder, f".{self.run.run_id}.{uuid.uuid4().hex[:8]}.partial")
            con.execute(
                f"COPY (SELECT * EXCLUDE ({RUN}), {_literal(self.run.run_id)} AS {RUN} "
                f"FROM delta ORDER BY {KEY}) TO {_literal(str(target))} "
                f"(FORMAT parquet, COMPRESSION {COMPRESSION})"
            )
            if target != final:
                self.lake.rename(target, final)
            return MergeResult(final, counts)
        finally:
            con.close()
            self.discard_staging()

    def _stage_incoming(self, con: duckdb.DuckDBPyConnection) -> None:
        assert self._columns is not None
        staged = _literal(str(self._staging / "passed.parquet"))
        con.execute(
            f"CREATE TEMP TABLE incoming AS "
            f"SELECT *, {_key_expr(self.source.primary_key)} AS {KEY}, "
            f"{_hash_expr(self._columns)} AS {HASH}, "
            f"CASE WHEN {self._soft_delete_expr()} THEN '{DELETE}' ELSE '{UPSERT}' END AS {OP} "
            f"FROM read_parquet({staged}) "
            f"QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {ORD} DESC) = 1"
        )

    def _hard_deletes(
        self, con: duckdb.DuckDBPyConnection, landed_files: Sequence[Location]
    ) -> str:
        """Keys live in the exchange that the snapshot did not return become deletions."""
        if landed_files:
            files = _file_list([str(p) for p in landed_files])
            con.execute(
                f"CREATE TEMP TABLE seen AS SELECT DISTINCT "
                f"{_key_expr(self.source.primary_key)} AS {KEY} FROM read_parquet({files}, "
                f"union_by_name = true)"
            )
        else:
            con.execute(f"CREATE TEMP TABLE seen ({KEY} VARCHAR)")
        live, gone = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {KEY} NOT IN (SELECT {KEY} FROM seen)) "
            f"FROM current WHERE {OP} = '{UPSERT}'"
        ).fetchone()
        limit = self.source.deletes.max_delete_fraction
        if live and gone / live > limit:
            raise SnapshotRefused(
                f"key snapshot would delete {gone} of {live} live rows "
                f"({gone / live:.0%} > max_delete_fraction {limit:.0%}); "
                "check the source's extract, or raise the limit in deletes.max_delete_fraction"
            )
        return (
            f"SELECT * REPLACE ('{DELETE}' AS {OP}) FROM current "
            f"WHERE {OP} = '{UPSERT}' AND {KEY} NOT IN (SELECT {KEY} FROM seen)"
        )

    def _count(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        new, changed, deleted = con.execute(
            f"SELECT count(*) FILTER (WHERE d.{OP} = '{UPSERT}' "
            f"AND (c.{KEY} IS NULL OR c.{OP} = '{DELETE}')), "
            f"count(*) FILTER (WHERE d.{OP} = '{UPSERT}' AND c.{OP} = '{UPSERT}'), "
            f"count(*) FILTER (WHERE d.{OP} = '{DELETE}') "
            f"FROM delta d LEFT JOIN current c USING ({KEY})"
        ).fetchone()
        incoming = con.execute("SELECT count(*) FROM incoming").fetchone()[0] if self._rows else 0
        touched = (
            con.execute(
                f"SELECT count(*) FROM delta WHERE {KEY} IN (SELECT {KEY} FROM incoming)"
            ).fetchone()[0]
            if self._rows
            else 0
        )
        return {
            "new": new,
            "changed": changed,
            "deleted": deleted,
            "unchanged": incoming - touched,
        }

    def discard_staging(self) -> None:
        """Remove the staged rows (after :meth:`finish`, or when the run is abandoned)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already closed, or the disk is gone
                self._writer.close()
        if self._staging.exists():
            for child in self._staging.iterdir():
                child.unlink()
            self._staging.rmdir()


class CuratedDataset:
    """Read a curated dataset: its current rows, its rows at a past instant, a key's history."""

    def __init__(
        self,
        dataset_id: str,
        sources: Iterable[SourceConfig],
        state: ExchangeState,
        lake: Lake | Location | None = None,
    ) -> None:
        self.dataset_id = dataset_id
        self.sources = [s for s in sources if s.dataset == dataset_id]
        self.state = state
        self.lake = Lake.of(lake)
        self.received = sorted(state.received_sources(dataset_id))
        """Sources of this dataset whose runs came up from child nodes (dataset packages)."""

    @property
    def source_ids(self) -> list[str]:
        """This node's sources of the dataset, then the ones received from its children."""
        own = [s.id for s in self.sources]
        return own + [s for s in self.received if s not in own]

    def _files(self, as_of: dt.datetime | None) -> list[RunRecord]:
        until = as_of.astimezone(dt.UTC).replace(tzinfo=None) if as_of is not None else None
        return self.state.committed_versions(self.source_ids, until)

    def _connect(self, runs: Sequence[RunRecord]) -> duckdb.DuckDBPyConnection:
        """DuckDB over the lake and the storage each run's file was recorded on."""
        return self.lake.duckdb_connect([r.curated_path for r in runs if r.curated_path])

    def _versions(self, runs: Sequence[RunRecord]) -> str:
        selects = [
            f"SELECT *, {_literal(r.source_id)} AS {SOURCE} FROM read_parquet("
            f"{_literal(r.curated_path or '')})"
            for r in runs
        ]
        return " UNION ALL BY NAME ".join(selects)

    def rows(self, as_of: dt.datetime | None = None) -> pa.Table:
        """The live rows (latest version of each key, deletions dropped), as of an instant.

        Each row keeps its bookkeeping columns and ``_govx_source_id``; rows are ordered by
        source and key.
        """
        runs = self._files(as_of)
        if not runs:
            return pa.table({SOURCE: pa.array([], pa.string()), KEY: pa.array([], pa.string())})
        con = self._connect(runs)
        try:
            return con.sql(
                f"SELECT * FROM ({self._versions(runs)}) "
                f"QUALIFY row_number() OVER (PARTITION BY {SOURCE}, {KEY} "
                f"ORDER BY {RUN} DESC) = 1 AND {OP} = '{UPSERT}' "
                f"ORDER BY {SOURCE}, {KEY}"
            ).to_arrow_table()
        finally:
            con.close()

    def history(self, key: str, source_id: str | None = None) -> pa.Table:
        """Every committed version of one key (oldest first), with when it was committed."""
        runs = self._files(None)
        if source_id is not None:
            runs = [r for r in runs if r.source_id == source_id]
        if not runs:
            return pa.table({KEY: pa.array([], pa.string())})
        committed = ", ".join(
            f"({_literal(r.run_id)}, TIMESTAMPTZ {_literal(r.finished_at.isoformat())})"
            for r in runs
            if r.finished_at is not None
        )
        con = self._connect(runs)
        try:
            return con.sql(
                f"SELECT v.*, c.committed_at FROM ({self._versions(runs)}) v "
                f"JOIN (VALUES {committed}) c({RUN}, committed_at) USING ({RUN}) "
                f"WHERE v.{KEY} = ? ORDER BY v.{RUN}",
                params=[key],
            ).to_arrow_table()
        finally:
            con.close()

    def summary(self, as_of: dt.datetime | None = None) -> dict[str, int]:
        """Counts for one dataset: live rows, deleted keys, versions and committed runs."""
        runs = self._files(as_of)
        if not runs:
            return {"live": 0, "deleted": 0, "versions": 0, "runs": 0}
        con = self._connect(runs)
        try:
            live, deleted, versions = con.execute(
                f"WITH v AS ({self._versions(runs)}), latest AS (SELECT {OP} FROM v "
                f"QUALIFY row_number() OVER (PARTITION BY {SOURCE}, {KEY} "
                f"ORDER BY {RUN} DESC) = 1) "
                f"SELECT (SELECT count(*) FILTER (WHERE {OP} = '{UPSERT}') FROM latest), "
                f"(SELECT count(*) FILTER (WHERE {OP} = '{DELETE}') FROM latest), "
                f"(SELECT count(*) FROM v)"
            ).fetchone()
        finally:
            con.close()
        return {"live": live, "deleted": deleted, "versions": versions, "runs": len(runs)}


def version_batches(path: Location, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream a committed row versions file (a recorded path or URL)."""
    yield from parquet_file(path).iter_batches(batch_size=batch_size)


def superseded_rows(
    table: pa.Table,
    source: SourceConfig,
    committed: Sequence[RunRecord],
    origin_column: str,
    lake: Lake | Location | None = None,
) -> pa.Array:
    """For each row of ``table``: does its key have a version committed after its origin run?

    ``origin_column`` holds the run id each row came from (e.g. the run that quarantined it).
    Replaying such a row would overwrite newer data with older, so callers drop it.
    """
    files = [r.curated_path for r in committed if r.curated_path]
    if not files or not table.num_rows:
        return pa.array([False] * table.num_rows, type=pa.bool_())
    con = Lake.of(lake).duckdb_connect(files)
    try:
        order = pa.array(range(table.num_rows), type=pa.int64())
        con.register("incoming", table.append_column(ORD, order))
        flags = con.sql(
            f"WITH latest AS (SELECT {KEY}, max({RUN}) AS last_run FROM "
            f"read_parquet({_file_list(files)}, union_by_name = true) GROUP BY {KEY}), "
            f"rows AS (SELECT {ORD} AS ord, {_key_expr(source.primary_key)} "
            f"AS {KEY}, {_ident(origin_column)} AS origin FROM incoming) "
            f"SELECT coalesce(l.last_run > r.origin, FALSE) AS newer FROM rows r "
            f"LEFT JOIN latest l USING ({KEY}) ORDER BY r.ord"
        ).to_arrow_table()
    finally:
        con.close()
    return flags.column("newer").combine_chunks()
