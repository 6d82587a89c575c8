"""``GET /objects/<key>``: serve the local object store's files to holders of a signed link or a gateway key.

A request passes with ``?expires=<epoch>&token=<hmac>`` from :meth:`LocalObjectStore.presigned_url` (the
``oss_url`` links of events), or with ``Authorization: Bearer <key>`` accepted by ``check_key``. There is no
open access: a gateway without keys (open mode) still signs every link it hands out, and a request without a
valid signature or key is refused, so a web page cannot list or fetch what it was not given. Errors are
OpenAI-style JSON: 403 when neither passes, 404 for anything that is not a stored object (invalid keys included,
so that probing learns nothing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from quart import Blueprint, Response, request

from qwen_gateway.storage.objects import (
    InvalidObjectKey,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStoreError,
    content_type_for,
)

__all__ = ["objects_blueprint"]

log = logging.getLogger("qwen_gateway.routes.objects")


def _error(status: int, message: str, code: str, type_: str) -> Response:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return Response(body, status=status, content_type="application/json")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _key_allowed(bearer: str | None, check_key: Callable[[str | None], bool]) -> bool:
    return bearer is not None and check_key(bearer)


def objects_blueprint(
    store: LocalObjectStore, check_key: Callable[[str | None], bool]
) -> Blueprint:
    """A blueprint serving ``store`` at its ``route_prefix`` (``/objects``).

    Args:
        store: the local object store whose files are served.
        check_key: called with the bearer token of a request that has one; True lets it through. It must
            accept real keys only (:meth:`KeyChecker.matches`): a request without a token is never let through
            without a signed link.
    """
    bp = Blueprint("objects", __name__)

    @bp.route(f"{store.route_prefix}/<path:key>", methods=["GET"])
    async def get_object(key: str) -> Response:
        token = request.args.get("token")
        expires = request.args.get("expires")
        if token is not None or expires is not None:
            allowed = store.verify_token(key, expires, token)
            if not allowed:
                return _error(
                    403, "The link is invalid or has expired.", "invalid_token", "permission_error"
                )
        elif not _key_allowed(_bearer(request.headers.get("Authorization")), check_key):
            return _error(
                403,
                "A gateway API key or a signed link is required to fetch this object.",
                "invalid_api_key",
                "permission_error",
            )
        try:
            content_type = content_type_for(key)
            data = await store.get(key)
        except (InvalidObjectKey, ObjectNotFound):
            return _error(404, "No such object.", "not_found", "invalid_request_error")
        except ObjectStoreError as exc:
            log.warning("object store failed serving an object: %s", exc.code)
            return _error(
                503, "The object store is unavailable.", "storage_unavailable", "server_error"
            )
        response = Response(data, status=200, content_type=content_type)
        response.headers["Cache-Control"] = "private, max-age=3600"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Disposition"] = "inline"
        return response

    return bp
