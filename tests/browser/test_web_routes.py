"""``web_blueprint``: /web/ and /schemas/ over a real loopback socket (no browser needed)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from quart import Quart

from qwen_gateway.config import Settings
from qwen_gateway.routes.web import default_dirs, web_blueprint
from qwen_gateway.server import serving

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>index</title>")
    (web / "app.css").write_text("body{}")
    (web / "js" / "page.js").write_text("export const x = 1;")
    (web / "js" / "mod.mjs").write_text("export default 1;")
    (web / ".secret").write_text("hidden")
    schemas = tmp_path / "schemas"
    (schemas / "ts").mkdir(parents=True)
    (schemas / "audio.schema.json").write_text('{"title": "audio"}')
    (schemas / "ts" / "audio.d.ts").write_text("export type A = 1;")
    (tmp_path / "outside.txt").write_text("outside")
    (web / "link.txt").symlink_to(tmp_path / "outside.txt")
    return web, schemas


@pytest.fixture
async def client(dirs: tuple[Path, Path]) -> AsyncIterator[httpx.AsyncClient]:
    app = Quart("web-test")
    app.register_blueprint(web_blueprint(*dirs))
    async with (
        serving(app, Settings()) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        yield http


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/web/", "text/html; charset=utf-8", "<title>index</title>"),
        ("/web/index.html", "text/html; charset=utf-8", "<title>index</title>"),
        ("/web/app.css", "text/css; charset=utf-8", "body{}"),
        ("/web/js/page.js", "text/javascript; charset=utf-8", "export const x"),
        ("/web/js/mod.mjs", "text/javascript; charset=utf-8", "export default"),
        ("/schemas/audio.schema.json", "application/json", '"title": "audio"'),
        ("/schemas/ts/audio.d.ts", "text/plain; charset=utf-8", "export type A"),
    ],
)
async def test_files_have_their_content_type(
    client: httpx.AsyncClient, path: str, content_type: str, body: str
) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == content_type
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert body in resp.text


async def test_revalidated_by_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/web/js/page.js")
    assert "no-cache" in first.headers["cache-control"]
    etag = first.headers["etag"]
    again = await client.get("/web/js/page.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


async def test_head_is_served(client: httpx.AsyncClient) -> None:
    resp = await client.head("/web/app.css")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/css; charset=utf-8"


async def test_folders_without_slash_redirect(client: httpx.AsyncClient) -> None:
    for path, target in (("/web", "/web/"), ("/schemas", "/schemas/"), ("/web/js", "/web/js/")):
        resp = await client.get(path)
        assert resp.status_code == 308, path
        assert resp.headers["location"].endswith(target)


async def test_schemas_index_lists_files_and_folders(client: httpx.AsyncClient) -> None:
    resp = await client.get("/schemas/")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert 'href="audio.schema.json"' in resp.text
    assert 'href="ts/"' in resp.text
    sub = await client.get("/schemas/ts/")
    assert 'href="audio.d.ts"' in sub.text
    assert 'href="../"' in sub.text


@pytest.mark.parametrize(
    "path",
    [
        "/web/.secret",
        "/web/link.txt",
        "/web/missing.js",
        "/web/js/",  # a folder without index.html
        "/schemas/../web/index.html",
        "/schemas/ts/../../outside.txt",
        "/web/%2e%2e/outside.txt",
        "/web/js/%2e%2e/%2e%2e/outside.txt",
    ],
)
async def test_no_escape_no_hidden_files(dirs: tuple[Path, Path], path: str) -> None:
    """Raw request targets (not normalised by the client) never reach outside the folders."""
    app = Quart("web-test")
    app.register_blueprint(web_blueprint(*dirs))
    async with serving(app, Settings()) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        status, body = await _raw_get(host, int(port), path)
    assert status == 404, (path, status)
    assert b"outside" not in body and b"hidden" not in body


async def test_only_get_and_head(client: httpx.AsyncClient) -> None:
    resp = await client.post("/web/index.html")
    assert resp.status_code == 405


def test_default_dirs_are_the_repository_folders() -> None:
    web, schemas = default_dirs()
    assert web == REPO / "web"
    assert schemas == REPO / "schemas"
    assert (web / "index.html").is_file()


async def _raw_get(host: str, port: int, target: str) -> tuple[int, bytes]:
    """Send ``GET target`` byte for byte (httpx would normalise ``..``)."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port, family=socket.AF_INET)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read(-1)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data
