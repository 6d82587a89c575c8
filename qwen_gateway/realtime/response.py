"""One response of the cascade: the conversation -> the shared answer stage -> OpenAI Realtime events.

:class:`ResponseRun` sends ``response.created``, runs :class:`~qwen_gateway.voice.answer.AnswerSpeaker` (the chat
model with the session's instructions, conversation, tools and ``max_output_tokens``; the segmenter; TTS; the
client's wire format through :class:`~qwen_gateway.voice.convert.WireEncoder`) and turns what it does into events
(:class:`RealtimeAnswerEvents`)::

    response.created
    [assistant message]  response.output_item.added, conversation.item.added, response.content_part.added,
                         response.output_audio_transcript.delta* / response.output_audio.delta*
                         (or response.output_text.delta* for a text-only response)
    [each tool call]     response.output_item.added, conversation.item.added,
                         response.function_call_arguments.delta*
    (close)              the .done of every part and item, conversation.item.done, response.done with usage

The text said before a tool call is spoken; the call ends the answer (nothing after it is said), and the client's
``function_call_output`` with ``response.create`` continues in a new response.

A response cancelled (barge-in, ``response.cancel``) stops at once: cancelling the task cancels the answer stage,
which closes the chat and TTS upstreams. :meth:`ResponseRun.close` then ends it with ``status: cancelled``; its
assistant item keeps the text in proportion to the audio sent (``heard_text``: the answer's text as far as TTS was
given it, counted in the characters TTS got (the cleaner's output, so an estimate for text with markup), times the
audio sent over the audio that text takes, estimated from the audio produced so far or the speaking pace,
whichever is longer).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from protocol import realtime as rt
from protocol.realtime_session import Conversation, SessionState, heard_text, item_text

from ..errors import UpstreamError
from ..providers.base import ChatModel, Synthesizer, ToolCallDelta
from ..voice.answer import AnswerResult, AnswerSpeaker, AnswerTuning, error_code_for
from ..voice.convert import WireEncoder, WireFormat, wire_ms
from .audio import wire_of

__all__ = [
    "RealtimeAnswerEvents",
    "ResponseDeps",
    "ResponseRun",
    "chat_body",
    "model_not_found",
    "paced_ms",
]

log = logging.getLogger("qwen_gateway.realtime.response")

#: Sends one server event (or several, in order) to the client.
Send = Callable[[Any], Awaitable[None]]

#: Milliseconds a character takes to say, by script: the pace used to estimate how much of a text was heard.
#: (CJK ideographs and kana about 4 a second; Latin letters, digits and the rest about 14 a second.)
_PACE_MS: tuple[tuple[int, int, int], ...] = (
    (0x3040, 0x30FF, 250),  # kana
    (0x3400, 0x9FFF, 250),  # CJK ideographs
    (0xAC00, 0xD7AF, 220),  # Hangul
    (0xF900, 0xFAFF, 250),  # CJK compatibility ideographs
)
_DEFAULT_PACE_MS = 70


def paced_ms(text: str) -> int:
    """How long ``text`` takes to say at an ordinary pace (see :data:`_PACE_MS`)."""
    total = 0
    for ch in text:
        code = ord(ch)
        total += next((ms for lo, hi, ms in _PACE_MS if lo <= code <= hi), _DEFAULT_PACE_MS)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseDeps:
    """What a response uses: the engines, the answer stage's tuning, the upstream key."""

    chat: ChatModel
    synthesizer: Synthesizer
    tuning: AnswerTuning
    clock: Callable[[], float]
    api_key: str | None = None


