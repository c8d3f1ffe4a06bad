"""`/docs`: Swagger UI for the API, served entirely from the receiver's own origin.

FastAPI's default page loads Swagger UI from a CDN, on the origin where the page keeps the read key in
localStorage: whoever serves that script can read the key. Here the files come from the `fastapi-swagger` package
(a copy of swagger-ui-dist, installed with the receiver), and the page's one inline script, which starts Swagger UI,
runs under the strict policy by a nonce made for each response. ReDoc and the OAuth2 redirect page are not served.
"""

from __future__ import annotations

import json
import secrets
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from .errors import NotFound
from .guard import content_security_policy

router = APIRouter(include_in_schema=False)

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Glia receiver API</title>
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script nonce="{nonce}">
const config = {config};
config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset];
SwaggerUIBundle(config);
</script>
</body>
</html>
"""


def _asset_dir() -> Path:
    return Path(str(resources.files("fastapi_swagger") / "resources"))


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI for /openapi.json."""
    root = request.scope.get("root_path", "").rstrip("/")
    config = {
        "url": f"{root}/openapi.json",
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "validatorUrl": None,  # Swagger UI would otherwise show a badge from the public validator
    }
    nonce = secrets.token_urlsafe(18)
    # "<" escaped so that no value can end the script element early
    html = PAGE.format(root=root, nonce=nonce, config=json.dumps(config).replace("<", "\\u003c"))
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(script_nonce=nonce)})


@router.get("/docs/{name}")
async def docs_asset(name: str) -> FileResponse:
    """Swagger UI's script and stylesheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no docs asset {name!r}")
    return FileResponse(_asset_dir() / name, media_type=media_type)
