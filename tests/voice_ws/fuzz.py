"""Hypothesis strategies for the frames a client may send to ``/v1/chat/audio`` and ``/v1/chat/vlm``.

Valid messages are built from the protocol's own types (``msgspec.inspect`` of the client Structs: field
names, integer bounds, base64 ``bytes``, tags); mutations then break them at every level: a field of the wrong
JSON type, huge and negative numbers, a missing field, unknown fields, deep nesting, not an object, broken
JSON, invalid UTF-8 in a text frame, binary frames, frames over the codec's and the server's limits. Valid
uploads (a real WAV, on VLM also an image) are interleaved with the rest, and on VLM ``end`` lands anywhere.

A :class:`Frame` says how it travels (``text``, ``raw_text``: bytes sent as a text frame unchecked,
``binary``) and whether it is certainly bad (the server must answer it with an ``error`` event or close).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from protocol import AudioPacket, Cancel, VlmAudioPacket, VlmEnd, VlmImagePacket

Kind = Literal["text", "raw_text", "binary"]

#: The message limit of the server (2 x QG_MAX_FRAME_BYTES): beyond it Hypercorn closes with 1009.
SERVER_MESSAGE_LIMIT = 512 * 1024


@dataclass(frozen=True, repr=False)
class Frame:
    kind: Kind
    data: str | bytes
    bad: bool  # certainly refused: an ``error`` event or a close must follow

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep giant frames short
        shown = self.data if len(self.data) < 200 else f"{self.data[:80]!r}...({len(self.data)})"
        return f"Frame({self.kind}, {shown!r}, bad={self.bad})"


# ------------------------------------------------------------------------------------------ from the types

_WRONG_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_EXTREME_INTS = st.sampled_from(
    [0, -1, -(2**31), 2**31, 2**31 - 1, 2**53, 2**63, 2**64, -(2**64), 10**30, -(10**30)]
)


def _value(info: Any, packet_bytes: int) -> st.SearchStrategy[Any]:
    """A valid JSON value of a field's type (``msgspec.inspect`` info)."""
    if isinstance(info, mi.Metadata):
        return _value(info.type, packet_bytes)
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else -(2**31)
        high = info.le if info.le is not None else 2**31
        return st.one_of(st.integers(low, min(high, 8)), st.integers(low, high))
    if isinstance(info, mi.BytesType):
        raw = st.one_of(
            st.binary(max_size=48),
            st.integers(packet_bytes - 8, packet_bytes + 8).map(lambda n: b"\x01" * n),
        )
        return raw.map(lambda b: base64.b64encode(b).decode())
    if isinstance(info, mi.StrType):
        return st.text(max_size=20)
    if isinstance(info, mi.BoolType):
        return st.booleans()
    raise NotImplementedError(info)  # a new field type: teach the fuzzer


