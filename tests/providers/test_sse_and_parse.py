"""SSE decoding and chunk parsing, fed the way a socket delivers bytes (any split)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.base import Usage
from qwen_gateway.providers.dashscope import SseDecoder, parse_chunk

ROLE = b'{"choices":[{"delta":{"content":"","role":"assistant"},"index":0,"finish_reason":null}],"usage":null}'
TEXT = '{"choices":[{"finish_reason":null,"delta":{"content":"你好"},"index":0}],"usage":null}'.encode()
LAST = b'{"choices":[{"finish_reason":"stop","delta":{"content":"!"},"index":0}],"usage":null}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
STREAM = b"".join(b"data: " + p + b"\n\n" for p in (ROLE, TEXT, LAST, USAGE)) + b"data: [DONE]\n\n"


def _decode_all(pieces: list[bytes]) -> list[bytes]:
    dec = SseDecoder()
    out: list[bytes] = []
    for piece in pieces:
        out.extend(data for _, data in dec.feed(piece))
    out.extend(data for _, data in dec.close())
    return out


def test_whole_stream_in_one_chunk() -> None:
    assert _decode_all([STREAM]) == [ROLE, TEXT, LAST, USAGE, b"[DONE]"]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert _decode_all(pieces) == [ROLE, TEXT, LAST, USAGE, b"[DONE]"]


def test_crlf_comments_event_names_and_multiline_data() -> None:
    dec = SseDecoder()
    events = dec.feed(
        b': keep-alive\r\n\r\nevent: error\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata:x\n\n'
    )
    assert events == [("error", b'{"a":\n1}'), (None, b"x")]


def test_unterminated_last_event_is_flushed_on_close() -> None:
    dec = SseDecoder()
    assert dec.feed(b"data: [DONE]") == []
    assert dec.close() == [(None, b"[DONE]")]


def test_parse_role_text_finish_and_usage_chunks() -> None:
    role = parse_chunk(ROLE)
    assert (role.role, role.content, role.finish_reason, role.raw) == ("assistant", "", None, ROLE)
    assert parse_chunk(TEXT).content == "你好"
    last = parse_chunk(LAST)
    assert (last.content, last.finish_reason) == ("!", "stop")
    usage = parse_chunk(USAGE)
    assert usage.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert usage.content == "" and usage.finish_reason is None


def test_reasoning_content_is_kept_apart() -> None:
    raw = b'{"choices":[{"delta":{"content":null,"reasoning_content":"think"},"index":0}]}'
    delta = parse_chunk(raw)
    assert (delta.reasoning, delta.content) == ("think", "")


def test_error_event_raises_the_mapped_error() -> None:
    raw = b'{"error":{"code":"DataInspectionFailed","message":"Output data may contain inappropriate content."}}'
    with pytest.raises(UpstreamError) as info:
        parse_chunk(raw)
    assert (info.value.code, info.value.status, info.value.transient) == (
        "data_inspection_failed",
        400,
        False,
    )


def test_garbage_raises_a_typed_error() -> None:
    with pytest.raises(UpstreamError) as info:
        parse_chunk(b"{not json")
    assert info.value.code == "upstream_bad_response"
