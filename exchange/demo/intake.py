"""The demo's intake scenario: a service-hall window handles 新生儿入户登记 for the sample mother.

Everything goes over real HTTP on a loopback port, through :class:`license_store.client.
LicenseClient`, as a provincial intake platform would integrate: the window's system is
registered as an OAuth2 client granted the matter, gets a token, asks the library to prefill
the case, verifies a certificate offline with the issuing department's public key, and the
holder-facing portal then shows the mother who read her licenses, when and for which case.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["NEWBORN_MATTER", "IntakeDemo", "run_intake_scenario", "serve_api"]

NEWBORN_MATTER = "11440600MB20125487-XSE-001"  # 新生儿入户登记 (config/matters.yaml)
WINDOW = "佛山市禅城区政务服务中心 新生儿入户窗口"
PORTAL = "粤省事 个人数据使用记录"
CASE_ID = "FS-CC-2026-000001"


@dataclass(frozen=True)
class IntakeDemo:
    """What the scenario saw (for the CLI to print and the tests to check)."""

    base_url: str
    prefill: Any  # license_store.client.Prefill
    verified_license: Any  # license_store.client.Verification
    verified_type: str
    department: str
    offline_valid: bool
    tampered_valid: bool
    access_log: Any  # license_store.client.AccessLog


@contextmanager
def serve_api(timeout_s: float = 30) -> Iterator[str]:
    """Serve the intake API (``create_app()`` on the configured store) on a free loopback port
    in a background thread; yields its base URL and stops it on exit."""
    import uvicorn

    from exchange.logs import uvicorn_log_config
    from license_store.api import create_app

    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=0,  # the system picks a free port; read back once the server listens
        log_config=uvicorn_log_config(),
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="intake-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the intake API did not start on a loopback port")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)


def _register(deployment: Any) -> tuple[tuple[str, str], tuple[str, str]]:
    """The window's intake client and the portal's client (secrets are shown only here)."""
    from license_store.clients import ClientRegistry

    with ClientRegistry() as registry:
        window, window_secret = registry.add(
            name=WINDOW,
            kind="intake",
            department="foshan_public_security",
            region="440604",
            matters=[NEWBORN_MATTER],
            license_types=[
                m.license_type
                for m in next(x for x in deployment.matters if x.code == NEWBORN_MATTER).materials
                if m.license_type
            ],
        )
        portal, portal_secret = registry.add(name=PORTAL, kind="portal", region="440000")
    return (window.client_id, window_secret), (portal.client_id, portal_secret)


def run_intake_scenario(deployment: Any, holder_id: str) -> IntakeDemo:
    """Run the scenario for ``holder_id`` against a freshly started API; see the module doc."""
    from license_store.client import LicenseClient
    from license_store.signing import KeyRing

    (window_id, window_secret), (portal_id, portal_secret) = _register(deployment)
    types = {t.code: t for t in deployment.license_types}
    with serve_api() as base_url:
        with LicenseClient(base_url, window_id, window_secret) as window:
            prefill = window.prefill(NEWBORN_MATTER, holder_id, CASE_ID)
            satisfied = [m for m in prefill.materials if m.license is not None]
            if not satisfied:
                raise RuntimeError("the library satisfied none of the matter's materials")
            chosen = next(
                (m for m in satisfied if m.license_type == "birth_medical_certificate"),
                satisfied[0],
            )
            verification = window.verification(
                chosen.license.license_id, matter=NEWBORN_MATTER, case_id=CASE_ID
            )
        license_type = types[chosen.license.type_code]
        # the signer is the department that issued this license (a county bureau may issue a
        # provincial type); the verification names it
        department = verification.signature.department or license_type.issuing_department
        public_pem = KeyRing().public_path(department).read_bytes()
        bundle = verification.bundle
        offline_valid = LicenseClient.verify_offline(bundle, public_pem)
        tampered = {**bundle, "content": dict(bundle["content"], number="TAMPERED")}
        tampered_valid = LicenseClient.verify_offline(tampered, public_pem)
        with LicenseClient(base_url, portal_id, portal_secret) as portal:
            log = portal.access_log(holder_id, case_id="portal-session-0001")
    return IntakeDemo(
        base_url=base_url,
        prefill=prefill,
        verified_license=verification,
        verified_type=license_type.name,
        department=department,
        offline_valid=offline_valid,
        tampered_valid=tampered_valid,
        access_log=log,
    )
