"""Five real exchange nodes on loopback ports: the province, two cities and two counties.

A :class:`FiveNodeNetwork` builds, under one base directory, the smallest tree that has every
kind of edge of the province–city–county exchange (``docs/replication.md``)::

    440000 广东省 (province)
    ├── 440600 佛山市 ── 440604 禅城区
    └── 440800 湛江市 ── 440802 赤坎区

Each node is what an operator would set up on its own host: its own ``$GOVX_HOME`` (keys,
outbox, lake, audit key), its own store (a SQLite file, or a PostgreSQL database per node when
the network is given an admin URL), its own configuration, and its own ``govx serve`` process on
a loopback port. ``govx demo`` (its last step) and ``tests/e2e/test_five_nodes.py`` use it.

**Configuration.** Every node gets a copy of the deployment configuration in which
``sources.yaml`` keeps only the sources whose department is in the node's region, so department
data enters the exchange at the node of its department's region: the provincial household and
business registries at 440000, Foshan's marriage registry at 440600, Chancheng's birth
certificates at 440604 (南海区 440605 has no node here, so its source is left out). Every copy
also gets the newborn screening report, a license type with ``sharing: not_shared``, and a
matter asking for it with the birth certificate; the Chikan node's copy gets the Chikan health
bureau's source (:mod:`exchange.demo.chikan`), a ``files`` source over a drop folder the network
writes with :meth:`FiveNodeNetwork.drop_chikan_births`.

**Wiring** (:meth:`FiveNodeNetwork.build`), parent by parent, as ``docs/replication.md`` tells
operators, through the same functions the commands call:

- ``govx node init --region R --parent-url <parent>`` (:func:`exchange.nodes.init_node`);
- at the parent, ``govx clients add --kind node --region <child>`` (granted every license type:
  the sharing type decides what crosses) and ``govx node trust`` with the child's public key;
- at the child, ``govx node connect`` (:func:`exchange.node_client.save_parent_credentials`;
  checked against the running parent by :meth:`FiveNodeNetwork.wait_started`);
- an intake client at every node, granted 新生儿入户登记 and the screening matter, for lookups
  (at 440802 the Chikan health bureau's own window, which may see the screening reports).

The department systems come from :mod:`exchange.demo` (seeded); the birth-certificate REST API
of the Chancheng bureau runs in this process while the network is started. Syncs, packaging
and pushes run the real CLI in a subprocess per call (``govx sync``, ``govx exchange package``,
``govx exchange push``) with the node's environment, so a test can kill them.

A county's licenses reach the province in two pushes: the county pushes to its city, whose
store then holds new versions, and the city's push carries them on (:meth:`replicate` does
both levels, counties first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

import yaml

from exchange.demo.chikan import (
    BIRTH_MATERIAL_MATTER,
    CHIKAN_DATASET_CONFIG,
    CHIKAN_SOURCE,
    CHIKAN_SOURCE_CONFIG,
    CHIKAN_SPEC,
    SCREENING_TYPE_CONFIG,
    chikan_birth_rows,
    write_chikan_drop,
)

if TYPE_CHECKING:
    import requests

    from exchange.config import Deployment
    from exchange.demo.rest_simulator import Simulator
    from license_store.audit import AuditEntry

__all__ = [
    "CHANCHENG",
    "CHIKAN",
    "FOSHAN",
    "NETWORK_MATTERS",
    "NEWBORN_MATTER",
    "NODES",
    "PROVINCE",
    "WINDOW_DEPARTMENTS",
    "ZHANJIANG",
    "CommandResult",
    "FiveNodeNetwork",
    "NetworkError",
    "NetworkNode",
    "govx_command",
]

PROVINCE, FOSHAN, ZHANJIANG, CHANCHENG, CHIKAN = "440000", "440600", "440800", "440604", "440802"
NODES: tuple[tuple[str, str | None], ...] = (
    (PROVINCE, None),
    (FOSHAN, PROVINCE),
    (ZHANJIANG, PROVINCE),
    (CHANCHENG, FOSHAN),
    (CHIKAN, ZHANJIANG),
)
"""``(region, parent)`` of the five nodes, parents first."""
NEWBORN_MATTER = "11440600MB20125487-XSE-001"  # 新生儿入户登记 (config/matters.yaml)
NETWORK_MATTERS = (NEWBORN_MATTER, BIRTH_MATERIAL_MATTER["code"])
"""The matters every node's intake client handles."""
WINDOW_DEPARTMENTS = {CHIKAN: "chikan_health"}
"""The department operating a node's intake window, where one is named: the Chikan health
bureau's window may read its own ``not_shared`` screening reports (``license_store.access``)."""

