"""The page's and the docs' security headers: what every response carries (httpx), and that the page and Swagger UI
work within that policy in headless Chromium, loading nothing from elsewhere and reporting no violation."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ReceiverServer
from tests.helpers import chromium, run_id, seed_runs


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as directive -> sources."""
    directives = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def assert_strict(response: httpx.Response) -> None:
    csp = policy(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    for sources in csp.values():
        assert not {"'unsafe-eval'", "'unsafe-inline'", "*", "http:", "https:"} & set(sources), sources
    scripts = csp.get("script-src", csp["default-src"])
    assert all(s == "'self'" or s.startswith("'nonce-") for s in scripts), scripts
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_every_response_carries_the_policy(receiver: ReceiverServer) -> None:
    for path in ("/", "/page/app.js", "/page/style.css", "/api/runs", "/openapi.json", "/healthz", "/api/runs/zz"):
        assert_strict(httpx.get(receiver.url + path))
    assert_strict(httpx.post(receiver.url + "/v1/traces", content=b"{", headers={"content-type": "application/json"}))
    page = httpx.get(receiver.url + "/")
    assert '<script src="/page/app.js"></script>' in page.text and "style=" not in page.text


def test_docs_are_served_from_this_origin_with_a_nonce_for_their_one_inline_script(receiver: ReceiverServer) -> None:
    first, second = httpx.get(receiver.url + "/docs"), httpx.get(receiver.url + "/docs")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    assert_strict(first)
    nonce = [s for s in policy(first)["script-src"] if s.startswith("'nonce-")]
    assert len(nonce) == 1 and nonce != [s for s in policy(second)["script-src"] if s.startswith("'nonce-")]
    value = nonce[0][len("'nonce-") : -1]
    scripts = re.findall(r"<script([^>]*)>", first.text)
    inline = [attrs for attrs in scripts if "src=" not in attrs]
    assert inline == [f' nonce="{value}"'], scripts
    # every asset from this origin, by path: no CDN on the origin where the page keeps the read key
    urls = re.findall(r"(?:src|href)=\"([^\"]+)\"", first.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    for url in urls:
        asset = httpx.get(receiver.url + url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
        assert_strict(asset)
    assert "SwaggerUIBundle" in httpx.get(receiver.url + next(u for u in urls if u.endswith(".js"))).text
    for gone in ("/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(receiver.url + gone).status_code == 404, gone


CSP_WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def watch(page: Any, receiver: ReceiverServer) -> tuple[list[str], list[str]]:
    """Collect CSP violations (the DOM event and Chromium's console report) and requests to other origins."""
    violations: list[str] = []
    elsewhere: list[str] = []
    page.add_init_script(CSP_WATCH)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("request", lambda r: None if r.url.startswith(receiver.url) else elsewhere.append(r.url))
    return violations, elsewhere


def post_run_with_children(receiver: ReceiverServer) -> str:
    """A run with a child and a grandchild span (the page indents child spans by depth); returns the run id."""
    now = time.time_ns()
    trace, ids, names = "7" * 32, ["a1" * 8, "b2" * 8, "c3" * 8], ["pipeline", "align", "index"]
    spans = [
        {"traceId": trace, "spanId": span, "parentSpanId": parent, "name": name,
         "startTimeUnixNano": str(now - (3 - depth) * 10**9), "endTimeUnixNano": str(now - depth * 10**8)}
        for depth, (span, parent, name) in enumerate(zip(ids, ["", *ids[:2]], names, strict=True))
    ]  # fmt: skip
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "csp-check"}}]},
        "scopeSpans": [{"spans": spans}],
    }]}  # fmt: skip
    response = httpx.post(f"{receiver.url}/v1/traces", json=body)
    assert response.status_code == 200 and response.json() == {}, response.text
    return ids[0]


def test_page_and_docs_render_in_chromium_without_a_policy_violation(
    database_url: str, receiver_factory: Callable[..., ReceiverServer], tmp_path: Path
) -> None:
    seed_runs(database_url, n=20)
    receiver = receiver_factory()
    parent = post_run_with_children(receiver)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        violations, elsewhere = watch(page, receiver)
        page.goto(receiver.url + "/")
        page.wait_for_selector("#runs tbody tr")
        assert page.locator("#runs tbody tr").count() == 21
        # a run with samples: its memory and CPU plots
        page.goto(f"{receiver.url}/#run={run_id(7)}")
        page.wait_for_selector("#memory-plot canvas")
        assert page.locator("#cpu-plot canvas").count() == 1
        # the program view's plots
        page.click("#program-link")
        page.wait_for_selector("#program-memory-plot canvas")
        # child spans, indented by depth (a style the policy must allow: set through the CSSOM, not an attribute)
        page.goto(f"{receiver.url}/#run={parent}")
        page.wait_for_selector("#run-detail li")
        margins = page.locator("#run-detail li").evaluate_all("items => items.map((e) => e.style.marginLeft)")
        assert margins == ["0em", "1.2em"], margins
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        violations += page.evaluate("window.__violations")

        docs = browser.new_page(viewport={"width": 1280, "height": 1000})
        docs_violations, docs_elsewhere = watch(docs, receiver)
        docs.goto(f"{receiver.url}/docs")
        docs.wait_for_selector(".opblock-summary-path")
        paths = {p.strip() for p in docs.locator(".opblock-summary-path").all_inner_texts()}
        assert {"/api/runs", "/api/runs/{run_id}", "/api/compare", "/api/suggest"} <= paths, paths
        docs.locator(".opblock-summary-path", has_text="/api/runs/{run_id}/metrics").click()
        docs.wait_for_selector(".opblock.is-open")
        docs.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        docs_violations += docs.evaluate("window.__violations")

    assert not violations, violations
    assert not docs_violations, docs_violations
    assert not elsewhere and not docs_elsewhere, elsewhere + docs_elsewhere
