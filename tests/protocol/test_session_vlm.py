"""VlmSession: every transition, driven through the codec without a socket."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from msgspec import UnsetType

from protocol import (
    MSG_VLM_CONNECTED,
    VLM_TRANSITIONS,
    Action,
    CancelReason,
    CancelTurn,
    Close,
    Connected,
    ErrorCode,
    ErrorEvent,
    Limits,
    LocalProtocolError,
    Send,
    StartVlmTurn,
    Trigger,
    VlmPacketAck,
    VlmSession,
    VlmState,
)

from .driver import Driver, events, names

S = VlmState


def opened(limits: Limits | None = None) -> Driver:
    driver = Driver(VlmSession("v-1", limits or Limits(max_packet_bytes=50 * 1024)))
    driver.open()
    return driver


def error_codes(actions: list[Action]) -> list[ErrorCode | UnsetType]:
    return [e.code for e in events(actions) if isinstance(e, ErrorEvent)]


def both(d: Driver, image: list[bytes], audio: list[bytes]) -> list[Action]:
    return d.upload(image, "image") + d.upload(audio, "audio")


def test_open_sends_connected() -> None:
    session = VlmSession("v-1")
    assert session.open(0.0) == [Send(Connected(message=MSG_VLM_CONNECTED, session_id="v-1"))]
    assert session.state is S.IDLE


def test_a_question_about_an_image() -> None:
    d = opened()
    acks = both(d, [b"im", b"g"], [b"au", b"di", b"o"])
    assert events(acks) == [
        VlmPacketAck(seq=1, type="image", received=1, total=2),
        VlmPacketAck(seq=2, type="image", received=2, total=2),
        VlmPacketAck(seq=1, type="audio", received=1, total=3),
        VlmPacketAck(seq=2, type="audio", received=2, total=3),
        VlmPacketAck(seq=3, type="audio", received=3, total=3),
    ]
    assert d.session.state is S.IDLE
    start = d.frame('{"type":"end"}')
    assert start == [
        StartVlmTurn(
            turn_id=1,
            audio=b"audio",
            image=b"img",
            audio_packets=3,
            image_packets=2,
            started_at=d.now,
        )
    ]
    assert d.session.state is S.RUNNING and d.session.turn_id == 1
    assert d.session.turn_finished(1) == []
    assert d.session.state is S.IDLE


def test_out_of_order_and_duplicate_packets() -> None:
    d = opened()
    d.packet(2, 2, b"g", "image")
    dup = d.packet(2, 2, b"g", "image")
    assert events(dup) == [VlmPacketAck(seq=2, type="image", received=1, total=2, duplicate=True)]
    d.packet(1, 2, b"im", "image")
    d.upload([b"a"], "audio")
    (start,) = d.frame('{"type":"end"}')
    assert isinstance(start, StartVlmTurn) and start.image == b"img"


@pytest.mark.parametrize(
    ("image", "audio", "missing"),
    [
        (None, None, "image and audio uploads were"),
        ([b"i"], None, "audio upload was"),
        (None, [b"a"], "image upload was"),
    ],
)
def test_end_before_both_uploads_is_an_incomplete_upload_error(
    image: list[bytes] | None, audio: list[bytes] | None, missing: str
) -> None:
    d = opened()
    if image:
        d.upload(image, "image")
    if audio:
        d.upload(audio, "audio")
    (action,) = d.frame('{"type":"end"}')
    assert isinstance(action, Send) and isinstance(action.event, ErrorEvent)
    assert action.event.code is ErrorCode.INCOMPLETE_UPLOAD
    assert missing in action.event.message
    assert d.session.state is S.IDLE


def test_end_with_a_partial_upload_keeps_it_for_the_client_to_finish() -> None:
    d = opened()
    d.upload([b"i"], "image")
    d.packet(1, 2, b"a", "audio")
    assert error_codes(d.frame('{"type":"end"}')) == [ErrorCode.INCOMPLETE_UPLOAD]
    d.packet(2, 2, b"b", "audio")
    assert names(d.frame('{"type":"end"}')) == ["StartVlmTurn"]


def test_each_turn_needs_new_uploads() -> None:
    d = opened()
    both(d, [b"i"], [b"a"])
    d.frame('{"type":"end"}')
    assert error_codes(d.frame('{"type":"end"}')) == [ErrorCode.INCOMPLETE_UPLOAD]
    assert d.session.state is S.RUNNING and d.session.turn_id == 1


def test_next_question_while_answering_is_a_barge_in() -> None:
    d = opened()
    both(d, [b"i"], [b"a"])
    d.frame('{"type":"end"}')
    assert names(both(d, [b"j"], [b"b"])) == ["Send(packet_ack)"] * 2  # uploads go on meanwhile
    assert d.session.state is S.RUNNING
    actions = d.frame('{"type":"end"}')
    assert actions[0] == CancelTurn(1, CancelReason.BARGE_IN)
    assert isinstance(actions[1], StartVlmTurn) and actions[1].turn_id == 2
    assert actions[1].image == b"j" and actions[1].audio == b"b"


def test_cancel() -> None:
    d = opened()
    assert d.frame('{"type":"cancel"}') == []
    both(d, [b"i"], [b"a"])
    d.frame('{"type":"end"}')
    assert d.frame('{"type":"cancel"}') == [CancelTurn(1, CancelReason.CLIENT)]
    assert d.session.state is S.IDLE
    assert d.session.turn_finished(1) == []


def test_a_new_seq_1_replaces_an_upload() -> None:
    d = opened()
    d.packet(1, 3, b"old", "image")
    d.upload([b"new"], "image")
    d.upload([b"a"], "audio")
    (start,) = d.frame('{"type":"end"}')
    assert isinstance(start, StartVlmTurn) and start.image == b"new" and start.image_packets == 1


def test_bad_packets_cost_an_error() -> None:
    d = opened()
    d.packet(1, 2, b"i", "image")
    assert error_codes(d.packet(2, 3, b"j", "image")) == [ErrorCode.BAD_SEQUENCE]
    assert error_codes(d.packet(1, 2, b"I", "audio")) == []
    assert error_codes(d.frame('{"type":"video"}')) == [ErrorCode.UNEXPECTED_MESSAGE]
    assert error_codes(d.frame('{"type":"image","seq":1,"total":1,"data":"%%"}')) == [
        ErrorCode.INVALID_BASE64
    ]
    assert d.session.state is S.IDLE


def test_incomplete_uploads_are_dropped_at_their_deadline() -> None:
    d = opened(Limits(upload_idle_timeout=20, max_packet_bytes=64))
    d.upload([b"i"], "image")
    assert d.session.deadline() is None  # complete uploads wait for end without limit
    d.packet(1, 2, b"a", "audio")
    assert d.session.deadline() == d.now + 20
    assert d.session.tick(d.now + 19) == []
    actions = d.session.tick(d.now + 20)
    assert error_codes(actions) == [ErrorCode.UPLOAD_TIMEOUT]
    assert "audio" in events(actions)[0].message  # type: ignore[attr-defined]
    assert d.session.deadline() is None
    d.upload([b"a"], "audio")
    assert names(d.frame('{"type":"end"}')) == ["StartVlmTurn"]  # the image was kept


def test_turn_limit_and_fatal_errors_close() -> None:
    d = opened(Limits(max_turns=1, max_packet_bytes=64))
    both(d, [b"i"], [b"a"])
    d.frame('{"type":"end"}')
    both(d, [b"i"], [b"a"])
    actions = d.frame('{"type":"end"}')
    assert actions[0] == CancelTurn(1, CancelReason.CLOSED)
    assert error_codes(actions) == [ErrorCode.TOO_MANY_TURNS]
    assert actions[-1] == Close(1008, "too_many_turns")
    assert d.session.state is S.CLOSED
    with pytest.raises(LocalProtocolError):
        d.frame('{"type":"end"}')


# --------------------------------------------------------------------------- the table


def in_state(state: VlmState) -> Driver:
    d = Driver(VlmSession("v", Limits(max_packet_bytes=64)))
    if state is S.NEW:
        return d
    d.open()
    if state is S.RUNNING:
        both(d, [b"i"], [b"a"])
        d.frame('{"type":"end"}')
    elif state is S.CLOSED:
        d.session.close()
    assert d.session.state is state
    return d


def ready_then_end(d: Driver) -> object:
    if d.session.state in (S.IDLE, S.RUNNING):
        both(d, [b"i"], [b"a"])
    return d.frame('{"type":"end"}')


CALLS: dict[Trigger, Callable[[Driver], object]] = {
    Trigger.OPEN: lambda d: d.session.open(d.now),
    Trigger.UPLOAD_STARTED: lambda d: d.packet(1, 2, b"x", "image"),
    Trigger.END: ready_then_end,
    Trigger.CANCEL: lambda d: d.frame('{"type":"cancel"}'),
    Trigger.CLOSE: lambda d: d.session.close(),
}


@pytest.mark.parametrize("state", list(VlmState))
@pytest.mark.parametrize("trigger", list(CALLS))
def test_each_state_and_trigger_follows_the_table_or_raises(
    state: VlmState, trigger: Trigger
) -> None:
    d = in_state(state)
    expected = VLM_TRANSITIONS.get((state, trigger))
    if trigger is Trigger.CLOSE and state is S.CLOSED:
        assert CALLS[trigger](d) == []
    elif expected is None:
        with pytest.raises(LocalProtocolError):
            CALLS[trigger](d)
        assert d.session.state is state
    else:
        CALLS[trigger](d)
        assert d.session.state is expected


def test_turn_finished_follows_the_table() -> None:
    d = in_state(S.RUNNING)
    d.session.turn_finished(1)
    assert d.session.state is VLM_TRANSITIONS[(S.RUNNING, Trigger.TURN_FINISHED)]
