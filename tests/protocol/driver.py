"""A test driver for the session machines: frames in (through the real codec, as the shell does), actions out."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from protocol import (
    Action,
    AudioSession,
    Event,
    FeedAudio,
    Limits,
    ProtocolError,
    Send,
    VlmSession,
    decode_audio_client,
    decode_vlm_client,
)


class Driver:
    """Feeds one session text frames and keeps a clock; every call returns the actions produced."""

    def __init__(self, session: AudioSession | VlmSession, limits: Limits | None = None) -> None:
        self.session = session
        self.limits = limits or session.limits
        self.now = 100.0
        self._decode: Callable[[str | bytes, Limits], Any] = (
            decode_audio_client if isinstance(session, AudioSession) else decode_vlm_client
        )

    def open(self) -> list[Action]:
        return self.session.open(self.now)

    def frame(self, frame: str | bytes, *, after: float = 0.0) -> list[Action]:
        self.now += after
        try:
            message = self._decode(frame, self.limits)
        except ProtocolError as error:
            return self.session.reject(error, self.now)
        return self.session.receive(message, self.now)

    def packet(self, seq: int, total: int, data: bytes, kind: str | None = None) -> list[Action]:
        body: dict[str, Any] = {"seq": seq, "total": total, "data": base64.b64encode(data).decode()}
        if kind is not None:
            body["type"] = kind
        return self.frame(json.dumps(body))

    def upload(self, data: list[bytes], kind: str | None = None) -> list[Action]:
        actions: list[Action] = []
        for seq, chunk in enumerate(data, 1):
            actions += self.packet(seq, len(data), chunk, kind)
        return actions


def events(actions: list[Action]) -> list[Event]:
    return [a.event for a in actions if isinstance(a, Send)]


def fed(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, FeedAudio))


def names(actions: list[Action]) -> list[str]:
    """A readable summary: action class names, with the event name for Send."""
    return [
        f"Send({a.event.event_name})" if isinstance(a, Send) else type(a).__name__ for a in actions
    ]
