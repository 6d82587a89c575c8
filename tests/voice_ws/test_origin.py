"""Who may open a WebSocket: the handshake's ``Origin`` (every mode) and ``Host`` (open mode), refused with an
HTTP 403 before the upgrade, on every WebSocket route (later ones included)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from quart import websocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from qwen_gateway.app import create_app
from qwen_gateway.server import serving
from qwen_gateway.services import open_services
from qwen_gateway.simulator import Simulator, SimulatorConfig

from .conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway, client, gateway, pointed_settings

EVIL = "https://evil.example"


def own_origin(gw: Gateway) -> str:
    return gw.base_url  # http://127.0.0.1:<port>


async def refused(gw: Gateway, endpoint: str, **connect_args: object) -> dict[str, object]:
    """The 403 answer to a handshake: its OpenAI-style error body."""
    with pytest.raises(InvalidStatus) as info:
        async with client(gw, endpoint, **connect_args):  # type: ignore[arg-type]
            pass
    response = info.value.response
    assert response.status_code == 403
    body: dict[str, object] = json.loads(response.body or b"{}")["error"]
    return body


@pytest.mark.parametrize("endpoint", ["audio", "vlm"])
async def test_open_mode_refuses_other_origins_before_the_upgrade(
    tmp_path: Path, endpoint: str
) -> None:
    async with gateway(tmp_path, api_keys=()) as gw:
        for origin in (EVIL, "null", "http://127.0.0.1:1", "http://localhost.evil.example"):
            error = await refused(gw, endpoint, headers={}, origin=origin)
            assert error["code"] == "origin_not_allowed"
            assert error["type"] == "permission_error"
        # Not a browser (no Origin), or a page of the gateway itself: accepted.
        async with client(gw, endpoint, headers={}) as c:
            assert "connected" in await c.recv()
        async with client(gw, endpoint, headers={}, origin=own_origin(gw)) as c:
            assert "connected" in await c.recv()
        assert not gw.sim.log.connections  # nothing reached the upstream


async def test_listed_origins_are_accepted(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys=(), cors_origins=(EVIL + "/",)) as gw:
        async with client(gw, headers={}, origin=EVIL) as c:
            assert "connected" in await c.recv()
        error = await refused(gw, "audio", headers={}, origin="https://other.example")
        assert error["code"] == "origin_not_allowed"


async def test_a_valid_token_does_not_open_the_door_to_other_origins(tmp_path: Path) -> None:
    """With keys configured, ``?token=`` from an origin outside ``QG_CORS_ORIGINS`` is refused all the same."""
    async with gateway(tmp_path, cors_origins=("https://app.example",)) as gw:
        for endpoint in ("audio", "vlm"):
            error = await refused(
                gw, endpoint, headers={}, query={"token": GATEWAY_KEY}, origin=EVIL
            )
            assert error["code"] == "origin_not_allowed"
        async with client(
            gw, headers={}, query={"token": GATEWAY_KEY}, origin="https://app.example"
        ) as c:
            assert "connected" in await c.recv()


async def test_open_mode_answers_only_to_a_loopback_or_public_host(tmp_path: Path) -> None:
    """DNS rebinding: a page of rebind.evil.example resolving to 127.0.0.1 is same-origin with its own origin
    and sends ``Host: rebind.evil.example``; the keyless gateway refuses that host."""
    async with gateway(tmp_path, api_keys=()) as gw:
        port = urlsplit(gw.base_url).port
        url = f"ws://rebind.evil.example:{port}/v1/chat/audio"
        with pytest.raises(InvalidStatus) as info:
            async with connect(
                url, host="127.0.0.1", port=port, origin=f"http://rebind.evil.example:{port}"
            ):
                pass
        assert info.value.response.status_code == 403
        assert json.loads(info.value.response.body or b"")["error"]["code"] == "host_not_allowed"
        url = f"ws://localhost:{port}/v1/chat/audio"
        async with connect(
            url, host="127.0.0.1", port=port, origin=f"http://localhost:{port}"
        ) as ws:
            assert "connected" in await ws.recv()


async def test_the_public_host_is_accepted_in_open_mode(tmp_path: Path) -> None:
    async with gateway(tmp_path, api_keys=(), public_url="https://gw.example") as gw:
        port = urlsplit(gw.base_url).port
        # Behind a proxy that keeps the Host: a page served from the public URL is the gateway's own origin.
        url = f"ws://gw.example:{port}/v1/chat/audio"
        async with connect(url, host="127.0.0.1", port=port, origin="https://gw.example") as ws:
            assert "connected" in await ws.recv()


async def test_keyed_mode_does_not_check_the_host(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        port = urlsplit(gw.base_url).port
        url = f"ws://gw.internal:{port}/v1/chat/audio?token={GATEWAY_KEY}"
        async with connect(url, host="127.0.0.1", port=port) as ws:
            assert "connected" in await ws.recv()


async def test_a_websocket_route_added_later_is_guarded_too(tmp_path: Path) -> None:
    async with Simulator(SimulatorConfig(api_key=UPSTREAM_KEY), host="127.0.0.1", port=0) as sim:
        settings = pointed_settings(sim, tmp_path / "data", api_keys=())
        async with open_services(settings) as svc:
            app = create_app(svc.settings, svc)

            @app.websocket("/v1/echo")
            async def echo() -> None:
                await websocket.send(await websocket.receive())

            async with serving(app, svc.settings) as base_url:
                url = base_url.replace("http://", "ws://") + "/v1/echo"
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, origin=EVIL):
                        pass
                assert info.value.response.status_code == 403
                async with connect(url, origin=base_url) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
