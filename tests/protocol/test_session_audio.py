"""AudioSession: every transition, driven through the codec without a socket."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UnsetType

from protocol import (
    AUDIO_TRANSITIONS,
    MSG_AUDIO_CONNECTED,
    Action,
    AudioSession,
    AudioState,
    CancelReason,
    CancelTurn,
    Close,
    Connected,
    ErrorCode,
    ErrorEvent,
    FeedAudio,
    Limits,
    LocalProtocolError,
    PacketAck,
    RemoteProtocolError,
    Send,
    StartTurn,
    Trigger,
    UploadComplete,
)

from .driver import Driver, events, fed, names

S = AudioState


def opened(limits: Limits | None = None) -> Driver:
    driver = Driver(AudioSession("sess-1", limits or Limits()))
    driver.open()
    return driver


def error_codes(actions: list[Action]) -> list[ErrorCode | UnsetType]:
    return [e.code for e in events(actions) if isinstance(e, ErrorEvent)]


def test_open_sends_connected() -> None:
    session = AudioSession("sess-1")
    assert session.state is S.NEW
    assert session.open(1.0) == [Send(Connected(message=MSG_AUDIO_CONNECTED, session_id="sess-1"))]
    assert session.state is S.IDLE
    with pytest.raises(LocalProtocolError):
        session.open(2.0)
    assert session.state is S.IDLE


def test_receive_before_open_or_after_close_is_a_local_error() -> None:
    driver = Driver(AudioSession("s"))
    with pytest.raises(LocalProtocolError):
        driver.packet(1, 1, b"a")
    with pytest.raises(LocalProtocolError):
        driver.session.reject(RemoteProtocolError(ErrorCode.INVALID_JSON, "x"), 0)
    driver.open()
    driver.session.close()
    with pytest.raises(LocalProtocolError):
        driver.frame('{"type":"cancel"}')
    assert driver.session.state is S.CLOSED


def test_one_utterance_in_order() -> None:
    d = opened()
    first = d.packet(1, 3, b"aa")
    assert first == [
        StartTurn(1, d.now),
        Send(PacketAck(seq=1, received=1, total=3, turn_id=1)),
        FeedAudio(1, b"aa"),
    ]
    assert d.session.state is S.RECEIVING and d.session.turn_id == 1
    assert names(d.packet(2, 3, b"bb")) == ["Send(packet_ack)", "FeedAudio"]
    last = d.packet(3, 3, b"c")
    assert last[-1] == UploadComplete(1, 5, 3)
    assert fed(last) == b"c"
    assert d.session.state is S.PROCESSING
    assert d.session.turn_finished(1) == []
    assert d.session.state is S.IDLE and d.session.turn_id is None


def test_out_of_order_packets_feed_contiguous_bytes() -> None:
    d = opened()
    start = d.packet(3, 3, b"c")
    assert names(start) == ["StartTurn", "Send(packet_ack)"]  # held: nothing to feed yet
    assert fed(d.packet(1, 3, b"a")) == b"a"
    end = d.packet(2, 3, b"b")
    assert fed(end) == b"bc" and isinstance(end[-1], UploadComplete)


def test_duplicates_are_acked_idempotently() -> None:
    d = opened()
    d.packet(1, 2, b"a")
    again = d.packet(1, 2, b"a")
    assert again == [Send(PacketAck(seq=1, received=1, total=2, turn_id=1, duplicate=True))]
    assert d.session.state is S.RECEIVING and d.session.turns == 1


def test_bad_packets_cost_an_error_and_the_upload_goes_on() -> None:
    d = opened()
    d.packet(1, 3, b"a")
    assert error_codes(d.packet(2, 4, b"b")) == [ErrorCode.BAD_SEQUENCE]  # total changed
    d.packet(2, 3, b"b")
    assert error_codes(d.packet(2, 3, b"X")) == [ErrorCode.DUPLICATE_PACKET]
    for frame in ["nope", "[]", '{"seq":0,"total":3,"data":""}', '{"seq":3,"total":3,"data":"!"}']:
        (action,) = d.frame(frame)
        assert isinstance(action, Send) and isinstance(action.event, ErrorEvent)
    assert d.session.state is S.RECEIVING
    assert isinstance(d.packet(3, 3, b"c")[-1], UploadComplete)


def test_new_utterance_while_a_turn_runs_is_a_barge_in() -> None:
    d = opened()
    d.upload([b"a", b"b"])
    assert d.session.state is S.PROCESSING
    actions = d.packet(1, 2, b"new")
    assert actions[:2] == [CancelTurn(1, CancelReason.BARGE_IN), StartTurn(2, d.now)]
    assert fed(actions) == b"new" and d.session.turn_id == 2
    assert d.session.turn_finished(1) == []  # the cancelled turn ending later changes nothing
    assert d.session.state is S.RECEIVING


def test_a_different_seq_1_mid_upload_restarts() -> None:
    d = opened()
    d.packet(1, 3, b"a")
    d.packet(2, 3, b"b")
    actions = d.packet(1, 2, b"again")
    assert actions[:2] == [CancelTurn(1, CancelReason.BARGE_IN), StartTurn(2, d.now)]
    assert isinstance(d.packet(2, 2, b"!")[-1], UploadComplete)


def test_the_same_audio_twice_is_two_turns() -> None:
    d = opened()
    d.upload([b"a", b"b"])
    d.session.turn_finished(1)
    again = d.upload([b"a", b"b"])
    assert names(again)[0] == "StartTurn" and d.session.turns == 2


def test_a_late_repeat_after_completion_is_only_acked() -> None:
    d = opened()
    d.upload([b"a", b"b"])
    late = d.packet(2, 2, b"b")
    assert late == [Send(PacketAck(seq=2, received=2, total=2, turn_id=1, duplicate=True))]
    assert d.session.state is S.PROCESSING and d.session.turns == 1


def test_cancel_while_receiving_drains_the_rest_of_the_upload() -> None:
    d = opened()
    d.packet(1, 3, b"a")
    assert d.frame('{"type":"cancel"}') == [CancelTurn(1, CancelReason.CLIENT)]
    assert d.session.state is S.DRAINING
    assert names(d.packet(2, 3, b"b")) == ["Send(packet_ack)"]
    assert names(d.packet(3, 3, b"c")) == ["Send(packet_ack)"]
    assert d.session.state is S.IDLE


def test_cancel_while_processing_and_when_idle() -> None:
    d = opened()
    assert d.frame('{"type":"cancel"}') == []
    d.upload([b"a"])
    assert d.frame('{"type":"cancel"}') == [CancelTurn(1, CancelReason.CLIENT)]
    assert d.session.state is S.IDLE


def test_turn_failing_mid_upload_drains() -> None:
    d = opened()
    d.packet(1, 2, b"a")
    assert d.session.turn_finished(1) == []
    assert d.session.state is S.DRAINING
    assert names(d.packet(2, 2, b"b")) == ["Send(packet_ack)"]
    assert d.session.state is S.IDLE


def test_unknown_turn_is_a_local_error() -> None:
    d = opened()
    with pytest.raises(LocalProtocolError):
        d.session.turn_finished(1)
    d.packet(1, 2, b"a")
    with pytest.raises(LocalProtocolError):
        d.session.turn_finished(2)
    assert d.session.state is S.RECEIVING


def test_an_upload_that_stalls_is_dropped_at_its_deadline() -> None:
    d = opened(Limits(upload_idle_timeout=10.0))
    assert d.session.deadline() is None
    d.packet(1, 3, b"a")
    assert d.session.deadline() == d.now + 10.0
    assert d.session.tick(d.now + 9.9) == []
    actions = d.session.tick(d.now + 10.0)
    assert actions[0] == CancelTurn(1, CancelReason.UPLOAD_TIMEOUT)
    assert error_codes(actions) == [ErrorCode.UPLOAD_TIMEOUT]
    assert events(actions) == [
        ErrorEvent(message=events(actions)[0].message, code=ErrorCode.UPLOAD_TIMEOUT, turn_id=1)
    ]
    assert d.session.state is S.IDLE and d.session.deadline() is None


def test_a_draining_upload_also_times_out() -> None:
    d = opened(Limits(upload_idle_timeout=5.0))
    d.packet(1, 3, b"a")
    d.frame('{"type":"cancel"}')
    actions = d.session.tick(d.now + 5)
    assert names(actions) == ["Send(error)"]
    assert d.session.state is S.IDLE


def test_a_fatal_frame_error_closes() -> None:
    d = opened(Limits(max_frame_bytes=64))
    d.packet(1, 2, b"a")
    actions = d.frame("x" * 65)
    assert actions[0] == CancelTurn(1, CancelReason.CLOSED)
    assert error_codes(actions) == [ErrorCode.FRAME_TOO_LARGE]
    assert actions[-1] == Close(1009, "frame_too_large")
    assert d.session.state is S.CLOSED
    assert d.session.close() == []


def test_binary_frames_are_reported_and_survived() -> None:
    d = opened()
    assert error_codes(d.frame(b"\x00\x01")) == [ErrorCode.BINARY_FRAME]
    assert d.session.state is S.IDLE


def test_turn_limit_closes_the_connection() -> None:
    d = opened(Limits(max_turns=1))
    d.upload([b"a"])
    actions = d.packet(1, 1, b"b")
    assert actions[0] == CancelTurn(1, CancelReason.CLOSED)
    assert error_codes(actions) == [ErrorCode.TOO_MANY_TURNS]
    assert actions[-1] == Close(1008, "too_many_turns")
    assert d.session.state is S.CLOSED


def test_an_invalid_first_packet_does_not_interrupt_the_running_turn() -> None:
    d = opened(Limits(max_packets=4))
    d.upload([b"a"])
    assert error_codes(d.packet(1, 5, b"b")) == [ErrorCode.UPLOAD_TOO_LARGE]
    assert d.session.state is S.PROCESSING and d.session.turn_id == 1


def test_close_cancels_the_running_turn() -> None:
    d = opened()
    d.packet(1, 2, b"a")
    assert d.session.close() == [CancelTurn(1, CancelReason.CLOSED)]
    assert d.session.close() == []
    assert d.session.turn_finished(1) == []


# --------------------------------------------------------------------------- the table


def in_state(state: AudioState) -> Driver:
    d = Driver(AudioSession("s"))
    if state is S.NEW:
        return d
    d.open()
    if state is S.RECEIVING:
        d.packet(1, 2, b"a")
    elif state is S.PROCESSING:
        d.upload([b"a", b"b"])
    elif state is S.DRAINING:
        d.packet(1, 2, b"a")
        d.frame('{"type":"cancel"}')
    elif state is S.CLOSED:
        d.session.close()
    assert d.session.state is state
    return d


CALLS: dict[Trigger, Callable[[Driver], object]] = {
    Trigger.OPEN: lambda d: d.session.open(d.now),
    Trigger.UPLOAD_STARTED: lambda d: d.packet(1, 2, b"new"),
    Trigger.CANCEL: lambda d: d.frame('{"type":"cancel"}'),
    Trigger.TIMEOUT: lambda d: d.session.tick(d.now + 3600),
    Trigger.CLOSE: lambda d: d.session.close(),
}


@pytest.mark.parametrize("state", list(AudioState))
@pytest.mark.parametrize("trigger", list(CALLS))
def test_each_state_and_trigger_follows_the_table_or_raises(
    state: AudioState, trigger: Trigger
) -> None:
    d = in_state(state)
    expected = AUDIO_TRANSITIONS.get((state, trigger))
    if trigger is Trigger.TIMEOUT and d.session.deadline() is None:
        assert CALLS[trigger](d) == []  # nothing is waiting: time passing is not an event
        assert d.session.state is state
    elif trigger is Trigger.CLOSE and state is S.CLOSED:
        assert CALLS[trigger](d) == []  # closing is idempotent
    elif expected is None:
        with pytest.raises(LocalProtocolError):
            CALLS[trigger](d)
        assert d.session.state is state
    else:
        CALLS[trigger](d)
        assert d.session.state is expected


@pytest.mark.parametrize("state", [S.RECEIVING, S.PROCESSING])
def test_turn_finished_follows_the_table(state: AudioState) -> None:
    d = in_state(state)
    d.session.turn_finished(1)
    assert d.session.state is AUDIO_TRANSITIONS[(state, Trigger.TURN_FINISHED)]


def test_table_only_names_audio_states() -> None:
    for (state, trigger), target in AUDIO_TRANSITIONS.items():
        assert isinstance(state, AudioState) and isinstance(target, AudioState)
        assert isinstance(trigger, Trigger)
        assert state is not S.CLOSED


# --------------------------------------------------------------------------- property


@st.composite
def shuffled_upload(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    total = draw(st.integers(1, 16))
    packets = draw(st.lists(st.binary(min_size=1, max_size=8), min_size=total, max_size=total))
    order = draw(st.permutations(list(range(1, total + 1))))
    repeats = draw(st.lists(st.integers(2, total), max_size=4)) if total > 1 else []
    arrival = list(order)
    for seq in repeats:
        position = draw(st.integers(arrival.index(1) + 1, len(arrival)))
        arrival.insert(position, seq)
    return packets, arrival


@settings(deadline=None)
@given(shuffled_upload())
def test_any_arrival_order_feeds_the_upload_in_order(case: tuple[list[bytes], list[int]]) -> None:
    packets, arrival = case
    d = opened()
    actions = []
    for seq in arrival:
        actions += d.packet(seq, len(packets), packets[seq - 1])
    assert fed(actions) == b"".join(packets)
    assert [a for a in actions if isinstance(a, StartTurn)] == [StartTurn(1, d.now)]
    completes = [a for a in actions if isinstance(a, UploadComplete)]
    assert completes == [UploadComplete(1, sum(map(len, packets)), len(packets))]
    acks = [e for e in events(actions) if isinstance(e, PacketAck)]
    assert [a.seq for a in acks] == arrival
    assert d.session.state is S.PROCESSING
