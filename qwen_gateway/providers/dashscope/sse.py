"""An incremental Server-Sent Events decoder: bytes in, complete ``data`` payloads out.

It understands what OpenAI-compatible servers send (``data:`` lines ended by a blank line, ``\\n`` or ``\\r\\n``
line ends, ``:`` comments, an optional ``event:`` name); ``id:`` and ``retry:`` are ignored. It never copies the
whole buffer per chunk: only an unfinished trailing line is kept between calls.
"""

from __future__ import annotations

__all__ = ["SseDecoder", "SseEvent"]

#: (event name or ``None``, data payload) of one dispatched event.
SseEvent = tuple[str | None, bytes]


class SseDecoder:
    """Feed it chunks as they arrive; it returns the events that became complete."""

    __slots__ = ("_data", "_event", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Decode ``chunk``; return the complete events in order (possibly none)."""
        buf = self._tail + chunk if self._tail else chunk
        if not self._data and self._event is None and b"\r" not in buf:
            # What OpenAI-compatible servers send: "data: <json>\n\n" events and nothing else. A burst of them
            # is split in one call; anything else (names, comments, multi-line data) takes the line parser.
            end = buf.rfind(b"\n\n")
            if end > 0 and buf.startswith(b"data: "):
                payloads = buf[6:end].split(b"\n\ndata: ")
                # n such events hold exactly 2n newlines: then there is no other line anywhere
                if buf.count(b"\n", 0, end + 2) == 2 * len(payloads):
                    events: list[SseEvent] = [(None, d) for d in payloads]
                    self._tail = b""
                    if end + 2 < len(buf):
                        events += self._lines(buf[end + 2 :])
                    return events
        return self._lines(buf)

    def _lines(self, buf: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        start = 0
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl  # drop a \r before the \n
            if end == start:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    events.append((self._event, data))
                    self._data = []
                self._event = None
            elif buf.startswith(b"data:", start):
                value_start = start + 6 if buf[start + 5 : start + 6] == b" " else start + 5
                self._data.append(buf[value_start:end])
            elif buf.startswith(b"event:", start):
                self._event = buf[start + 6 : end].strip().decode("utf-8", "replace")
            start = nl + 1
        self._tail = buf[start:] if start < len(buf) else b""
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: return an event left without its blank line (lenient), then reset."""
        events: list[SseEvent] = []
        if self._tail:
            line = self._tail.rstrip(b"\r")
            if line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        if self._data:
            events.append((self._event, b"\n".join(self._data)))
        self._tail = b""
        self._data = []
        self._event = None
        return events
