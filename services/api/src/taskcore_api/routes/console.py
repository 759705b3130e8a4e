"""The operator console: static files under ``/ui/``, shipped in the package.

The files are public (they hold no data); every call the page makes goes to the public
``/v1`` API with the credential the operator pasted, which the page keeps in the tab's
session storage. The answers here carry a strict Content-Security-Policy (scripts and
connections from this origin only, no inline script, no framing), because a script
injected into the page could read that credential.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate every time (a cheap 304 by ETag), so an upgraded server's console shows
    # at once instead of a cached mix of old and new modules.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@cache
def _files() -> StaticFiles:
    # Built on first use rather than at import: StaticFiles checks its directory.
    return StaticFiles(directory=CONSOLE_DIR, html=True)


@router.get("/ui")
async def console_root() -> RedirectResponse:
    # Relative, so the console also works behind a proxy that mounts the API under a prefix.
    return RedirectResponse("ui/", status_code=308)


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"])
async def console_file(
    request: Request, path: Annotated[str, PathParam(max_length=200)]
) -> Response:
    """A console file (``index.html`` for ``/ui/``). StaticFiles refuses paths that leave
    the directory and answers conditional requests with 304."""
    response = await _files().get_response(path, request.scope)
    response.headers.update(SECURITY_HEADERS)
    return response
