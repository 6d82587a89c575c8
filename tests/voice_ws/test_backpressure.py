"""Backpressure, not loss: a slow client slows the pipeline and loses nothing; a client that reads nothing is
evicted (turn cancelled, upstreams closed, its TCP socket closed) with server memory bounded; a client that
vanishes mid-turn leaves no upstream socket and no task behind."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from pathlib import Path

import pytest

from qwen_gateway.simulator import Fault, SimulatorConfig

from .conftest import (
    GATEWAY_KEY,
    UPSTREAM_KEY,
    client,
    decoded_samples,
    gateway,
    packets,
    voice_tasks,
    wav_bytes,
)

SENTENCE = "这是一句用来测试背压的回答内容，它会被合成为语音。"


def _small_socket(rcvbuf: int = 4096) -> socket.socket:
    """A client socket with a small receive buffer: the server meets a full window quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return sock


def _established(local_port: int, remote_port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote = int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)
        if (local, remote) == (local_port, remote_port) and parts[3] == "01":
            return True
    return False


async def test_slow_reader_loses_no_audio(tmp_path: Path) -> None:
    answer = SENTENCE * 12
    async with gateway(tmp_path, ws_send_timeout=10.0) as gw:
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "说长一点")
        gw.sim.set_reply(answer)
        sock = _small_socket()
        sock.connect(("127.0.0.1", gw.settings.port))
        async with client(gw, sock=sock, max_queue=1, compression=None) as c:
            await c.recv()
            await c.send_all(packets(audio))
            # Read slowly: a pause every few events, so the server keeps meeting a full window.
            while True:
                event = await c.recv(wait=30)
                if "audio_complete" in event:
                    break
                if len(c.events) % 5 == 0:
                    await asyncio.sleep(0.01)
        (tts,) = gw.sim.log.tts_sessions
        produced = sum(r.audio_bytes for r in tts.responses) // 2
        samples, _ = decoded_samples(c.mp3())
        assert produced > 0
        # Every PCM sample the simulator produced is in the MP3 (plus LAME's fixed delay and padding).
        assert produced <= samples <= produced + 1152 + 1152
        complete = c.bodies("audio_complete")[0]
        assert complete["tts_success"] is True and complete["assistant_response"] == answer


async def test_client_that_reads_nothing_is_evicted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    answer = SENTENCE * 400  # ~ an hour of speech: far more than any buffer on the way
    config = SimulatorConfig(api_key=UPSTREAM_KEY)
    # The kernel's deadline (unread_timeout) is longer than the application's (ws_send_timeout), as in
    # production: the typed path ends the connection, the kernel then closes the stuck socket.
    async with gateway(tmp_path, config, unread_timeout=4.0, ws_send_timeout=0.5) as gw:
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "说很长很长")
        gw.sim.set_reply(answer)
        sock = _small_socket()
        sock.connect(("127.0.0.1", gw.settings.port))
        client_port = sock.getsockname()[1]
        caplog.set_level(logging.INFO, logger="qwen_gateway.ws")
        args = {"sock": sock, "max_queue": 1, "compression": None, "close_timeout": 0.5}
        async with client(gw, **args) as c:
            await c.send_all(packets(audio))
            # The client reads nothing. The server gives up on it: the turn is cancelled and every
            # upstream connection it opened is closed.
            await gw.sim.log.wait_for(lambda: bool(gw.sim.log.tts_sessions), timeout=10)
            await gw.sim.wait_closed(timeout=15)
            ended = []
            for _ in range(100):
                ended = [r for r in caplog.records if r.getMessage() == "connection ended"]
                if ended:
                    break
                await asyncio.sleep(0.05)
            assert ended and ended[0].fields["reason"] == "send_timeout"  # type: ignore[attr-defined]
            # Memory stayed bounded: the synthesiser was flow-controlled, far short of the answer.
            (tts,) = gw.sim.log.tts_sessions
            produced = sum(r.audio_bytes for r in tts.responses)
            assert tts.text and len(tts.text) < len(answer) / 4
            assert produced < 20 * 1024 * 1024
            # The server's TCP socket is closed while the client still reads nothing.
            for _ in range(200):
                if not _established(gw.settings.port, client_port):
                    break
                await asyncio.sleep(0.05)
            assert not _established(gw.settings.port, client_port)
            # The kernel dropped the socket: one INFO line, no traceback (issue 12).
            loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
            assert not loud, [r.getMessage() for r in loud]
        for _ in range(100):
            if not voice_tasks():
                break
            await asyncio.sleep(0.02)
        assert not voice_tasks()


async def test_abrupt_disconnect_mid_turn_leaves_nothing_behind(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=40, tts_realtime_factor=0.5)
    async with gateway(tmp_path, config) as gw:
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "讲个故事")
        gw.sim.set_reply(SENTENCE * 30)
        async with client(gw, query={"conversation_id": "conv-gone"}) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_stream:data")
            c.ws.transport.abort()  # no close frame: the client is just gone
        await gw.sim.wait_closed(timeout=5)
        for _ in range(100):
            if not voice_tasks():
                break
            await asyncio.sleep(0.02)
        assert not voice_tasks()
        await gw.services.storage.outbox.drained()
        (turn,) = await gw.services.storage.history.conversation(
            "conv-gone", owner=gw.services.keys.owner(GATEWAY_KEY)
        )
        assert turn.status == "interrupted" and turn.error_code == "client_gone"
        assert turn.assistant_content and (SENTENCE * 30).startswith(turn.assistant_content)


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_fast_sender_is_slowed_down_not_buffered(tmp_path: Path) -> None:
    # The recogniser does not start (its task is held back by the simulator): the turn stops taking the
    # upload, the runner's reader waits, the bounded receive queues fill, TCP stops the client. Nothing
    # on the way grows with what the client tries to send.
    big = 200 * 1024 * 1024
    async with gateway(tmp_path, max_upload_bytes=big, max_packets=100_000) as gw:
        gw.sim.faults.add(Fault.delay(4, endpoint="asr"))
        head = wav_bytes(0.5)[:8192]
        total = big // 8192
        chunk = base64.b64encode(bytes(8192)).decode()
        async with client(gw, compression=None, close_timeout=0.5) as c:
            await c.recv()
            first = base64.b64encode(head).decode()
            await c.ws.send(f'{{"seq": 1, "total": {total}, "data": "{first}"}}')
            rss_before = _rss_bytes()
            sent = 0
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3):
                    for seq in range(2, total + 1):
                        await c.ws.send(f'{{"seq": {seq}, "total": {total}, "data": "{chunk}"}}')
                        sent += 8192
            grown = _rss_bytes() - rss_before
            # The client was stopped far short of the 200 MB, and the process did not keep what it
            # sent: kernel socket buffers hold most of it.
            assert sent < 80 * 1024 * 1024, sent
            assert grown < 16 * 1024 * 1024, (grown, sent)
