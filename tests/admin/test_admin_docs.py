"""Every admin page and setting is documented (docs/admin.md, README)."""

from __future__ import annotations

from pathlib import Path

from exchange.admin.access import TOKEN_ENV
from exchange.admin.pages import login_router, router

REPO = Path(__file__).resolve().parents[2]


def test_every_admin_page_is_documented() -> None:
    guide = (REPO / "docs" / "admin.md").read_text(encoding="utf-8")
    paths = {route.path for route in (*router.routes, *login_router.routes)}
    paths = {path.replace("{path:path}", "") for path in paths if path.rstrip("/") != "/admin"}
    assert "/admin/data-docs/" in paths and "/admin/quarantine/{source_id}/{run_id}" in paths
    for path in sorted(paths):
        assert f"`{path}`" in guide, f"{path} is not in docs/admin.md"
    assert "`/admin`" in guide
    assert TOKEN_ENV in guide
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"`{TOKEN_ENV}`" in readme and "docs/admin.md" in readme
