"""Where the lake's files live: a local directory or an S3-compatible bucket, behind one object.

``GOVX_LAKE_DIR`` is a local directory (the embedded default, ``$GOVX_HOME/lake``) or an
``s3://bucket/prefix`` URL. :class:`Lake` is the lake at one such root; the code that lands,
merges, quarantines and reads runs calls it and never asks which kind it is:

- paths are text: an absolute local path, or a full ``s3://bucket/key`` URL. That text is what
  the exchange state records for a run (``landing_path``, ``curated_path``,
  ``quarantine_path``), and the module functions here (:func:`parquet_file`,
  :func:`read_table`, :func:`open_file`, :func:`exists`) open a recorded path on the storage it
  names;
- I/O goes through fsspec (s3fs for ``s3://``, fsspec's local filesystem otherwise) and pyarrow;
  a local path is handed to pyarrow as it is, so the local hot paths run pyarrow's own file
  system exactly as before;
- DuckDB reads and writes ``s3://`` through the same s3fs object (``register_filesystem``; no
  ``httpfs`` extension to download). Its temporary files and the merge's staging stay on local
  disk (:attr:`Lake.scratch`).

Atomicity is the exchange state's, not the storage's (``docs/lake.md``): a file counts only once
a committed run record holds its path. A local lake also writes under hidden names and renames
into place (:attr:`Lake.atomic_rename`); an object store has no rename, but a PUT of a whole
object is atomic, so each object is written complete (a landing folder's manifest last).

The object store's endpoint and credentials come from the standard variables
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION``
(unset keys: botocore's usual lookup, e.g. an instance profile).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import duckdb
    import fsspec

__all__ = [
    "Lake",
    "LakeLocationError",
    "Location",
    "exists",
    "filesystem",
    "is_url",
    "join",
    "open_file",
    "parquet_file",
    "read_table",
]

Location = Path | str
"""A place in the lake: a ``Path`` on a local lake, an ``s3://`` URL (text) on an object store."""

OBJECT_STORE_PROTOCOLS = ("s3", "s3a")


class LakeLocationError(ValueError):
    """A lake URL this platform cannot store to (an unknown scheme, no bucket, no s3fs)."""