STARTUP_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 300.0
_NODE_ENV_PREFIXES = ("GOVX_", "AIRFLOW_CONN_")


class NetworkError(RuntimeError):
    """A node did not start, or a command at a node failed; the message says which and why."""


@dataclass(frozen=True)
class CommandResult:
    """What a ``govx`` command at a node printed, and its exit code."""

    region: str
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        output = (self.stdout + self.stderr).strip()
        return f"govx {' '.join(self.args)} at {self.region} exited {self.returncode}: {output}"


@dataclass
class NetworkNode:
    """One node: its region, its data directory, configuration, store and API server."""

    region: str
    name: str
    parent: str | None
    home: Path
    config: Path
    db_url: str
    """The node's database: its license store and its sync state (two version tables)."""
    port: int
    sources: tuple[str, ...] = ()
    """The sources configured at this node (those of departments in its region)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The node's API on its loopback port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def outbox(self) -> Path:
        """Where the node's packages for its parent wait."""
        return self.home / "outbox"

    @property
    def inbox(self) -> Path:
        """Where the node's API keeps a package from a child while it checks and applies it."""
        return self.home / "inbox"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def env(self) -> dict[str, str]:
        """The environment of the node's processes: this process's, without any ``GOVX_*`` or
        ``AIRFLOW_CONN_*`` variable, plus the node's data directory, configuration and store.
        Its department connections are in its ``$GOVX_HOME/.env``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_NODE_ENV_PREFIXES)}
        env.update(
            GOVX_HOME=str(self.home),
            GOVX_CONFIG=str(self.config),
            GOVX_LICENSE_DB_URL=self.db_url,
            GOVX_EXCHANGE_DB_URL=self.db_url,
            COLUMNS="200",
        )
        return env


def govx_command() -> list[str]:
    """The ``govx`` command beside this interpreter (``python -m exchange.cli`` without it)."""
    script = Path(sys.executable).with_name("govx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exchange.cli"]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _dump_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _comparable(value: Any) -> Any:
    """A column value that compares and hashes: JSON values as canonical text."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


