"""One filled-in and one minimal instance of every message of the two WebSocket channels."""

from __future__ import annotations

from protocol import (
    AudioComplete,
    AudioPacket,
    AudioStreamData,
    AudioStreamFinished,
    Cancel,
    ChatChunk,
    ChatStarted,
    ChatTtsComplete,
    ClientMessage,
    Connected,
    ErrorCode,
    ErrorEvent,
    Event,
    PacketAck,
    Timings,
    TranscriptionStarted,
    TtsStarted,
    VlmAudioPacket,
    VlmChatChunk,
    VlmChatStarted,
    VlmChatTtsComplete,
    VlmComplete,
    VlmEnd,
    VlmImagePacket,
    VlmPacketAck,
)

TIMINGS = Timings(recognition_ms=812.5, first_token_ms=1200, first_audio_ms=1650.25, total_ms=4000)

SHARED_EVENTS: list[Event] = [
    Connected(message="连接已建立", session_id="s-1"),
    TranscriptionStarted(message="开始语音识别...", oss_url=None),
    TranscriptionStarted(message="开始语音识别...", oss_url="https://b.example/a.mp3", turn_id=2),
    TtsStarted(message="开始语音合成..."),
    TtsStarted(message="开始语音合成...", turn_id=1),
    AudioStreamData(data=b"\xff\xfb\x90\x00" * 10),
    AudioStreamData(data=b"\x00", format="mp3", turn_id=3),
    AudioStreamFinished(),
    AudioStreamFinished(turn_id=3),
    ErrorEvent(message="错误描述"),
    ErrorEvent(message="bad seq", code=ErrorCode.BAD_SEQUENCE, turn_id=1),
]

AUDIO_EVENTS_SAMPLES: list[Event] = [
    *SHARED_EVENTS,
    PacketAck(seq=1, received=1, total=10),
    PacketAck(seq=2, received=2, total=10, turn_id=1, duplicate=True),
    ChatStarted(message="开始生成AI回答...", user_message="你好"),
    ChatStarted(message="跳过对话生成：语音识别失败或结果为空", turn_id=4),
    ChatChunk(chunk="你", full_response="你"),
    ChatChunk(chunk="好", full_response="你好", turn_id=1),
    ChatTtsComplete(
        message="完成",
        assistant_response="你好",
        tts_success=True,
        segments_count=1,
        total_segments=1,
        db_saved=False,
    ),
    ChatTtsComplete(
        message="完成",
        assistant_response="你好",
        tts_success=True,
        segments_count=1,
        total_segments=1,
        db_saved=True,
        turn_id=1,
        timings=TIMINGS,
    ),
    AudioComplete(
        message="全部完成",
        filename="a.mp3",
        filepath="audio/a.mp3",
        size=123,
        packets=2,
        duration=1.5,
        oss_uploaded=False,
        oss_url=None,
        transcription_success=True,
        transcription_text="你好",
        chat_success=True,
        assistant_response="你好！",
        tts_success=True,
    ),
    AudioComplete(
        message="全部完成",
        filename="a.mp3",
        filepath="audio/a.mp3",
        size=0,
        packets=1,
        duration=0,
        oss_uploaded=True,
        oss_url="https://b.example/a.mp3",
        transcription_success=False,
        transcription_text="",
        chat_success=False,
        assistant_response="",
        tts_success=False,
        turn_id=9,
        timings=Timings(total_ms=1),
    ),
]

VLM_EVENTS_SAMPLES: list[Event] = [
    *SHARED_EVENTS,
    VlmPacketAck(seq=1, type="audio", received=1, total=3),
    VlmPacketAck(seq=3, type="image", received=3, total=3, duplicate=True),
    VlmComplete(
        message="VLM处理完成",
        audio_file="q.mp3",
        image_file="i.jpg",
        audio_size=10,
        image_size=20,
        duration=3.45,
        transcription="这是什么",
        vlm_response="一只猫",
    ),
    VlmComplete(
        message="VLM处理完成",
        audio_file="q.mp3",
        image_file="i.jpg",
        audio_size=10,
        image_size=20,
        duration=3.45,
        transcription="这是什么",
        vlm_response="一只猫",
        turn_id=1,
        timings=TIMINGS,
    ),
    VlmChatStarted(message="开始", user_message="这是什么", image_url="https://b.example/i.jpg"),
    VlmChatStarted(message="开始", user_message="这是什么", image_url="data:,", turn_id=2),
    VlmChatChunk(chunk="一", full_response="一"),
    VlmChatChunk(chunk="只", full_response="一只", turn_id=2),
    VlmChatTtsComplete(
        message="完成", user_message="这是什么", assistant_response="一只猫", audio_chunks=15
    ),
    VlmChatTtsComplete(
        message="完成",
        user_message="这是什么",
        assistant_response="一只猫",
        audio_chunks=0,
        turn_id=2,
        timings=TIMINGS,
    ),
]

AUDIO_CLIENT_SAMPLES: list[ClientMessage] = [
    AudioPacket(seq=1, total=2, data=b"\x00\x01"),
    AudioPacket(seq=2, total=2, data=b""),
    Cancel(),
]

VLM_CLIENT_SAMPLES: list[ClientMessage] = [
    VlmAudioPacket(seq=1, total=1, data=b"RIFF"),
    VlmImagePacket(seq=1, total=2, data=b"\xff\xd8\xff"),
    VlmEnd(),
    Cancel(),
]
