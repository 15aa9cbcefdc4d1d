"""Dataset packages: a node's curated datasets travel up to its parent, one committed run each.

Licenses are not all a parent needs: the curated datasets behind them (household registers,
births, business registrations ...) are shared across levels too. Every sync run that committed
a row versions file (:mod:`exchange.curated`) is sent up as one ``dataset`` package, in the
same numbered series as the ``licenses`` packages (so one sequence check covers both):

- the package's Parquet file is the run's row versions file, rows and bookkeeping columns
  (``_govx_key``, ``_govx_hash``, ``_govx_op``, ``_govx_run_id``) unchanged;
- its schema metadata (``govx.dataset``, covered by the file's SHA-256 the manifest signs)
  names the dataset, the source, the run, when it was committed and the node where it was
  (``origin``: a city forwards its counties' runs with their origin kept);
- runs of a dataset the catalogue marks ``not_shared`` are never planned, and the columns that
  feed only ``not_shared`` license types (:func:`withheld_columns`) are left out of the file
  (``withheld`` in the metadata names them); the row digests ``_govx_hash`` still cover the
  whole row as the origin saw it.

The receiver (:func:`apply_dataset_package`) checks the metadata and the bookkeeping columns,
writes the file into its own lake at ``curated/<dataset>/<source>/<run>.parquet`` (a local
directory or an object store, :mod:`exchange.lakefs`) and records
the run as committed in its exchange state, marked with its origin; then the package counts as
applied. Each step is idempotent (the same file, the same run record), so a delivery killed
halfway is simply delivered again. The parent's ``govx datasets list`` and ``export`` then show
its children's rows beside its own; a received source is never synced or merged here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exchange.curated import BOOKKEEPING, DELETE, KEY, OP, RUN, UPSERT
from exchange.lakefs import Lake, Location, parquet_file, read_table
from exchange.standards.regions import ancestor_codes, validate_region_code
from license_store.errors import ConflictError
from license_store.replication import (
    AppliedPackage,
    OutboxEntry,
    PackageInvalid,
    inbox_advance,
    inbox_expects,
)

if TYPE_CHECKING:
    from exchange.config import Deployment, SourceConfig
    from exchange.state import ExchangeState, RunRecord
    from license_store.store import LicenseStore

__all__ = [
    "METADATA_KEY",
    "apply_dataset_package",
    "dataset_package_table",
    "excluded_datasets",
    "runs_to_send",
    "withheld_columns",
]

log = logging.getLogger("govexchange.dataset_packages")

METADATA_KEY = b"govx.dataset"
"""The Parquet schema metadata key that says which run a dataset package carries."""
_SLUG = re.compile(r"^[a-z][a-z0-9_]{1,62}$")  # dataset and source ids (exchange.config.SLUG)
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}$")  # exchange.state.new_run_id


def excluded_datasets(deployment: Deployment) -> set[str]:
    """Datasets shared with no one (``sharing: not_shared``): their runs never leave."""
    return {dataset.id for dataset in deployment.datasets if dataset.sharing == "not_shared"}


def withheld_columns(source: SourceConfig, deployment: Deployment) -> set[str]:
    """The columns of ``source`` that feed only license types shared with no one (the data
    items of a ``not_shared`` license, e.g. a newborn's screening result beside the birth
    record): they stay at the node, even when the dataset itself is shared."""
    private = {kind.id for kind in deployment.license_types if kind.sharing == "not_shared"}
    secret: set[str] = set()
    shared: set[str] = set(source.primary_key)
    for mapping in source.licenses:
        (secret if mapping.type in private else shared).update(mapping.columns())
    return secret - shared


def _dataset_of(run: RunRecord, deployment: Deployment) -> str | None:
    if run.dataset_id is not None:  # received from a child
        return run.dataset_id
    for source in deployment.sources:
        if source.id == run.source_id:
            return source.dataset
    return None


def runs_to_send(
    state: ExchangeState, deployment: Deployment, planned: Collection[str] = ()
) -> list[tuple[str, int]]:
    """The committed runs (own and received) whose dataset may leave this node and that are
    not ``planned`` yet, oldest commit first, with their row versions: what
    :func:`license_store.replication.plan_dataset_packages` plans."""
    excluded = excluded_datasets(deployment)
    found = []
    for run in state.shareable_runs(excluded):
        if run.run_id in planned:
            continue
        dataset = _dataset_of(run, deployment)
        if dataset is None:
            log.warning(
                "run %s of source %s not packaged: the source is no longer configured",
                run.run_id,
                run.source_id,
            )
            continue
        if dataset in excluded or run.curated_path is None:
            continue
        found.append((run.run_id, parquet_file(run.curated_path).metadata.num_rows))
    return found


def dataset_package_table(
    state: ExchangeState, deployment: Deployment, entry: OutboxEntry, region: str
) -> pa.Table:
    """The rows of planned ``dataset`` package ``entry``: its run's row versions, with the
    ``govx.dataset`` metadata (``region`` is this node's, the origin of its own runs)."""
    if entry.run_id is None:
        raise ValueError(f"package {entry.seq} is not a dataset package")
    run = state.run(entry.run_id)
    dataset = _dataset_of(run, deployment)
    if dataset is None or run.curated_path is None:
        raise ValueError(f"run {run.run_id} has no dataset or row versions file to send")
    table = read_table(run.curated_path)
    withheld: list[str] = []
    if run.origin is None:  # a received run was stripped at its origin
        source = deployment.source(run.source_id)
        withheld = sorted(withheld_columns(source, deployment) & set(table.schema.names))
        table = table.drop_columns(withheld)
    committed = run.started_at if run.origin else run.finished_at
    described = {
        "dataset_id": dataset,
        "source_id": run.source_id,
        "run_id": run.run_id,
        "committed_at": committed.isoformat() if committed else None,
        "origin": run.origin or region,
        "withheld": withheld,
    }
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(described, sort_keys=True).encode("utf-8")
    return table.replace_schema_metadata(metadata)


def _described(table: pa.Table, sender: str, where: str) -> dict[str, Any]:
    """The package's ``govx.dataset`` metadata, checked (:class:`PackageInvalid` if not)."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise PackageInvalid(f"package {where}: no govx.dataset metadata")
    try:
        described = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PackageInvalid(f"package {where}: its govx.dataset metadata is not JSON") from None
    if not isinstance(described, dict):
        raise PackageInvalid(f"package {where}: its govx.dataset metadata is not an object")
    for name, pattern in (("dataset_id", _SLUG), ("source_id", _SLUG), ("run_id", _RUN_ID)):
        value = described.get(name)
        if not isinstance(value, str) or not pattern.match(value):
            raise PackageInvalid(f"package {where}: {name} is missing or malformed")
    try:
        committed = dt.datetime.fromisoformat(str(described.get("committed_at")))
    except ValueError:
        raise PackageInvalid(f"package {where}: committed_at is not an ISO date-time") from None
    if committed.tzinfo is None:
        raise PackageInvalid(f"package {where}: committed_at has no time zone")
    described["committed_at"] = committed
    withheld = described.get("withheld", [])
    if not isinstance(withheld, list) or not all(isinstance(c, str) for c in withheld):
        raise PackageInvalid(f"package {where}: withheld is not a list of column names")
    origin = described.get("origin")
    try:
        validate_region_code(origin)
    except ValueError:
        raise PackageInvalid(f"package {where}: origin is not a region code") from None
    if sender != origin and sender not in ancestor_codes(origin):
        raise PackageInvalid(
            f"package {where}: run from node {origin}, which is not node {sender} or below it"
        )
    return described


def _check_rows(table: pa.Table, run_id: str, where: str) -> None:
    """The bookkeeping columns every row versions file has, each row of this run."""
    missing = [name for name in BOOKKEEPING if name not in table.schema.names]
    if missing:
        raise PackageInvalid(f"package {where}: no {', '.join(missing)} column")
    for name in BOOKKEEPING:
        column = table.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise PackageInvalid(f"package {where}: {name} is not a text column")
        if column.null_count:
            raise PackageInvalid(f"package {where}: {name} has empty values")
    if table.num_rows and not pc.all(pc.equal(table.column(RUN), run_id)).as_py():
        raise PackageInvalid(f"package {where}: rows of another run than {run_id}")
    ops = pc.is_in(table.column(OP), value_set=pa.array([UPSERT, DELETE]))
    if table.num_rows and not pc.all(ops).as_py():
        raise PackageInvalid(f"package {where}: {OP} other than {UPSERT} or {DELETE}")
    keys = pc.count_distinct(table.column(KEY)).as_py()
    if keys != table.num_rows:
        raise PackageInvalid(f"package {where}: a key appears twice in one run")


def _write_atomically(table: pa.Table, path: str, lake: Lake) -> None:
    """Write the file whole: locally under a hidden name, synced and renamed into place; on an
    object store as one object (a PUT is atomic)."""
    if not lake.atomic_rename:
        lake.write_parquet(table, path, compression="zstd")
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    lake.rename(temporary, path)


def apply_dataset_package(
    store: LicenseStore,
    state: ExchangeState,
    lake: Lake | Location,
    sender: str,
    seq: int,
    table: pa.Table,
) -> AppliedPackage:
    """Apply ``dataset`` package ``seq`` from node ``sender`` (its manifest, hash and signature
    already checked: :func:`exchange.packages.read_package`).

    A replay is acknowledged (``duplicate``), a gap raises
    :class:`~license_store.replication.SequenceGap`, a malformed package
    :class:`~license_store.replication.PackageInvalid` and a run that clashes with this node's
    (its id taken, or its source synced here) :class:`~license_store.errors.ConflictError`;
    nothing is recorded then.
    """
    where = f"{sender}-{seq:012d}"
    described = _described(table, sender, where)
    if not inbox_expects(store, sender, seq):
        log.info("package %s was applied before: acknowledged, ignored", where)
        return AppliedPackage(sender, seq, duplicate=True)
    run_id = described["run_id"]
    _check_rows(table, run_id, where)
    lake = Lake.of(lake)
    folder = ("curated", described["dataset_id"], described["source_id"])
    path = lake.join(*folder, f"{run_id}.parquet")
    try:
        recorded = state.run(run_id)
    except KeyError:
        recorded = None
    if recorded is not None and recorded.curated_path != path:
        raise ConflictError(f"package {where}: run {run_id} is already recorded here, elsewhere")
    if recorded is None or not lake.exists(path):
        _write_atomically(table, path, lake)
    try:
        state.record_received_run(
            run_id=run_id,
            source_id=described["source_id"],
            dataset_id=described["dataset_id"],
            origin=described["origin"],
            committed_at=described["committed_at"],
            curated_path=path,
            rows=table.num_rows,
        )
    except ValueError as error:
        raise ConflictError(f"package {where}: {error}") from None
    if not inbox_advance(store, sender, seq, table.num_rows):
        return AppliedPackage(sender, seq, duplicate=True)
    log.debug("applied package %s: run %s, %d row versions", where, run_id, table.num_rows)
    return AppliedPackage(sender, seq, duplicate=False, rows=table.num_rows)