def is_url(location: Location) -> bool:
    """Whether ``location`` is a URL (``s3://…``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def _protocol(location: Location) -> str:
    return str(location).split("://", 1)[0].lower() if is_url(location) else "file"


def _s3_filesystem() -> fsspec.AbstractFileSystem:
    """s3fs on the endpoint and keys of the standard AWS variables (fsspec caches the instance).

    Listings are not cached: other processes (Airflow workers, a parent node's API) write to
    the same bucket, and a stale listing would hide their objects.
    """
    try:
        import s3fs
    except ImportError:  # pragma: no cover - the prod extra is installed wherever S3 is used
        raise LakeLocationError(
            "an s3:// lake needs s3fs: install the `prod` extra (pip install 'govexchange[prod]')"
        ) from None
    options: dict[str, Any] = {"use_listings_cache": False}
    if os.environ.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    return s3fs.S3FileSystem(**options)


def filesystem(location: Location) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that holds ``location``: s3fs for ``s3://``, local otherwise."""
    protocol = _protocol(location)
    if protocol in OBJECT_STORE_PROTOCOLS:
        return _s3_filesystem()
    if protocol == "file":
        import fsspec

        return fsspec.filesystem("file")
    raise LakeLocationError(
        f"{location}: unsupported lake URL scheme {protocol!r} "
        "(use a local directory or s3://bucket/prefix)"
    )


def _arrow_filesystem(location: Location) -> fsspec.AbstractFileSystem | None:
    """What pyarrow gets as ``filesystem=``: nothing for a local path (pyarrow's own)."""
    return filesystem(location) if is_url(location) else None


def join(location: Location, *parts: str) -> str:
    """``location`` with ``parts`` appended, as the text the exchange state records."""
    if is_url(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


def exists(location: Location) -> bool:
    """Whether a file or folder (an object or a key prefix) exists at ``location``."""
    if not is_url(location):
        return os.path.exists(location)
    return filesystem(location).exists(str(location))


def is_file(location: Location) -> bool:
    """Whether ``location`` is a file (an object), not a folder or nothing."""
    if not is_url(location):
        return os.path.isfile(location)
    return filesystem(location).isfile(str(location))


def open_file(location: Location, mode: str = "rb") -> IO[Any]:
    """Open a file of the lake (binary modes; ``FileNotFoundError`` when it is missing)."""
    if not is_url(location):
        return open(location, mode)  # the caller closes it
    return filesystem(location).open(str(location), mode)


def parquet_file(location: Location) -> pq.ParquetFile:
    """A Parquet file of the lake, for its metadata or to stream its batches."""
    return pq.ParquetFile(str(location), filesystem=_arrow_filesystem(location))


def read_table(location: Location, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file of the lake (or only ``columns``)."""
    return pq.read_table(str(location), columns=columns, filesystem=_arrow_filesystem(location))


@dataclass(frozen=True)
class Lake:
    """The lake at ``root``: an absolute local directory or an ``s3://bucket/prefix`` URL."""

    root: str

    @classmethod
    def of(cls, lake: Lake | Location | None = None) -> Lake:
        """``lake`` as a :class:`Lake`; ``None`` is the configured one (``GOVX_LAKE_DIR``)."""
        if isinstance(lake, Lake):
            return lake
        if lake is None:
            from exchange.settings import lake_dir

            lake = lake_dir()
        if is_url(lake):
            text = str(lake).rstrip("/")
            filesystem(text)  # an unknown scheme fails here, not at the first write
            if not text.split("://", 1)[1]:
                raise LakeLocationError(f"{lake}: a lake URL needs a bucket (s3://bucket/prefix)")
            return cls(text)
        return cls(str(Path(lake)))

    @property
    def local(self) -> bool:
        """Whether the lake is a local (or mounted) directory."""
        return not is_url(self.root)

    @property
    def atomic_rename(self) -> bool:
        """Whether a folder or file can be renamed into place (local), or is written in place."""
        return self.local

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The lake's fsspec filesystem."""
        return filesystem(self.root)

    @property
    def scratch(self) -> Path:
        """A local directory for DuckDB's temporary files and the merge's staging.

        ``<lake>/tmp`` on a local lake (as always), ``$GOVX_HOME/tmp`` when the lake is remote.
        """
        if self.local:
            return Path(self.root) / "tmp"
        from exchange.settings import govx_home

        return govx_home() / "tmp"

    def join(self, *parts: str) -> str:
        """The path (text) of ``parts`` under the root: what run records store."""
        return join(self.root, *parts)

    def location(self, *parts: str) -> Location:
        """``parts`` under the root: a ``Path`` on a local lake, the URL on an object store."""
        path = self.join(*parts)
        return Path(path) if self.local else path

    def exists(self, path: Location) -> bool:
        return exists(path)

    def open(self, path: Location, mode: str = "rb") -> IO[Any]:
        return open_file(path, mode)

    def makedirs(self, path: Location) -> None:
        """Create a folder (an object store has none: nothing to do there)."""
        if self.local:
            os.makedirs(path, exist_ok=True)

    def remove(self, path: Location) -> None:
        """Remove a file or a whole folder (every object under the prefix); missing is fine."""
        if exists(path):
            self.fs.rm(str(path), recursive=True)

    def rename(self, source: Location, target: Location) -> None:
        """Move ``source`` into place at ``target`` (only where :attr:`atomic_rename` holds)."""
        if not self.atomic_rename:
            raise RuntimeError(f"{self.root}: an object store has no atomic rename")
        os.replace(source, target)

    def parquet_writer(self, path: Location, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
        """A Parquet writer to ``path``; on an object store the object appears when it closes."""
        return pq.ParquetWriter(str(path), schema, filesystem=_arrow_filesystem(path), **options)

    def write_parquet(self, table: pa.Table, path: Location, **options: Any) -> None:
        """Write ``table`` as one Parquet file (one whole object on an object store)."""
        pq.write_table(table, str(path), filesystem=_arrow_filesystem(path), **options)

    def contains(self, path: Location, *parts: str) -> bool:
        """Whether ``path`` lies inside the lake's folder ``parts`` (no ``..`` escapes)."""
        if self.local:
            if is_url(path):
                return False
            root = Path(self.join(*parts)).resolve()
            return Path(path).resolve().is_relative_to(root)
        text = str(path)
        if not is_url(text) or _protocol(text) != _protocol(self.root):
            return False
        scheme, rest = text.split("://", 1)
        normal = f"{scheme}://{posixpath.normpath(rest)}"
        return normal.startswith(self.join(*parts).rstrip("/") + "/")

    def duckdb_connect(self, locations: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection that reads and writes the lake (and any recorded ``locations``).

        DuckDB spills to :attr:`scratch`; an object store is reached through the lake's fsspec
        filesystem, registered with the connection.
        """
        import duckdb

        tmp = self.scratch / "duckdb"
        tmp.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(config={"temp_directory": str(tmp), "preserve_insertion_order": True})
        protocols = {_protocol(p) for p in locations if is_url(p)}
        if not self.local:
            protocols.add(_protocol(self.root))
        registered: set[int] = set()
        for protocol in sorted(protocols):
            fs = filesystem(f"{protocol}://")
            if id(fs) not in registered:
                con.register_filesystem(fs)
                registered.add(id(fs))
        return con
