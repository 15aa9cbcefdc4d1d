"""Department keys and Merkle-batch signatures of license versions, verified offline."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from license_store.signing import (
    KeyFileError,
    KeyRing,
    ProofStep,
    canonical_content,
    sign_batch,
    verify_bundle,
    verify_inclusion,
)


def content(n: int) -> dict:
    return {
        "license_id": f"1.2.156.3005.2.TYPE.ISSUER.2026{n:07d}.001.X",
        "holder_name": f"居民{n}",
        "issue_date": dt.date(2020, 1, 1) + dt.timedelta(days=n),
        "status": "valid",
        "face": {"address": "广东省佛山市禅城区祖庙路1号"},
    }


def test_canonical_content_is_stable_and_order_free() -> None:
    a = canonical_content({"b": 1, "a": dt.date(2026, 1, 2), "c": "中文"})
    b = canonical_content({"c": "中文", "a": dt.date(2026, 1, 2), "b": 1})
    assert a == b == '{"a":"2026-01-02","b":1,"c":"中文"}'.encode()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 1000])
def test_every_license_of_a_batch_verifies_and_nothing_else_does(tmp_path: Path, size: int) -> None:
    ring = KeyRing(tmp_path / "keys")
    public = ring.generate("gd_public_security")
    contents = [canonical_content(content(n)) for n in range(size)]
    batch, proofs = sign_batch(
        "gd_public_security", ring.private_key("gd_public_security"), contents
    )
    assert batch.leaves == size and len(proofs) == size
    for item, proof in zip(contents, proofs, strict=True):
        assert verify_inclusion(public, item, proof, batch)
    altered = canonical_content({**content(0), "status": "revoked"})
    assert not verify_inclusion(public, altered, proofs[0], batch)
    if size > 1:
        assert not verify_inclusion(public, contents[0], proofs[1], batch)  # someone else's proof
        flipped = [ProofStep("L" if s.side == "R" else "R", s.hash) for s in proofs[0]]
        assert not verify_inclusion(public, contents[0], flipped, batch)
    forged = dataclasses.replace(batch, root="00" * 32)
    assert not verify_inclusion(public, contents[0], proofs[0], forged)
    other = KeyRing(tmp_path / "other").generate("gd_public_security")
    assert not verify_inclusion(other, contents[0], proofs[0], batch)  # another key


def test_a_bundle_verifies_offline_with_only_the_public_key(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    ring.generate("foshan_civil_affairs")
    item = json.loads(json.dumps(content(3), default=str))  # what an intake system receives
    batch, [proof] = sign_batch(
        "foshan_civil_affairs", ring.private_key("foshan_civil_affairs"), [canonical_content(item)]
    )
    bundle = json.loads(
        json.dumps(
            {
                "content": item,
                "proof": [dataclasses.asdict(s) for s in proof],
                "batch": dataclasses.asdict(batch),
            }
        )
    )
    pem = ring.public_path("foshan_civil_affairs").read_bytes()
    assert verify_bundle(bundle, pem)
    assert not verify_bundle({**bundle, "content": {**item, "holder_name": "他人"}}, pem)
    assert not verify_bundle({**bundle, "batch": {**bundle["batch"], "signature": "!!"}}, pem)
    assert not verify_bundle({"content": item}, pem)  # incomplete: refused, not an exception
    assert not verify_bundle(bundle, b"not a key")


def test_private_keys_are_private_and_not_overwritten(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    ring.generate("gd_health")
    private = tmp_path / "keys" / "gd_health.ed25519.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    with pytest.raises(KeyFileError, match="already has a key"):
        ring.generate("gd_health")
    os.chmod(private, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        ring.private_key("gd_health")
    with pytest.raises(KeyFileError, match="govx keys generate"):
        ring.private_key("nobody")
    assert ring.departments() == ["gd_health"]


def test_govx_keys_generate_list_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from exchange.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["keys", "generate", "--department", "gd_health"])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["keys", "generate", "--department", "gd_health"])
    assert again.exit_code != 0 and "already has a key" in again.output
    every = runner.invoke(app, ["keys", "generate", "--all"])
    assert every.exit_code == 0, every.output  # the others; gd_health is kept
    listed = runner.invoke(app, ["keys", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "gd_health" in listed.output and "600" in listed.output
    exported = runner.invoke(app, ["keys", "export", "gd_health"])
    assert exported.exit_code == 0 and exported.output.startswith("-----BEGIN PUBLIC KEY-----")
    unknown = runner.invoke(app, ["keys", "generate", "--department", "nope"])
    assert unknown.exit_code != 0 and "unknown department 'nope'" in unknown.output
