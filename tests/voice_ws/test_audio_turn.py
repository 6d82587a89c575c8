"""``/v1/chat/audio`` end to end: one full turn against the simulator, in the seed's event order."""

from __future__ import annotations

from pathlib import Path

from .conftest import client, compact, decoded_samples, gateway, packets, voice_tasks, wav_bytes

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天，**气温**二十五度。适合出门散步！😀 记得带上水。"


async def test_full_audio_turn_in_seed_order(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(2.0)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw) as c:
            connected = await c.recv()
            assert connected["connected"]["message"] == "音频连接已建立"
            upload = packets(audio)
            await c.send_all(upload)
            await c.until("audio_complete")
        names = compact(c.names())
        assert names[:3] == ["connected", "packet_ack*", "transcription_started"]
        assert names[3] == "chat_started"
        assert names[-3:] == ["audio_stream:finished", "chat_tts_complete", "audio_complete"]
        middle = set(names[4:-3])
        assert middle <= {
            "chat_chunk",
            "chat_chunk*",
            "tts_started",
            "audio_stream:data",
            "audio_stream:data*",
        }
        assert c.names().count("tts_started") == 1
        first_audio = c.names().index("audio_stream:data")
        assert c.names().index("tts_started") < first_audio

        acks = c.bodies("packet_ack")
        assert [a["seq"] for a in acks] == list(range(1, len(upload) + 1))
        assert acks[-1]["received"] == len(upload) and acks[-1]["total"] == len(upload)

        (started,) = c.bodies("transcription_started")
        (chat_started,) = c.bodies("chat_started")
        assert chat_started["user_message"] == QUESTION
        chunks = c.bodies("chat_chunk")
        assert "".join(ch["chunk"] for ch in chunks) == ANSWER
        assert chunks[-1]["full_response"] == ANSWER

        (done,) = c.bodies("chat_tts_complete")
        assert done["assistant_response"] == ANSWER
        assert done["tts_success"] is True and done["db_saved"] is True
        assert done["segments_count"] == done["total_segments"] >= 2

        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_success"] and complete["transcription_text"] == QUESTION
        assert complete["chat_success"] and complete["tts_success"]
        assert complete["assistant_response"] == ANSWER
        assert complete["size"] == len(audio) and complete["packets"] == len(upload)
        assert abs(complete["duration"] - 2.0) < 0.01
        assert complete["oss_uploaded"] and complete["oss_url"] == started["oss_url"]
        assert complete["filepath"].startswith("audio/") and complete["filepath"].endswith(".wav")
        assert complete["filename"] == complete["filepath"].rsplit("/", 1)[1]
        # The stored upload is the upload.
        assert await gw.services.storage.objects.get(complete["filepath"]) == audio

        # TTS got the speakable text only: no markdown, no emoji.
        (tts,) = gw.sim.log.tts_sessions
        assert "**" not in tts.text and "😀" not in tts.text and "气温" in tts.text
        # The MP3 decodes to what the simulator synthesised (plus the encoder's fixed delay/padding).
        pcm_samples = sum(r.audio_bytes for r in tts.responses) // 2
        samples, rate = decoded_samples(c.mp3())
        assert rate == gw.settings.speech_sample_rate
        assert pcm_samples <= samples <= pcm_samples + 1152 + 576 * 2

        # The turn was written through the outbox.
        await gw.services.storage.outbox.drained()
        await gw.sim.wait_closed("asr", timeout=5)
        await gw.sim.wait_closed("tts", timeout=5)
    assert not voice_tasks()
