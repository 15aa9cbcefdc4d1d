"""The admin dashboard (``/admin``): sources and their cards, run history, quarantine, Data Docs,
and on a node its replication lag.

Served by the intake API's application (:func:`license_store.api.create_app` calls
:func:`install_admin`). See ``docs/admin.md``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from exchange.admin.pages import AdminPageError, login_router, render_error, router

__all__ = ["AdminPageError", "install_admin"]


def install_admin(app: FastAPI) -> None:
    """Add the dashboard's pages and its HTML error pages to ``app``."""

    async def _admin_error(request: Request, error: Exception) -> HTMLResponse:
        assert isinstance(error, AdminPageError)
        return render_error(request, error)

    app.add_exception_handler(AdminPageError, _admin_error)
    app.include_router(login_router)
    app.include_router(router)
