"""``InputAudio``: the input buffer without sockets - conversion to 16 kHz, server VAD steps with the prefix
padding, manual mode's bound."""

from __future__ import annotations

import pytest

from protocol.realtime_session import VadConfig
from qwen_gateway.realtime.listen import Audio, BufferFull, InputAudio, Started, Step, Stopped
from qwen_gateway.simulator.audio import synthesize
from qwen_gateway.voice.convert import wire_format

PCM24 = wire_format("audio/pcm")


def feed_all(audio: InputAudio, pcm: bytes, chunk: int = 960) -> list[Step]:
    steps: list[Step] = []
    for start in range(0, len(pcm), chunk):
        steps += audio.feed(pcm[start : start + chunk])
    return steps


def test_server_vad_steps_carry_the_padding_and_the_speech() -> None:
    audio = InputAudio(PCM24, VadConfig(prefix_padding_ms=300, silence_duration_ms=500))
    speech = synthesize("今天天气怎么样？我想出去走走。", 24000)
    pcm = bytes(24000) + speech + bytes(24000 * 2)  # 0.5 s silence, speech, 1 s silence
    steps = feed_all(audio, pcm)
    kinds = [type(s) for s in steps]
    assert kinds[0] is Started and kinds[-1] is Stopped and set(kinds[1:-1]) == {Audio}
    started, stopped = steps[0], steps[-1]
    assert isinstance(started, Started) and isinstance(stopped, Stopped)
    assert 300 <= started.audio_start_ms <= 700
    assert started.audio_start_ms < stopped.audio_end_ms <= audio.position_ms
    # the utterance's audio: from 300 ms before the start to the stop (16 kHz pcm16)
    total = len(started.audio) + sum(len(s.audio) for s in steps if isinstance(s, Audio))
    heard_ms = total // 2 * 1000 // 16000
    assert heard_ms >= stopped.audio_end_ms - started.audio_start_ms + 300 - 40
    assert audio.position_ms == pytest.approx(len(pcm) // 2 * 1000 // 24000, abs=30)
    assert not audio.speaking


def test_manual_mode_keeps_the_audio_until_a_commit_up_to_its_bound() -> None:
    audio = InputAudio(wire_format("audio/pcmu"), None, max_ms=1000)
    assert audio.feed(bytes([0xFF]) * 4000) == []  # 0.5 s of G.711 silence
    assert 300 <= audio.buffered_ms <= 500  # (the resampler holds a few ms back until the commit)
    with pytest.raises(BufferFull):
        audio.feed(bytes([0xFF]) * 8000)  # one more second would be too much: not taken
    audio.feed(bytes([0xFF]) * 2400)  # 0.3 s more is
    data = audio.take()
    assert len(data) // 2 == pytest.approx(16000 * 0.8, abs=50) and audio.buffered_ms == 0


def test_reconfigure_changes_the_format_and_forgets_a_speech() -> None:
    audio = InputAudio(PCM24, VadConfig())
    feed_all(audio, bytes(4800) + synthesize("你好你好你好", 24000))
    assert audio.speaking
    audio.reconfigure(PCM24, None)
    assert not audio.speaking
    audio.reconfigure(wire_format("audio/pcma"), None)
    assert audio.feed(bytes([0xD5]) * 4000) == [] and audio.buffered_ms > 0
