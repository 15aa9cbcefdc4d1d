"""Replication packages (:mod:`exchange.packages`): written atomically, refused with a reason.

Real files, real Parquet, real Ed25519 keys: a package round-trips; a changed byte, another
key, another receiver, a wrong row count or a broken manifest is refused before any row is
used; a crash while packaging leaves nothing that looks finished.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.packages import (
    Manifest,
    PackageRejected,
    package_paths,
    pending_packages,
    read_package,
    remove_unfinished,
    write_package,
)

CHANCHENG, FOSHAN, ZHANJIANG = "440604", "440600", "440800"


def _changes(rows: int = 50) -> pa.Table:
    return pa.table(
        {
            "license_id": [f"L-{n}" for n in range(rows)],
            "holder_name": [f"测试{n}" for n in range(rows)],
            "version": list(range(rows)),
        }
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _write(outbox: Path, key: Ed25519PrivateKey, seq: int = 1, rows: int = 50) -> Path:
    write_package(
        outbox,
        sender=CHANCHENG,
        receiver=FOSHAN,
        seq=seq,
        kind="licenses",
        table=_changes(rows),
        key=key,
    )
    return package_paths(outbox, CHANCHENG, seq)[1]


def test_a_package_round_trips(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest_path = _write(tmp_path, key)
    manifest, table = read_package(manifest_path, receiver=FOSHAN, public_key=key.public_key())
    assert table.equals(_changes())
    assert (manifest.sender, manifest.receiver, manifest.seq, manifest.rows) == (
        CHANCHENG,
        FOSHAN,
        1,
        50,
    )
    assert manifest.name == "440604-000000000001"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "440604-000000000001.json",
        "440604-000000000001.parquet",
    ]


def test_a_sequence_number_is_used_once(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    _write(tmp_path, key)
    with pytest.raises(FileExistsError, match="440604-000000000001"):
        _write(tmp_path, key)


def test_a_changed_byte_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest_path = _write(tmp_path, key)
    data = manifest_path.with_suffix(".parquet")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(PackageRejected) as refused:
        read_package(manifest_path, receiver=FOSHAN, public_key=key.public_key())
    assert refused.value.check == "content"
    assert "测试" not in str(refused.value)


def test_another_key_or_an_edited_manifest_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    manifest_path = _write(tmp_path, key)
    with pytest.raises(PackageRejected) as refused:
        read_package(
            manifest_path, receiver=FOSHAN, public_key=Ed25519PrivateKey.generate().public_key()
        )
    assert refused.value.check == "signature"
    # a forger who rewrites the manifest (more rows, say) cannot re-sign it
    data = json.loads(manifest_path.read_text())
    data["created_at"] = "2020-01-01T00:00:00+00:00"
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(PackageRejected, match="signature does not verify"):
        read_package(manifest_path, receiver=FOSHAN, public_key=key.public_key())


def test_a_package_for_another_node_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest_path = _write(tmp_path, key)
    with pytest.raises(PackageRejected, match="addressed to 440600, not to 440800"):
        read_package(manifest_path, receiver=ZHANJIANG, public_key=key.public_key())


def test_a_row_count_that_does_not_match_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The sender's own bug (the signature verifies): the file holds fewer rows than stated."""
    manifest_path = _write(tmp_path, key, rows=5)
    data = json.loads(manifest_path.read_text())
    data["rows"] = 6
    data["signature"] = ""

    unsigned = Manifest(**data)
    data["signature"] = base64.b64encode(key.sign(unsigned.message())).decode()
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(PackageRejected) as refused:
        read_package(manifest_path, receiver=FOSHAN, public_key=key.public_key())
    assert refused.value.check == "rows"
    assert "5 rows, the manifest says 6" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json {", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"sender": "440604"}', "missing"),
        (b"\xff\xfe broken", "not JSON"),
    ],
)
def test_a_broken_manifest_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey, text: str | bytes, reason: str
) -> None:
    manifest_path = _write(tmp_path, key)
    if isinstance(text, bytes):
        manifest_path.write_bytes(text)
    else:
        manifest_path.write_text(text)
    with pytest.raises(PackageRejected, match=reason) as refused:
        read_package(manifest_path, receiver=FOSHAN, public_key=key.public_key())
    assert refused.value.check == "manifest"


def test_a_crash_while_packaging_leaves_nothing_finished(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    _write(tmp_path, key, seq=1)
    _write(tmp_path, key, seq=2)
    # as a crash leaves it: package 3's data written, its manifest not yet renamed into place
    data, manifest = package_paths(tmp_path, CHANCHENG, 3)
    pq.write_table(_changes(), data)
    manifest.with_suffix(".json.tmp").write_text("{")
    assert [path.name for path in pending_packages(tmp_path)] == [
        "440604-000000000001.json",
        "440604-000000000002.json",
    ]
    removed = remove_unfinished(tmp_path)
    assert sorted(path.name for path in removed) == [
        "440604-000000000003.json.tmp",
        "440604-000000000003.parquet",
    ]
    _write(tmp_path, key, seq=3)  # made again
    assert len(pending_packages(tmp_path, CHANCHENG)) == 3
    assert pending_packages(tmp_path, ZHANJIANG) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sender": "44060"}, "six digits"),
        ({"kind": "everything"}, "kind must be one of"),
        ({"seq": 0}, "start at 1"),
    ],
)
def test_bad_arguments_are_refused_before_writing(
    tmp_path: Path, key: Ed25519PrivateKey, changes: dict, message: str
) -> None:
    arguments = {"sender": CHANCHENG, "receiver": FOSHAN, "seq": 1, "kind": "licenses"}
    arguments.update(changes)
    with pytest.raises(ValueError, match=message):
        write_package(tmp_path / "outbox", table=_changes(), key=key, **arguments)
    assert not (tmp_path / "outbox").exists()
