"""The SSE decoder's one-split path for bursts of plain ``data:`` events gives exactly what the line parser gives.

Fed one byte at a time the decoder never holds a whole event (it only keeps an unfinished line), so that feeding
is the line parser's answer; any other way of cutting the same bytes must give the same events.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qwen_gateway.providers.dashscope import SseDecoder

BLOCKS = [
    b'data: {"choices":[{"delta":{"content":"\\u4f60"}}]}\n\n',
    b"data: data: inside the payload\n\n",
    b": a comment with data: in it\n\n",
    b"event: error\ndata: {}\n\n",
    b"data: first line\ndata: second line\n\n",
    b'data:{"no":"space"}\n\n',
    b"data: \n\n",
    b"data:  two spaces\n\n",
    b"data: crlf\r\n\r\n",
    b"id: 3\nretry: 10\ndata: y\n\n",
    b"\n",
    b"data: trailing blank\n\n\n",
    b"data: [DONE]\n\n",
]


def decode(pieces: list[bytes]) -> list[tuple[str | None, bytes]]:
    decoder = SseDecoder()
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


@given(
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=400), max_size=6),
    st.binary(max_size=12).filter(lambda b: b"\n" not in b),
)
def test_any_cut_of_any_stream_matches_the_line_parser(
    blocks: list[bytes], cuts: list[int], unfinished: bytes
) -> None:
    stream = b"".join(blocks) + (b"data: " + unfinished if unfinished else b"")
    points = sorted({c for c in cuts if c < len(stream)})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    byte_by_byte = decode([stream[i : i + 1] for i in range(len(stream))])
    assert decode(pieces) == byte_by_byte
    assert decode([stream]) == byte_by_byte


def test_a_burst_of_plain_events_is_split_at_once() -> None:
    payloads = [b'{"n":%d,"t":"data: x"}' % i for i in range(50)]
    burst = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    decoder = SseDecoder()
    assert decoder.feed(burst + b'data: {"par') == [(None, p) for p in payloads]
    assert decoder.feed(b'tial":1}\n\n') == [(None, b'{"partial":1}')]
