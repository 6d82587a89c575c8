"""The OpenAI-compatible chat endpoint: stream shapes, replies, validation, recording."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib

import httpx
import pytest

from qwen_gateway.simulator import Simulator

from .conftest import AUTH, chat_body, sse_events


async def _stream(http: httpx.AsyncClient, sim: Simulator, **body: object) -> list[dict]:
    response = await http.post(
        sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True, **body), headers=AUTH
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def test_stream_shape_without_usage(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.set_reply("你好！我是通义千问。")
    chunks = await _stream(http, sim)
    first, *middle, last = chunks
    assert first["choices"] == [
        {
            "delta": {"content": "", "role": "assistant"},
            "index": 0,
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert middle, "text chunks expected"
    for chunk in middle:
        (choice,) = chunk["choices"]
        assert choice["finish_reason"] is None
        assert set(choice["delta"]) == {"content"}
        assert chunk["usage"] is None
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["choices"][0]["delta"] == {"content": ""}
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == "你好！我是通义千问。"
    ids = {(c["id"], c["created"], c["model"], c["object"]) for c in chunks}
    assert len(ids) == 1
    (chunk_id, _created, model, kind) = ids.pop()
    assert (
        chunk_id.startswith("chatcmpl-")
        and model == "qwen-plus"
        and kind == "chat.completion.chunk"
    )
    assert all(c["system_fingerprint"] is None for c in chunks)


async def test_stream_usage_chunk_only_with_include_usage(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    sim.set_reply("Hello there, friend.")
    chunks = await _stream(http, sim, stream_options={"include_usage": True})
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (
        usage["completion_tokens"] == len(chunks) - 3
    )  # role, finish and usage chunks carry no token
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    no_usage = await _stream(http, sim)
    assert all(c["choices"] for c in no_usage)
    sim.configure(usage_chunk_always=True)
    assert (await _stream(http, sim))[-1]["choices"] == []


async def test_corpus_reply_is_deterministic_and_rich(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    texts = []
    for _ in range(2):
        chunks = await _stream(http, sim, messages=[{"role": "user", "content": "介绍一下你自己"}])
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))
    assert texts[0] == texts[1]
    assert sim.log.chat_requests[0].replies == [texts[0]]
    # Across prompts the corpus offers markdown, emoji, URLs and numbers.
    seen = set()
    for prompt in [f"问题 {i}" for i in range(12)] + [f"question {i}" for i in range(12)]:
        response = await http.post(
            sim.env["QWEN_API_CHAT_URL"], json=chat_body(prompt), headers=AUTH
        )
        seen.add(response.json()["choices"][0]["message"]["content"])
    joined = "\n".join(seen)
    for feature in ("**", "\n- ", "```", "| ", "https://", "3.14", "1,000", "50%", "😊", "#"):
        assert feature in joined, feature
    assert any("\u4e00" <= ch <= "\u9fff" for ch in joined)


async def test_set_reply_times_and_function(sim: Simulator, http: httpx.AsyncClient) -> None:
    url = sim.env["QWEN_API_CHAT_URL"]
    sim.set_reply("first", times=1)
    one = (await http.post(url, json=chat_body(), headers=AUTH)).json()
    two = (await http.post(url, json=chat_body(), headers=AUTH)).json()
    assert one["choices"][0]["message"]["content"] == "first"
    assert two["choices"][0]["message"]["content"] != "first"
    sim.set_reply(lambda body: "echo: " + body["messages"][-1]["content"])
    three = (await http.post(url, json=chat_body("ping"), headers=AUTH)).json()
    assert three["choices"][0]["message"]["content"] == "echo: ping"


async def test_non_streaming_shape(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.set_reply("我是通义千问。")
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {
            "message": {"role": "assistant", "content": "我是通义千问。"},
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
        }
    ]
    assert body["id"] == f"chatcmpl-{sim.log.chat_requests[0].request_id}"
    usage = body["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert body["system_fingerprint"] is None and body["model"] == "qwen-plus"


async def test_n_choices_interleaved(sim: Simulator, http: httpx.AsyncClient) -> None:
    chunks = await _stream(http, sim, n=3)
    by_index: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        by_index[choice["index"]].append(choice)
    for choices in by_index.values():
        assert choices[0]["delta"] == {"content": "", "role": "assistant"}
        assert choices[-1]["finish_reason"] == "stop"
    assert [c["choices"][0]["index"] for c in chunks[:3]] == [0, 1, 2]
    texts = {i: "".join(c["delta"]["content"] for c in cs) for i, cs in by_index.items()}
    assert len(set(texts.values())) > 1
    assert sim.log.chat_requests[0].replies == [texts[0], texts[1], texts[2]]


async def test_thinking_streams_reasoning_first(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.set_reply("答案是 42。")
    chunks = await _stream(http, sim, enable_thinking=True, stream_options={"include_usage": True})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    reasoning = [d for d in deltas if d.get("reasoning_content")]
    content = [d for d in deltas if d.get("content")]
    assert reasoning and content
    assert all(d["content"] is None for d in reasoning)
    assert all(d["reasoning_content"] is None for d in content)
    assert deltas.index(reasoning[-1]) < deltas.index(content[0])
    assert "".join(d["content"] for d in content) == "答案是 42。"
    details = chunks[-1]["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == len(reasoning)
    assert sim.log.chat_requests[0].reasoning == "".join(d["reasoning_content"] for d in reasoning)


async def test_finish_chunk_may_carry_text(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.configure(finish_chunk_with_text=True, chat_chunk_tokens=2)
    sim.set_reply("one two three")
    chunks = await _stream(http, sim)
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["delta"]["content"] == " three"
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:]] == ["one two", " three"]


async def test_max_tokens_and_stop(sim: Simulator, http: httpx.AsyncClient) -> None:
    url = sim.env["QWEN_API_CHAT_URL"]
    sim.set_reply("alpha beta gamma delta")
    body = (await http.post(url, json=chat_body(max_tokens=2), headers=AUTH)).json()
    assert body["choices"][0] | {"message": None} == {
        "message": None,
        "finish_reason": "length",
        "index": 0,
        "logprobs": None,
    }
    assert body["choices"][0]["message"]["content"] == "alpha beta"
    body = (await http.post(url, json=chat_body(stop=[" gamma"]), headers=AUTH)).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_json_mode_reply_is_json(sim: Simulator, http: httpx.AsyncClient) -> None:
    body = chat_body("Answer in json please", response_format={"type": "json_object"})
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=body, headers=AUTH)
    assert isinstance(json.loads(response.json()["choices"][0]["message"]["content"]), dict)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\0" + b"\0\0\0" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _image_body(url: str, model: str = "qwen-vl-plus") -> dict:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "这是什么？"},
                ],
            }
        ],
    }


async def test_vision_request_records_images_and_describes(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    png = _png(32, 24)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=_image_body(url), headers=AUTH)
    assert response.status_code == 200, response.text
    assert sim.log.chat_requests[0].images == [png]
    assert "图" in response.json()["choices"][0]["message"]["content"]


async def test_vision_fetches_http_images_when_enabled(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    sim.configure(fetch_image_urls=True, image_fetch_timeout=5.0)
    good = f"{sim.base_url}/health"
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=_image_body(good), headers=AUTH)
    assert response.status_code == 200
    assert sim.log.chat_requests[-1].images == [b'{"status":"ok","simulator":true}']
    bad = f"{sim.base_url}/no/such/image.png"
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=_image_body(bad), headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Failed to download multimodal content."


_PNG_URL = "data:image/png;base64," + base64.b64encode(_png(32, 24)).decode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            400,
            "you must provide a model parameter.",
        ),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "The model `gpt-4o` does not exist or you do not have access to it.",
        ),
        ({"model": "qwen-plus", "messages": []}, 400, "[] is too short - 'messages'"),
        (chat_body(temperature=2.0), 400, "Temperature should be in [0.0, 2.0)"),
        (chat_body(temperature=-0.1), 400, "Temperature should be in [0.0, 2.0)"),
        (chat_body(top_p=0), 400, "Range of top_p should be (0.0, 1.0]"),
        (chat_body(presence_penalty=3), 400, "Range of presence_penalty should be [-2.0, 2.0]"),
        (chat_body(max_tokens=0), 400, "Range of max_tokens should be [1, 8192]"),
        (chat_body(n=5), 400, "Range of n should be [1, 4]"),
        (chat_body(seed=-1), 400, "-1 is lesser than the minimum of 0 - 'seed'"),
        (
            chat_body(enable_thinking=True),
            400,
            "parameter.enable_thinking must be set to false for non-streaming calls",
        ),
        (
            chat_body([{"type": "text", "text": "hi"}]),
            400,
            "input content must be a string.",
        ),
        (
            _image_body("ftp://example.com/a.png"),
            400,
            "The provided URL does not appear to be valid. Ensure it is correctly formatted.",
        ),
        (
            _image_body("data:image/png,notbase64"),
            400,
            "The provided URL does not appear to be valid. Ensure it is correctly formatted.",
        ),
        (
            _image_body("data:image/png;base64," + base64.b64encode(_png(5, 40)).decode()),
            400,
            "<400> InternalError.Algo.InvalidParameter: The image length and width do not meet the "
            "model restrictions. [height:40 or width:5 must be larger than 10]",
        ),
        (
            _image_body(_PNG_URL, model="qwen-plus"),
            400,
            "input content must be a string.",
        ),
        (
            chat_body("hello", response_format={"type": "json_object"}),
            400,
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        ),
    ],
)
async def test_validation_errors(
    sim: Simulator, http: httpx.AsyncClient, body: dict, status: int, message: str
) -> None:
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=body, headers=AUTH)
    assert response.status_code == status
    error = response.json()
    assert error["error"]["message"] == message
    assert error["request_id"] == sim.log.chat_requests[0].request_id
    expected = "model_not_found" if status == 404 else "invalid_parameter_error"
    assert error["error"]["code"] == ("invalid_value" if "'seed'" in message else expected)
    assert sim.log.chat_requests[0].status == status
    assert sim.log.chat_requests[0].connection.close_reason == "rejected"


async def test_seed_error_is_invalid_value(sim: Simulator, http: httpx.AsyncClient) -> None:
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(seed=-1), headers=AUTH)
    assert response.json()["error"] | {"message": None} == {
        "message": None,
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_value",
    }


async def test_invalid_json_body(sim: Simulator, http: httpx.AsyncClient) -> None:
    response = await http.post(
        sim.env["QWEN_API_CHAT_URL"],
        content=b"{not json",
        headers=AUTH | {"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_records_the_request(sim: Simulator, http: httpx.AsyncClient) -> None:
    body = chat_body("记录我", stream=True, temperature=0.5, enable_search=False)
    await http.post(
        sim.env["QWEN_API_CHAT_URL"], json=body, headers=AUTH | {"X-DashScope-WorkSpace": "ws-1"}
    )
    (record,) = sim.log.chat_requests
    assert record.body == body
    assert json.loads(record.raw) == body
    assert record.headers["authorization"] == AUTH["Authorization"]
    assert record.headers["x-dashscope-workspace"] == "ws-1"
    assert record.messages == body["messages"]
    assert record.stream and record.completed and record.status == 200
    assert record.closed and record.connection.close_reason == "complete"


async def test_tokens_arrive_while_generation_goes_on(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    """With a token rate the stream is incremental: the client holds a chunk before the last is sent."""
    sim.configure(tokens_per_second=50.0)
    sim.set_reply(" ".join(["word"] * 40))
    async with http.stream(
        "POST", sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
    ) as response:
        lines = response.aiter_lines()
        async with asyncio.timeout(5):
            async for line in lines:
                if '"content":"word"' in line:
                    break
        record = sim.log.chat_requests[0]
        assert not record.completed
        assert record.events_sent < 43
    await sim.wait_closed("chat", timeout=5)
    assert record.connection.close_reason == "client"


async def test_ttft_holds_the_first_chunk(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.configure(ttft=60.0)
    async with http.stream(
        "POST", sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
    ) as response:
        assert response.status_code == 200
        record = sim.log.chat_requests[0]
        assert record.events_sent == 0
    await sim.wait_closed("chat", timeout=5)
    assert record.connection.close_reason == "client" and not record.completed
