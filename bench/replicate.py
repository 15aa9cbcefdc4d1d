"""Benchmark upward replication: county -> city -> province, against a direct bulk load.

    .venv/bin/python bench/replicate.py [--changes 1000000] [--backend sqlite|postgresql|both]

On the same data, in the same run, per backend:

- **Replication, end to end.** A county store holds ``--changes`` license changes (90% new
  licenses, 10% second versions of them; every version signed by its department). The city and
  the province are real nodes: ``govx serve`` processes with their own ``$GOVX_HOME``, store,
  key ring and node clients. The county packages everything (``exchange.outbox.make_packages``)
  and pushes it to the city (``push_packages`` over HTTP, the city checking and applying each
  package); then the city packages what it applied and pushes it to the province. Timed from
  the county's first package to the province's last acknowledgement.
- **At each hop**: packaging (versions/s read and written as Parquet) and applying (versions/s,
  from the POSTs' round trips: upload, checks and the apply transaction).
- **Baseline: a direct bulk load** of the same Parquet files (the county's packages) into an
  empty province store, through the store's own bulk path (:func:`license_store.database.
  bulk_insert`: ``COPY`` on PostgreSQL, ``executemany`` on SQLite) into ``licenses`` (each
  license once, at its newest version), ``license_versions``, ``signature_batches`` and
  ``license_proofs``, in one transaction, with no checks.

Printed: each figure, the ratio replication/direct (target >= 0.5x) and the applied rate at each
hop (target >= 100,000 changes/s). The province's rows are checked to equal the county's.

The county's data are generated once and kept under ``var/bench-replicate`` (SQLite) and in the
PostgreSQL database ``govx_bench_replicate_county`` (copied per run as a template); the other
stores are made fresh for every run. The nodes and the bench share the 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from exchange.config import Deployment, load_deployment  # noqa: E402
from exchange.demo.people import resident_id  # noqa: E402
from exchange.node_client import ParentClient  # noqa: E402
from exchange.nodes import NodeConfig, init_node, trust_node  # noqa: E402
from exchange.outbox import make_packages, push_packages  # noqa: E402
from exchange.packages import pending_packages  # noqa: E402
from license_store import LicenseRecord, LicenseStore  # noqa: E402
from license_store.clients import ClientRegistry  # noqa: E402
from license_store.database import JSONText, bulk_insert  # noqa: E402
from license_store.models import (  # noqa: E402
    license_proofs,
    license_versions,
    licenses,
    signature_batches,
)
from license_store.signing import KeyRing  # noqa: E402
from license_store.store import LICENSE_COLUMNS  # noqa: E402

VAR = REPO / "var" / "bench-replicate"
PG_ADMIN = os.environ.get(
    "GOVX_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"
)
PG_COUNTY = "govx_bench_replicate_county"
GENERATOR = 1  # bump when the generated data change
COUNTY, CITY, PROVINCE = "440604", "440600", "440000"
BIRTH_TYPE = "11440000MB2028233R001"  # 出生医学证明 (birth_medical_certificate)
ISSUER = "11440604MB20156857"
CHUNK = 100_000
TARGET_RATIO = 0.5
TARGET_RATE = 100_000


# -- the county's data ----------------------------------------------------------------------


def _record(n: int, revision: int = 1) -> LicenseRecord:
    birth = dt.date(2005, 1, 1) + dt.timedelta(days=n // 900)
    holder = resident_id(COUNTY, birth, n % 900 + 1)
    return LicenseRecord(
        type_code=BIRTH_TYPE,
        type_name="出生医学证明",
        issuer_code=ISSUER,
        issuer_name="佛山市禅城区卫生健康局",
        region_code=COUNTY,
        holder_id=holder,
        holder_kind="natural",
        holder_name=f"测试{n}",
        number=f"R{n:09d}",
        issue_date=birth,
        valid_from=birth,
        valid_to=None,
        status="valid",
        face={
            "birth_place": "佛山市第一人民医院" if revision == 1 else "佛山市妇幼保健院",
            "birth_date": birth.isoformat(),
            "mother_name": f"母亲{n}",
        },
        source_id="chancheng_birth_certificates",
        run_id=f"bench-{revision}",
    )


def _generate(store: LicenseStore, changes: int, deployment: Deployment, keys: Path) -> None:
    """``changes`` versions: 90% new licenses, then a second version of the first 10%."""
    new = changes - changes // 10
    started = time.perf_counter()
    for start in range(0, new, CHUNK):
        store.upsert(_record(n) for n in range(start, min(new, start + CHUNK)))
        _progress("county licenses", min(new, start + CHUNK), changes, started)
    for start in range(0, changes - new, CHUNK):
        stop = min(changes - new, start + CHUNK)
        store.upsert(_record(n, revision=2) for n in range(start, stop))
        _progress("county licenses", new + stop, changes, started)
    print()
    signed = store.sign_pending(KeyRing(keys), deployment)
    print(f"  signed {signed.signed:,} versions in {signed.batches:,} batches")


def _progress(what: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(f"\r  {what}: {done:,}/{total:,} ({rate:,.0f}/s)", end="", flush=True)


def _marker(changes: int) -> dict[str, int]:
    return {"changes": changes, "generator": GENERATOR}


def sqlite_county(changes: int, deployment: Deployment, regenerate: bool) -> Path:
    """The generated county database file (made once, kept)."""
    folder = VAR / "sqlite"
    path, marker = folder / "county.db", folder / "county.json"
    if not regenerate and marker.exists() and json.loads(marker.read_text()) == _marker(changes):
        return path
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating the SQLite county store ({changes:,} changes, once)")
    with LicenseStore(f"sqlite:///{path}", audit_changes=False) as store:
        store.upgrade()
        _generate(store, changes, deployment, folder / "keys")
    marker.write_text(json.dumps(_marker(changes)))
    return path


def _pg_url(name: str) -> str:
    return sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def _psql(statement: str) -> None:
    url = sa.make_url(PG_ADMIN)
    with psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        dbname=url.database,
        autocommit=True,
    ) as conn:
        conn.execute(statement)


def postgres_county(changes: int, deployment: Deployment, regenerate: bool) -> str:
    """The generated county database (made once, kept; used as a template)."""
    folder = VAR / "postgresql"
    marker = folder / "county.json"
    if not regenerate and marker.exists() and json.loads(marker.read_text()) == _marker(changes):
        return PG_COUNTY
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating the PostgreSQL county store ({changes:,} changes, once)")
    _psql(f'DROP DATABASE IF EXISTS "{PG_COUNTY}" WITH (FORCE)')
    _psql(f'CREATE DATABASE "{PG_COUNTY}"')
    with LicenseStore(_pg_url(PG_COUNTY), audit_changes=False) as store:
        store.upgrade()
        _generate(store, changes, deployment, folder / "keys")
    marker.write_text(json.dumps(_marker(changes)))
    return PG_COUNTY


# -- the nodes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``govx serve`` of one node (its own ``$GOVX_HOME`` and store), on a loopback port."""

    def __init__(self, url: str, home: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        env = {
            **os.environ,
            "GOVX_LICENSE_DB_URL": url,
            "GOVX_HOME": str(home),
            "GOVX_CONFIG": str(REPO / "config"),
        }
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("govx")),
                "serve",
                "--no-access-log",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the node did not become ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Node:
    home: Path
    url: str
    node: NodeConfig
    keyring: KeyRing
    server: Server | None = None


