"""The admin dashboard in a real headless browser: Debian's chromium driven by Playwright.

``govx serve`` runs the real app on a loopback port against the synced demo deployment (one
stale and one dirty source); chromium loads ``/admin``, and the test checks what an admin sees:
the stale source's card is yellow and the dirty source's red (the badges' computed colours), the
source page's SVG chart has bars and a pass-rate line of non-zero size, the quarantine browser
shows held rows with no raw ID number in the page text, no request left the loopback server, and
a Data Docs page's CDN links are blocked by its Content-Security-Policy.

``make test`` installs chromium (``make browser``); without it the test is skipped with the
reason, except under ``CI=true``, where a missing browser fails it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_demo import CLEAN_SOURCE, DIRTY_SOURCE, STALE_SOURCE, DemoDeployment

from tests.servers import start_govx_serve

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
YELLOW = "rgb(191, 135, 0)"
RED = "rgb(207, 34, 46)"
GREEN = "rgb(26, 127, 55)"


def _missing_browser(reason: str) -> None:
    message = f"{reason}; run 'make browser' (apt-get install -y chromium fonts-wqy-zenhei)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """A headless chromium launched through Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("the playwright package is not installed")
    if not CHROMIUM.exists():
        _missing_browser(f"{CHROMIUM} is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def served(demo_env: DemoDeployment, tmp_path: Path) -> Iterator[str]:
    """``govx serve`` on a free loopback port, against the demo deployment."""
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        base, process = start_govx_serve({**os.environ}, log, log_path)
        try:
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert not RAW_ID.search(log_path.read_text())


def test_dashboard_in_chromium(chromium: object, served: str, tmp_path: Path) -> None:
    started = time.monotonic()
    context = chromium.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"{served}/admin")
    assert page.locator("html").get_attribute("lang") == "zh-CN"

    def badge(source_id: str) -> tuple[str, str]:
        card = page.locator(f'tr[data-source="{source_id}"] span.card')
        colour = card.evaluate("element => getComputedStyle(element).backgroundColor")
        return card.get_attribute("data-card"), colour

    assert badge(STALE_SOURCE) == ("yellow", YELLOW)
    assert badge(DIRTY_SOURCE) == ("red", RED)
    assert badge(CLEAN_SOURCE) == ("green", GREEN)
    stale_reasons = page.locator(f'tr[data-source="{STALE_SOURCE}"] .reasons').inner_text()
    assert "no successful run for" in stale_reasons
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    page.click(f'tr[data-source="{CLEAN_SOURCE}"] a[href="/admin/sources/{CLEAN_SOURCE}"]')
    page.wait_for_url(f"{served}/admin/sources/{CLEAN_SOURCE}")
    chart = page.locator("svg#run-chart")
    chart_box = chart.bounding_box()
    assert chart_box and chart_box["width"] > 300 and chart_box["height"] > 100
    bars = page.locator("svg#run-chart rect.bar")
    assert bars.count() == 2
    for index in range(bars.count()):
        box = bars.nth(index).bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        assert chart_box["y"] <= box["y"] and box["y"] + box["height"] <= chart_box["y"] + 260
    line = page.locator("svg#run-chart polyline.pass-rate").bounding_box()
    assert line and line["width"] > 0
    page.screenshot(path=str(tmp_path / "source.png"), full_page=True)

    page.goto(f"{served}/admin/quarantine")
    links = page.locator(f'tr[data-source="{CLEAN_SOURCE}"] a')
    assert links.count() == 1
    links.first.click()
    page.wait_for_selector("table#held-rows")
    held_rows = page.locator("table#held-rows tbody tr")
    assert held_rows.count() == 4  # the household registry's four dirty persons
    text = page.locator("body").inner_text()
    assert not RAW_ID.search(text)
    assert "resident" in text or "id_number" in text  # the reasons and the columns are there
    page.screenshot(path=str(tmp_path / "quarantine.png"), full_page=True)

    assert requested and all(url.startswith(served) for url in requested), requested

    # The Data Docs: GX's renderer links CDNs; the pages' Content-Security-Policy keeps the
    # browser from fetching them.
    blocked: dict[str, str | None] = {}
    page.on("requestfailed", lambda request: blocked.__setitem__(request.url, request.failure))
    page.goto(f"{served}/admin/data-docs/")
    links = page.locator('a[href$=".html"]')
    if links.count() == 0:  # no gate run has built them in this deployment
        assert "尚未生成" in page.locator("h1").inner_text()
    else:
        before = len(requested)
        page.goto(f"{served}/admin/data-docs/{links.first.get_attribute('href')}")
        page.wait_for_load_state("load")
        offsite = [url for url in requested[before:] if not url.startswith(served)]
        assert all(blocked.get(url) == "csp" for url in offsite), (offsite, blocked)
    context.close()
    print(f"browser walk: {time.monotonic() - started:.1f} s")
