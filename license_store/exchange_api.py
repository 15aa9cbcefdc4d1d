"""The receiving end of upward replication: ``POST /v1/exchange/packages``.

A child node (a ``node`` client with the ``exchange:push`` scope, whose region is the package's
sender and a child of this node's region) sends one package per request: the Parquet file as the
body, the manifest base64url-encoded in the ``X-Govx-Manifest`` header. The API writes both to a
private folder under ``$GOVX_HOME/inbox``, checks them (:func:`exchange.packages.read_package`:
manifest, receiver, content hash, the sender's signature with the key this node trusts for it,
rows) and applies the package -- license versions into the store
(:func:`license_store.replication.apply_package`), a sync run's row versions into the lake and
the exchange state (:func:`exchange.dataset_packages.apply_dataset_package`) -- then deletes
the files. The answer:

- 200 ``applied``, or ``duplicate`` for a package applied before (nothing changes);
- 409 ``sequence_gap`` with ``expected_seq``: send that package first;
- 409 ``package_conflict``: the package clashes with this node's licenses (nothing applied);
- 422 ``package_rejected`` with the failed check in ``field``; 413 for an oversized package;
- 403 when the caller is not the sending node, or this node does not trust its key;
- 503 ``not_a_node`` when this deployment has no node identity (``govx node init``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from exchange.dataset_packages import apply_dataset_package
from exchange.nodes import NodeConfig, NodeError, load_node
from exchange.packages import PackageRejected, read_package
from exchange.standards.regions import parent_code
from exchange.state import ExchangeState
from license_store.errors import ConflictError
from license_store.problems import ProblemError, problem_responses
from license_store.replication import PackageInvalid, SequenceGap, apply_package
from license_store.security import authorize
from license_store.signing import KeyFileError, KeyRing

__all__ = ["MAX_MANIFEST_BYTES", "PackageAck", "max_package_bytes", "router"]

log = logging.getLogger("govexchange.exchange_api")

router = APIRouter(tags=["exchange"])

MAX_MANIFEST_BYTES = 8_192
DEFAULT_MAX_PACKAGE_MB = 1_024


def max_package_bytes() -> int:
    """The largest package body accepted: ``GOVX_MAX_PACKAGE_MB`` MiB (default 1,024)."""
    text = os.environ.get("GOVX_MAX_PACKAGE_MB", "")
    try:
        megabytes = int(text) if text else DEFAULT_MAX_PACKAGE_MB
    except ValueError:
        megabytes = DEFAULT_MAX_PACKAGE_MB
    return max(1, megabytes) * 1024 * 1024


class PackageAck(BaseModel):
    """The receiving node's acknowledgement: the package is applied (now or before)."""

    status: str = Field(description="`applied`, or `duplicate` when it was applied before")
    sender: str = Field(description="the sending node's region code")
    seq: int = Field(description="the package's sequence number")
    kind: str = Field(default="licenses", description="`licenses` or `dataset`")
    rows: int = Field(
        description="license versions, or a dataset run's row versions, applied (0 for a duplicate)"
    )
    licenses_changed: int = Field(description="licenses inserted or moved to a newer version")


def _home() -> Path:
    from exchange.settings import govx_home

    return govx_home()


def _this_node(request: Request) -> NodeConfig:
    node: NodeConfig | None = getattr(request.app.state, "node", None)
    if node is None:
        try:
            node = load_node(_home())
        except NodeError as error:
            raise ProblemError(
                503, "not_a_node", "Not an exchange node", f"this deployment is not a node: {error}"
            ) from None
        request.app.state.node = node
    return node


def _exchange_state(request: Request) -> ExchangeState:
    """This node's exchange state (where received runs are recorded), opened once."""
    state: ExchangeState | None = getattr(request.app.state, "exchange_state", None)
    if state is None:
        state = ExchangeState()
        state.upgrade()
        request.app.state.exchange_state = state
    return state


def _lake() -> Path | str:
    """This node's lake: a local directory, or an ``s3://`` URL (:mod:`exchange.lakefs`)."""
    from exchange.settings import lake_dir

    return lake_dir()


def _rejected(check: str, detail: str) -> ProblemError:
    return ProblemError(422, "package_rejected", "Package rejected", detail, field=check)


def _manifest_bytes(value: str | None) -> bytes:
    if not value:
        raise _rejected(
            "manifest", "the X-Govx-Manifest header (base64url of the manifest) is missing"
        )
    if len(value) > MAX_MANIFEST_BYTES * 2:
        raise _rejected("manifest", "the manifest header is too long")
    try:
        return base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _rejected("manifest", "the X-Govx-Manifest header is not base64url") from None