class TimedParent:
    """The parent's client, timing each delivery (upload, checks and apply: the hop's cost)."""

    def __init__(self, client: ParentClient) -> None:
        self.client = client
        self.seconds = 0.0
        self.rows = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        started = time.perf_counter()
        response = self.client.request(method, path, **kwargs)
        self.seconds += time.perf_counter() - started
        if response.status_code == 200:
            self.rows += int(response.json().get("rows", 0))
        return response


def _node(deployment: Deployment, home: Path, url: str, region: str, parent: Node | None) -> Node:
    home.mkdir(parents=True)
    node = init_node(
        home,
        deployment,
        region,
        parent_url=parent.server.base if parent and parent.server else None,
    )
    with LicenseStore(url) as store:
        store.upgrade()
    return Node(home, url, node, KeyRing(home / "keys"))


def _link(child: Node, parent: Node) -> ParentClient:
    """Register the child's node client at the parent, trust its key; the child's client."""
    with ClientRegistry(parent.url) as registry:
        client, secret = registry.add(
            name=f"node {child.node.region}", kind="node", region=child.node.region
        )
    public = child.keyring.public_path(child.node.key_name).read_bytes()
    trust_node(parent.home, child.node.region, public)
    assert parent.server is not None
    return ParentClient(
        parent.node.region, parent.server.base, client.client_id, secret, timeout=(5.0, 600.0)
    )


# -- one run --------------------------------------------------------------------------------


@dataclass
class Hop:
    packaging_s: float = 0.0
    packaged: int = 0
    delivery_s: float = 0.0
    applied: int = 0


