"""``shutdown()`` of both session machines (the server is draining): cancel the running turn as
``shutting_down``, an ``error`` event ``shutting_down``, close 1001; nothing more after."""

from __future__ import annotations

import pytest

from protocol import (
    FATAL_CODES,
    AudioSession,
    AudioState,
    CancelReason,
    CancelTurn,
    Close,
    ErrorCode,
    ErrorEvent,
    LocalProtocolError,
    Send,
    StartTurn,
    VlmSession,
    VlmState,
)

from .driver import Driver


def _check_shutdown_tail(actions: list[object]) -> None:
    *_, send, close = actions
    assert isinstance(send, Send) and isinstance(send.event, ErrorEvent)
    assert send.event.code is ErrorCode.SHUTTING_DOWN
    assert close == Close(1001, "shutting_down")


def test_shutting_down_closes_with_going_away() -> None:
    assert FATAL_CODES[ErrorCode.SHUTTING_DOWN] == 1001


def test_idle_audio_session_is_told_and_closed() -> None:
    d = Driver(AudioSession("s"))
    d.open()
    actions = d.session.shutdown()
    assert len(actions) == 2
    _check_shutdown_tail(actions)
    assert d.session.state is AudioState.CLOSED
    assert d.session.shutdown() == []
    assert d.session.close() == []
    with pytest.raises(LocalProtocolError):
        d.packet(1, 1, b"a")


def test_running_audio_turn_is_cancelled_as_shutting_down_first() -> None:
    d = Driver(AudioSession("s"))
    d.open()
    started = d.packet(1, 2, b"aa")
    assert any(isinstance(a, StartTurn) for a in started)
    actions = d.session.shutdown()
    assert actions[0] == CancelTurn(1, CancelReason.SHUTTING_DOWN)
    _check_shutdown_tail(actions)
    assert d.session.state is AudioState.CLOSED
    assert d.session.turn_finished(1) == []  # the shell's report after the cancel is ignored


def test_vlm_session_shutdown() -> None:
    d = Driver(VlmSession("v"))
    d.open()
    actions = d.session.shutdown()
    _check_shutdown_tail(actions)
    assert d.session.state is VlmState.CLOSED
