"""Replication packages: the files a node sends its parent, and how the parent checks them.

Upward replication (county -> city -> province) moves changes as packages. A package is one
Parquet file of changed rows and a JSON manifest beside it, in the sending node's outbox::

    <outbox>/<sender>-<seq, 12 digits>.parquet
    <outbox>/<sender>-<seq, 12 digits>.json      the manifest

The manifest says who sent it to whom (GB/T 2260 region codes of the two nodes), its place in
the sender's series (``seq``: 1, 2, 3 ... without gaps, so a receiver can tell a replay from a
gap), what it holds (``kind`` and ``rows``), the Parquet file's size and SHA-256, when it was
made, and the sender's Ed25519 signature over all of that (the key's id included). A receiver
(:func:`read_package`) checks, in order: the manifest is well formed, it is addressed to the
receiver, the file has the size and hash the manifest states, the signature verifies with the
sender's public key, and the file holds the stated number of rows. The first failure is refused
with a :class:`PackageRejected` naming the check and the package, never the rows' contents.

:func:`write_package` is atomic. Both files are written under temporary names, flushed to disk
and renamed, the manifest last. A crash while packaging leaves no manifest, only files that
:func:`pending_packages` ignores and :func:`remove_unfinished` clears; the package is made again.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.lake import hash_file
from exchange.standards.regions import validate_region_code
from license_store.signing import key_id

__all__ = [
    "FORMAT",
    "KINDS",
    "Manifest",
    "PackageRejected",
    "package_paths",
    "pending_packages",
    "read_package",
    "remove_unfinished",
    "write_package",
]

FORMAT = "govx-package/1"
KINDS = ("licenses", "dataset")
_NAME = re.compile(r"^(?P<sender>[0-9]{6})-(?P<seq>[0-9]{12})\.json$")


class PackageRejected(Exception):
    """A package the receiver refuses; ``check`` says which check failed."""

    def __init__(self, check: str, where: str, reason: str) -> None:
        super().__init__(f"package {where} refused ({check}): {reason}")
        self.check = check
        self.reason = reason


@dataclass(frozen=True)
class Manifest:
    """What a package holds and who vouches for it (the JSON file beside the Parquet one)."""

    sender: str
    receiver: str
    seq: int
    kind: str
    rows: int
    size: int
    sha256: str
    created_at: str
    key_id: str
    signature: str = ""
    format: str = FORMAT

    def message(self) -> bytes:
        """What the sender signs: every field but the signature, as canonical JSON."""
        fields = {name: value for name, value in asdict(self).items() if name != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def name(self) -> str:
        """The package's file stem: ``<sender>-<seq>``."""
        return f"{self.sender}-{self.seq:012d}"


