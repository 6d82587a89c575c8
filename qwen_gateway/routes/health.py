"""``GET /health``: the seed's shape (``status``, ``timestamp``) plus per-dependency checks; ``GET /health/live``
and ``GET /health/ready`` for orchestrators and load balancers.

``/health/live`` is 200 while the process serves requests at all (a drain included). ``/health/ready`` is 200 only
when the node should get new work: the services are open, the outbox drainer runs, the object store answers, and
no drain has begun; from the ``SIGTERM`` on it answers 503 (``draining``) and never 200 again. During a drain
``/health`` answers 503 with ``status`` ``draining``.

``status`` is ``healthy`` when everything answers, ``degraded`` when only the history database is away (turns are
then kept in the durable journal and nothing is lost, so the node still serves: 200) or when Redis is configured but
away (the quotas are then held in this process only: ``checks.quota``), and ``unhealthy`` (503) when a
required dependency is down (the local journal or the object store).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from typing import Any

from quart import Blueprint, Response, jsonify

from .. import __version__
from .common import lifecycle, services

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
        if lifecycle().draining:
            status, code = "draining", 503
        elif objects["status"] != "up":
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
            # which process answered (several serve one address under `serve --workers N`)
            "process": {"pid": os.getpid(), "worker": svc.worker_id},
        }
        resp = jsonify(body)
        resp.status_code = code
        return resp

    @bp.get("/health/live")
    async def live() -> Response:
        return _plain({"status": "live", "draining": lifecycle().draining}, 200)

    @bp.get("/health/ready")
    async def ready() -> Response:
        return await _readiness()

    return bp


async def _readiness() -> Response:
    """200 ``ready``, or 503 with the first reason: ``draining``, ``starting``, ``journal`` or ``objects``."""
    life = lifecycle()
    if life.draining:
        return _plain({"status": "draining", "reason": "draining"}, 503)
    if not life.started:
        return _plain({"status": "not_ready", "reason": "starting"}, 503)
    storage = services().storage
    if not storage.outbox.status().draining:
        return _plain({"status": "not_ready", "reason": "journal"}, 503)
    objects = await _probe(storage.objects.ping())
    if life.draining:  # a drain began while the probe ran
        return _plain({"status": "draining", "reason": "draining"}, 503)
    if objects["status"] != "up":
        return _plain({"status": "not_ready", "reason": "objects"}, 503)
    return _plain({"status": "ready"}, 200)


def _plain(body: dict[str, Any], code: int) -> Response:
    resp = jsonify(body)
    resp.status_code = code
    resp.headers["Cache-Control"] = "no-store"
    return resp
