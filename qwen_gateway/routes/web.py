"""``/web/`` (the test pages) and ``/schemas/`` (the published contract), served read-only and without auth.

Files are served with explicit content types (``text/javascript`` for ES modules, ``application/json`` for the
schemas) and ``Cache-Control: no-cache`` (revalidated by ETag), so an edited page shows at the next reload. Only
regular files inside the two folders are served: no ``..``, no dotfiles, no symlink leading out.
``/schemas/`` and its sub-folders list their files.
"""

from __future__ import annotations

import html
from pathlib import Path

from quart import Blueprint, Response, redirect, request, send_file
from werkzeug.exceptions import NotFound
from werkzeug.wrappers.response import Response as WerkzeugResponse

__all__ = ["CONTENT_TYPES", "default_dirs", "web_blueprint"]

#: Content type by file suffix; anything else is ``application/octet-stream``.
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".yaml": "text/yaml; charset=utf-8",
    ".yml": "text/yaml; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".woff2": "font/woff2",
}


def content_type(name: str) -> str:
    """The content type served for a file called ``name``."""
    lower = name.lower()
    if lower.endswith(".d.ts"):
        return "text/plain; charset=utf-8"
    return CONTENT_TYPES.get(Path(lower).suffix, "application/octet-stream")


def default_dirs() -> tuple[Path, Path]:
    """The repository's ``web/`` and ``schemas/`` folders (beside the ``qwen_gateway`` package)."""
    root = Path(__file__).resolve().parent.parent.parent
    return root / "web", root / "schemas"


def _resolve(root: Path, sub: str) -> Path | None:
    """``root / sub`` when it is inside ``root`` and no part is hidden or empty, else None."""
    if "\\" in sub or "\x00" in sub:
        return None
    parts = [p for p in sub.split("/") if p]
    if any(p.startswith(".") for p in parts):
        return None
    base = root.resolve()
    target = base.joinpath(*parts).resolve() if parts else base
    if not target.is_relative_to(base):
        return None
    return target


async def _file(path: Path) -> Response:
    resp = await send_file(path, mimetype="application/octet-stream", conditional=True)
    resp.headers["Content-Type"] = content_type(path.name)
    resp.cache_control.no_cache = True
    resp.cache_control.public = False
    resp.cache_control.max_age = None
    resp.expires = None
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _listing(url_path: str, folder: Path) -> Response:
    entries = sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".")),
        key=lambda p: (not p.is_dir(), p.name),
    )
    rows = []
    if url_path.rstrip("/") != "/schemas":
        rows.append('<li><a href="../">../</a></li>')
    for p in entries:
        if p.is_dir():
            name = p.name + "/"
            size = ""
        elif p.is_file():
            name = p.name
            size = f" <small>{p.stat().st_size:,} bytes</small>"
        else:
            continue
        href = html.escape(name, quote=True)
        rows.append(f'<li><a href="{href}">{html.escape(name)}</a>{size}</li>')
    title = html.escape(url_path)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;"
        "padding:0 1rem;color-scheme:light dark}small{opacity:.6}</style></head><body>"
        f"<h1>Contract: {title}</h1>"
        "<p>JSON Schema, AsyncAPI and OpenAPI documents generated from the gateway's "
        "protocol types; TypeScript declarations under <code>ts/</code>.</p>"
        f"<ul>{''.join(rows) or '<li>(empty)</li>'}</ul></body></html>"
    )
    resp = Response(body, content_type="text/html; charset=utf-8")
    resp.cache_control.no_cache = True
    return resp


def web_blueprint(web_dir: Path, schemas_dir: Path) -> Blueprint:
    """A blueprint serving ``web_dir`` at ``/web/`` (``index.html`` at ``/web/``) and ``schemas_dir`` at
    ``/schemas/`` with a listing of each folder. No auth; GET and HEAD only."""
    bp = Blueprint("web", __name__)

    def _add_slash() -> WerkzeugResponse:
        query = request.query_string.decode("latin-1")
        return redirect(request.path + "/" + (f"?{query}" if query else ""), 308)

    @bp.get("/web")
    @bp.get("/schemas")
    async def no_slash() -> WerkzeugResponse:
        return _add_slash()

    @bp.get("/web/")
    @bp.get("/web/<path:sub>")
    async def web(sub: str = "") -> Response | WerkzeugResponse:
        target = _resolve(web_dir, sub)
        if target is None:
            raise NotFound()
        if target.is_dir():
            if sub and not sub.endswith("/"):
                return _add_slash()
            target = target / "index.html"
        if not target.is_file():
            raise NotFound()
        return await _file(target)

    @bp.get("/schemas/")
    @bp.get("/schemas/<path:sub>")
    async def schemas(sub: str = "") -> Response | WerkzeugResponse:
        target = _resolve(schemas_dir, sub)
        if target is None:
            raise NotFound()
        if target.is_dir():
            if sub and not sub.endswith("/"):
                return _add_slash()
            return _listing(request.path, target)
        if not target.is_file():
            raise NotFound()
        return await _file(target)

    return bp
