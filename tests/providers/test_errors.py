"""DashScope error families mapped to UpstreamError (code, status, transient)."""

from __future__ import annotations

import pytest

from qwen_gateway.providers.dashscope import errors


@pytest.mark.parametrize(
    ("status", "body", "code", "transient"),
    [
        (
            400,
            b'{"error":{"code":"invalid_parameter_error","message":"Temperature should be in [0.0, 2.0)","type":"invalid_request_error"}}',
            "invalid_parameter_error",
            False,
        ),
        (
            400,
            b'{"error":{"message":"Input data may contain inappropriate content.","type":"data_inspection_failed","param":null,"code":"data_inspection_failed"}}',
            "data_inspection_failed",
            False,
        ),
        (400, b'{"code":"InvalidParameter","message":"bad"}', "invalid_parameter_error", False),
        (
            401,
            b'{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}',
            "invalid_api_key",
            False,
        ),
        (
            401,
            b'{"code":"InvalidApiKey","message":"Invalid API-key provided."}',
            "invalid_api_key",
            False,
        ),
        (
            403,
            b'{"code":"AccessDenied","message":"current user api does not support synchronous calls."}',
            "access_denied",
            False,
        ),
        (
            404,
            b'{"error":{"message":"The model `qwen-x` does not exist","code":"model_not_found"}}',
            "model_not_found",
            False,
        ),
        (
            429,
            b'{"error":{"message":"rate","type":"limit_requests","code":"limit_requests"}}',
            "limit_requests",
            True,
        ),
        (429, b'{"code":"Throttling.BurstRate","message":"burst"}', "limit_burst_rate", True),
        (
            429,
            b'{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}',
            "insufficient_quota",
            True,
        ),
        (
            500,
            b'{"code":"InternalError","message":"An internal error has occured"}',
            "internal_error",
            True,
        ),
        (
            503,
            b'{"code":"ModelUnavailable","message":"Model is unavailable"}',
            "model_unavailable",
            True,
        ),
        (502, b"<html>bad gateway</html>", "upstream_error", True),
    ],
)
def test_http_error_families(status: int, body: bytes, code: str, transient: bool) -> None:
    err = errors.from_http(status, body)
    assert (err.code, err.status, err.transient) == (code, status, transient)
    assert err.message


def test_retry_after_header_is_read() -> None:
    err = errors.from_http(429, b"", {"retry-after": "3"})
    assert err.retry_after == 3.0 and err.code == "limit_requests"


def test_task_failed_codes_get_a_status() -> None:
    assert (
        errors.from_task_failed("InvalidParameter", "[tts:]Engine return error code: 418").status
        == 400
    )
    throttled = errors.from_task_failed("Throttling.RateQuota", "slow down")
    assert (throttled.status, throttled.code, throttled.transient) == (429, "limit_requests", True)
    unknown = errors.from_task_failed("CLIENT_ERROR", "request timeout after 23 seconds.")
    assert (unknown.status, unknown.code) == (502, "CLIENT_ERROR")


def test_messages_never_carry_keys() -> None:
    err = errors.from_http(
        401, b'{"code":"InvalidApiKey","message":"key sk-abcdef0123456789 is bad"}'
    )
    assert "abcdef0123456789" not in err.message
    assert "sk-***" in err.message


def test_backoff_grows_with_jitter_and_honours_retry_after_up_to_the_cap() -> None:
    from qwen_gateway.providers.dashscope import Backoff

    backoff = Backoff(retries=5, base=0.1, cap=1.0)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert backoff.delay(0, retry_after=0.3) == 0.3
    assert backoff.delay(0, retry_after=30) == 1.0


async def test_retry_or_raise_waits_only_for_a_transient_error_with_retries_left() -> None:
    from qwen_gateway.errors import UpstreamError
    from qwen_gateway.providers.dashscope import Backoff

    backoff = Backoff(retries=2, base=0.001, cap=0.001)
    throttled = UpstreamError("throttled", code="limit_requests", status=429, transient=True)
    refused = UpstreamError("bad key", code="invalid_api_key", status=401)
    await backoff.retry_or_raise(throttled, 0, "test")  # waits, then the caller tries again
    await backoff.retry_or_raise(throttled, 1, "test")
    with pytest.raises(UpstreamError) as info:
        await backoff.retry_or_raise(throttled, 2, "test")  # retries used up
    assert info.value is throttled
    with pytest.raises(UpstreamError) as info:
        await backoff.retry_or_raise(refused, 0, "test")
    assert info.value is refused


async def test_backoff_run_retries_transient_failures_then_gives_up() -> None:
    from qwen_gateway.errors import UpstreamError
    from qwen_gateway.providers.dashscope import Backoff

    backoff = Backoff(retries=2, base=0.001, cap=0.001)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise UpstreamError("busy", status=503, transient=True)
        return "ok"

    assert await backoff.run(flaky, "test") == "ok" and calls == 3

    async def always_busy() -> str:
        nonlocal calls
        calls += 1
        raise UpstreamError("busy", status=503, transient=True)

    calls = 0
    with pytest.raises(UpstreamError):
        await backoff.run(always_busy, "test")
    assert calls == 3  # the first attempt and two retries


def test_timeouts_for_http_map_each_phase() -> None:
    from qwen_gateway.providers.dashscope import Timeouts

    timeout = Timeouts(connect=1.0, read=2.0, write=3.0).for_http()
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (1.0, 2.0, 3.0, 1.0)
