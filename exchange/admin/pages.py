"""The admin dashboard's routes under ``/admin``: overview, source pages, quarantine, Data Docs.

Server-rendered Jinja2 pages with inline CSS and an inline SVG chart: nothing is loaded from the
network, so the dashboard works on an isolated government network. Every page reads the
deployment configuration (``GOVX_CONFIG``) and the exchange state database as they are at the
request; nothing is written. Errors are HTML pages shaped like problem documents (status, title,
detail, code), raised as :class:`AdminPageError` and rendered in one place (see
:func:`exchange.admin.install_admin`).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from exchange.admin.access import (
    COOKIE_NAME,
    admin_token,
    cookie_value,
    is_authorised,
    token_ok,
)
from exchange.admin.chart import pass_rate, run_chart
from exchange.admin.quarantine import NotHeld, held_file, held_files, read_page
from exchange.admin.replication import replication_card
from exchange.admin.timefmt import age_text, local_time
from exchange.config import Deployment, load_deployment
from exchange.migrations import MIGRATIONS
from exchange.settings import config_dir, govx_home, lake_dir
from exchange.standards.holder_ids import mask_ids_in_text
from exchange.state import ExchangeState, RunRecord
from quality.cards import evaluate
from quality.docs import data_docs_dir
from quality.history import source_history

__all__ = ["AdminPageError", "login_router", "render_error", "router", "templates"]

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)
RUN_HISTORY = 100
MAX_ERROR = 300

# The browser may load nothing from another origin, whatever a page (or a Data Docs page built by
# a third-party renderer) links to: the dashboard works, and leaks nothing, on an isolated network.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' "
    "data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DATA_DOCS_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

STATUS_LABELS = {
    "running": "运行中",
    "landed": "已落地",
    "succeeded": "成功",
    "failed": "失败",
    "held": "已拦截",
}
BAD_STATUSES = {"failed", "held"}


class AdminPageError(Exception):
    """Answer an admin request with an HTML error page."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers


def render_error(request: Request, error: AdminPageError) -> HTMLResponse:
    """The error page of ``error``."""
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "error": error,
            "login": error.status == 401,
            "next": _safe_next(_here(request)),
            "title": error.title,
            "token_protected": admin_token() is not None,
        },
        status_code=error.status,
        headers={**PAGE_HEADERS, **(error.headers or {})},
    )


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def require_admin(request: Request) -> None:
    """Refuse the request unless it carries the admin token (when one is configured)."""
    if not is_authorised(request):
        raise AdminPageError(
            401,
            "admin_token_required",
            "需要管理员令牌 (admin token required)",
            "This dashboard is protected by GOVX_ADMIN_TOKEN: sign in below or send "
            "'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="govexchange admin"'},
        )


router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(require_admin)])
login_router = APIRouter(prefix="/admin", include_in_schema=False)


# -- helpers ------------------------------------------------------------------------------------


def _deployment() -> Deployment:
    return load_deployment(config_dir())


@contextmanager
def _state() -> Iterator[ExchangeState]:
    """The exchange state, read-only use; a 503 page when its database is not migrated yet."""
    with ExchangeState() as state:
        if not MIGRATIONS.is_current(state.engine):
            raise AdminPageError(
                503,
                "state_not_ready",
                "交换状态库尚未就绪 (exchange state not ready)",
                "The exchange state database has no current schema yet: run 'govx db upgrade' "
                "or a first 'govx sync'.",
            )
        yield state


def _not_found(what: str) -> AdminPageError:
    return AdminPageError(404, "not_found", "未找到 (not found)", what)


def _echo(value: str) -> str:
    """A path parameter as an error page may repeat it: bounded, anything ID-shaped masked."""
    return repr(mask_ids_in_text(value[:64]))


def status_label(status: object) -> str:
    return STATUS_LABELS.get(str(status), str(status))


def status_class(run: RunRecord | None) -> str:
    """``good``, ``bad`` or ``neutral``: the colour of a run's status."""
    if run is None:
        return "neutral"
    status = str(run.status)
    if status in BAD_STATUSES:
        return "bad"
    return "good" if status == "succeeded" else "neutral"


def _run_error(run: RunRecord) -> str:
    if not run.error:
        return ""
    text = mask_ids_in_text(run.error)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _rate_text(run: RunRecord) -> str:
    rate = pass_rate(run)
    return "—" if rate is None else f"{rate:.1%}"


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("token_protected", admin_token() is not None)
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=PAGE_HEADERS
    )


templates.env.globals.update(
    local_time=local_time,
    age_text=age_text,
    status_label=status_label,
    status_class=status_class,
    run_error=_run_error,
    rate_text=_rate_text,
)


