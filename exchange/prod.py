"""The production profile on one machine: Airflow on Celery workers, PostgreSQL, Redis, S3, the API.

``python -m exchange.prod up`` (``make prod-up``) starts, each as its own process group with its
log and pid file under ``$GOVX_HOME/prod``:

- an S3-compatible endpoint (``moto`` in server mode on a loopback port) and the lake's bucket;
- Airflow 3 with the CeleryExecutor: ``api-server``, ``scheduler``, ``dag-processor``,
  ``triggerer`` and ``GOVX_PROD_CELERY_WORKERS`` Celery workers (distinct hostnames, which the
  task instances record), the broker a dedicated Redis database, the metadata a dedicated
  PostgreSQL database;
- the intake API, ``govx serve --workers GOVX_PROD_API_WORKERS``, on the license store's
  PostgreSQL database.

Before that it creates the PostgreSQL databases that are missing, runs ``govx db upgrade``,
``airflow db migrate`` and ``govx pools --create`` (one Airflow pool per department system).
``python -m exchange.prod down`` (``make prod-down``) stops every process group it started
(SIGTERM, then SIGKILL after a grace period) and checks none is left; ``--drop-data``
also drops the databases, flushes the Redis database and removes the state.

Everything is configured through environment variables, read from an env file
(``config/prod.env.example`` is the documented template; the environment wins over the file).
The package code runs unchanged: only the store URLs differ from the embedded default. See
``docs/deploy.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["Profile", "down", "load_profile", "up", "worker_hostname"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = REPO / "config" / "prod.env.example"
BIN = Path(sys.executable).parent
STOP_ORDER = (
    "intake-api",
    "celery-worker-*",
    "triggerer",
    "dag-processor",
    "scheduler",
    "api-server",
    "s3",
)
GRACE_S = 20.0


class ProfileError(RuntimeError):
    """The profile cannot start or stop; the message says what to fix."""


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for the Celery workers: ``GOVX_WORKER_HOSTNAME``.

    Two workers on one machine would otherwise record the same host name on their task
    instances. Elsewhere the host's FQDN, as Airflow's default.
    """
    name = os.environ.get("GOVX_WORKER_HOSTNAME")
    return name or socket.getfqdn()


@dataclass(frozen=True)
class Profile:
    """The profile's settings, all read from the environment (after the env file)."""

    env: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(name) or default

    @property
    def home(self) -> Path:
        return Path(self.get("GOVX_HOME", "var")).expanduser().resolve()

    @property
    def state_dir(self) -> Path:
        return Path(self.get("GOVX_PROD_DIR") or self.home / "prod").resolve()

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.get('GOVX_PROD_AIRFLOW_PORT', '8080')}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.get('GOVX_PROD_API_PORT', '8000')}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.get('GOVX_PROD_S3_PORT', '9000')}"

    @property
    def workers(self) -> int:
        return int(self.get("GOVX_PROD_CELERY_WORKERS", "2"))

    @property
    def databases(self) -> dict[str, str]:
        """Role -> SQLAlchemy URL of each PostgreSQL database the profile owns."""
        return {
            "airflow": self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            "licenses": self.env["GOVX_LICENSE_DB_URL"],
            "exchange": self.env["GOVX_EXCHANGE_DB_URL"],
        }


REQUIRED = (
    "GOVX_LICENSE_DB_URL",
    "GOVX_EXCHANGE_DB_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
)


def load_profile(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Profile:
    """The environment over the env file (``GOVX_PROD_ENV_FILE`` or the documented example)."""
    from dotenv import dotenv_values

    base = dict(os.environ if environ is None else environ)
    path = env_file or Path(base.get("GOVX_PROD_ENV_FILE") or DEFAULT_ENV_FILE)
    if not path.is_file():
        raise ProfileError(f"env file {path} not found")
    merged = {k: v for k, v in dotenv_values(path).items() if v is not None}
    merged.update(base)
    missing = [name for name in REQUIRED if not merged.get(name)]
    if missing:
        raise ProfileError(f"{path}: set {', '.join(missing)}")
    return Profile(merged)


# --- the environment of every process ---------------------------------------------------------


def _secrets(profile: Profile) -> dict[str, str]:
    """Airflow's keys: from the environment, else made once and kept in ``secrets.json`` (0600).

    Every component must share them (the JWT secret signs the workers' execution API tokens).
    """
    from cryptography.fernet import Fernet

    path = profile.state_dir / "secrets.json"
    kept: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    made = {
        "AIRFLOW__API_AUTH__JWT_SECRET": kept.get("jwt") or secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": kept.get("secret") or secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": kept.get("fernet") or Fernet.generate_key().decode(),
    }
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(
            json.dumps(
                {
                    "jwt": made["AIRFLOW__API_AUTH__JWT_SECRET"],
                    "secret": made["AIRFLOW__API__SECRET_KEY"],
                    "fernet": made["AIRFLOW__CORE__FERNET_KEY"],
                }
            )
        )
    return {name: profile.get(name) or value for name, value in made.items()}


def process_env(profile: Profile) -> dict[str, str]:
    """What every process of the profile sees: the profile's settings plus Airflow's wiring."""
    env = dict(profile.env)
    home = profile.home
    env.update(
        {
            "GOVX_HOME": str(home),
            "GOVX_CONFIG": str(Path(profile.get("GOVX_CONFIG", str(REPO / "config"))).resolve()),
            "AIRFLOW_HOME": str(profile.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{profile.airflow_url}/execution/",
            "AIRFLOW__API__BASE_URL": profile.airflow_url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                profile.airflow_home / "passwords.json"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": (
                f"{profile.get('GOVX_PROD_AIRFLOW_USER', 'admin')}:admin"
            ),
            "AWS_ENDPOINT_URL": profile.get("AWS_ENDPOINT_URL", profile.s3_url),
            **_secrets(profile),
        }
    )
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("GOVX_LOG_FORMAT", "json")  # govx serve's and govx's logs, for a log shipper
    env.setdefault("AWS_ACCESS_KEY_ID", "govx")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "govx-secret")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


