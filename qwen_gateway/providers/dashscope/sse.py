"""An incremental Server-Sent Events decoder: bytes in, complete ``data`` payloads out.

It understands what OpenAI-compatible servers send (``data:`` lines ended by a blank line, ``\\n`` or ``\\r\\n``
line ends, ``:`` comments, an optional ``event:`` name); ``id:`` and ``retry:`` are ignored.

It is bounded: a line longer than ``max_line`` bytes, or an event whose data lines add up to more than
``max_event`` bytes, raises :class:`SseTooLarge` (the stream is then unusable). And it never copies more than it
keeps: an unfinished line is held as the pieces that brought it and joined once, when its end arrives, so an
upstream sending a long line in many small pieces costs linear time, not quadratic.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_EVENT", "SseDecoder", "SseEvent", "SseTooLarge"]

#: (event name or ``None``, data payload) of one dispatched event.
SseEvent = tuple[str | None, bytes]

#: The default bound of a line and of an event's data, in bytes.
DEFAULT_MAX_EVENT = 1024 * 1024


class SseTooLarge(Exception):
    """A line or an event is over the decoder's bound.

    Attributes:
        limit: the bound that was exceeded, in bytes.
    """

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} over {limit} bytes")
        self.limit = limit


class SseDecoder:
    """Feed it chunks as they arrive; it returns the events that became complete.

    Args:
        max_line: the longest line accepted (without its line end).
        max_event: the most data one event may carry (its data lines joined).
    """

    __slots__ = ("_data", "_data_size", "_event", "_max_event", "_max_line", "_tail", "_tail_size")

    def __init__(
        self, max_line: int = DEFAULT_MAX_EVENT, max_event: int = DEFAULT_MAX_EVENT
    ) -> None:
        if max_line < 1 or max_event < 1:
            raise ValueError("max_line and max_event must be >= 1")
        self._max_line = max_line
        self._max_event = max_event
        self._tail: list[bytes] = []  # the pieces of an unfinished line
        self._tail_size = 0
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Decode ``chunk``; return the complete events in order (possibly none).

        Raises:
            SseTooLarge: a line or an event is over its bound.
        """
        if self._tail:
            if b"\n" not in chunk:  # the unfinished line goes on: keep the piece, copy nothing
                self._tail_size += len(chunk)
                if self._tail_size > self._max_line:
                    raise SseTooLarge("an SSE line", self._max_line)
                self._tail.append(chunk)
                return []
            self._tail.append(chunk)
            buf = b"".join(self._tail)
            self._tail = []
            self._tail_size = 0
        else:
            buf = chunk
        if not self._data and self._event is None and b"\r" not in buf:
            # What OpenAI-compatible servers send: "data: <json>\n\n" events and nothing else. A burst of them
            # is split in one call; anything else (names, comments, multi-line data) takes the line parser.
            end = buf.rfind(b"\n\n")
            if end > 0 and buf.startswith(b"data: "):
                payloads = buf[6:end].split(b"\n\ndata: ")
                # n such events hold exactly 2n newlines: then there is no other line anywhere
                if buf.count(b"\n", 0, end + 2) == 2 * len(payloads):
                    bound = min(self._max_line - 6, self._max_event)  # a line is "data: " + payload
                    if end > bound and max(map(len, payloads)) > bound:
                        self._too_large(max(map(len, payloads)))
                    events: list[SseEvent] = [(None, d) for d in payloads]
                    if end + 2 < len(buf):
                        events += self._lines(buf, end + 2)
                    return events
        return self._lines(buf, 0)

    def _lines(self, buf: bytes, start: int) -> list[SseEvent]:
        events: list[SseEvent] = []
        find = buf.find
        max_line = self._max_line
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if nl - start > max_line:
                raise SseTooLarge("an SSE line", max_line)
            end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl  # drop a \r before the \n
            if end == start:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    events.append((self._event, data))
                    self._data = []
                    self._data_size = 0
                self._event = None
            elif buf.startswith(b"data:", start):
                value_start = start + 6 if buf[start + 5 : start + 6] == b" " else start + 5
                self._add_data(buf[value_start:end])
            elif buf.startswith(b"event:", start):
                self._event = buf[start + 6 : end].strip().decode("utf-8", "replace")
            start = nl + 1
        if start < len(buf):
            rest = buf[start:]
            if len(rest) > max_line:
                raise SseTooLarge("an SSE line", max_line)
            self._tail = [rest]
            self._tail_size = len(rest)
        return events

    def _too_large(self, payload: int) -> None:
        if payload > self._max_event:
            raise SseTooLarge("an SSE event", self._max_event)
        raise SseTooLarge("an SSE line", self._max_line)

    def _add_data(self, value: bytes) -> None:
        self._data_size += len(value) + 1  # and the newline that joins it to the next line
        if self._data_size > self._max_event + 1:
            raise SseTooLarge("an SSE event", self._max_event)
        self._data.append(value)

    def close(self) -> list[SseEvent]:
        """End of stream: return an event left without its blank line (lenient), then reset."""
        events: list[SseEvent] = []
        if self._tail:
            line = b"".join(self._tail).rstrip(b"\r")
            if line.startswith(b"data:"):
                self._add_data(line[6:] if line[5:6] == b" " else line[5:])
        if self._data:
            events.append((self._event, b"\n".join(self._data)))
        self._tail = []
        self._tail_size = 0
        self._data = []
        self._data_size = 0
        self._event = None
        return events
