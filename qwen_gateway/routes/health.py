"""``GET /health``: the seed's shape (``status``, ``timestamp``) plus per-dependency checks.

``status`` is ``healthy`` when everything answers, ``degraded`` when only the history database is away (turns are
then kept in the durable journal and nothing is lost, so the node still serves: 200) or when Redis is configured but
away (the quotas are then held in this process only: ``checks.quota``), and ``unhealthy`` (503) when a
required dependency is down (the local journal or the object store).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from quart import Blueprint, Response, jsonify

from .. import __version__
from .common import services

__all__ = ["health_blueprint"]

CHECK_TIMEOUT = 2.0


async def _probe(coro: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await coro
    except TimeoutError:
        return {"status": "down", "error": "timeout"}
    except Exception as exc:
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def health_blueprint() -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/health")
    async def health() -> Response:
        svc = services()
        storage = svc.storage
        database, objects, quota = await asyncio.gather(
            _probe(storage.history.ping()), _probe(storage.objects.ping()), svc.quotas.check()
        )
        database["engine"] = "mysql" if svc.settings.uses_mysql else "sqlite"
        objects["engine"] = "oss" if svc.settings.uses_oss else "local"
        journal: dict[str, Any] = {"status": "up", "backlog": storage.outbox.backlog()}
        checks = {
            "database": database,
            "objects": objects,
            "journal": journal,
            # "local": limits held in this process only (no QG_REDIS_URL); "down": Redis away, same meanwhile
            "quota": quota,
            "upstream": {
                "status": "simulated" if svc.settings.upstream_simulated else "configured",
                "mode": "simulated" if svc.settings.upstream_simulated else "dashscope",
            },
        }
        if objects["status"] != "up":
            status, code = "unhealthy", 503
        elif database["status"] != "up" or quota["status"] == "down":
            status, code = "degraded", 200
        else:
            status, code = "healthy", 200
        body = {
            "status": status,
            "timestamp": dt.datetime.now().isoformat(timespec="microseconds"),
            "version": __version__,
            "upstream": checks["upstream"]["mode"],
            "checks": checks,
        }
        resp = jsonify(body)
        resp.status_code = code
        return resp

    return bp