def _sender_of(data: bytes) -> tuple[str, int]:
    """The sender and seq the manifest claims (checked fully by ``read_package`` later)."""
    try:
        manifest: Any = json.loads(data.decode("utf-8"))
        sender, seq = manifest["sender"], manifest["seq"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise _rejected(
            "manifest", "the manifest is not a JSON object with sender and seq"
        ) from None
    if not (isinstance(sender, str) and len(sender) == 6 and sender.isdigit()):
        raise _rejected("manifest", "the manifest's sender is not a region code")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise _rejected("manifest", "the manifest's seq is not a positive integer")
    return sender, seq


STALE_INBOX_S = 3_600.0


def _clear_stale(inbox: Path) -> None:
    """Delete what a receiver killed mid-request left in the inbox (folders older than
    :data:`STALE_INBOX_S`: no delivery takes that long, and a live one is never touched)."""
    cutoff = time.time() - STALE_INBOX_S
    for folder in inbox.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                log.warning("removed %s, left by an interrupted delivery", folder.name)
        except OSError:
            continue


async def _receive(request: Request, path: Path, limit: int) -> None:
    """Stream the body to ``path``, refusing (413) beyond ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(
            413, "package_too_large", "Package too large", f"at most {limit:,} bytes"
        )
    size = 0
    with path.open("wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProblemError(
                    413, "package_too_large", "Package too large", f"at most {limit:,} bytes"
                )
            handle.write(chunk)


@router.post(
    "/v1/exchange/packages",
    response_model=PackageAck,
    summary="Deliver a replication package (child nodes)",
    responses={
        **problem_responses(401, 403, 409, 413, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the package's Parquet file",
            "content": {
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def receive_package(
    request: Request,
    x_govx_manifest: Annotated[
        str | None,
        Header(description="the package's manifest (JSON), base64url-encoded"),
    ] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> PackageAck:
    """Apply a package from a child node: idempotent (an applied number is acknowledged as
    `duplicate`), in order (a gap is refused with the number expected). Needs the
    `exchange:push` scope, as the node client of the package's sender."""
    caller = await authorize(request, "exchange:push", authorization)
    node = _this_node(request)
    data = _manifest_bytes(x_govx_manifest)
    sender, seq = _sender_of(data)
    if caller.client.kind != "node" or caller.client.region != sender:
        raise ProblemError(
            403,
            "not_the_sender",
            "Forbidden",
            f"client {caller.client_id} does not speak for node {sender}",
        )
    if parent_code(sender) != node.region:
        raise ProblemError(
            403, "not_a_child", "Forbidden", f"node {sender} is not a child of node {node.region}"
        )
    home = _home()
    try:
        public_key = KeyRing(home / "keys").public_key(f"node-{sender}")
    except KeyFileError:
        raise ProblemError(
            403,
            "untrusted_sender",
            "Forbidden",
            f"this node has no key for node {sender}: run `govx node trust --region {sender}`",
        ) from None
    inbox = home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    _clear_stale(inbox)
    folder = Path(tempfile.mkdtemp(prefix=f"{sender}-", dir=inbox))
    try:
        stem = f"{sender}-{seq:012d}"
        manifest_path = folder / f"{stem}.json"
        manifest_path.write_bytes(data)
        started = time.perf_counter()
        await _receive(request, folder / f"{stem}.parquet", max_package_bytes())
        received = time.perf_counter()
        try:
            manifest, table = await run_in_threadpool(
                read_package, manifest_path, receiver=node.region, public_key=public_key
            )
        except PackageRejected as error:
            log.warning("refused package %s: %s", stem, error)
            raise _rejected(error.check, str(error)) from None
        store = request.app.state.store
        checked = time.perf_counter()
        try:
            if manifest.kind == "dataset":
                applied = await run_in_threadpool(
                    apply_dataset_package,
                    store,
                    _exchange_state(request),
                    _lake(),
                    sender,
                    seq,
                    table,
                )
            else:
                applied = await run_in_threadpool(apply_package, store, sender, seq, table)
        except SequenceGap as gap:
            raise ProblemError(
                409,
                "sequence_gap",
                "Sequence gap",
                str(gap),
                headers={"X-Govx-Expected-Seq": str(gap.expected)},
                expected_seq=gap.expected,
            ) from None
        except ConflictError as error:
            log.warning("package %s conflicts with this node's data: %s", stem, error)
            raise ProblemError(409, "package_conflict", "Package conflict", str(error)) from None
        except PackageInvalid as error:
            raise _rejected("content", str(error)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log.info(
        "%s package %s from node %s: %s, %d rows; received in %.2f s, checked in %.2f s, "
        "applied in %.2f s",
        manifest.kind,
        stem,
        sender,
        "duplicate" if applied.duplicate else "applied",
        applied.rows,
        received - started,
        checked - received,
        time.perf_counter() - checked,
    )
    return PackageAck(
        status="duplicate" if applied.duplicate else "applied",
        sender=sender,
        seq=seq,
        kind=manifest.kind,
        rows=applied.rows,
        licenses_changed=applied.licenses_changed,
    )
