"""Packet assembly: one upload's packets in, its bytes out in ``seq`` order as soon as they are contiguous.

An upload is ``total`` packets numbered ``seq`` 1..``total``. Packets may arrive in any order: a packet after a
gap is held, and released together with everything it makes contiguous when the gap closes, so a streaming
consumer (the recogniser) reads the audio while the upload is still arriving. An exact repeat of a packet is
acknowledged and changes nothing; a repeat with other content is an error. The upload is complete the moment its
last gap closes.
"""

from __future__ import annotations

import hashlib

import msgspec

from .errors import ErrorCode, RemoteProtocolError

__all__ = [
    "OpenAssembler",
    "PacketAssembler",
    "Release",
    "starts_new_open_upload",
    "starts_new_upload",
]


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class Release(msgspec.Struct, frozen=True, kw_only=True):
    """What one accepted packet changed.

    Attributes:
        data: the bytes this packet made contiguous, in order (empty when it was held or a duplicate).
        duplicate: the packet repeated one already received; nothing changed.
        complete: the whole upload has been released.
        completed: this very packet completed the upload (true exactly once per upload).
        received: distinct packets received so far.
    """

    data: bytes
    duplicate: bool
    complete: bool
    completed: bool
    received: int


class _OrderedPackets:
    """What both assemblers share: packets by ``seq``, held behind a gap and released in order, exact repeats
    recognised by their digest, the byte bound."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: bytes accepted so far (released and held)
        self.size = 0
        #: the next ``seq`` to release
        self.next_seq = 1
        self._digests: dict[int, bytes] = {}
        self._held: dict[int, bytes] = {}

    @property
    def received(self) -> int:
        """Distinct packets received so far."""
        return len(self._digests)

    def seen(self, seq: int) -> bool:
        """Whether packet ``seq`` has been received."""
        return seq in self._digests

    def _repeat(self, seq: int, digest: bytes, complete: bool) -> Release | None:
        """The release of an exact repeat of ``seq`` (None when ``seq`` is new).

        Raises:
            RemoteProtocolError: ``seq`` was received with other content.
        """
        old = self._digests.get(seq)
        if old is None:
            return None
        if old != digest:
            raise RemoteProtocolError(
                ErrorCode.DUPLICATE_PACKET,
                f"packet {seq} was already received with different data",
            )
        return Release(
            data=b"", duplicate=True, complete=complete, completed=False, received=self.received
        )

    def _accept(self, seq: int, digest: bytes, data: bytes) -> bytes:
        """Take a new packet within the byte bound; returns the bytes it made contiguous.

        Raises:
            RemoteProtocolError: the upload would exceed ``max_bytes`` (nothing changed).
        """
        if self.size + len(data) > self.max_bytes:
            raise RemoteProtocolError(
                ErrorCode.UPLOAD_TOO_LARGE, f"the upload would exceed {self.max_bytes} bytes"
            )
        self._digests[seq] = digest
        self.size += len(data)
        if seq != self.next_seq:
            self._held[seq] = data
            return b""
        chunks = [data]
        self.next_seq += 1
        while self.next_seq in self._held:
            chunks.append(self._held.pop(self.next_seq))
            self.next_seq += 1
        return b"".join(chunks)


class PacketAssembler(_OrderedPackets):
    """Reassembles one upload of ``total`` packets.

    Raises ``RemoteProtocolError`` (and then changes nothing) for: ``total`` above ``max_packets`` or bytes
    above ``max_bytes`` (``upload_too_large``), ``seq`` outside 1..``total`` or a ``total`` other than the
    first packet's (``bad_sequence``), a ``seq`` repeated with other content (``duplicate_packet``).
    """

    def __init__(self, total: int, *, max_packets: int, max_bytes: int) -> None:
        if total < 1:
            raise RemoteProtocolError(
                ErrorCode.BAD_SEQUENCE, f"total must be at least 1, got {total}"
            )
        if total > max_packets:
            raise RemoteProtocolError(
                ErrorCode.UPLOAD_TOO_LARGE, f"total {total} is more than {max_packets} packets"
            )
        super().__init__(max_bytes)
        self.total = total

    @property
    def complete(self) -> bool:
        """Every packet has been received and released."""
        return self.next_seq > self.total

    def is_duplicate(self, seq: int, total: int, data: bytes) -> bool:
        """Whether this packet exactly repeats one already received."""
        old = self._digests.get(seq)
        return total == self.total and old is not None and old == _digest(data)

    def add(self, seq: int, total: int, data: bytes) -> Release:
        """Accept one packet.

        Returns:
            what it released; feed ``data`` to the consumer, and finish the upload when ``completed``.

        Raises:
            RemoteProtocolError: the packet is refused; the upload is unchanged and may go on.
        """
        if total != self.total:
            raise RemoteProtocolError(
                ErrorCode.BAD_SEQUENCE,
                f"total changed from {self.total} to {total} within one upload",
            )
        if not 1 <= seq <= total:
            raise RemoteProtocolError(ErrorCode.BAD_SEQUENCE, f"seq {seq} is outside 1..{total}")
        digest = _digest(data)
        repeat = self._repeat(seq, digest, self.complete)
        if repeat is not None:
            return repeat
        released = self._accept(seq, digest, data)
        complete = self.complete
        return Release(
            data=released,
            duplicate=False,
            complete=complete,
            completed=complete,  # a complete upload has every seq: only a duplicate can follow
            received=self.received,
        )


def starts_new_upload(current: PacketAssembler | None, seq: int, total: int, data: bytes) -> bool:
    """Whether a packet begins a new upload rather than continuing ``current``.

    A packet begins a new upload when there is none; when ``current`` is complete, unless it is an exact late
    repeat of one of its packets other than ``seq`` 1 (``seq`` 1 after a complete upload is always a new one,
    even with the same bytes); and when it is a ``seq`` 1 different from the ``seq`` 1 already received
    (the client restarted).
    """
    if current is None:
        return True
    if current.complete:
        return seq == 1 or not current.is_duplicate(seq, total, data)
    return seq == 1 and current.seen(1) and not current.is_duplicate(1, total, data)


class OpenAssembler(_OrderedPackets):
    """Reassembles one open-microphone upload (``mode=stream``): packets ``seq`` 1, 2, ... with no ``total``.

    Packets are released in ``seq`` order as :class:`PacketAssembler` does; the upload is complete when
    :meth:`end` is called (the client's ``end``, or the end of the speech). Packets that arrive after that are
    acknowledged and dropped (a device streams until it learns that the utterance ended). Raises
    ``RemoteProtocolError`` (and then changes nothing) for a ``seq`` above ``max_packets`` or bytes above
    ``max_bytes`` (``upload_too_large``), and a ``seq`` repeated with other content (``duplicate_packet``).
    """

    #: the number of packets is not known (acknowledged as 0)
    total = 0

    def __init__(self, *, max_packets: int, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.max_packets = max_packets
        #: the upload has ended (:meth:`end`)
        self.complete = False

    @property
    def packets(self) -> int:
        """Packets released, in order (the upload's packets once it is complete)."""
        return self.next_seq - 1

    def is_duplicate(self, seq: int, data: bytes) -> bool:
        """Whether this packet exactly repeats one already received."""
        old = self._digests.get(seq)
        return old is not None and old == _digest(data)

    def add(self, seq: int, data: bytes) -> Release:
        """Accept one packet; after :meth:`end` it is acknowledged and releases nothing.

        Raises:
            RemoteProtocolError: the packet is refused; the upload is unchanged and may go on.
        """
        if seq > self.max_packets:
            raise RemoteProtocolError(
                ErrorCode.UPLOAD_TOO_LARGE, f"seq {seq} is more than {self.max_packets} packets"
            )
        digest = _digest(data)
        repeat = self._repeat(seq, digest, self.complete)
        if repeat is not None:
            return repeat
        if self.complete:
            # The utterance ended: the device is still streaming; acknowledge, keep nothing.
            self._digests[seq] = digest
            return Release(
                data=b"", duplicate=False, complete=True, completed=False, received=self.received
            )
        released = self._accept(seq, digest, data)
        return Release(
            data=released, duplicate=False, complete=False, completed=False, received=self.received
        )

    def end(self) -> bool:
        """Complete the upload with the packets released so far (packets held behind a gap are dropped).

        Returns:
            True when this call ended it; False when it had already ended.
        """
        if self.complete:
            return False
        self.complete = True
        self.size -= sum(len(d) for d in self._held.values())
        self._held.clear()
        return True


def starts_new_open_upload(
    current: PacketAssembler | OpenAssembler | None, seq: int, data: bytes
) -> bool:
    """Whether an open-microphone packet begins a new upload rather than continuing ``current``.

    ``seq`` 1 does, unless it exactly repeats the ``seq`` 1 of the current open upload; any packet does when
    there is no open upload (a packet other than ``seq`` 1 is then refused by the caller).
    """
    if not isinstance(current, OpenAssembler):
        return True
    return seq == 1 and not current.is_duplicate(1, data)
