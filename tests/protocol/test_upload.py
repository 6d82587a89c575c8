"""PacketAssembler: ordering, holding, duplicates, limits, completeness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ErrorCode, PacketAssembler, RemoteProtocolError, starts_new_upload


def assembler(total: int, *, max_packets: int = 100, max_bytes: int = 1000) -> PacketAssembler:
    return PacketAssembler(total, max_packets=max_packets, max_bytes=max_bytes)


def refused(up: PacketAssembler, seq: int, total: int, data: bytes) -> ErrorCode:
    before = (up.received, up.size, up.next_seq, up.complete)
    with pytest.raises(RemoteProtocolError) as info:
        up.add(seq, total, data)
    assert (up.received, up.size, up.next_seq, up.complete) == before  # nothing changed
    return info.value.code


def test_in_order_packets_are_released_at_once() -> None:
    up = assembler(3)
    r1 = up.add(1, 3, b"a")
    assert (r1.data, r1.complete, r1.completed, r1.received) == (b"a", False, False, 1)
    assert up.add(2, 3, b"b").data == b"b"
    r3 = up.add(3, 3, b"c")
    assert (r3.data, r3.complete, r3.completed, r3.received) == (b"c", True, True, 3)
    assert up.size == 3


def test_out_of_order_packets_are_held_until_contiguous() -> None:
    up = assembler(4)
    assert up.add(3, 4, b"c").data == b""
    assert up.add(2, 4, b"b").data == b""
    assert up.received == 2 and up.next_seq == 1
    release = up.add(1, 4, b"a")
    assert release.data == b"abc" and not release.complete
    last = up.add(4, 4, b"d")
    assert last.data == b"d" and last.completed


def test_completeness_is_known_when_the_last_gap_closes() -> None:
    up = assembler(3)
    up.add(3, 3, b"c")
    up.add(1, 3, b"a")
    assert not up.complete
    release = up.add(2, 3, b"b")
    assert release.data == b"bc" and release.completed and up.complete


def test_exact_duplicates_are_idempotent() -> None:
    up = assembler(2)
    up.add(2, 2, b"b")
    again = up.add(2, 2, b"b")  # held packet repeated
    assert again.duplicate and again.data == b"" and again.received == 1
    up.add(1, 2, b"a")
    late = up.add(1, 2, b"a")  # released packet repeated, after completion
    assert late.duplicate and late.complete and not late.completed
    assert up.is_duplicate(2, 2, b"b") and not up.is_duplicate(2, 2, b"x")
    assert not up.is_duplicate(2, 3, b"b")


def test_conflicting_duplicate_is_an_error() -> None:
    up = assembler(2)
    up.add(1, 2, b"a")
    assert refused(up, 1, 2, b"A") is ErrorCode.DUPLICATE_PACKET


def test_sequence_errors() -> None:
    up = assembler(3)
    up.add(1, 3, b"a")
    assert refused(up, 2, 4, b"b") is ErrorCode.BAD_SEQUENCE  # total changed
    assert refused(up, 4, 3, b"b") is ErrorCode.BAD_SEQUENCE
    assert refused(up, 0, 3, b"b") is ErrorCode.BAD_SEQUENCE
    with pytest.raises(RemoteProtocolError) as info:
        assembler(0)
    assert info.value.code is ErrorCode.BAD_SEQUENCE


def test_size_and_count_limits() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        assembler(11, max_packets=10)
    assert info.value.code is ErrorCode.UPLOAD_TOO_LARGE
    assembler(10, max_packets=10)
    up = assembler(3, max_bytes=5)
    up.add(1, 3, b"abc")
    up.add(2, 3, b"de")
    assert refused(up, 3, 3, b"f") is ErrorCode.UPLOAD_TOO_LARGE


def test_which_packet_starts_a_new_upload() -> None:
    assert starts_new_upload(None, 3, 5, b"x")
    up = assembler(2)
    up.add(1, 2, b"a")
    assert not starts_new_upload(up, 1, 2, b"a")  # exact repeat of packet 1
    assert starts_new_upload(up, 1, 2, b"z")  # a different packet 1: the client restarted
    assert starts_new_upload(up, 1, 7, b"a")
    assert not starts_new_upload(up, 2, 2, b"b")
    up.add(2, 2, b"b")
    assert starts_new_upload(up, 1, 2, b"a")  # after a complete upload, seq 1 always starts anew
    assert not starts_new_upload(up, 2, 2, b"b")  # a late repeat
    assert starts_new_upload(up, 2, 2, b"other")
    held = assembler(3)
    held.add(2, 3, b"b")
    assert not starts_new_upload(held, 1, 3, b"a")  # packet 1 not seen yet: it belongs here


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """An upload's packets and an arrival order: a permutation with repeats mixed in."""
    total = draw(st.integers(1, 24))
    packets = draw(st.lists(st.binary(max_size=12), min_size=total, max_size=total))
    order = draw(st.permutations(list(range(1, total + 1))))
    repeats = draw(st.lists(st.integers(1, total), max_size=total))
    arrival = list(order)
    for seq in repeats:
        arrival.insert(draw(st.integers(0, len(arrival))), seq)
    return packets, arrival


@settings(deadline=None)
@given(deliveries())
def test_release_is_the_concatenation_in_seq_order(case: tuple[list[bytes], list[int]]) -> None:
    packets, arrival = case
    total = len(packets)
    up = assembler(total, max_bytes=10_000)
    released = bytearray()
    completions = []
    seen: set[int] = set()
    for index, seq in enumerate(arrival):
        release = up.add(seq, total, packets[seq - 1])
        assert release.duplicate == (seq in seen)
        seen.add(seq)
        assert release.received == len(seen)
        released += release.data
        if release.completed:
            completions.append(index)
        assert release.complete == (len(seen) == total)
    assert bytes(released) == b"".join(packets)
    first_full = max(arrival.index(seq) for seq in range(1, total + 1))
    assert completions == [first_full]
    assert up.size == sum(map(len, packets))