def message(cls: type[msgspec.Struct], packet_bytes: int) -> st.SearchStrategy[dict[str, Any]]:
    """A valid (by type) client message of ``cls``, as the JSON object a client sends."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {f.encode_name: _value(f.type, packet_bytes) for f in info.fields}
    tag = {info.tag_field: st.just(info.tag)} if info.tag_field and cls is not AudioPacket else {}
    return st.fixed_dictionaries({**tag, **fields})


def _deep(depth: int, leaf: Any = 1) -> str:
    return '{"x":' * depth + json.dumps(leaf) + "}" * depth


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Frame:
    """A message of ``base`` broken in one way (or left whole)."""
    body = dict(draw(base))
    how = draw(
        st.sampled_from(
            ["none", "wrong_type", "extreme", "drop", "extra", "deep_field", "type_text"]
        )
    )
    bad = False
    if how == "wrong_type" and body:
        name = draw(st.sampled_from(sorted(body)))
        value = draw(_WRONG_VALUES)
        body[name] = value
        # A wrong JSON type for seq/total (ints) or data (base64 text) is certainly refused.
        bad = (name in ("seq", "total") and not isinstance(value, int)) or (
            name == "data" and not isinstance(value, str)
        )
    elif how == "extreme" and ("seq" in body or "total" in body):
        name = draw(st.sampled_from([n for n in ("seq", "total") if n in body]))
        value = draw(_EXTREME_INTS)
        body[name] = value
        bad = not 1 <= value <= 2**31 - 1
    elif how == "drop" and body:
        name = draw(st.sampled_from(sorted(body)))
        del body[name]
        bad = name in ("seq", "total", "data")
    elif how == "extra":
        body[draw(st.text(min_size=1, max_size=8))] = draw(_WRONG_VALUES)
    elif how == "deep_field":
        depth = draw(st.sampled_from([5, 50, 500, 1200, 5000, 50_000]))
        name = draw(st.sampled_from([*sorted(body), "extra"]))
        text = json.dumps({k: v for k, v in body.items() if k != name})
        inner = "[" * depth + "]" * depth
        frame = text[:-1] + ("," if len(text) > 2 else "") + f'"{name}":{inner}}}'
        return Frame("text", frame, bad=name != "extra")
    elif how == "type_text":
        body["type"] = draw(st.text(max_size=10).filter(lambda t: not t.startswith("probe")))
    return Frame("text", json.dumps(body, ensure_ascii=draw(st.booleans())), bad=bad)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def broken(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Frame:
    """A frame that is not a message at all."""
    how = draw(
        st.sampled_from(
            [
                "not_object",
                "truncated",
                "garbage",
                "invalid_utf8",
                "binary",
                "deep",
                "empty",
                "codec_limit",
                "server_limit",
            ]
        )
    )
    if how == "not_object":
        value = draw(_JSON.filter(lambda v: not isinstance(v, dict)))
        return Frame("text", json.dumps(value), bad=True)
    if how == "truncated":
        text = json.dumps(draw(base))
        return Frame("text", text[: draw(st.integers(0, max(0, len(text) - 1)))], bad=True)
    if how == "garbage":
        text = json.dumps(draw(base))
        return Frame("text", text + draw(st.sampled_from(["}", "x", ",", " 1", "\x00"])), bad=True)
    if how == "invalid_utf8":
        text = json.dumps(draw(base)).encode()
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return Frame("raw_text", text[:at] + junk + text[at:], bad=True)
    if how == "binary":
        payload = draw(st.one_of(st.binary(max_size=64), st.just(json.dumps(draw(base)).encode())))
        return Frame("binary", payload, bad=True)
    if how == "deep":
        depth = draw(st.sampled_from([100, 1000, 1100, 10_000, 100_000]))
        return Frame(
            "text", draw(st.sampled_from([_deep(depth), "[" * depth + "]" * depth])), bad=True
        )
    if how == "empty":
        return Frame("text", draw(st.sampled_from(["", " ", "\n", "null"])), bad=True)
    # Over the codec's limit (256 KiB: a typed frame_too_large, then close 1009) or the server's (close 1009).
    size = (
        draw(st.integers(256 * 1024 + 1, 300 * 1024))
        if how == "codec_limit"
        else draw(st.integers(SERVER_MESSAGE_LIMIT + 1, SERVER_MESSAGE_LIMIT + 64 * 1024))
    )
    kind: Kind = draw(st.sampled_from(["text", "binary"]))
    data = "a" * size
    return Frame(kind, data if kind == "text" else data.encode(), bad=True)


def _upload(cls: type[msgspec.Struct] | None, data: bytes, size: int) -> list[Frame]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    tag = {} if cls is None else {"type": mi.type_info(cls).tag}  # type: ignore[attr-defined]
    return [
        Frame(
            "text",
            json.dumps(
                {**tag, "seq": i + 1, "total": len(pieces), "data": base64.b64encode(p).decode()}
            ),
            bad=False,
        )
        for i, p in enumerate(pieces)
    ]


def audio_batches(wav: bytes) -> st.SearchStrategy[list[Frame]]:
    """Batches of frames for ``/v1/chat/audio``: packets, cancel, mutations, broken frames, real uploads."""
    packet = message(AudioPacket, 8192)
    cancel = message(Cancel, 8192)
    one = st.one_of(
        mutated(packet),
        mutated(cancel),
        broken(packet),
        st.just(Frame("text", '{"type": "cancel"}', bad=False)),
    )
    upload = st.just(_upload(None, wav, 8192))
    groups = st.lists(st.one_of(one.map(lambda f: [f]), upload), min_size=1, max_size=6)
    return groups.map(lambda gs: [f for g in gs for f in g])


def vlm_batches(wav: bytes, image: bytes) -> st.SearchStrategy[list[Frame]]:
    """Batches for ``/v1/chat/vlm``: as for audio, plus image packets and ``end`` at every point."""
    audio = message(VlmAudioPacket, 50 * 1024)
    picture = message(VlmImagePacket, 50 * 1024)
    end = message(VlmEnd, 50 * 1024)
    cancel = message(Cancel, 50 * 1024)
    one = st.one_of(
        mutated(audio),
        mutated(picture),
        mutated(end),
        mutated(cancel),
        broken(st.one_of(audio, picture)),
    )
    end_frame = Frame("text", '{"type": "end"}', bad=False)

    @st.composite
    def upload(draw: st.DrawFn) -> list[Frame]:
        frames = _upload(VlmImagePacket, image, 50 * 1024) + _upload(VlmAudioPacket, wav, 50 * 1024)
        frames = draw(st.permutations(frames)) if draw(st.booleans()) else frames
        at = draw(st.integers(0, len(frames)))  # `end` at every point, the end included
        return [*frames[:at], end_frame, *frames[at:]]

    groups = st.lists(
        st.one_of(one.map(lambda f: [f]), st.just([end_frame]), upload()), min_size=1, max_size=6
    )
    return groups.map(lambda gs: [f for g in gs for f in g])
