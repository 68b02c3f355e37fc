"""The operator console: a static bundle (``static/``: one page, ES modules, CSS, a vendored Chart.js)
that the API serves at ``/console``. There is no build step and no second code path: the page reads
and acts through the same ``/api/v1`` routes as any client, with the same bearer keys.

The page and its files hold no data, so they are served without a key (``backend/api/security.py``);
the browser asks for a key when a data route answers 401.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/console"
# Everything the page loads comes from this origin; nothing inline, nothing evaluated, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new crewrun's page is picked up at once; its files revalidate by ETag
}


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def install_console(app: FastAPI) -> None:
    # Mounted before the catch-all route below, so that files are not redirected.
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get(PREFIX, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        # Relative redirects keep working behind a proxy that serves the API under a path prefix.
        return RedirectResponse("console/")

    @app.get(f"{PREFIX}/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    @app.get(f"{PREFIX}/{{view:path}}", include_in_schema=False)
    async def console_deep_link(view: str, request: Request) -> RedirectResponse:
        """``/console/executions/<id>`` is the page's ``/console/#/executions/<id>``: the page routes
        by the fragment, so that every view is one document and one set of relative file URLs."""
        up = "../" * view.count("/") or "./"
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{up}#/{view}{query}")