class FiveNodeNetwork:
    """Five nodes under ``base``; see the module docstring. Use as a context manager, or call
    :meth:`build`, :meth:`start` and, at the end, :meth:`close`.

    ``postgres_admin_url`` (an admin connection to a PostgreSQL server) gives every node its own
    new database there, dropped again by :meth:`close`; without it every node has SQLite files
    in its data directory. ``persons`` sizes the demo department systems
    (:func:`exchange.demo.generate_department_systems`), ``chikan_births`` the Chikan bureau's
    first drop.
    """

    def __init__(
        self,
        base: Path,
        *,
        config: Path | None = None,
        postgres_admin_url: str | None = None,
        persons: int = 300,
        chikan_births: int = 200,
    ) -> None:
        from exchange.settings import config_dir

        self.base = base.expanduser().resolve()
        self.source_config = (config or config_dir()).expanduser().resolve()
        self.postgres_admin_url = postgres_admin_url
        self.persons = persons
        self.chikan_births = chikan_births
        self.nodes: dict[str, NetworkNode] = {}
        self.node_secrets: dict[str, str] = {}  # child region -> its node client's secret
        self.intake_clients: dict[str, tuple[str, str]] = {}  # region -> (client id, secret)
        self.chikan_rows: list[dict[str, Any]] = []
        self._databases: list[str] = []
        self._api: Simulator | None = None
        self._logs: dict[str, IO[bytes]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.build().start()
        except BaseException:
            self.close()  # no server or database left behind
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def node(self, region: str) -> NetworkNode:
        """The node of ``region``; ``KeyError`` names the five."""
        try:
            return self.nodes[region]
        except KeyError:
            raise KeyError(f"no node {region}; the nodes are {', '.join(self.nodes)}") from None

    def children(self, region: str) -> list[NetworkNode]:
        """The nodes whose parent is ``region``."""
        return [node for node in self.nodes.values() if node.parent == region]

    def build(self) -> Self:
        """Write every node's configuration, store, identity, clients and keys, and the
        department systems. Nothing runs yet (:meth:`start`)."""
        from exchange.config import load_deployment

        if self.nodes:
            raise NetworkError(f"the network under {self.base} is built already")
        if self.base.exists() and any(self.base.iterdir()):
            raise NetworkError(f"{self.base} is not empty: a network is built in a new directory")
        self.base.mkdir(parents=True, exist_ok=True)
        deployment = load_deployment(self.source_config)
        ports = _free_ports(len(NODES))
        for (region, parent), port in zip(NODES, ports, strict=True):
            home = self.base / region
            home.mkdir()
            config = self._write_config(region, home / "config", deployment)
            node_deployment = load_deployment(config)
            self.nodes[region] = NetworkNode(
                region=region,
                name=deployment.region_by_code[region].name,
                parent=parent,
                home=home,
                config=config,
                db_url=self._create_database(region, home),
                port=port,
                sources=tuple(source.id for source in node_deployment.sources),
            )
        for region, _parent in NODES:
            self._init_node(self.nodes[region])
        self._write_departments()
        return self

    def start(self, *, wait: bool = True) -> Self:
        """Start the department API and every node's ``govx serve`` (together); with ``wait``,
        :meth:`wait_started` too. Without it, syncs (which need no server) can run while the
        servers start."""
        from exchange.demo import start_department_api

        if self._api is None:
            self._api = start_department_api(self.base / "departments")
            self._write_connections()
        for node in self.nodes.values():
            if not node.running:
                self._spawn(node)
        if wait:
            self.wait_started()
        return self

    def wait_started(self) -> None:
        """Wait until every node answers, and check each child's credentials at its parent
        (what ``govx node connect`` checks); :class:`NetworkError` if one does not."""
        for node in self.nodes.values():
            self._wait_serving(node)
        for node in self.nodes.values():
            if node.parent is not None:
                self._check_credentials(node)

    def close(self) -> None:
        """Stop every server and the department API; drop the PostgreSQL databases."""
        for node in self.nodes.values():
            self.stop(node.region)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._databases and self.postgres_admin_url is not None:
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool

            engine = sa.create_engine(
                self.postgres_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
            )
            try:
                with engine.connect() as conn:
                    for name in self._databases:
                        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            finally:
                engine.dispose()
            self._databases.clear()

    # -- building -------------------------------------------------------------------------------

    def _write_config(self, region: str, target: Path, deployment: Deployment) -> Path:
        """The node's copy of the configuration (see the module docstring)."""
        shutil.copytree(self.source_config, target)
        in_region = {d.id for d in deployment.departments if d.region == region}
        sources = _load_yaml(target / "sources.yaml")
        kept = [s for s in sources.get("sources") or [] if s.get("department") in in_region]
        if region == CHIKAN:
            kept.append(CHIKAN_SOURCE_CONFIG)
            datasets = _load_yaml(target / "datasets.yaml")
            datasets["datasets"] = [*(datasets.get("datasets") or []), CHIKAN_DATASET_CONFIG]
            _dump_yaml(target / "datasets.yaml", datasets)
        _dump_yaml(target / "sources.yaml", {"sources": kept})
        types = _load_yaml(target / "license_types.yaml")
        types["license_types"] = [*(types.get("license_types") or []), SCREENING_TYPE_CONFIG]
        _dump_yaml(target / "license_types.yaml", types)
        matters = _load_yaml(target / "matters.yaml")
        matters["matters"] = [*(matters.get("matters") or []), BIRTH_MATERIAL_MATTER]
        _dump_yaml(target / "matters.yaml", matters)
        return target

    def _create_database(self, region: str, home: Path) -> str:
        """The node's database URL: a new PostgreSQL database, or a SQLite file in ``home``."""
        if self.postgres_admin_url is None:
            return f"sqlite:///{home / 'govx.db'}"
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        name = f"govx_node_{region}_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(
            self.postgres_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        try:
            with engine.connect() as conn:
                conn.execute(
                    sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
                )
        finally:
            engine.dispose()
        self._databases.append(name)
        return (
            make_url(self.postgres_admin_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )

    def _init_node(self, node: NetworkNode) -> None:
        """``govx node init`` at the node; at its parent ``govx clients add --kind node`` and
        ``govx node trust``; at the node ``govx node connect`` (unchecked until :meth:`start`);
        an intake client for lookups."""
        from exchange.config import load_deployment
        from exchange.node_client import save_parent_credentials
        from exchange.nodes import init_node, trust_node
        from license_store.clients import ClientRegistry
        from license_store.signing import KeyRing
        from license_store.store import LicenseStore

        deployment = load_deployment(node.config)
        with LicenseStore(node.db_url) as store:
            store.upgrade()
        parent = self.nodes[node.parent] if node.parent is not None else None
        identity = init_node(
            node.home, deployment, node.region, parent_url=parent.url if parent else None
        )
        if parent is not None:
            with ClientRegistry(parent.db_url) as registry:
                client, secret = registry.add(
                    name=f"{node.name}节点",
                    kind="node",
                    client_id=f"node-{node.region}",
                    region=node.region,
                    license_types=[t.id for t in deployment.license_types],
                )
            public_pem = KeyRing(node.home / "keys").public_path(identity.key_name).read_bytes()
            trust_node(parent.home, node.region, public_pem)
            save_parent_credentials(node.home, client.client_id, secret)
            self.node_secrets[node.region] = secret
        types: list[str] = []
        for code in NETWORK_MATTERS:
            for material in deployment.matter_by_code[code].materials:
                if material.license_type and material.license_type not in types:
                    types.append(material.license_type)
        department = WINDOW_DEPARTMENTS.get(node.region)
        with ClientRegistry(node.db_url) as registry:
            window, window_secret = registry.add(
                name=deployment.department_by_id[department].name + "窗口"
                if department
                else f"{node.name}政务服务中心",
                kind="intake",
                department=department,
                region=node.region,
                matters=list(NETWORK_MATTERS),
                license_types=types,
            )
        self.intake_clients[node.region] = (window.client_id, window_secret)

    def _write_departments(self) -> None:
        """The demo department systems and the Chikan bureau's first drop."""
        from exchange.demo import generate_department_systems

        generate_department_systems(self.base / "departments", persons=self.persons)
        self.drop_chikan_births(chikan_birth_rows(self.chikan_births), "20241231")

    def drop_chikan_births(self, rows: list[dict[str, Any]], label: str) -> Path:
        """Drop ``rows`` (:func:`exchange.demo.chikan.chikan_birth_rows`) as a new CSV file in the
        Chikan bureau's folder, for the next ``govx sync chikan_birth_certificates`` there."""
        path = write_chikan_drop(self.base / "departments" / CHIKAN_SPEC.conn_id, rows, label)
        known = {row["record_id"]: index for index, row in enumerate(self.chikan_rows)}
        for row in rows:
            if row["record_id"] in known:
                self.chikan_rows[known[row["record_id"]]] = row
            else:
                self.chikan_rows.append(row)
        return path

    def _write_connections(self) -> None:
        """Each node's department connections in its ``$GOVX_HOME/.env``."""
        from dotenv import set_key

        from exchange.demo import connection_env
        from exchange.demo.systems import DemoSystem

        assert self._api is not None
        departments = self.base / "departments"
        systems = [
            DemoSystem(
                conn_id=spec.conn_id,
                source_id=spec.source_id,
                url=f"sqlite:///{departments / f'{spec.store_id}.db'}",
                table=spec.table.name,
                rows=0,
                kind=spec.kind,
                drop_dir=departments / spec.conn_id if spec.kind == "files" else None,
            )
            for spec in _system_specs()
        ]
        env = connection_env(systems, api_url=self._api.url)
        for node in self.nodes.values():
            path = node.home / ".env"
            path.touch()
            for source_id in node.sources:
                conn_id = _conn_id(node, source_id)
                variable = f"AIRFLOW_CONN_{conn_id.upper()}"
                set_key(path, variable, env[variable], quote_mode="always")

    # -- servers --------------------------------------------------------------------------------

    def _spawn(self, node: NetworkNode) -> None:
        node.log_path = self.base / "logs" / f"{node.region}-serve.log"
        node.log_path.parent.mkdir(exist_ok=True)
        if node.region not in self._logs:
            self._logs[node.region] = node.log_path.open("ab")
        node.process = subprocess.Popen(
            [*govx_command(), "serve", "--port", str(node.port)],
            cwd=node.home,
            env=node.env(),
            stdout=self._logs[node.region],
            stderr=subprocess.STDOUT,
        )

    def _wait_serving(self, node: NetworkNode) -> None:
        import requests

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with suppress(requests.RequestException):
                if requests.get(f"{node.url}/healthz", timeout=2).status_code == 200:
                    return
            if node.process is None or node.process.poll() is not None:
                raise NetworkError(f"node {node.region} did not start: {self.log_tail(node)}")
            if time.monotonic() > deadline:
                self.kill(node.region)
                raise NetworkError(
                    f"node {node.region} did not answer in {STARTUP_TIMEOUT_S:.0f} s: "
                    f"{self.log_tail(node)}"
                )
            time.sleep(0.1)

    def _check_credentials(self, node: NetworkNode) -> None:
        from exchange.node_client import ParentError, load_parent_client

        client = load_parent_client(node.home)
        if client is None:
            raise NetworkError(f"node {node.region} has no credentials for its parent")
        try:
            client.check_credentials()
        except ParentError as error:
            raise NetworkError(f"node {node.region}: {error}") from None
        finally:
            client.close()

    def log_tail(self, node: NetworkNode, lines: int = 30) -> str:
        """The last ``lines`` lines of the node's server log."""
        if node.log_path is None or not node.log_path.exists():
            return "(no log)"
        text = node.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, region: str) -> None:
        """Stop the node's server gracefully (SIGTERM), if it runs."""
        node = self.node(region)
        if node.process is None:
            return
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        node.process = None

    def kill(self, region: str) -> None:
        """Kill the node's server at once (SIGKILL): requests in flight die with it."""
        node = self.node(region)
        if node.process is None:
            return
        node.process.kill()
        node.process.wait()
        node.process = None

    def restart(self, region: str) -> None:
        """Start the node's server again on its port (after :meth:`stop` or :meth:`kill`)."""
        node = self.node(region)
        if node.running:
            self.stop(region)
        self._spawn(node)
        self._wait_serving(node)

    # -- commands -------------------------------------------------------------------------------

    def popen(self, region: str, *args: str) -> subprocess.Popen[str]:
        """Start ``govx <args>`` at the node (its environment, its data directory)."""
        node = self.node(region)
        return subprocess.Popen(
            [*govx_command(), *args],
            cwd=node.home,
            env=node.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def govx(self, region: str, *args: str, check: bool = True) -> CommandResult:
        """Run ``govx <args>`` at the node; :class:`NetworkError` if it fails and ``check``."""
        return self._wait(region, args, self.popen(region, *args), check)

    def _wait(
        self, region: str, args: Sequence[str], process: subprocess.Popen[str], check: bool
    ) -> CommandResult:
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        result = CommandResult(region, tuple(args), process.returncode, stdout, stderr)
        if check and not result.ok:
            raise NetworkError(str(result))
        return result

    def govx_at(
        self, commands: Iterable[tuple[str, Sequence[str]]], *, check: bool = True
    ) -> list[CommandResult]:
        """Run several ``(region, args)`` commands at once, each at its node; their results in
        order. Two commands at one node run one after the other."""
        by_node: dict[str, list[Sequence[str]]] = {}
        for region, args in commands:
            by_node.setdefault(region, []).append(args)
        results: dict[tuple[str, int], CommandResult] = {}
        running = {region: 0 for region in by_node}
        processes = {region: self.popen(region, *queue[0]) for region, queue in by_node.items()}
        while processes:
            for region, process in list(processes.items()):
                if process.poll() is None:
                    continue
                index = running[region]
                results[(region, index)] = self._wait(
                    region, by_node[region][index], process, check=False
                )
                if index + 1 < len(by_node[region]):
                    running[region] = index + 1
                    processes[region] = self.popen(region, *by_node[region][index + 1])
                else:
                    del processes[region]
            time.sleep(0.05)
        ordered = [
            results[(region, i)] for region, queue in by_node.items() for i in range(len(queue))
        ]
        failed = [result for result in ordered if not result.ok]
        if check and failed:
            raise NetworkError("; ".join(str(result) for result in failed))
        return ordered

    def sync(self, region: str, source_id: str, *, check: bool = True) -> CommandResult:
        """``govx sync <source>`` at the node (which packages the new licenses for its parent)."""
        return self.govx(region, "sync", source_id, check=check)

    def sync_all(self, regions: Iterable[str] | None = None) -> list[CommandResult]:
        """Sync every source configured at each node of ``regions`` (default: all), the nodes in
        parallel."""
        chosen = list(regions) if regions is not None else list(self.nodes)
        return self.govx_at(
            (region, ("sync", source_id))
            for region in chosen
            for source_id in self.node(region).sources
        )

    def package(self, region: str, *, check: bool = True) -> CommandResult:
        """``govx exchange package`` at the node."""
        return self.govx(region, "exchange", "package", check=check)

    def push(self, region: str, *, check: bool = True) -> CommandResult:
        """``govx exchange push`` at the node: package what is new, deliver to the parent."""
        return self.govx(region, "exchange", "push", check=check)

    def replicate(self) -> list[CommandResult]:
        """Push every county, then every city: afterwards the province holds what the counties
        and cities have (and may share)."""
        counties = [r for r, p in NODES if p is not None and self.node(p).parent is not None]
        cities = [r for r, p in NODES if p is not None and r not in counties]
        results = self.govx_at((region, ("exchange", "push")) for region in counties)
        return results + self.govx_at((region, ("exchange", "push")) for region in cities)

    # -- talking to a node ----------------------------------------------------------------------

    def token(self, region: str, client_id: str, secret: str) -> str:
        """A bearer token from the node's token endpoint."""
        import requests

        response = requests.post(
            f"{self.node(region).url}/v1/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
            timeout=10,
        )
        if response.status_code != 200:
            raise NetworkError(
                f"node {region} refused a token to {client_id}: {response.status_code}"
            )
        return str(response.json()["access_token"])

    def lookup(
        self, region: str, holder_id: str, case_id: str, *, matter: str = NEWBORN_MATTER
    ) -> requests.Response:
        """Ask the node for the holder's licenses for ``matter``, as its intake window does."""
        import requests

        client_id, secret = self.intake_clients[region]
        return requests.get(
            f"{self.node(region).url}/v1/holders/{holder_id}/licenses",
            params={"matter": matter},
            headers={
                "Authorization": f"Bearer {self.token(region, client_id, secret)}",
                "X-Case-Id": case_id,
            },
            timeout=30,
        )

    def post_package(
        self, region: str, data: bytes, manifest: bytes | dict[str, Any]
    ) -> requests.Response:
        """POST a package to the node's parent as the node's own client, the way a push sends
        it (a test's way to deliver packages itself: twice, out of order, tampered with)."""
        import base64

        import requests

        from exchange.outbox import MANIFEST_HEADER, PARQUET_TYPE

        node = self.node(region)
        if node.parent is None:
            raise NetworkError(f"node {region} is the province: it has no parent")
        if isinstance(manifest, dict):
            manifest = json.dumps(manifest, ensure_ascii=False).encode("utf-8")
        parent = self.node(node.parent)
        bearer = self.token(node.parent, f"node-{region}", self.node_secrets[region])
        return requests.post(
            f"{parent.url}/v1/exchange/packages",
            data=data,
            headers={
                "Authorization": f"Bearer {bearer}",
                MANIFEST_HEADER: base64.urlsafe_b64encode(manifest).decode("ascii"),
                "Content-Type": PARQUET_TYPE,
            },
            timeout=120,
        )

    # -- reading a node's store -----------------------------------------------------------------

    def rows(self, region: str, table: str = "licenses") -> list[tuple[Any, ...]]:
        """Every row of one of the node's license-store tables, on every column but the local
        ``id``, sorted; JSON values as canonical text (so rows compare between nodes)."""
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        from license_store.models import metadata

        model = metadata.tables[table]
        columns = [column for column in model.columns if column.name != "id"]
        engine = sa.create_engine(self.node(region).db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                found = conn.execute(sa.select(*columns)).all()
        finally:
            engine.dispose()
        return sorted((tuple(_comparable(value) for value in row) for row in found), key=repr)

    def column_names(self, table: str = "licenses") -> list[str]:
        """The columns :meth:`rows` returns for ``table``, in order."""
        from license_store.models import metadata

        return [c.name for c in metadata.tables[table].columns if c.name != "id"]

    def license_count(self, region: str, *, type_code: str | None = None) -> int:
        """How many licenses the node's store holds (of one license type code, if given)."""
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        from license_store.models import licenses

        statement = sa.select(sa.func.count()).select_from(licenses)
        if type_code is not None:
            statement = statement.where(licenses.c.type_code == type_code)
        engine = sa.create_engine(self.node(region).db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return int(conn.execute(statement).scalar_one())
        finally:
            engine.dispose()

    def received_datasets(self, region: str) -> dict[str, tuple[int, list[str]]]:
        """The curated datasets the node received from its children (dataset packages): dataset
        id -> (live rows, the regions the runs came from)."""
        from exchange.curated import CuratedDataset
        from exchange.state import ExchangeState

        node = self.node(region)
        found: dict[str, tuple[int, list[str]]] = {}
        with ExchangeState(node.db_url) as state:
            datasets = sorted(set(state.received_sources().values()))
            for dataset_id in datasets:
                curated = CuratedDataset(dataset_id, [], state, node.home / "lake")
                runs = state.committed_versions(curated.source_ids)
                origins = sorted({run.origin for run in runs if run.origin})
                found[dataset_id] = (curated.summary()["live"], origins)
        return found

    def audit_trail(self, region: str, holder_id: str, case_id: str) -> list[AuditEntry]:
        """The node's audit entries about the holder in the case, newest first."""
        from license_store.audit import AuditLog, key_file

        node = self.node(region)
        with AuditLog(node.db_url, key=key_file(node.home / "audit.key")) as trail:
            entries = trail.for_holder(holder_id)
        return [entry for entry in entries if entry.case_id == case_id]

    def chikan_holders(self) -> Iterator[str]:
        """The mothers of the Chikan bureau's births, in the order dropped."""
        seen: set[str] = set()
        for row in self.chikan_rows:
            if row["mother_id"] not in seen:
                seen.add(row["mother_id"])
                yield row["mother_id"]


def _system_specs() -> list[Any]:
    from exchange.demo.schema import SYSTEM_SPECS

    return [*SYSTEM_SPECS, CHIKAN_SPEC]


def _conn_id(node: NetworkNode, source_id: str) -> str:
    """The connection id the node's configuration gives ``source_id``."""
    if source_id == CHIKAN_SOURCE:
        return CHIKAN_SPEC.conn_id
    sources = _load_yaml(node.config / "sources.yaml")["sources"]
    return str(next(s["connection"] for s in sources if s["id"] == source_id))
