"""The gateway under Hypercorn on a loopback port, in front of the DashScope simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qwen_gateway.app import create_app
from qwen_gateway.config import Settings, load_settings
from qwen_gateway.server import serving
from qwen_gateway.services import Services, open_services
from qwen_gateway.simulator import Simulator, SimulatorConfig

UPSTREAM_KEY = "sk-upstream-test"
GATEWAY_KEY = "gk-test-key"


@dataclass
class Gateway:
    base_url: str
    sim: Simulator
    services: Services
    settings: Settings

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"


def pointed_settings(sim: Simulator, data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a gateway whose every upstream is ``sim``."""
    env = dict(sim.env)
    base = load_settings(env, dotenv=None, data_dir=data_dir)
    fields: dict[str, Any] = {
        "qwen_api_key": UPSTREAM_KEY,
        "api_keys": (GATEWAY_KEY,),
        "upstream_retries": 2,
        **overrides,
    }
    return dataclasses.replace(base, **fields)


async def start_gateway(
    tmp_path: Path, sim_config: SimulatorConfig | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    config = sim_config or SimulatorConfig(api_key=UPSTREAM_KEY)
    async with Simulator(config, host="127.0.0.1", port=0) as sim:
        settings = pointed_settings(sim, tmp_path / "data", **overrides)
        async with open_services(settings) as svc:
            app = create_app(svc.settings, svc)
            async with serving(app, svc.settings) as base_url:
                yield Gateway(base_url=base_url, sim=sim, services=svc, settings=svc.settings)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gw in start_gateway(tmp_path):
        yield gw