@dataclass
class Result:
    backend: str
    changes: int
    direct_s: float
    replication_s: float
    hops: dict[str, Hop] = field(default_factory=dict)
    equal: bool = False

    @property
    def ratio(self) -> float:
        return self.direct_s / self.replication_s


def _hop(child: Node, parent_client: ParentClient, deployment: Deployment) -> Hop:
    hop = Hop()
    with LicenseStore(child.url, deployment=deployment) as store:
        started = time.perf_counter()
        planned = make_packages(store, child.node, deployment, child.keyring, child.home)
        hop.packaging_s = time.perf_counter() - started
        hop.packaged = sum(entry.rows for entry in planned)
        timed = TimedParent(parent_client)
        report = push_packages(store, child.node, deployment, child.keyring, child.home, timed)
        if report.stopped or report.waiting:
            raise RuntimeError(f"push from {child.node.region} stopped: {report.stopped}")
        hop.delivery_s, hop.applied = timed.seconds, timed.rows
    return hop


def _state(url: str) -> str:
    """A digest of the store's licenses and versions: every column but the local ids, JSON
    compared as values (key order aside)."""
    digest = hashlib.sha256()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for table in (licenses, license_versions):
            names = [c.name for c in table.columns if c.name != "id"]
            json_columns = {n for n in names if isinstance(table.c[n].type, sa.JSON)}
            order = [table.c.license_base] + ([table.c.version] if "version" in names else [])
            statement = sa.select(*(sa.cast(table.c[n], sa.Text) for n in names)).order_by(*order)
            for row in conn.execute(statement):
                values = [
                    json.dumps(json.loads(value), sort_keys=True) if name in json_columns else value
                    for name, value in zip(names, row, strict=True)
                ]
                digest.update(repr(values).encode())
    engine.dispose()
    return digest.hexdigest()


def direct_load(files: list[Path], url: str) -> float:
    """Bulk-load the packages' rows into an empty store with the store's bulk path, in one
    transaction (each license once, at its newest version; every version); seconds."""
    with LicenseStore(url) as store:
        store.upgrade()
        started = time.perf_counter()
        rows = [row for path in files for row in pq.read_table(path).to_pylist()]
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            newest[row["license_base"]] = row  # versions come in order
        licence_rows: dict[str, list[Any]] = {name: [] for name in _LICENSE_COLUMNS}
        for row in newest.values():
            content = json.loads(row["content"])
            for name in ("license_base", "license_id", "sequence", "version", "content_hash"):
                licence_rows[name].append(row[name])
            for name in ("source_id", "run_id", "created_at"):
                licence_rows[name].append(row[name])
            licence_rows["updated_at"].append(row["recorded_at"])
            for name in _CONTENT_COLUMNS:
                licence_rows[name].append(content[name])
            for name in ("issue_date", "valid_from", "valid_to"):
                value = content[name]
                licence_rows[name].append(dt.date.fromisoformat(value) if value else None)
        version_rows = {
            name: [row[name] for row in rows]
            for name in (
                "license_base",
                "version",
                "license_id",
                "content_hash",
                "source_id",
                "run_id",
                "recorded_at",
            )
        }
        version_rows["content"] = [JSONText(row["content"]) for row in rows]
        version_rows["signed"] = [row["batch_id"] is not None for row in rows]
        signed = [row for row in rows if row["batch_id"] is not None]
        batches = {row["batch_id"]: row for row in signed}
        with store._engine.begin() as conn:
            bulk_insert(conn, licenses, licence_rows)
            bulk_insert(conn, license_versions, version_rows)
            bulk_insert(
                conn,
                signature_batches,
                {
                    name: [row[name] for row in batches.values()]
                    for name in (
                        "batch_id",
                        "department",
                        "key_id",
                        "algorithm",
                        "root",
                        "signature",
                        "leaf_count",
                        "signed_at",
                    )
                },
            )
            bulk_insert(
                conn,
                license_proofs,
                {
                    "license_base": [row["license_base"] for row in signed],
                    "version": [row["version"] for row in signed],
                    "batch_id": [row["batch_id"] for row in signed],
                    "leaf_index": [row["leaf_index"] for row in signed],
                    "proof": [JSONText(row["proof"]) for row in signed],
                },
            )
        return time.perf_counter() - started


_CONTENT_COLUMNS = tuple(  # the licenses columns read from the content, dates apart
    name
    for name in LICENSE_COLUMNS
    if name not in ("license_id", "version", "updated_at", "issue_date", "valid_from", "valid_to")
)
_LICENSE_COLUMNS = (
    "license_base",
    "license_id",
    "sequence",
    "version",
    "content_hash",
    "source_id",
    "run_id",
    "created_at",
    "updated_at",
    *_CONTENT_COLUMNS,
    "issue_date",
    "valid_from",
    "valid_to",
)


