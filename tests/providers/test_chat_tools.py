"""Tool calls: the simulator streams a scripted call as DashScope does, ``DashScopeChat`` parses the fragments into
``ChatDelta.tool_calls``, and the official ``openai`` SDK (the referee) reads the same stream and body."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from qwen_gateway.simulator import Simulator

from .conftest import KEY

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ARGS = json.dumps({"city": "杭州", "precise": True}, ensure_ascii=False)
USER = {"messages": [{"role": "user", "content": "现在几点？"}], "tools": TOOLS}


def joined(deltas: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        for frag in d.tool_calls:
            call = calls.setdefault(frag.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += frag.id or ""
            call["name"] += frag.name or ""
            call["arguments"] += frag.arguments
    return calls


async def test_a_scripted_tool_call_streams_in_fragments(sim: Simulator, providers: Any) -> None:
    sim.set_tool_call("get_time", ARGS, text="我查一下。")
    deltas = [d async for d in providers.chat.stream(USER)]
    assert "".join(d.content for d in deltas) == "我查一下。"
    calls = joined(deltas)
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_time" and json.loads(calls[0]["arguments"]) == json.loads(ARGS)
    assert calls[0]["id"].startswith("call_")
    assert sum(1 for d in deltas if d.tool_calls) > 2  # really in fragments
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]


async def test_no_call_without_tools_or_with_tool_choice_none(
    sim: Simulator, providers: Any
) -> None:
    sim.set_tool_call("get_time", ARGS)
    plain = [d async for d in providers.chat.stream({"messages": USER["messages"]})]
    assert not joined(plain)
    refused = [d async for d in providers.chat.stream({**USER, "tool_choice": "none"})]
    assert not joined(refused)
    # still scripted: the next request offering the tool gets it
    assert joined([d async for d in providers.chat.stream(USER)])[0]["name"] == "get_time"


async def test_a_call_for_another_function_is_not_made(sim: Simulator, providers: Any) -> None:
    sim.set_tool_call("other", "{}")
    deltas = [d async for d in providers.chat.stream(USER)]
    assert not joined(deltas) and [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


@pytest.mark.parametrize("stream", [True, False])
async def test_the_openai_sdk_reads_the_call(sim: Simulator, stream: bool) -> None:
    sim.set_tool_call("get_time", ARGS)
    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{sim.base_url}/compatible-mode/v1")
    async with client:
        if stream:
            name, args, finish = "", "", None
            chunks = await client.chat.completions.create(model="qwen-plus", stream=True, **USER)
            async for chunk in chunks:
                for choice in chunk.choices:
                    for frag in choice.delta.tool_calls or ():
                        name += frag.function.name or "" if frag.function else ""
                        args += frag.function.arguments or "" if frag.function else ""
                    finish = choice.finish_reason or finish
        else:
            done = await client.chat.completions.create(model="qwen-plus", **USER)
            (call,) = done.choices[0].message.tool_calls or []
            name, args, finish = (
                call.function.name,
                call.function.arguments,
                done.choices[0].finish_reason,
            )
    assert name == "get_time" and json.loads(args) == json.loads(ARGS) and finish == "tool_calls"