# -- pages --------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    """Every source with its card, last run, row counts and freshness; the replication card
    when the deployment is a node (:mod:`exchange.admin.replication`)."""
    deployment = _deployment()
    now = dt.datetime.now(dt.UTC)
    with _state() as state:
        statuses = evaluate(deployment, state, now=now)
    replication = replication_card(
        getattr(request.app.state, "store", None), govx_home(), deployment, now
    )
    departments = {d.id: d.name for d in deployment.departments}
    datasets = {d.id: d.name for d in deployment.datasets}
    counts = {
        card: sum(1 for s in statuses if str(s.card) == card) for card in ("green", "yellow", "red")
    }
    return _render(
        request,
        "overview.html",
        statuses=statuses,
        departments=departments,
        datasets=datasets,
        counts=counts,
        replication=replication,
        title="数据源概览",
    )


@router.get("/sources/{source_id}", response_class=HTMLResponse)
def source_page(request: Request, source_id: str) -> HTMLResponse:
    """One source: its card, its run history and the chart of volume and pass rate."""
    deployment = _deployment()
    source = deployment.source_by_id.get(source_id)
    if source is None:
        raise _not_found(f"No source {_echo(source_id)} in this deployment.")
    with _state() as state:
        runs = source_history(state, source_id, limit=RUN_HISTORY).runs
        status = next((s for s in evaluate(deployment, state) if s.source_id == source_id), None)
        held = {
            h.run.run_id
            for h in held_files(deployment, state, lake_dir())
            if h.run.source_id == source_id
        }
    return _render(
        request,
        "source.html",
        source=source,
        status=status,
        runs=runs,
        chart=run_chart(runs),
        held=held,
        department=deployment.department_by_id.get(source.department),
        dataset=deployment.dataset_by_id.get(source.dataset),
        title=source.name,
    )


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_list(request: Request) -> HTMLResponse:
    """Every recorded quarantine file, newest first, with its row count."""
    deployment = _deployment()
    with _state() as state:
        files = held_files(deployment, state, lake_dir())
    return _render(
        request,
        "quarantine_list.html",
        files=files,
        sources=deployment.source_by_id,
        title="隔离区",
    )


@router.get("/quarantine/{source_id}/{run_id}", response_class=HTMLResponse)
def quarantine_run(
    request: Request,
    source_id: str,
    run_id: str,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """A page of one run's held rows with their reasons; personal data masked."""
    deployment = _deployment()
    with _state() as state:
        try:
            held = held_file(deployment, state, lake_dir(), source_id, run_id)
        except NotHeld:
            raise _not_found(
                f"No quarantine file of run {_echo(run_id)} of source {_echo(source_id)}."
            ) from None
    source = deployment.source_by_id[source_id]
    return _render(
        request,
        "quarantine_run.html",
        held=held,
        source=source,
        rows=read_page(held, source, page),
        title=f"隔离数据 · {source.name}",
    )


# -- Data Docs ----------------------------------------------------------------------------------


def data_docs_root() -> Path:
    """Where the quality gate builds its Data Docs (``$GOVX_HOME/quality/data_docs``)."""
    return data_docs_dir()


@router.get("/data-docs", include_in_schema=False)
def data_docs_redirect() -> RedirectResponse:
    return RedirectResponse("/admin/data-docs/", status_code=307)


@router.get("/data-docs/{path:path}")
def data_docs(request: Request, path: str) -> Response:
    """The Great Expectations Data Docs, read-only; a clear page while none are built."""
    root = data_docs_root().resolve()
    if not (root / "index.html").is_file():
        return _render(
            request, "data_docs_missing.html", status_code=404, root=root, title="数据文档"
        )
    if "\x00" in path:
        raise _not_found("No such Data Docs page.")
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise _not_found("No such Data Docs page.")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        raise _not_found("No such Data Docs page.")
    return FileResponse(target, headers=DATA_DOCS_HEADERS)


# -- login --------------------------------------------------------------------------------------


def _safe_next(value: str) -> str:
    """Only a path of the dashboard itself (no other host, no scheme)."""
    if value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin"


@login_router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/admin") -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), failed=False, title="登录")


@login_router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the typed token; on success set the session cookie and go where the admin was."""
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    given = form.get("token", [""])[0]
    target = _safe_next(form.get("next", ["/admin"])[0])
    token = admin_token()
    if token is None:
        return RedirectResponse(target, status_code=303)
    if not token_ok(given, token):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": target, "failed": True, "title": "登录", "token_protected": True},
            status_code=401,
            headers=PAGE_HEADERS,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        cookie_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/admin",
    )
    return response
