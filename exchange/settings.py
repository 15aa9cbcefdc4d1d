"""Where things live at run time: the data directory, store URLs and the deployment config.

Everything the platform writes goes under one data directory, ``$GOVX_HOME`` (default ``./var``).
Every store is reached through a URL so that the embedded default (SQLite and Parquet files under
``$GOVX_HOME``) and production (PostgreSQL, an ``s3://`` lake) run the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "config_dir",
    "exchange_db_url",
    "govx_home",
    "lake_dir",
    "license_db_url",
    "load_env_file",
]

DEFAULT_HOME = "var"
ENV_FILE_NAME = ".env"
LAKE_URL_SCHEMES = ("s3", "s3a")


def govx_home() -> Path:
    """The data directory (created on first use), absolute."""
    home = Path(os.environ.get("GOVX_HOME", DEFAULT_HOME)).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def lake_dir() -> Path | str:
    """Root of the lake: ``$GOVX_HOME/lake`` unless ``GOVX_LAKE_DIR`` says otherwise.

    A local directory comes back as an absolute ``Path``; an object store as its URL
    (``s3://bucket/prefix``, no trailing slash), which :class:`exchange.lakefs.Lake` opens with
    the endpoint and keys of the standard ``AWS_*`` variables. ``file:///path`` is a local
    directory; any other scheme is refused rather than taken for a folder name.
    """
    configured = os.environ.get("GOVX_LAKE_DIR") or ""
    if "://" in configured:
        scheme, rest = configured.split("://", 1)
        if scheme.lower() == "file":
            return Path(rest).resolve()
        if scheme.lower() not in LAKE_URL_SCHEMES or not rest.strip("/"):
            raise ValueError(
                f"GOVX_LAKE_DIR={configured!r}: a lake is a local directory or "
                "s3://bucket/prefix (an S3-compatible object store)"
            )
        return configured.rstrip("/")
    return Path(configured or govx_home() / "lake").resolve()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def license_db_url() -> str:
    """The license store: ``GOVX_LICENSE_DB_URL`` or a SQLite file under the data directory."""
    return os.environ.get("GOVX_LICENSE_DB_URL") or _sqlite_url(govx_home() / "licenses.db")


def exchange_db_url() -> str:
    """Sync runs and cursors: ``GOVX_EXCHANGE_DB_URL`` or a SQLite file under the data directory."""
    return os.environ.get("GOVX_EXCHANGE_DB_URL") or _sqlite_url(govx_home() / "exchange.db")


def config_dir() -> Path:
    """The deployment configuration: ``GOVX_CONFIG`` or ``./config``."""
    return Path(os.environ.get("GOVX_CONFIG", "config")).expanduser().resolve()


def load_env_file(path: Path | None = None) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines from ``$GOVX_HOME/.env`` into the environment (never overriding it).

    This is where ``govx demo`` leaves the connection URIs of the sample department systems, so
    that ``govx sync`` and the Airflow DAGs find them without secrets in YAML. Returns what was set.
    """
    from dotenv import dotenv_values

    env_path = path or govx_home() / ENV_FILE_NAME
    if not env_path.is_file():
        return {}
    added: dict[str, str] = {}
    for key, value in dotenv_values(env_path).items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
            added[key] = value
    return added
