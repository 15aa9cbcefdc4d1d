"""The ``files`` connector: load the files a department drops into a folder, each exactly once.

The source's connection URL names the drop folder: ``file:///srv/drop/amr`` or any fsspec URL
(``memory://drop``, ``s3://bucket/prefix`` with its fsspec package installed). Options (the
``connector.options`` block of a source)::

    pattern: "*.csv"        # glob relative to the folder (default ``*``; ``**/*.csv`` recurses)
    format: auto            # csv | xlsx | parquet | jsonl | auto (by extension, the default)
    encoding: auto          # text files: auto (the default) or a codec name such as gb18030
    csv:
      delimiter: ","        # one character
      header: 1             # the header is the first non-blank row on or after this line
    sheet: 0                # xlsx: a sheet name, or its position counting from 0 (default 0)
    columns: [credit_code, name]  # optional contract: a file missing one is rejected
    batch_size: 5000        # optional; rows per Arrow record batch (overrides the request)

**Exactly once by content.** A file is identified by the SHA-256 of its bytes. The saved cursor
(``since``) is the list of content hashes already loaded (a dict keyed by hash is accepted too); a
file whose hash is in it is skipped, whatever its name and however often it is dropped again.
``cursor_after`` is that list plus the hashes loaded in this run, sorted. The connector never moves
or deletes a file: the exchange saves the cursor only when the run succeeds. A file is loaded all
or nothing: its rows are parsed into a local spool first and only yielded once the whole file has
been read, so a file rejected half-way leaves no rows behind and its hash stays out of the cursor
(a corrected re-drop loads; an unchanged one is rejected and reported again).

:meth:`FilesConnector.extract` lists the folder, copies every matching file into a private
temporary folder while hashing it (so the bytes loaded are exactly the bytes hashed, even when a
department overwrites a file meanwhile), drops the copies it has seen, and reads only the headers
of the rest to fix the schema; iterating the extraction then parses the files one by one. Names
starting with ``.`` or ``~$`` (Excel's lock files) are ignored.

**Per-file outcomes.** An empty file, an unreadable encoding, a truncated ``.xlsx``, a corrupt
Parquet file, a malformed JSON line, a missing required column (``columns`` and the source's
primary key) or a row with values beyond the header rejects that file only; the other files still
load. :attr:`FilesExtraction.files` lists a :class:`FileOutcome` per file; reasons say which line or
row but never quote a value (they may be ID numbers).

**Values.** Every data column is ``pa.string()`` whatever the format, so a run's schema is stable
whatever mix of files arrives: CSV, xlsx and JSON values as text (JSON numbers and booleans as
written, nested values as JSON text; xlsx dates as ISO dates), Parquet columns cast to text. An
empty value is null; blank rows are skipped. The schema is ``columns`` (when given), then the other
columns in the order first seen, then the provenance columns ``_govx_file`` (the file's name
relative to the folder) and ``_govx_row`` (the 1-based line of a CSV or JSON lines file, the sheet
row of an xlsx file, the row position in a Parquet file). A file lacking a column gets nulls.

**Encodings** (CSV and JSON lines, with ``encoding: auto``): a byte-order mark decides (UTF-8,
UTF-16, UTF-32); otherwise strict UTF-8, then strict GB18030 (a superset of GBK and GB2312), and
only then charset-normalizer's guess, each verified against the whole file. A file none of them
reads is rejected with the byte offset of the first bad byte. Big5 bytes are valid GB18030 (as
the wrong characters), so a Big5 source (Hong Kong, Macao) must say ``encoding: big5hkscs``.
The source's ``cursor`` column, if any, is not used.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import errno
import glob
import hashlib
import json
import logging
import posixpath
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Protocol, TextIO

import charset_normalizer
import fsspec
import openpyxl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from connectors.base import Connector, ExtractRequest
from connectors.errors import (
    ConnectorError,
    SourceAuthError,
    SourceConfigError,
    SourceDataError,
    SourceUnavailable,
)
from connectors.registry import register

__all__ = [
    "PROVENANCE_FILE",
    "PROVENANCE_ROW",
    "CsvOptions",
    "FileOutcome",
    "FileStatus",
    "FilesConnector",
    "FilesExtraction",
    "FilesOptions",
]

log = logging.getLogger(__name__)

PROVENANCE_FILE = "_govx_file"
PROVENANCE_ROW = "_govx_row"
PROVENANCE = (PROVENANCE_FILE, PROVENANCE_ROW)
FORMATS = ("csv", "xlsx", "parquet", "jsonl")
TEXT_FORMATS = frozenset({"csv", "jsonl"})
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EIO,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.ENETUNREACH,
        errno.ENOTCONN,
        errno.ESTALE,
        errno.ETIMEDOUT,
    }
)
SHA256_HEX = frozenset("0123456789abcdef")
COPY_CHUNK = 1 << 20
DETECTION_SAMPLE = 1 << 20

FileStatus = Literal["loaded", "skipped_seen", "rejected"]


class CsvOptions(BaseModel):
    """How CSV files are laid out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: StrictInt = Field(default=1, ge=1)