def run(backend: str, changes: int, deployment: Deployment, regenerate: bool) -> Result:
    work = VAR / f"run-{backend}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if backend == "sqlite":
        source = sqlite_county(changes, deployment, regenerate)
        shutil.copy(source, work / "county.db")
        urls = {
            name: f"sqlite:///{work / name}.db" for name in ("county", "city", "province", "direct")
        }
    else:
        template = postgres_county(changes, deployment, regenerate)
        urls = {}
        for name in ("county", "city", "province", "direct"):
            database = f"govx_bench_replicate_{name}_run"
            _psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            if name == "county":
                _psql(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
            else:
                _psql(f'CREATE DATABASE "{database}"')
            urls[name] = _pg_url(database)
    province = _node(deployment, work / "province", urls["province"], PROVINCE, None)
    province.server = Server(urls["province"], province.home)
    servers = [province.server]
    try:
        province.server.wait_ready()
        city = _node(deployment, work / "city", urls["city"], CITY, province)
        city.server = Server(urls["city"], city.home)
        servers.append(city.server)
        city.server.wait_ready()
        county = _node(deployment, work / "county", urls["county"], COUNTY, city)
        to_city, to_province = _link(county, city), _link(city, province)

        print(f"[{backend}] replicating {changes:,} changes county -> city -> province")
        started = time.perf_counter()
        first = _hop(county, to_city, deployment)
        second = _hop(city, to_province, deployment)
        replication_s = time.perf_counter() - started
        for name, hop in (("county -> city", first), ("city -> province", second)):
            print(f"  {name}: {_hop_line(hop)}")
        print(f"  end to end: {replication_s:.1f} s")

        # the baseline: the county's packages again (the pushed ones were deleted), loaded directly
        with LicenseStore(urls["county"], deployment=deployment) as store:
            with store._engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM exchange_outbox")
            make_packages(store, county.node, deployment, county.keyring, county.home)
        files = [path.with_suffix(".parquet") for path in pending_packages(county.home / "outbox")]
        print(f"[{backend}] direct bulk load of the same {len(files)} Parquet files")
        direct_s = direct_load(files, urls["direct"])
        equal = _state(urls["province"]) == _state(urls["county"]) == _state(urls["direct"])
    finally:
        for server in servers:
            server.stop()
    return Result(
        backend,
        changes,
        direct_s,
        replication_s,
        {"county -> city": first, "city -> province": second},
        equal,
    )


def _hop_line(hop: Hop) -> str:
    rate = hop.applied / hop.delivery_s if hop.delivery_s else 0.0
    verdict = "PASS" if rate >= TARGET_RATE else "MISS"
    return (
        f"packaged {hop.packaged:,} in {hop.packaging_s:.1f} s "
        f"({hop.packaged / max(hop.packaging_s, 1e-9):,.0f}/s); applied {hop.applied:,} in "
        f"{hop.delivery_s:.1f} s ({rate:,.0f}/s, target >= {TARGET_RATE:,}) {verdict}"
    )


def report(results: list[Result]) -> None:
    print()
    for result in results:
        n = result.changes
        print(f"== {result.backend}: {n:,} license changes ==")
        print(
            f"  direct bulk load:        {result.direct_s:8.1f} s  "
            f"{n / result.direct_s:10,.0f} changes/s"
        )
        print(
            f"  replication end to end:  {result.replication_s:8.1f} s  "
            f"{n / result.replication_s:10,.0f} changes/s"
        )
        ok = "PASS" if result.ratio >= TARGET_RATIO else "MISS"
        print(f"  ratio replication/direct: {result.ratio:.2f}x (target >= {TARGET_RATIO}x) {ok}")
        for name, hop in result.hops.items():
            print(f"  {name}: {_hop_line(hop)}")
        print(f"  province == county == direct load, row by row: {'yes' if result.equal else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--regenerate", action="store_true", help="make the county data again")
    parser.add_argument(
        "--prepare", action="store_true", help="only generate the county data (kept for runs)"
    )
    args = parser.parse_args(argv)
    deployment = load_deployment(REPO / "config")
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    if args.prepare:
        for backend in backends:
            county = sqlite_county if backend == "sqlite" else postgres_county
            county(args.changes, deployment, args.regenerate)
        return 0
    results = [run(backend, args.changes, deployment, args.regenerate) for backend in backends]
    report(results)
    return 0 if all(result.equal for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
