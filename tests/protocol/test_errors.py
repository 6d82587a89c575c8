"""ProtocolError and the error codes."""

from __future__ import annotations

import pytest

from protocol import (
    FATAL_CODES,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)


def test_base_class_is_not_raised_itself() -> None:
    with pytest.raises(TypeError):
        ProtocolError(ErrorCode.INVALID_JSON, "x")


@pytest.mark.parametrize("cls", [LocalProtocolError, RemoteProtocolError])
def test_subclasses_carry_code_and_message(cls: type[ProtocolError]) -> None:
    error = cls(ErrorCode.BAD_SEQUENCE, "seq 3 is greater than total 2")
    assert isinstance(error, ProtocolError)
    assert error.code is ErrorCode.BAD_SEQUENCE
    assert error.message == "seq 3 is greater than total 2"
    assert str(error) == "bad_sequence: seq 3 is greater than total 2"
    assert cls.__name__ in repr(error)
    assert not error.fatal


def test_string_codes_become_enum_members() -> None:
    assert RemoteProtocolError("invalid_json", "x").code is ErrorCode.INVALID_JSON  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RemoteProtocolError("no_such_code", "x")  # type: ignore[arg-type]


def test_fatal_codes_close_with_websocket_codes() -> None:
    assert RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, "x").fatal
    assert FATAL_CODES[ErrorCode.FRAME_TOO_LARGE] == 1009
    assert FATAL_CODES[ErrorCode.INTERNAL_ERROR] == 1011
    assert all(1000 <= code < 5000 for code in FATAL_CODES.values())


def test_issue_codes_are_all_present() -> None:
    required = {
        "invalid_json",
        "invalid_message",
        "bad_sequence",
        "duplicate_packet",
        "packet_too_large",
        "upload_too_large",
        "unexpected_message",
        "unauthorized",
        "upstream_error",
        "upstream_timeout",
        "rate_limited",
        "internal_error",
    }
    assert required <= {code.value for code in ErrorCode}