class FilesOptions(BaseModel):
    """The options of the ``files`` connector, as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pattern: str = Field(default="*", min_length=1)
    format: Literal["auto", "csv", "xlsx", "parquet", "jsonl"] = "auto"
    encoding: str = Field(default="auto", min_length=1)
    csv_: CsvOptions = Field(default_factory=CsvOptions, alias="csv")
    sheet: Annotated[StrictInt, Field(ge=0)] | Annotated[str, Field(min_length=1)] | None = None
    columns: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(
        default=None, min_length=1
    )
    batch_size: StrictInt | None = Field(default=None, gt=0)

    @field_validator("pattern")
    @classmethod
    def _relative_pattern(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a glob relative to the folder (no leading '/', no '..')")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value.lower() == "auto":
            return "auto"
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding")
        return info.name

    @field_validator("columns")
    @classmethod
    def _distinct_columns(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        duplicate = next((name for name in value if value.count(name) > 1), None)
        if duplicate is not None:
            raise ValueError(f"{duplicate!r} is listed twice")
        reserved = next((name for name in value if name in PROVENANCE), None)
        if reserved is not None:
            raise ValueError(f"{reserved!r} is a provenance column the connector adds itself")
        return value


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of the folder in this run.

    ``status`` is ``loaded`` (``rows`` rows yielded), ``skipped_seen`` (its content was loaded
    before, or by another file of this run) or ``rejected`` (``reason`` says why; its hash is not
    added to the cursor). ``sha256`` is ``None`` only when the file could not be read at all.
    ``reason`` never quotes a value of the file.
    """

    name: str
    sha256: str | None
    status: FileStatus
    rows: int = 0
    reason: str | None = None
    encoding: str | None = None