def package_paths(outbox: Path, sender: str, seq: int) -> tuple[Path, Path]:
    """The Parquet file and the manifest of package ``seq`` of ``sender`` in ``outbox``."""
    stem = f"{sender}-{seq:012d}"
    return outbox / f"{stem}.parquet", outbox / f"{stem}.json"


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    hash_file(path, digest)
    return path.stat().st_size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_package(
    outbox: Path,
    *,
    sender: str,
    receiver: str,
    seq: int,
    kind: str,
    table: pa.Table,
    key: Ed25519PrivateKey,
    now: dt.datetime | None = None,
) -> Manifest:
    """Write ``table`` as package ``seq`` from ``sender`` to ``receiver``, signed with ``key``.

    Returns its manifest. Raises ``ValueError`` for a bad region code, kind or sequence number,
    and ``FileExistsError`` if that package was already written (a sequence number is used once).
    """
    sender = validate_region_code(sender)
    receiver = validate_region_code(receiver)
    if kind not in KINDS:
        raise ValueError(f"package kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if seq < 1:
        raise ValueError(f"package sequence numbers start at 1, got {seq}")
    outbox.mkdir(parents=True, exist_ok=True)
    data_path, manifest_path = package_paths(outbox, sender, seq)
    if manifest_path.exists():
        raise FileExistsError(f"package {manifest_path.stem} is already in {outbox}")
    temporary = data_path.with_suffix(".parquet.tmp")
    pq.write_table(table, temporary, compression="zstd")
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    size, sha256 = _file_digest(temporary)
    os.replace(temporary, data_path)
    unsigned = Manifest(
        sender=sender,
        receiver=receiver,
        seq=seq,
        kind=kind,
        rows=table.num_rows,
        size=size,
        sha256=sha256,
        created_at=(now or dt.datetime.now(dt.UTC)).isoformat(),
        key_id=key_id(key.public_key()),
    )
    signature = base64.b64encode(key.sign(unsigned.message())).decode("ascii")
    manifest = Manifest(**{**asdict(unsigned), "signature": signature})
    text = json.dumps(asdict(manifest), ensure_ascii=False, indent=2) + "\n"
    temporary = manifest_path.with_suffix(".json.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, manifest_path)
    _fsync_dir(outbox)
    return manifest


def _manifest_from(data: Any, where: str) -> Manifest:
    if not isinstance(data, Mapping):
        raise PackageRejected("manifest", where, "the manifest is not a JSON object")
    expected = set(Manifest.__dataclass_fields__)
    missing = expected - set(data)
    unknown = set(data) - expected
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if unknown:
            parts.append(f"unknown {', '.join(sorted(unknown))}")
        raise PackageRejected("manifest", where, "; ".join(parts))
    if data["format"] != FORMAT:
        raise PackageRejected("manifest", where, f"format {data['format']!r}, expected {FORMAT}")
    types = {"seq": int, "rows": int, "size": int}
    for name in expected:
        wanted = types.get(name, str)
        value = data[name]
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise PackageRejected("manifest", where, f"{name} must be a {wanted.__name__}")
    try:
        validate_region_code(data["sender"])
        validate_region_code(data["receiver"])
    except ValueError as error:
        raise PackageRejected("manifest", where, str(error)) from None
    if data["kind"] not in KINDS or data["seq"] < 1 or data["rows"] < 0:
        raise PackageRejected("manifest", where, "kind, seq or rows out of range")
    return Manifest(**data)


def read_package(
    manifest_path: Path, *, receiver: str, public_key: Ed25519PublicKey
) -> tuple[Manifest, pa.Table]:
    """The manifest and rows of a package addressed to ``receiver`` and signed with the key of
    ``public_key`` (the sender's); :class:`PackageRejected` if any check fails."""
    where = manifest_path.stem
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageRejected("manifest", where, "no manifest") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackageRejected("manifest", where, f"not JSON ({type(error).__name__})") from None
    manifest = _manifest_from(data, where)
    if manifest.receiver != receiver:
        raise PackageRejected(
            "receiver", where, f"addressed to {manifest.receiver}, not to {receiver}"
        )
    data_path = manifest_path.with_suffix(".parquet")
    try:
        size, sha256 = _file_digest(data_path)
    except FileNotFoundError:
        raise PackageRejected("content", where, "its Parquet file is missing") from None
    if size != manifest.size or sha256 != manifest.sha256:
        raise PackageRejected(
            "content", where, "the Parquet file's size or SHA-256 differs from the manifest's"
        )
    if manifest.key_id != key_id(public_key):
        raise PackageRejected("signature", where, f"signed with key {manifest.key_id}, not ours")
    try:
        public_key.verify(base64.b64decode(manifest.signature, validate=True), manifest.message())
    except (InvalidSignature, ValueError):
        raise PackageRejected("signature", where, "the signature does not verify") from None
    try:
        table = pq.read_table(data_path)
    except (pa.ArrowException, OSError) as error:
        raise PackageRejected(
            "content", where, f"unreadable Parquet ({type(error).__name__})"
        ) from None
    if table.num_rows != manifest.rows:
        raise PackageRejected(
            "rows", where, f"{table.num_rows} rows, the manifest says {manifest.rows}"
        )
    return manifest, table


def pending_packages(outbox: Path, sender: str | None = None) -> list[Path]:
    """The finished packages in ``outbox`` (their manifests), by sender then sequence number;
    only ``sender``'s if given. Files of unfinished packages are not listed."""
    if not outbox.is_dir():
        return []
    found = []
    for path in outbox.iterdir():
        matched = _NAME.match(path.name)
        if matched and (sender is None or matched["sender"] == sender):
            found.append((matched["sender"], int(matched["seq"]), path))
    return [path for _, _, path in sorted(found)]


def remove_unfinished(outbox: Path) -> list[Path]:
    """Delete what a crash while packaging left in ``outbox``: temporary files and Parquet
    files without a manifest. Returns what was removed."""
    removed: list[Path] = []
    if not outbox.is_dir():
        return removed
    for path in sorted(outbox.iterdir()):
        orphan = path.suffix == ".parquet" and not path.with_suffix(".json").exists()
        if path.name.endswith(".tmp") or orphan:
            path.unlink()
            removed.append(path)
    return removed
