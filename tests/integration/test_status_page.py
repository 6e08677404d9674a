"""The status page in a real browser: headless Chromium driven over WebDriver.

``phoenix-lb run`` serves ``/status`` on its admin listener; chromedriver
(Debian ``chromium-driver``) drives Debian's ``chromium`` through the W3C
WebDriver protocol (``tests/support/webdriver.py``, urllib only).  The test
loads the page, checks that every server row and its state render, drains a
server with the page's button and waits for the row to say so (and the API
to agree), enables it again, and keeps a screenshot in
``tests/artifacts/status-page.png`` (gitignored).  A second test runs the
token flow: the API answers 401, the page asks for the token, then works.

Both skip when chromium or chromedriver is missing, and fail under CI=true.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.webdriver import ChromeDriver, Element, Session

from .helpers import wait_for
from .opsupport import Phoenix, get, ops_config, require_binary, running

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "tests" / "artifacts" / "status-page.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A listener name that would be markup if the page ever used innerHTML.
HOSTILE_NAME = "<b>web</b>"


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[ChromeDriver]:
    chromium = require_binary("/usr/bin/chromium", "chromium")
    chromedriver = require_binary("/usr/bin/chromedriver", "chromium-driver")
    workdir = tmp_path / "browser"
    workdir.mkdir()
    instance = ChromeDriver(chromedriver, chromium, workdir).start()
    try:
        yield instance
    finally:
        instance.stop()


def api_state(lb: Phoenix, address: str) -> str:
    for upstream in lb.admin("/api/status").json()["upstreams"]:
        for server in upstream["servers"]:
            if server["address"] == address:
                return str(server["state"])
    raise KeyError(address)


def text_content(element: Element) -> str:
    """The DOM text, not the rendered one (CSS upper-cases the badges)."""
    return str(element.property("textContent")).strip()


def server_rows(page: Session) -> list[Element]:
    return page.find_all("section[data-upstream='app'] tr.server")


def test_status_page_renders_and_drains(
    tmp_path: Path, backends: Any, driver: ChromeDriver
) -> None:
    b0, b1 = backends(2)
    config = ops_config(
        [b0.address, b1.address],
        workers=1,
        health_check={"interval": "0.5s", "timeout": "0.5s", "rise": 1, "fall": 1},
    )
    config["listeners"][0]["name"] = HOSTILE_NAME
    with running(tmp_path, config) as lb:
        for _ in range(20):
            assert get(lb.port)[0] == 200
        page = driver.session()
        origin = f"http://127.0.0.1:{lb.admin_port}"
        page.get(f"{origin}/status")
        page.wait(lambda: len(server_rows(page)) == 2, what="two server rows")
        # A marker on the window: still there later means no page reload.
        page.execute("window.phoenixTestMarker = 42;")

        rows = server_rows(page)
        assert [r.attribute("data-server") for r in rows] == [b0.address, b1.address]
        assert [text_content(r.find("th.address")) for r in rows] == [b0.address, b1.address]
        assert [text_content(r.find(".badge")) for r in rows] == ["up", "up"]
        assert [r.attribute("data-state") for r in rows] == ["up", "up"]
        assert text_content(page.find("#health")) == "ok"
        assert text_content(page.find("#workers")) == "1"
        assert text_content(page.find("#reloads")) == "0 ok, 0 failed"
        page.wait(
            lambda: sum(int(text_content(r.find("td.total"))) for r in server_rows(page)) == 20,
            what="20 requests in the rows",
        )
        page.wait(
            lambda: all(
                text_content(r.find("td.check")).startswith("ok, ") for r in server_rows(page)
            ),
            what="health check results in the rows",
        )
        listener = page.find("#listeners tbody tr")
        assert text_content(listener.find("th")) == HOSTILE_NAME  # text, not markup
        assert page.find_all("#listeners tbody b") == []

        row = page.find(f'tr[data-server="{b0.address}"]')
        row.find('button[data-action="drain"]').click()
        page.wait(lambda: row.attribute("data-state") == "draining", what="the row to drain")
        assert text_content(row.find(".badge")) == "draining"
        assert api_state(lb, b0.address) == "draining"
        assert api_state(lb, b1.address) == "up"
        # Drain is disabled while draining; enable is offered.
        assert row.find('button[data-action="drain"]').property("disabled") is True
        assert row.find('button[data-action="enable"]').property("disabled") is False
        # Traffic avoids the drained server.
        b0.reset()
        for _ in range(6):
            assert get(lb.port)[0] == 200
        assert [r.path for r in b0.requests if r.path != "/health"] == []

        # Let one timed refresh pass: the same row element is updated in place.
        refreshed = text_content(page.find("#updated"))
        page.wait(lambda: text_content(page.find("#updated")) != refreshed, what="a refresh")
        assert page.execute("return window.phoenixTestMarker;") == 42
        assert row.attribute("data-state") == "draining"

        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT.write_bytes(page.screenshot_png())
        assert ARTIFACT.read_bytes()[:8] == PNG_MAGIC
        assert ARTIFACT.stat().st_size > 10_000

        row.find('button[data-action="enable"]').click()
        page.wait(lambda: row.attribute("data-state") == "up", what="the row to come back up")
        assert api_state(lb, b0.address) == "up"

        # Everything the page loaded came from the admin listener itself.
        loaded = page.execute("return performance.getEntriesByType('resource').map((e) => e.name);")
        assert loaded and all(url.startswith(origin + "/") for url in loaded), loaded
        assert "bad-text" not in (page.find("#updated").attribute("class") or "")


def test_status_page_asks_for_the_token(
    tmp_path: Path, backends: Any, driver: ChromeDriver
) -> None:
    token = "page-token-0123456789abcdef"
    token_file = tmp_path / "admin.token"
    token_file.write_text(token)
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    (b0,) = backends(1)
    config = ops_config([b0.address], admin_extra={"auth_token_file": str(token_file)})
    with running(tmp_path, config) as lb:
        page = driver.session()
        page.get(f"http://127.0.0.1:{lb.admin_port}/status")
        form = page.find("#auth")
        page.wait(lambda: form.property("hidden") is False, what="the token form")
        assert server_rows(page) == []

        page.find("#token").send_keys("wrong-token-0123456789")
        page.find("#token-save").click()
        page.wait(
            lambda: "refused" in text_content(page.find("#auth-error")), what="a refused token"
        )

        page.find("#token").send_keys(token)
        page.find("#token-save").click()
        page.wait(lambda: len(server_rows(page)) == 1, what="the server row")
        assert form.property("hidden") is True
        assert page.execute("return sessionStorage.getItem('phoenix-lb-admin-token');") == token

        row = server_rows(page)[0]
        row.find('button[data-action="disable"]').click()
        page.wait(lambda: row.attribute("data-state") == "disabled", what="the row to disable")
        lb.token = token
        assert api_state(lb, b0.address) == "disabled"
        health = lb.admin("/health")
        assert health.status == 503
        row.find('button[data-action="enable"]').click()
        wait_for(lambda: api_state(lb, b0.address) == "up", 5, "the server enabled again")