@register("files")
class FilesConnector(Connector):
    """Reads the files dropped into one folder (local, or any filesystem fsspec speaks)."""

    def __init__(self, request: ExtractRequest) -> None:
        super().__init__(request)
        self.options = self.parse_options(FilesOptions)
        self.batch_size = self.resolve_batch_size(self.options.batch_size)
        self.seen = _saved_hashes(request)
        contract = list(self.options.columns or ())
        keys = [c for c in request.primary_key if c not in PROVENANCE and c not in contract]
        self.required = (*contract, *keys)

    def extract(self) -> FilesExtraction:
        """List the folder, copy and hash new files, read their headers; rows come on iteration."""
        request = self.request
        fs, root = _open_folder(request)
        listing = _list_files(request, fs, root, self.options.pattern)
        workdir = tempfile.TemporaryDirectory(prefix="govx-files-")
        try:
            survey = _Survey(order=[name for name, _ in listing])
            for index, (name, path) in enumerate(listing):
                self._survey_file(survey, fs, name, path, Path(workdir.name) / f"{index:06d}")
        except OSError as exc:  # our own temporary storage, not the source
            workdir.cleanup()
            raise _storage_error(request, exc) from None
        except BaseException:
            workdir.cleanup()
            raise
        data_columns = list(self.options.columns or ())
        for plan in survey.plans:
            data_columns += [c for c in plan.columns if c not in data_columns]
        schema = pa.schema(
            [pa.field(name, pa.string()) for name in data_columns]
            + [
                pa.field(PROVENANCE_FILE, pa.string(), nullable=False),
                pa.field(PROVENANCE_ROW, pa.int64(), nullable=False),
            ]
        )
        return FilesExtraction(request, schema, survey, self.seen, workdir, self.batch_size)

    def _survey_file(
        self, survey: _Survey, fs: fsspec.AbstractFileSystem, name: str, path: str, local: Path
    ) -> None:
        try:
            sha256 = _copy_and_hash(self.request, fs, name, path, local)
        except _Rejected as rejected:
            local.unlink(missing_ok=True)
            survey.decide(FileOutcome(name, None, "rejected", reason=rejected.reason))
            return
        if sha256 in self.seen:
            local.unlink()
            reason = "this content was loaded by an earlier run"
            survey.decide(FileOutcome(name, sha256, "skipped_seen", reason=reason))
            return
        original = survey.first_with.get(sha256)
        if original is not None:
            local.unlink()
            survey.duplicates[name] = (sha256, original)
            return
        survey.first_with[sha256] = name
        try:
            plan = self._plan(name, sha256, local)
        except _Rejected as rejected:
            local.unlink()
            survey.decide(
                FileOutcome(
                    name, sha256, "rejected", reason=rejected.reason, encoding=rejected.encoding
                )
            )
            return
        survey.plans.append(plan)

    def _plan(self, name: str, sha256: str, local: Path) -> _FilePlan:
        """Decide how to read one new file and read its header; raise ``_Rejected`` if we cannot."""
        file_format = self._format_of(name)
        if local.stat().st_size == 0:
            raise _Rejected("the file is empty (0 bytes)")
        encoding = None
        if file_format in TEXT_FORMATS:
            encoding = _text_encoding(local, self.options.encoding)
        reader = _reader(file_format, local, encoding, self.options)
        try:
            columns = _guarded_call(file_format, reader.columns)
        except _Rejected as rejected:
            raise _Rejected(rejected.reason, encoding) from None
        problem = self._header_problem(columns)
        if problem:
            raise _Rejected(problem, encoding)
        extra = [c for c in columns if self.options.columns and c not in self.options.columns]
        note = f"extra column(s) kept: {', '.join(extra)}" if extra else None
        return _FilePlan(name, sha256, local, file_format, encoding, tuple(columns), note, reader)

    def _format_of(self, name: str) -> str:
        if self.options.format != "auto":
            return self.options.format
        suffix = PurePosixPath(name).suffix.lower()
        if suffix in EXTENSION_FORMATS:
            return EXTENSION_FORMATS[suffix]
        if suffix in (".xls", ".et"):
            raise _Rejected("legacy binary spreadsheets (.xls) are not read; save it as .xlsx")
        shown = repr(suffix) if suffix else "no extension"
        raise _Rejected(
            f"cannot tell the format from {shown}; set the 'format' option or narrow 'pattern'"
        )

    def _header_problem(self, columns: Sequence[str]) -> str | None:
        if not columns:
            return "the file has no columns"
        unnamed = next((i for i, c in enumerate(columns, 1) if not c), None)
        if unnamed is not None:
            return f"column {unnamed} has no name"
        duplicate = next((c for c in columns if columns.count(c) > 1), None)
        if duplicate is not None:
            return f"column {duplicate!r} appears more than once"
        reserved = next((c for c in columns if c in PROVENANCE), None)
        if reserved is not None:
            return f"column {reserved!r} is reserved for the connector's provenance columns"
        missing = [c for c in self.required if c not in columns]
        if missing:
            return f"missing required column(s): {', '.join(missing)}"
        return None


