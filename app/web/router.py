"""Serves the browser app (frontend/, built by Vite) at "/", on the same origin and with the same tokens as /api/v1.

Only index.html and the hashed files under /assets are served; routing inside the app uses the URL's hash, so
no catch-all route can shadow an API path or turn an API 404 into an HTML page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from app.core.config import get_settings

router = APIRouter(include_in_schema=False)

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>NextCase</title></head>
<body><h1>NextCase</h1><p>The web app is not built. Run <code>make run</code> (it builds it), or
<code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>. The API is up: <a href="/docs">/docs</a>.</p>
</body></html>"""

# The app loads only its own files; NiiVue compiles WebGL shaders (no eval) and workers come from blob: URLs.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "worker-src 'self' blob:; connect-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")


@router.get("/")
def index() -> Response:
    page = get_settings().web_app_dir / "index.html"
    if not page.is_file():
        return HTMLResponse(NOT_BUILT, status_code=503, headers={"Cache-Control": "no-store"})
    # The page names the current hashed assets: never cache it, or a browser keeps loading an old build.
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    return FileResponse(page, media_type="text/html", headers=headers)


class ImmutableAssets(StaticFiles):
    """Vite names every asset after its content hash, so a browser may keep each one for good."""

    async def check_config(self) -> None:
        # Starlette raises (a 500) when the folder is missing; a server without a built app answers 404 instead.
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    assets = get_settings().web_app_dir / "assets"
    # check_dir=False: the API starts without a built app; /assets then answers 404 until it is built.
    app.mount("/assets", ImmutableAssets(directory=Path(assets), check_dir=False), name="web-assets")
