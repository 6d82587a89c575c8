"""``protocol.realtime_session``: session.update merging and the conversation's rules, without sockets."""

from __future__ import annotations

from protocol import realtime as rt
from protocol.realtime_session import (
    SEMANTIC_SILENCE_MS,
    Conversation,
    SessionState,
    heard_text,
    user_text_item,
)


def state() -> SessionState:
    return SessionState(id="sess_1", model="qwen-plus")


def test_update_merges_field_by_field() -> None:
    s = state().apply(rt.SessionConfig(instructions="be brief"))
    assert isinstance(s, SessionState)
    s2 = s.apply(
        rt.SessionConfig(
            audio=rt.AudioConfig(
                input=rt.AudioInputConfig(turn_detection=rt.ServerVad(threshold=0.8)),
                output=rt.AudioOutputConfig(format=rt.AudioFormat("audio/pcmu"), voice="Ethan"),
            )
        )
    )
    assert isinstance(s2, SessionState)
    assert s2.instructions == "be brief"
    assert s2.turn_detection is not None and s2.turn_detection.threshold == 0.8
    assert s2.turn_detection.silence_duration_ms == 500
    assert s2.output_format == rt.AudioFormat("audio/pcmu", 8000)
    assert s2.input_format == rt.AudioFormat("audio/pcm", 24000)
    assert s2.voice == "Ethan"
    manual = s2.apply(
        rt.SessionConfig(audio=rt.AudioConfig(input=rt.AudioInputConfig(turn_detection=None)))
    )
    assert isinstance(manual, SessionState) and manual.turn_detection is None
    # the view is what session.updated shows
    view = manual.view()
    assert (
        isinstance(view.audio.input, rt.AudioInputConfig)
        and view.audio.input.turn_detection is None
    )


def test_update_refusals() -> None:
    bad_rate = state().apply(
        rt.SessionConfig(
            audio=rt.AudioConfig(
                input=rt.AudioInputConfig(format=rt.AudioFormat("audio/pcma", 24000))
            )
        )
    )
    assert (
        isinstance(bad_rate, rt.RealtimeError)
        and bad_rate.param == "session.audio.input.format.rate"
    )
    dup = state().apply(
        rt.SessionConfig(tools=[rt.FunctionTool(name="a"), rt.FunctionTool(name="a")])
    )
    assert isinstance(dup, rt.RealtimeError) and dup.param == "session.tools"
    choice = state().apply(rt.SessionConfig(tool_choice=rt.ToolChoiceFunction(name="nope")))
    assert isinstance(choice, rt.RealtimeError) and choice.param == "session.tool_choice"
    spoken = SessionState(id="s", model="m", spoken=True).apply(
        rt.SessionConfig(audio=rt.AudioConfig(output=rt.AudioOutputConfig(voice="Other")))
    )
    assert isinstance(spoken, rt.RealtimeError) and spoken.code == "cannot_update_voice"


def test_items_get_ids_and_positions() -> None:
    conv = Conversation("t")
    a = conv.add(user_text_item("one"))
    assert not isinstance(a, rt.RealtimeError)
    first, prev = a
    assert isinstance(first.id, str) and prev is None and first.status == "completed"
    b = conv.add(user_text_item("zero"), "root")
    assert not isinstance(b, rt.RealtimeError) and b[1] is None
    c = conv.add(user_text_item("one-and-a-half"), first.id)
    assert not isinstance(c, rt.RealtimeError) and c[1] == first.id
    assert [m["content"] for m in conv.chat_messages()] == ["zero", "one", "one-and-a-half"]
    missing = conv.add(user_text_item("x"), "item_nope")
    assert isinstance(missing, rt.RealtimeError) and missing.code == "item_not_found"
    again = conv.add(first)
    assert isinstance(again, rt.RealtimeError) and again.code == "item_already_exists"
    assert conv.delete(first.id) is None
    assert isinstance(conv.delete(first.id), rt.RealtimeError)
    assert conv.get(first.id) is None and len(conv) == 2


def test_tool_calls_become_chat_messages() -> None:
    conv = Conversation("t")
    conv.add(user_text_item("what time is it?"))
    conv.add(
        rt.MessageItem(
            role="assistant",
            content=[rt.ContentPart(type="output_audio", transcript="Let me look.")],
        )
    )
    conv.add(rt.FunctionCallItem(name="clock", arguments="{}", call_id="call_1"))
    conv.add(rt.FunctionCallOutputItem(call_id="call_1", output='{"time": "10:00"}'))
    messages = conv.chat_messages("be brief")
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what time is it?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "clock", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"time": "10:00"}'},
    ]


def test_truncate_keeps_the_text_heard() -> None:
    conv = Conversation("t")
    got = conv.add(
        rt.MessageItem(
            role="assistant", content=[rt.ContentPart(type="output_audio", transcript="abcdefghij")]
        )
    )
    assert not isinstance(got, rt.RealtimeError)
    item_id = got[0].id
    assert isinstance(item_id, str)
    conv.set_audio_ms(item_id, 1000)
    beyond = conv.truncate(item_id, 0, 1500)
    assert isinstance(beyond, rt.RealtimeError) and beyond.param == "audio_end_ms"
    cut = conv.truncate(item_id, 0, 300)
    assert isinstance(cut, rt.MessageItem)
    assert cut.content[0].transcript == "abc" and cut.status == "incomplete"
    assert conv.chat_messages()[0]["content"] == "abc"
    user = conv.add(user_text_item("hi"))
    assert not isinstance(user, rt.RealtimeError)
    refused = conv.truncate(str(user[0].id), 0, 0)
    assert isinstance(refused, rt.RealtimeError)


def test_heard_text_in_proportion() -> None:
    assert heard_text("abcd", 500, 1000) == "ab"
    assert heard_text("abcd", 0, 1000) == ""
    assert heard_text("abcd", 2000, 1000) == "abcd"
    assert heard_text("abcd", 10, 0) == "abcd"


def test_semantic_vad_runs_as_server_vad_paced_by_eagerness() -> None:
    s = state().apply(
        rt.SessionConfig(
            audio=rt.AudioConfig(
                input=rt.AudioInputConfig(
                    turn_detection=rt.SemanticVad(eagerness="high", interrupt_response=False)
                )
            )
        )
    )
    assert isinstance(s, SessionState) and s.turn_detection is not None
    assert s.turn_detection.silence_duration_ms == SEMANTIC_SILENCE_MS["high"]
    assert s.turn_detection.interrupt_response is False and s.turn_detection.create_response
    view = s.view().audio.input
    assert isinstance(view, rt.AudioInputConfig) and isinstance(view.turn_detection, rt.ServerVad)


def test_openai_voice_names_keep_the_configured_voice() -> None:
    def voice(name: str) -> str:
        got = state().apply(
            rt.SessionConfig(audio=rt.AudioConfig(output=rt.AudioOutputConfig(voice=name)))
        )
        assert isinstance(got, SessionState)
        return got.voice

    assert voice("alloy") == "" and voice("Marin") == ""
    assert voice("Cherry") == "Cherry"