class FilesExtraction:
    """The batches of one ``files`` read; iterate once. Temporary copies go when reading ends."""

    def __init__(
        self,
        request: ExtractRequest,
        schema: pa.Schema,
        survey: _Survey,
        seen: frozenset[str],
        workdir: tempfile.TemporaryDirectory[str],
        batch_size: int,
    ) -> None:
        self._request = request
        self._schema = schema
        self._survey = survey
        self._seen = seen
        self._workdir = workdir
        self._batch_size = batch_size
        self._loaded: dict[str, str] = {}  # sha256 -> name, in load order
        self._rows_read = 0
        self._started = False

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def rows_read(self) -> int:
        return self._rows_read

    @property
    def cursor_after(self) -> Any | None:
        """The saved hashes plus those of the files loaded so far (sorted); ``since`` if none."""
        since = self._request.since
        if not self._loaded:
            return since
        if isinstance(since, dict):
            merged = {str(key).lower(): value for key, value in since.items()}
            merged.update(self._loaded)
            return dict(sorted(merged.items()))
        return sorted(self._seen | self._loaded.keys())

    @property
    def files(self) -> list[FileOutcome]:
        """An outcome per file decided so far, in name order; complete once iteration ends."""
        return self._survey.outcomes()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._started:
            raise RuntimeError("an extraction can be read once; call extract() again")
        self._started = True
        return self._batches()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for plan in self._survey.plans:
                yield from self._load(plan)
        finally:
            self._workdir.cleanup()

    def _load(self, plan: _FilePlan) -> Iterator[pa.RecordBatch]:
        spool = plan.path.with_suffix(".arrow")
        rows = 0
        try:
            with pa.OSFile(str(spool), "wb") as sink, pa.ipc.new_stream(sink, self._schema) as out:
                for chunk in _guarded(plan.format, plan.reader.chunks(self._batch_size)):
                    batch = self._record_batch(plan, chunk)
                    out.write_batch(batch)
                    rows += batch.num_rows
        except _Rejected as rejected:
            spool.unlink(missing_ok=True)
            self._survey.decide(
                FileOutcome(
                    plan.name,
                    plan.sha256,
                    "rejected",
                    reason=rejected.reason,
                    encoding=plan.encoding,
                )
            )
            return
        except OSError as exc:
            raise _storage_error(self._request, exc) from None
        finally:
            plan.path.unlink(missing_ok=True)
        with pa.OSFile(str(spool), "rb") as source:
            for batch in pa.ipc.open_stream(source):
                self._rows_read += batch.num_rows
                yield batch
        spool.unlink(missing_ok=True)
        self._loaded[plan.sha256] = plan.name
        self._survey.decide(
            FileOutcome(plan.name, plan.sha256, "loaded", rows, plan.note, plan.encoding)
        )

    def _record_batch(self, plan: _FilePlan, chunk: _Chunk) -> pa.RecordBatch:
        count = len(chunk.rows)
        position = {name: index for index, name in enumerate(plan.columns)}
        arrays: list[pa.Array] = []
        for name in self._schema.names:
            if name == PROVENANCE_FILE:
                arrays.append(pa.array([plan.name] * count, pa.string()))
            elif name == PROVENANCE_ROW:
                arrays.append(chunk.rows)
            elif name in position:
                arrays.append(chunk.columns[position[name]])
            else:
                arrays.append(pa.nulls(count, pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)


# --- the survey made by extract() ---------------------------------------------------------------


class _Rejected(Exception):
    """One file cannot be loaded; ``reason`` says why without quoting its values."""

    def __init__(self, reason: str, encoding: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.encoding = encoding


@dataclass(frozen=True)
class _Chunk:
    columns: list[pa.Array]  # string arrays, in the file's column order
    rows: pa.Array  # int64 row numbers


class _Reader(Protocol):
    def columns(self) -> list[str]: ...

    def chunks(self, batch_size: int) -> Iterator[_Chunk]: ...


@dataclass(frozen=True)
class _FilePlan:
    name: str
    sha256: str
    path: Path
    format: str
    encoding: str | None
    columns: tuple[str, ...]
    note: str | None
    reader: _Reader


@dataclass
class _Survey:
    """The files of one run: those to load, and the outcomes decided so far."""

    order: list[str]  # every listed name, sorted
    plans: list[_FilePlan] = field(default_factory=list)
    decided: dict[str, FileOutcome] = field(default_factory=dict)
    first_with: dict[str, str] = field(default_factory=dict)  # sha256 -> first name with it
    duplicates: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (sha, first)

    def decide(self, outcome: FileOutcome) -> None:
        self.decided[outcome.name] = outcome
        if outcome.status == "rejected":
            log.warning("file %r rejected: %s", outcome.name, outcome.reason)
        else:
            log.info("file %r %s (%d rows)", outcome.name, outcome.status, outcome.rows)

    def outcomes(self) -> list[FileOutcome]:
        result = []
        for name in self.order:
            if name in self.decided:
                result.append(self.decided[name])
            elif name in self.duplicates:
                sha256, first = self.duplicates[name]
                original = self.decided.get(first)
                if original is None:
                    continue
                if original.status == "rejected":
                    reason = f"same content as {first!r}, rejected: {original.reason}"
                    result.append(FileOutcome(name, sha256, "rejected", reason=reason))
                else:
                    reason = f"same content as {first!r}, loaded in this run"
                    result.append(FileOutcome(name, sha256, "skipped_seen", reason=reason))
        return result


def _saved_hashes(request: ExtractRequest) -> frozenset[str]:
    """The content hashes in the saved cursor: a list of SHA-256 hex strings, or a dict of them."""
    since = request.since
    if since is None:
        return frozenset()
    entries = list(since) if isinstance(since, list | tuple | dict) else None
    if entries is None or not all(isinstance(e, str) for e in entries):
        raise SourceDataError(
            request.source_id,
            "the saved cursor of a files source must be a list of SHA-256 content hashes",
        )
    hashes = frozenset(e.lower() for e in entries)
    if any(len(h) != 64 or not set(h) <= SHA256_HEX for h in hashes):
        raise SourceDataError(
            request.source_id, "the saved cursor holds an entry that is not a SHA-256 hex digest"
        )
    return hashes


# --- the folder ---------------------------------------------------------------------------------


def _open_folder(request: ExtractRequest) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, root = fsspec.core.url_to_fs(request.url)
    except ImportError as exc:  # e.g. s3:// without s3fs
        raise SourceConfigError(
            request.source_id,
            f"the folder's filesystem needs a package that is not installed ({exc})",
        ) from None
    except (ValueError, TypeError):  # the message would quote the URL
        raise SourceConfigError(
            request.source_id,
            "the connection URL is not a folder URL fsspec can open "
            "(file:///abs/path, memory://..., s3://bucket/prefix)",
        ) from None
    except Exception as exc:  # filesystems that connect on creation (sftp, ftp, smb)
        raise _source_error(request, exc, "cannot open the folder's filesystem") from None
    where = _location(fs, root)
    try:
        if fs.isdir(root):
            return fs, root
        exists = fs.exists(root)
    except Exception as exc:
        raise _source_error(request, exc, f"cannot read the folder {where}") from None
    if exists:
        raise SourceConfigError(request.source_id, f"{where} is a file, not a folder")
    if _is_object_store(fs):  # a prefix without objects is simply an empty folder
        return fs, root
    raise SourceConfigError(request.source_id, f"the folder {where} does not exist")


def _list_files(
    request: ExtractRequest, fs: fsspec.AbstractFileSystem, root: str, pattern: str
) -> list[tuple[str, str]]:
    """``(name relative to the folder, full path)`` of every matching file, sorted by name."""
    base = root.rstrip("/") or root
    try:
        found = fs.glob(posixpath.join(glob.escape(base), pattern), detail=True)
    except Exception as exc:
        raise _source_error(request, exc, f"cannot list the folder {_location(fs, root)}") from None
    listing = []
    for path, info in found.items():
        if info.get("type") != "file":
            continue
        name = posixpath.relpath(path, base) if base != "/" else path.lstrip("/")
        if any(part.startswith((".", "~$")) for part in PurePosixPath(name).parts):
            continue
        listing.append((name, path))
    return sorted(listing)


def _copy_and_hash(
    request: ExtractRequest, fs: fsspec.AbstractFileSystem, name: str, path: str, local: Path
) -> str:
    """Copy one file to ``local`` and return the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    with open(local, "wb") as target:
        try:
            source = fs.open(path, "rb")
        except Exception as exc:
            raise _file_read_error(request, exc, name) from None
        with source:
            while True:
                try:
                    chunk = source.read(COPY_CHUNK)
                except Exception as exc:
                    raise _file_read_error(request, exc, name) from None
                if not chunk:
                    break
                digest.update(chunk)
                target.write(chunk)
    return digest.hexdigest()


def _file_read_error(request: ExtractRequest, exc: Exception, name: str) -> Exception:
    """A rejection for this file alone, or a whole-source error when retrying may help."""
    if _looks_transient(exc):
        return SourceUnavailable(request.source_id, f"reading file {name!r} failed: {_why(exc)}")
    if isinstance(exc, FileNotFoundError):
        return _Rejected("the file disappeared before it could be read")
    if isinstance(exc, PermissionError):
        return _Rejected("permission denied: the file cannot be read")
    if isinstance(exc, OSError):
        return _Rejected(f"the file cannot be read: {_why(exc)}")
    return ConnectorError(request.source_id, f"reading file {name!r} failed: {_why(exc)}")


def _source_error(request: ExtractRequest, exc: Exception, what: str) -> ConnectorError:
    """The one place a filesystem error about the whole folder becomes a connector error."""
    if _looks_transient(exc):
        return SourceUnavailable(request.source_id, f"{what}: {_why(exc)}")
    if isinstance(exc, PermissionError):
        return SourceAuthError(request.source_id, f"{what}: permission denied")
    return SourceConfigError(request.source_id, f"{what}: {_why(exc)}")


def _storage_error(request: ExtractRequest, exc: OSError) -> ConnectorError:
    return ConnectorError(
        request.source_id, f"the connector's temporary storage failed: {_why(exc)}"
    )


def _looks_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _location(fs: fsspec.AbstractFileSystem, root: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return f"{protocol}://{root}"


def _is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "s3a", "gs", "gcs", "abfs", "az", "oss", "adl"} & set(protocols))


# --- encodings ----------------------------------------------------------------------------------


def _text_encoding(path: Path, option: str) -> str:
    """The codec that reads the whole file strictly; raise ``_Rejected`` when none does."""
    if option != "auto":
        offset = _first_bad_byte(path, option)
        if offset is not None:
            raise _Rejected(
                f"unreadable encoding: not valid {option} (first bad byte at offset {offset})"
            )
        return option
    with open(path, "rb") as file:
        sample = file.read(DETECTION_SAMPLE)
    for mark, codec in BYTE_ORDER_MARKS:
        if sample.startswith(mark):
            offset = _first_bad_byte(path, codec)
            if offset is not None:
                raise _Rejected(
                    f"unreadable encoding: starts with a {codec} byte-order mark but is not "
                    f"valid {codec} (first bad byte at offset {offset})"
                )
            return codec
    utf8 = _first_bad_byte(path, "utf-8")
    if utf8 is None:
        return "utf-8"
    gb18030 = _first_bad_byte(path, "gb18030")
    if gb18030 is None:
        return "gb18030"
    guess = charset_normalizer.from_bytes(sample).best()  # the last resort
    if guess is not None and _first_bad_byte(path, guess.encoding) is None:
        return str(guess.encoding)
    raise _Rejected(
        f"unreadable encoding: neither UTF-8 (first bad byte at offset {utf8}) nor GB18030 "
        f"(first bad byte at offset {gb18030}); set the 'encoding' option if it is another one"
    )


def _first_bad_byte(path: Path, encoding: str) -> int | None:
    """The 0-based offset of the first byte ``encoding`` cannot decode (``None``: all decode)."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    with open(path, "rb") as file:
        while True:
            chunk = file.read(COPY_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object = the decoder's pending bytes + chunk
                return offset + len(chunk) - len(exc.object) + exc.start
            except UnicodeError:  # e.g. UTF-16 without a byte-order mark
                return offset
            if not chunk:
                return None
            offset += len(chunk)


# --- readers, one per format --------------------------------------------------------------------


def _reader(file_format: str, path: Path, encoding: str | None, options: FilesOptions) -> _Reader:
    if file_format == "csv":
        assert encoding is not None
        return _CsvReader(path, encoding, options.csv_)
    if file_format == "jsonl":
        assert encoding is not None
        return _JsonLinesReader(path, encoding)
    if file_format == "xlsx":
        return _XlsxReader(path, options.sheet)
    return _ParquetReader(path)


class _CsvReader:
    """CSV through the ``csv`` module, decoded as a stream; rows are numbered by starting line."""

    def __init__(self, path: Path, encoding: str, options: CsvOptions) -> None:
        self.path = path
        self.encoding = encoding
        self.options = options

    def columns(self) -> list[str]:
        with self._open() as text:
            return self._header(self._records(text))

    def chunks(self, batch_size: int) -> Iterator[_Chunk]:
        with self._open() as text:
            records = self._records(text)
            width = len(self._header(records))
            rows = (
                (line, _fit([v or None for v in record], width, f"line {line}"))
                for line, record in records
                if any(record)
            )
            yield from _chunked(rows, width, batch_size)

    def _open(self) -> TextIO:
        return open(self.path, encoding=self.encoding, newline="")

    def _records(self, text: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(text, delimiter=self.options.delimiter)
        last_line = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _Rejected(f"line {reader.line_num}: malformed CSV ({exc})") from None
            line, last_line = last_line + 1, reader.line_num
            yield line, record

    def _header(self, records: Iterator[tuple[int, list[str]]]) -> list[str]:
        seen_any = False
        for line, record in records:
            seen_any = True
            if line < self.options.header or not any(cell.strip() for cell in record):
                continue
            return _header_names(record)
        if not seen_any:
            raise _Rejected("the file is empty")
        raise _Rejected(f"no header row on or after line {self.options.header}")


class _JsonLinesReader:
    """JSON lines: one object per line; the columns are every key, in the order first seen."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self._columns: list[str] | None = None

    def columns(self) -> list[str]:
        """Every key of every line (a full pass: later lines may add keys)."""
        if self._columns is None:
            keys: dict[str, None] = {}
            for _, record in self._objects():
                keys.update(dict.fromkeys(record))
            if not keys:
                raise _Rejected("the file holds no JSON object with keys")
            self._columns = list(keys)
        return self._columns

    def chunks(self, batch_size: int) -> Iterator[_Chunk]:
        header = self.columns()
        width = len(header)
        rows = (
            (line, values)
            for line, record in self._objects()
            if any(values := [_text(record.get(key)) for key in header])
        )
        yield from _chunked(rows, width, batch_size)

    def _objects(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, encoding=self.encoding) as text:
            for line, content in enumerate(text, start=1):
                if line == 1:
                    content = content.lstrip("\ufeff")
                if not content.strip():
                    continue
                try:
                    record = json.loads(content)
                except json.JSONDecodeError as exc:
                    raise _Rejected(
                        f"line {line} is not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                except RecursionError:
                    raise _Rejected(f"line {line} is nested too deeply") from None
                if not isinstance(record, dict):
                    raise _Rejected(f"line {line} is not a JSON object")
                yield line, record


class _XlsxReader:
    """An Excel sheet through openpyxl in read-only mode; the header is the first non-blank row."""

    def __init__(self, path: Path, sheet: int | str | None) -> None:
        self.path = path
        self.sheet = sheet

    def columns(self) -> list[str]:
        rows = self._rows()
        try:
            return self._header(rows)
        finally:
            rows.close()

    def chunks(self, batch_size: int) -> Iterator[_Chunk]:
        rows = self._rows()
        try:
            width = len(self._header(rows))
            fitted = (
                (number, _fit(values, width, f"row {number}"))
                for number, values in rows
                if any(v is not None for v in values)
            )
            yield from _chunked(fitted, width, batch_size)
        finally:
            rows.close()

    def _header(self, rows: Iterator[tuple[int, list[str | None]]]) -> list[str]:
        for _, values in rows:
            if any(v is not None for v in values):
                return _header_names(values)
        raise _Rejected(f"the sheet {self._sheet_label()} is empty")

    def _rows(self) -> Iterator[tuple[int, list[str | None]]]:
        # a file object: openpyxl would refuse a path without an Excel extension (our copies)
        with open(self.path, "rb") as file:
            try:
                workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
            except zipfile.BadZipFile:
                raise _Rejected(
                    "not a valid .xlsx file: not a zip archive (truncated or corrupt upload?)"
                ) from None
            try:
                sheet = self._pick(workbook)
                sheet.reset_dimensions()  # some writers record wrong dimensions
                for number, cells in enumerate(sheet.iter_rows(min_row=1, values_only=True), 1):
                    yield number, [_cell_text(cell) for cell in cells]
            finally:
                workbook.close()

    def _pick(self, workbook: Any) -> Any:
        if isinstance(self.sheet, str):
            if self.sheet not in workbook.sheetnames:
                names = ", ".join(repr(n) for n in workbook.sheetnames)
                raise _Rejected(f"the workbook has no sheet {self.sheet!r} (it has {names})")
            return workbook[self.sheet]
        index = self.sheet or 0
        if index >= len(workbook.worksheets):
            count = len(workbook.worksheets)
            raise _Rejected(f"the workbook has no sheet {index} (it has {count}, counted from 0)")
        return workbook.worksheets[index]

    def _sheet_label(self) -> str:
        return repr(self.sheet) if isinstance(self.sheet, str) else f"number {self.sheet or 0}"


class _ParquetReader:
    """Parquet batch by batch; every column cast to text, rows numbered by position."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def columns(self) -> list[str]:
        parquet = self._open()
        try:
            return list(parquet.schema_arrow.names)
        finally:
            parquet.close()

    def chunks(self, batch_size: int) -> Iterator[_Chunk]:
        parquet = self._open()
        try:
            first = 1
            for batch in parquet.iter_batches(batch_size=batch_size):
                count = batch.num_rows
                columns = [_blank_to_null(_arrow_text(column)) for column in batch.columns]
                yield _Chunk(columns, pa.array(range(first, first + count), pa.int64()))
                first += count
        finally:
            parquet.close()

    def _open(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.path)
        except pa.ArrowException as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _Rejected(f"not a readable Parquet file ({detail})") from None


# --- shared row handling ------------------------------------------------------------------------


def _guarded(file_format: str, chunks: Iterator[_Chunk]) -> Iterator[_Chunk]:
    """Pass a reader's chunks on, turning whatever a parser raises into a rejection of the file."""
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except _Rejected:
            raise
        except Exception as exc:
            raise _Rejected(_parser_failure(file_format, exc)) from None
        yield chunk


def _guarded_call(file_format: str, read: Callable[[], list[str]]) -> list[str]:
    try:
        return read()
    except _Rejected:
        raise
    except Exception as exc:
        raise _Rejected(_parser_failure(file_format, exc)) from None


def _parser_failure(file_format: str, exc: Exception) -> str:
    """A reason that names the failure but not the parser's message (it may quote values)."""
    if isinstance(exc, zipfile.BadZipFile | EOFError):
        return f"not a valid .{file_format} file: the archive is truncated or corrupt"
    return f"not a readable {file_format} file ({type(exc).__name__})"


def _header_names(cells: Sequence[Any]) -> list[str]:
    """Header cells as column names: trimmed, a leading byte-order mark dropped, trailing blanks
    dropped (a blank in the middle is kept and rejected by the caller)."""
    names = ["" if cell is None else str(cell).strip() for cell in cells]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    while names and not names[-1]:
        names.pop()
    return names


def _fit(values: list[str | None], width: int, where: str) -> list[str | None]:
    """Pad a short row with nulls; a value beyond the header rejects the file."""
    if len(values) > width:
        beyond = next((i for i, v in enumerate(values[width:], width + 1) if v), None)
        if beyond is not None:
            raise _Rejected(f"{where} has a value in column {beyond}, which has no header")
        return values[:width]
    return values + [None] * (width - len(values))


def _chunked(
    rows: Iterable[tuple[int, list[str | None]]], width: int, batch_size: int
) -> Iterator[_Chunk]:
    numbers: list[int] = []
    values: list[list[str | None]] = []
    for number, row in rows:
        numbers.append(number)
        values.append(row)
        if len(numbers) >= batch_size:
            yield _chunk(numbers, values, width)
            numbers, values = [], []
    if numbers:
        yield _chunk(numbers, values, width)


def _chunk(numbers: list[int], rows: list[list[str | None]], width: int) -> _Chunk:
    columns = list(zip(*rows, strict=True)) if rows else [()] * width
    return _Chunk(
        [pa.array(column, pa.string()) for column in columns], pa.array(numbers, pa.int64())
    )


def _text(value: Any) -> str | None:
    """A value as text: JSON spelling for booleans and nested values; empty text is null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cell_text(value: Any) -> str | None:
    """An Excel cell as text: a date cell (midnight datetime) becomes an ISO date."""
    if isinstance(value, dt.datetime) and value.time() == dt.time() and value.tzinfo is None:
        return value.date().isoformat()
    return _text(value)


def _arrow_text(array: pa.Array) -> pa.Array:
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_text(value) for value in array.to_pylist()], pa.string())


def _blank_to_null(array: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)
