"""Cross-origin calls from a page in headless Chromium (MODAVERSE_CORS_ORIGINS): the browser itself decides
whether a page may read an answer, so the test asks it. A page of another origin (a blank page on its own
port) calls the web front door: allowed when that origin is listed (a simple GET, and a POST whose
Authorization header needs a preflight, its error answers readable too), refused by the browser when not.
Settings and preflight headers are checked over plain HTTP as well."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from modaverse_web.settings import WebSettings

from .browser import chrome, require_browser
from .stack import RunningWeb, Stack

require_browser()

# Runs in the page: fetch, and report what the page could see (or that the browser refused it).
FETCH = """
const [url, init, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
fetch(url, init)
  .then(async (r) => done({status: r.status, body: await r.text()}))
  .catch((e) => done({refused: String(e)}));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chrome() as driver:
        yield driver


class _Page(http.server.BaseHTTPRequestHandler):
    """A blank page of its own origin (the playground's CSP would keep its own page from calling out)."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def page_origin(browser: Any) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    browser.get(origin + "/")
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def open_api(stack: Stack, page_origin: str) -> RunningWeb:
    return stack.start_web(cors_origins=f"https://elsewhere.example, {page_origin}")


@pytest.fixture(scope="module")
def closed_api(stack: Stack) -> RunningWeb:
    return stack.start_web()


def fetch(browser: Any, url: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = browser.execute_async_script(FETCH, url, init or {})
    return result


def test_a_listed_origin_reads_the_answers(browser: Any, page_origin: str, open_api: RunningWeb) -> None:
    models = fetch(browser, f"{open_api.url}/v1/models")
    assert models.get("status") == 200, models
    assert '"object":"list"' in models["body"].replace(" ", "")
    # Authorization and a JSON body: not a simple request, so the browser sends a preflight first
    init = {
        "method": "POST",
        "headers": {"authorization": "Bearer anything", "content-type": "application/json"},
        "body": '{"model": "modaverse", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}',
    }
    chat = fetch(browser, f"{open_api.url}/v1/chat/completions", init)
    assert chat.get("status") == 200, chat
    assert '"chat.completion"' in chat["body"]
    bad = fetch(browser, f"{open_api.url}/v1/chat/completions", {**init, "body": "{not json"})
    assert bad.get("status") == 400 and "invalid_json" in bad["body"]  # errors are readable too


def test_an_unlisted_origin_is_refused_by_the_browser(browser: Any, page_origin: str, closed_api: RunningWeb) -> None:
    refused = fetch(browser, f"{closed_api.url}/v1/models")
    assert "refused" in refused and "Failed to fetch" in refused["refused"]


def test_preflight_headers(page_origin: str, open_api: RunningWeb, closed_api: RunningWeb) -> None:
    ask = {
        "origin": page_origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os",
    }
    allowed = httpx.options(f"{open_api.url}/v1/chat/completions", headers=ask)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == page_origin
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "x-stainless-os" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    other = httpx.options(f"{open_api.url}/v1/chat/completions", headers={**ask, "origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    plain = httpx.get(f"{closed_api.url}/v1/models", headers={"origin": page_origin})
    assert "access-control-allow-origin" not in plain.headers


def test_origins_must_be_scheme_host_port() -> None:
    assert WebSettings(cors_origins="*").origins == ["*"]
    assert WebSettings(cors_origins=" https://a.example , http://b.example:8080 ").origins == [
        "https://a.example",
        "http://b.example:8080",
    ]
    for bad in ("a.example", "https://a.example/", "https://a.example/app", "ftp://a.example"):
        with pytest.raises(ValidationError, match="is not scheme://host"):
            WebSettings(cors_origins=bad)