def _tool(tool: rt.FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if isinstance(tool.description, str):
        function["description"] = tool.description
    if isinstance(tool.parameters, dict):
        function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, rt.ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def chat_body(
    session: SessionState, conversation: Conversation, params: rt.ResponseParams
) -> dict[str, Any]:
    """The chat request of a response: the session's model, instructions and tools (the response's own where
    ``response.create`` gives them), the conversation as messages, a token cap."""
    instructions = (
        params.instructions if isinstance(params.instructions, str) else session.instructions
    )
    tools = params.tools if isinstance(params.tools, list) else list(session.tools)
    choice = params.tool_choice if params.tool_choice is not msgspec.UNSET else session.tool_choice
    cap = (
        params.max_output_tokens
        if params.max_output_tokens is not msgspec.UNSET
        else session.max_output_tokens
    )
    body: dict[str, Any] = {
        "model": session.model,
        "messages": conversation.chat_messages(instructions),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = [_tool(t) for t in tools]
        body["tool_choice"] = _tool_choice(choice)
    if isinstance(cap, int):
        body["max_tokens"] = cap
    return body


@dataclass(slots=True)
class _Call:
    item_id: str
    output_index: int
    call_id: str
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Message:
    item_id: str
    output_index: int
    text: str = ""
    audio_bytes: int = 0


class RealtimeAnswerEvents:
    """The answer stage's events on ``/v1/realtime`` (see the module docstring); the first text or audio of the
    answer opens its assistant item, the first fragment of each tool call its function-call item."""

    def __init__(self, run: ResponseRun) -> None:
        self._run = run

    def text(self, delta: str, so_far: str) -> list[Any]:
        run = self._run
        opened = run.open_message()
        assert run.message is not None
        run.message.text = so_far
        cls = rt.ResponseOutputAudioTranscriptDelta if run.audio_out else rt.ResponseOutputTextDelta
        return [*opened, cls(**run.part(), delta=delta)]

    def speech_started(self) -> list[Any]:
        return self._run.open_message()

    def audio(self, payload: bytes) -> list[Any]:
        run = self._run
        opened = run.open_message()
        assert run.message is not None
        run.message.audio_bytes += len(payload)
        run.audio_sent(run.message.audio_bytes)
        delta = base64.b64encode(payload).decode("ascii")
        return [*opened, rt.ResponseOutputAudioDelta(**run.part(), delta=delta)]

    def finished(self) -> None:
        return None

    def error(self, stage: str, exc: BaseException) -> rt.RealtimeErrorEvent:
        self._run.failure = exc
        return rt.error_event(_upstream_error(stage, exc))

    def tool_call(self, fragment: ToolCallDelta) -> list[Any]:
        run = self._run
        call, events = run.open_call(fragment)
        call.arguments += fragment.arguments
        if fragment.arguments:
            events.append(
                rt.ResponseFunctionCallArgumentsDelta(
                    response_id=run.id,
                    item_id=call.item_id,
                    output_index=call.output_index,
                    call_id=call.call_id,
                    delta=fragment.arguments,
                )
            )
        return events


def model_not_found(exc: BaseException | None) -> bool:
    """The upstream does not know the session's model (the session cannot answer at all)."""
    return isinstance(exc, UpstreamError) and exc.code == "model_not_found"


def _upstream_error(stage: str, exc: BaseException) -> rt.RealtimeError:
    if model_not_found(exc):
        assert isinstance(exc, UpstreamError)
        return rt.RealtimeError("model_not_found", f"{stage} failed: {exc.message}", param="model")
    detail = exc.message if isinstance(exc, UpstreamError) else type(exc).__name__
    if isinstance(exc, TimeoutError):
        detail = "no answer in time"
    return rt.RealtimeError(
        str(error_code_for(exc)), f"{stage} failed: {detail}", type="server_error"
    )


@dataclass(slots=True)
class ResponseRun:
    """One response (see the module docstring). ``send`` takes an event or a list of events."""

    id: str
    session: SessionState
    conversation: Conversation
    params: rt.ResponseParams
    deps: ResponseDeps
    send: Send
    turn_id: int
    #: called with the wire bytes of audio sent so far for the assistant item (the first call: first audio)
    on_audio: Callable[[int], None] | None = None
    message: _Message | None = None
    calls: list[_Call] = field(default_factory=list)
    calls_by_index: dict[int, _Call] = field(default_factory=dict)
    speaker: AnswerSpeaker | None = None  # while the answer runs (see release)
    #: the answer's figures (kept after release)
    result: AnswerResult | None = None
    failure: BaseException | None = None
    created: bool = False
    #: when the chat request went out (metrics)
    chat_started_at: float | None = None
    _outputs: int = 0

    @property
    def audio_out(self) -> bool:
        mods = self.params.output_modalities
        if isinstance(mods, list) and mods:
            return "audio" in mods
        return self.session.audio_out

    @property
    def wire(self) -> WireFormat:
        return wire_of(self.session.output_format)

    def release(self) -> None:
        """The response has ended: let go of its speaker (its audio, its encoder, and its events, which hold this
        run: keeping it made every response a reference cycle left to the garbage collector)."""
        if self.speaker is not None:
            self.speaker.release()
            self.speaker = None

    def part(self) -> dict[str, Any]:
        assert self.message is not None
        return {
            "response_id": self.id,
            "item_id": self.message.item_id,
            "output_index": self.message.output_index,
            "content_index": 0,
        }

    def audio_sent(self, nbytes: int) -> None:
        if self.message is not None:
            self.conversation.set_audio_ms(self.message.item_id, wire_ms(self.wire, nbytes))
        if self.on_audio is not None:
            self.on_audio(nbytes)

    # ------------------------------------------------------------------ items
    def _message_item(self, status: str, text: str) -> rt.MessageItem:
        assert self.message is not None
        part = (
            rt.ContentPart(type="output_audio", transcript=text)
            if self.audio_out
            else rt.ContentPart(type="output_text", text=text)
        )
        return rt.MessageItem(
            role="assistant",
            content=[part],
            id=self.message.item_id,
            object="realtime.item",
            status=status,  # type: ignore[arg-type]
        )

    def _call_item(self, call: _Call, status: str) -> rt.FunctionCallItem:
        return rt.FunctionCallItem(
            name=call.name,
            arguments=call.arguments,
            call_id=call.call_id,
            id=call.item_id,
            object="realtime.item",
            status=status,  # type: ignore[arg-type]
        )

    def _add(self, item: rt.Item) -> tuple[rt.Item, str | None]:
        got = self.conversation.add(item)
        assert not isinstance(got, rt.RealtimeError)  # a fresh id, at the end
        return got

    def open_message(self) -> list[Any]:
        """The events that open the assistant item (none once it is open)."""
        if self.message is not None:
            return []
        self.message = _Message(self.conversation.new_id(), self._outputs)
        self._outputs += 1
        item, previous = self._add(self._message_item("in_progress", ""))
        part = (
            rt.ContentPartOut(type="audio", transcript="")
            if self.audio_out
            else rt.ContentPartOut(type="text", text="")
        )
        return [
            rt.ResponseOutputItemAdded(
                response_id=self.id, output_index=self.message.output_index, item=item
            ),
            rt.ConversationItemAdded(item=item, previous_item_id=previous),
            rt.ResponseContentPartAdded(**self.part(), part=part),
        ]

    def open_call(self, fragment: ToolCallDelta) -> tuple[_Call, list[Any]]:
        """The call a fragment belongs to (by its ``index``), and the events that open it (its first fragment,
        which carries the call's id and name)."""
        call = self.calls_by_index.get(fragment.index)
        if call is not None:
            if not call.name and fragment.name:
                call.name = fragment.name
            return call, []
        call = _Call(
            self.conversation.new_id(),
            self._outputs,
            fragment.id or self.conversation.new_id("call"),
            fragment.name or "",
        )
        self._outputs += 1
        self.calls.append(call)
        self.calls_by_index[fragment.index] = call
        item, previous = self._add(self._call_item(call, "in_progress"))
        return call, [
            rt.ResponseOutputItemAdded(
                response_id=self.id, output_index=call.output_index, item=item
            ),
            rt.ConversationItemAdded(item=item, previous_item_id=previous),
        ]

    # ------------------------------------------------------------------ running
    def view(
        self,
        status: rt.ResponseStatus,
        status_details: rt.ResponseStatusDetails | None = None,
        usage: rt.Usage | None = None,
    ) -> rt.Response:
        output: list[rt.Item] = []
        for item_id in self._item_ids():
            got = self.conversation.get(item_id)
            if got is not None:
                output.append(got)
        audio = (
            rt.ResponseAudioOutput(
                output=rt.AudioOutputConfig(
                    format=self.session.output_format,
                    voice=self.session.voice or msgspec.UNSET,
                )
            )
            if self.audio_out
            else None
        )
        cap = self.session.max_output_tokens
        if self.params.max_output_tokens is not msgspec.UNSET:
            cap = self.params.max_output_tokens or "inf"
        return rt.Response(
            id=self.id,
            status=status,
            output=output,
            output_modalities=["audio"] if self.audio_out else ["text"],
            conversation_id="conv_" + self.session.id,
            max_output_tokens=cap,
            audio=audio,
            metadata=self.params.metadata if isinstance(self.params.metadata, dict) else None,
            status_details=status_details,
            usage=usage,
        )

    def _item_ids(self) -> list[str]:
        entries: list[tuple[int, str]] = []
        if self.message is not None:
            entries.append((self.message.output_index, self.message.item_id))
        entries.extend((c.output_index, c.item_id) for c in self.calls)
        return [item_id for _, item_id in sorted(entries)]

    async def answer(self) -> AnswerResult:
        """Send ``response.created`` and run the answer stage (cancel the task to stop it at once)."""
        await self.send(rt.ResponseCreated(response=self.view("in_progress")))
        self.created = True
        tuning = self.deps.tuning
        if self.session.voice:
            tuning = dataclasses.replace(tuning, voice=self.session.voice)
        wire = self.wire
        self.speaker = AnswerSpeaker(
            chat=self.deps.chat,
            synthesizer=self.deps.synthesizer,
            emit=self.send,
            events=RealtimeAnswerEvents(self),
            turn_id=self.turn_id,
            tuning=tuning,
            api_key=self.deps.api_key,
            clock=self.deps.clock,
            new_encoder=lambda rate: WireEncoder(wire, rate),
            speak=self.audio_out,
        )
        body = chat_body(self.session, self.conversation, self.params)
        self.chat_started_at = self.deps.clock()
        self.result = self.speaker.result
        return await self.speaker.run(body)

    def heard(self) -> str:
        """The assistant's text the client heard, in proportion to the audio sent (see the module docstring)."""
        result = self.result
        if self.message is None or result is None:
            return ""
        if not self.audio_out:
            return self.message.text
        spoken = result.text[: result.tts_chars] if result.tts_chars else ""
        sent_ms = wire_ms(self.wire, self.message.audio_bytes)
        produced_ms = result.pcm_samples * 1000 // result.sample_rate if result.sample_rate else 0
        total = max(produced_ms, paced_ms(spoken))
        return heard_text(spoken, sent_ms, total)

    async def close(
        self,
        reason: Literal["turn_detected", "client_cancelled"] | None = None,
    ) -> rt.Response:
        """End the response: close its parts and items and send ``response.done``; returns the response.

        ``reason``: the response was cancelled (barge-in, ``response.cancel``): its item keeps what was heard.
        """
        result = self.result
        cancelled = reason is not None
        events: list[Any] = []
        if self.message is not None:
            text = self.heard() if cancelled else self.message.text
            status = "incomplete" if cancelled else "completed"
            item = self._message_item(status, text)
            self.conversation.update(item)
            part = self.part()
            if self.audio_out:
                events += [
                    rt.ResponseOutputAudioDone(**part),
                    rt.ResponseOutputAudioTranscriptDone(**part, transcript=text),
                    rt.ResponseContentPartDone(
                        **part, part=rt.ContentPartOut(type="audio", transcript=text)
                    ),
                ]
            else:
                events += [
                    rt.ResponseOutputTextDone(**part, text=text),
                    rt.ResponseContentPartDone(
                        **part, part=rt.ContentPartOut(type="text", text=text)
                    ),
                ]
            events += self._item_done(item, self.message.output_index)
        for call in self.calls:
            status = "incomplete" if cancelled else "completed"
            if result is not None:
                index = next(i for i, c in self.calls_by_index.items() if c is call)
                done = next((c for c in result.tool_calls if c.index == index), None)
                if done is not None:
                    call.name = call.name or done.name
                    call.arguments = done.arguments
            call_item = self._call_item(call, status)
            self.conversation.update(call_item)
            if not cancelled:
                events.append(
                    rt.ResponseFunctionCallArgumentsDone(
                        response_id=self.id,
                        item_id=call.item_id,
                        output_index=call.output_index,
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                    )
                )
            events += self._item_done(call_item, call.output_index)
        response = self.view(*self._status(reason), usage=self._usage())
        events.append(rt.ResponseDone(response=response))
        await self.send(events)
        return response

    def _item_done(self, item: rt.Item, output_index: int) -> list[Any]:
        assert isinstance(item.id, str)
        previous = (
            self.conversation.previous_id(item.id) if self.conversation.get(item.id) else None
        )
        return [
            rt.ResponseOutputItemDone(response_id=self.id, output_index=output_index, item=item),
            rt.ConversationItemDone(item=item, previous_item_id=previous),
        ]

    def _status(
        self, reason: Literal["turn_detected", "client_cancelled"] | None
    ) -> tuple[rt.ResponseStatus, rt.ResponseStatusDetails]:
        result = self.result
        if reason is not None:
            return "cancelled", rt.ResponseStatusDetails(type="cancelled", reason=reason)
        if result is None or not result.chat_ok:
            error = self.failure or (result.error if result is not None else None)
            detail = _upstream_error("chat", error) if error is not None else None
            return "failed", rt.ResponseStatusDetails(
                type="failed",
                error=rt.ErrorDetail(
                    type=detail.type if detail else "server_error",
                    code=detail.code if detail else "upstream_error",
                    message=detail.message if detail else "the answer failed",
                ),
            )
        if result.finish_reason == "length":
            return "incomplete", rt.ResponseStatusDetails(
                type="incomplete", reason="max_output_tokens"
            )
        return "completed", rt.ResponseStatusDetails(type="completed")

    def _usage(self) -> rt.Usage | None:
        result = self.result
        if result is None or result.usage is None:
            return None
        u = result.usage
        return rt.Usage(
            total_tokens=u.total_tokens,
            input_tokens=u.prompt_tokens,
            output_tokens=u.completion_tokens,
        )

    def assistant_text(self) -> str:
        """The assistant's words in the conversation now (after :meth:`close`: what was heard)."""
        if self.message is None:
            return ""
        item = self.conversation.get(self.message.item_id)
        return item_text(item) if item is not None else ""
