"""The page's vendored chart library (receiver/page/vendor/, README.md there): the pinned files are the ones in the
tree, the receiver serves them from its own origin under its strict policy and nothing else under page/, and the
wheel ships them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import httpx

from tests.conftest import REPO, ReceiverServer, need

VENDOR = REPO / "receiver" / "page" / "vendor"
UPLOT_VERSION = "1.6.32"
PINNED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}
SERVED = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css", "uPlot.LICENSE": "text/plain"}
PAGE_FILES = ["index.html", "app.js", "style.css", *(f"vendor/{name}" for name in SERVED)]


def test_the_vendored_files_are_the_pinned_version() -> None:
    for name, digest in PINNED.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    script = (VENDOR / "uPlot.iife.min.js").read_text()
    assert script.startswith(f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */")
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()
    readme = (VENDOR / "README.md").read_text()
    assert f"uplot@{UPLOT_VERSION}" in readme and all(digest in readme for digest in PINNED.values())
    # the policy refuses eval: a library that needs it would draw nothing
    assert "new Function" not in script


def test_the_receiver_serves_them_itself_and_nothing_else_under_page(receiver: ReceiverServer) -> None:
    for name, media_type in SERVED.items():
        response = httpx.get(f"{receiver.url}/page/vendor/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type), response.headers["content-type"]
        assert response.content == (VENDOR / name).read_bytes()
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp, csp
        assert response.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(receiver.url + "/").text
    assert '<script src="/page/vendor/uPlot.iife.min.js"></script>' in page
    assert '<link rel="stylesheet" href="/page/vendor/uPlot.min.css">' in page
    for name in ("vendor/README.md", "vendor/", "vendor", "%2e%2e/api.py", "vendor%2f..%2f..%2fapi.py"):
        assert httpx.get(f"{receiver.url}/page/{name}").status_code == 404, name


def test_the_wheel_ships_the_page_and_its_vendored_files(tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv") or shutil.which(str(Path.home() / ".local/bin/uv"))
    need(uv, "uv is not installed")
    assert uv is not None
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    proc = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--quiet", "--out-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("glia-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for name in PAGE_FILES:
            assert z.read(f"receiver/page/{name}") == (REPO / "receiver" / "page" / name).read_bytes(), name