# --- databases, broker, bucket -----------------------------------------------------------------


def _admin_engine(url: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    admin = sa.engine.make_url(url).set(database="postgres")
    return sa.create_engine(
        admin, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )


def _database_name(url: str) -> str:
    import sqlalchemy as sa

    name = sa.engine.make_url(url).database
    if not name:
        raise ProfileError(f"{_safe(url)} names no database")
    return name


def _safe(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def create_databases(profile: Profile) -> list[str]:
    """Create the profile's PostgreSQL databases that are missing; returns those created."""
    import sqlalchemy as sa

    created = []
    for url in profile.databases.values():
        if sa.engine.make_url(url).get_backend_name() != "postgresql":
            raise ProfileError(f"the profile keeps its stores on PostgreSQL: {_safe(url)}")
        name = _database_name(url)
        engine = _admin_engine(url)
        try:
            with engine.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if not exists:
                    conn.execute(
                        sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
                    )
                    created.append(name)
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise ProfileError(f"PostgreSQL not reachable for {_safe(url)}: {reason}") from None
        finally:
            engine.dispose()
    return created


def drop_databases(profile: Profile) -> list[str]:
    """Drop the profile's PostgreSQL databases (``WITH (FORCE)``); returns their names."""
    import sqlalchemy as sa

    dropped = []
    for url in profile.databases.values():
        name = _database_name(url)
        engine = _admin_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                dropped.append(name)
        finally:
            engine.dispose()
    return dropped


def _redis(profile: Profile):
    import redis

    return redis.Redis.from_url(profile.env["AIRFLOW__CELERY__BROKER_URL"], socket_timeout=5)


def check_broker(profile: Profile) -> None:
    import redis

    try:
        _redis(profile).ping()
    except redis.RedisError as exc:
        raise ProfileError(f"Redis broker not reachable: {exc}") from None


def s3_filesystem(profile: Profile):
    """The lake's object store through pyarrow (the endpoint, keys and region of the profile)."""
    from pyarrow import fs

    env = process_env(profile)
    endpoint = env["AWS_ENDPOINT_URL"]
    return fs.S3FileSystem(
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        endpoint_override=endpoint.split("://", 1)[-1],
        scheme=endpoint.split("://", 1)[0],
        allow_bucket_creation=True,
    )


def lake_bucket(profile: Profile) -> str:
    return profile.get("GOVX_PROD_LAKE_BUCKET", "govx-lake")


# --- processes ---------------------------------------------------------------------------------


def _commands(profile: Profile) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name -> (argv, extra environment) of every long-running process, in start order."""
    airflow = str(BIN / "airflow")
    airflow_port = profile.airflow_url.rsplit(":", 1)[1]
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "s3": (
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", profile.s3_url.rsplit(":", 1)[1]],
            {},
        ),
        "api-server": (
            [
                airflow,
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                airflow_port,
                "--workers",
                profile.get("GOVX_PROD_AIRFLOW_API_WORKERS", "1"),
            ],
            {},
        ),
        "scheduler": ([airflow, "scheduler"], {}),
        "dag-processor": ([airflow, "dag-processor"], {}),
        "triggerer": ([airflow, "triggerer"], {}),
    }
    for index in range(1, profile.workers + 1):
        name = f"govx-worker-{index}"
        commands[f"celery-worker-{index}"] = (
            [
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                profile.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1"),
                "--skip-serve-logs",
            ],
            {
                "GOVX_WORKER_HOSTNAME": f"{name}.{socket.gethostname()}",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "exchange.prod.worker_hostname",
            },
        )
    commands["intake-api"] = (
        [
            str(BIN / "govx"),
            "serve",
            "--port",
            profile.api_url.rsplit(":", 1)[1],
            "--workers",
            profile.get("GOVX_PROD_API_WORKERS", "2"),
        ],
        {},
    )
    return commands


def _pid_dir(profile: Profile) -> Path:
    return profile.state_dir / "pids"


def _log_dir(profile: Profile) -> Path:
    return profile.state_dir / "logs"


def _group_alive(pgid: int) -> bool:
    """Does a process of the group live? Reaps the leader first when it is our exited child (a
    zombie still counts as a member of its group)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(profile: Profile) -> dict[str, int]:
    """Name -> process group id of the profile's processes that are still alive."""
    alive = {}
    folder = _pid_dir(profile)
    if folder.is_dir():
        for path in sorted(folder.glob("*.pid")):
            pgid = int(path.read_text().strip())
            if _group_alive(pgid):
                alive[path.stem] = pgid
    return alive


def _start(profile: Profile, name: str, argv: list[str], env: dict[str, str]) -> int:
    _log_dir(profile).mkdir(parents=True, exist_ok=True)
    _pid_dir(profile).mkdir(parents=True, exist_ok=True)
    with (_log_dir(profile) / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: down stops it and its children
        )
    (_pid_dir(profile) / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def _run(argv: list[str], env: dict[str, str], what: str, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ProfileError(f"{what} exited {result.returncode}:\n{tail}")


def _wait(what: str, ready, timeout_s: float, profile: Profile, names: list[str]) -> None:
    """Poll ``ready()`` until true; fail with the log tails if a process died or time ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused, a 503, a half-written file
            pass
        dead = [name for name in names if name not in running(profile)]
        if dead or time.monotonic() > deadline:
            tails = []
            for name in dead or names:
                log = _log_dir(profile) / f"{name}.log"
                lines = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
                tails.append(f"--- {name}.log\n" + "\n".join(lines))
            reason = f"{', '.join(dead)} exited" if dead else f"not ready after {timeout_s:.0f} s"
            raise ProfileError(f"{what}: {reason}\n" + "\n".join(tails))
        time.sleep(1.0)


def _http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=2).status_code == 200


def _airflow_healthy(profile: Profile) -> bool:
    import requests

    health = requests.get(f"{profile.airflow_url}/api/v2/monitor/health", timeout=2).json()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _worker_ready(profile: Profile, index: int) -> bool:
    log = _log_dir(profile) / f"celery-worker-{index}.log"
    return f"govx-worker-{index}@" in (text := log.read_text(errors="replace")) and (
        " ready." in text
    )


def up(profile: Profile, echo=print) -> dict[str, object]:
    """Start the profile (see the module docstring); returns what ``profile.json`` records."""
    started = time.monotonic()
    alive = running(profile)
    if alive:
        raise ProfileError(
            f"the profile already runs under {profile.state_dir} ({', '.join(alive)}): "
            "`make prod-down` first"
        )
    env = process_env(profile)
    check_broker(profile)
    created = create_databases(profile)
    echo(f"PostgreSQL databases ready (created: {', '.join(created) or 'none'})")
    profile.airflow_home.mkdir(parents=True, exist_ok=True)
    user = profile.get("GOVX_PROD_AIRFLOW_USER", "admin")
    password = profile.get("GOVX_PROD_AIRFLOW_PASSWORD") or secrets.token_urlsafe(12)
    passwords = profile.airflow_home / "passwords.json"
    passwords.touch(mode=0o600)
    passwords.write_text(json.dumps({user: password}) + "\n")
    setup_log = _log_dir(profile) / "setup.log"
    _run([str(BIN / "govx"), "db", "upgrade"], env, "govx db upgrade", setup_log)
    echo("govx db upgrade: exchange state and license store migrated")
    _run([str(BIN / "airflow"), "db", "migrate"], env, "airflow db migrate", setup_log)
    echo("airflow db migrate: metadata database migrated")
    # before the scheduler: a land task in a pool Airflow lacks would never be scheduled
    _run([str(BIN / "govx"), "pools", "--create"], env, "govx pools --create", setup_log)
    echo("govx pools --create: one Airflow pool per department system")

    commands = _commands(profile)
    try:
        for name, (argv, extra) in commands.items():
            _start(profile, name, argv, {**env, **extra})
            if name == "s3":  # the bucket before anything may write to it
                _wait("S3 endpoint", lambda: _http_ok(f"{profile.s3_url}/"), 60, profile, ["s3"])
                s3_filesystem(profile).create_dir(lake_bucket(profile))
        names = list(commands)
        _wait("Airflow", lambda: _airflow_healthy(profile), 180, profile, names)
        for index in range(1, profile.workers + 1):
            _wait(
                f"Celery worker {index}",
                lambda i=index: _worker_ready(profile, i),
                120,
                profile,
                names,
            )
        _wait("intake API", lambda: _http_ok(f"{profile.api_url}/readyz"), 60, profile, names)
    except BaseException:
        stop(profile)
        raise
    info: dict[str, object] = {
        "airflow_url": profile.airflow_url,
        "airflow_user": user,
        "airflow_password_file": str(passwords),
        "api_url": profile.api_url,
        "s3_endpoint": env["AWS_ENDPOINT_URL"],
        "lake_bucket": lake_bucket(profile),
        "lake_dir": env.get("GOVX_LAKE_DIR") or str(profile.home / "lake"),
        "processes": running(profile),
        "started_in_s": round(time.monotonic() - started, 1),
    }
    (profile.state_dir / "profile.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _stop_order(names: list[str]) -> list[str]:
    import fnmatch

    ordered = [n for pattern in STOP_ORDER for n in sorted(fnmatch.filter(names, pattern))]
    return ordered + [n for n in names if n not in ordered]


def stop(profile: Profile, grace_s: float = GRACE_S) -> dict[str, float]:
    """SIGTERM every process group of the profile, SIGKILL what outlives the grace period.

    All groups stop at once (a Celery worker finishes its running task first; Airflow's API
    server can linger after uvicorn has finished). Returns each group's seconds to stop
    (negative: killed). Raises if any is still alive afterwards.
    """
    pgids = {name: pgid for name, pgid in running(profile).items()}
    for name in _stop_order(list(pgids)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgids[name], signal.SIGTERM)
    started = time.monotonic()
    took: dict[str, float] = {}
    while len(took) < len(pgids) and time.monotonic() < started + grace_s:
        for name, pgid in pgids.items():
            if name not in took and not _group_alive(pgid):
                took[name] = round(time.monotonic() - started, 1)
        time.sleep(0.1)
    for name, pgid in pgids.items():
        if name not in took:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            took[name] = -round(time.monotonic() - started, 1)
    deadline = time.monotonic() + 10
    while running(profile) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = running(profile)
    if left:
        raise ProfileError(f"still running after SIGKILL: {left}")
    for path in _pid_dir(profile).glob("*.pid") if _pid_dir(profile).is_dir() else []:
        path.unlink()
    return took


def down(profile: Profile, drop_data: bool = False, echo=print) -> None:
    """Stop the profile; with ``drop_data`` also drop its databases, broker DB and state."""
    import shutil

    took = stop(profile)
    stopped = ", ".join(f"{n} {s:g} s" if s >= 0 else f"{n} killed" for n, s in took.items())
    echo(f"stopped: {stopped}")
    if not drop_data:
        return
    dropped = drop_databases(profile)
    echo(f"dropped PostgreSQL databases {', '.join(dropped)}")
    _redis(profile).flushdb()
    echo("flushed the broker's Redis database")
    removed = [profile.state_dir]
    lake = str(profile.get("GOVX_LAKE_DIR") or profile.home / "lake")
    if "://" not in lake:  # a bucket (moto's lives in memory) went with its server
        removed.append(Path(lake))
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    echo(f"removed {' and '.join(str(folder) for folder in removed)}")


# --- command line ------------------------------------------------------------------------------

app = typer.Typer(
    help="The production profile on this machine (docs/deploy.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        help="Settings (default: $GOVX_PROD_ENV_FILE or config/prod.env.example); "
        "the environment wins.",
        show_default=False,
    ),
]


def _profile(env_file: Path | None) -> Profile:
    try:
        return load_profile(env_file)
    except ProfileError as exc:
        typer.echo(f"govx prod: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("up")
def up_command(env_file: EnvFile = None) -> None:
    """Create the databases, migrate them, start every process and wait until all are ready."""
    profile = _profile(env_file)
    try:
        info = up(profile)
    except ProfileError as exc:
        typer.echo(f"govx prod up: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(info, indent=2))


@app.command("down")
def down_command(
    env_file: EnvFile = None,
    drop_data: Annotated[
        bool,
        typer.Option(help="Also drop the databases, flush the broker DB, remove the state."),
    ] = False,
) -> None:
    """Stop every process of the profile (SIGTERM, then SIGKILL after 20 s)."""
    profile = _profile(env_file)
    try:
        down(profile, drop_data=drop_data)
    except ProfileError as exc:
        typer.echo(f"govx prod down: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("status")
def status_command(env_file: EnvFile = None) -> None:
    """Which processes of the profile run (name and process group id)."""
    profile = _profile(env_file)
    alive = running(profile)
    for name, pgid in alive.items():
        typer.echo(f"{name:20} {pgid}")
    if not alive:
        typer.echo(f"not running ({profile.state_dir})")


if __name__ == "__main__":  # pragma: no cover - python -m exchange.prod
    app()
