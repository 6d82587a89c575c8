"""The OpenAI-compatible HTTP API: chat request, response, stream chunk, usage, error body, models, health.

Requests tolerate unknown fields (callers' extras are passed through to the upstream unchanged; see
:func:`protocol.wire.decode_chat_request`). Responses and chunks are relayed from OpenAI-compatible upstreams, so
they accept fields added upstream too, but ``object`` is always the exact literal and required fields are
required. Optional request fields default to ``UNSET`` (absent) and accept ``null`` as OpenAI's API does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ContentPart",
    "Delta",
    "DeveloperMessage",
    "ErrorDetail",
    "ErrorResponse",
    "FinishReason",
    "FunctionCall",
    "FunctionCallDelta",
    "FunctionDefinition",
    "HealthCheck",
    "HealthProcess",
    "HealthResponse",
    "ImageUrl",
    "ImageUrlPart",
    "InputAudio",
    "InputAudioPart",
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "JsonSchemaSpec",
    "Model",
    "ModelList",
    "NamedFunction",
    "NamedToolChoice",
    "ResponseFormat",
    "ResponseMessage",
    "StreamOptions",
    "SystemMessage",
    "TextFormat",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "VideoPart",
    "VideoUrl",
    "VideoUrlPart",
]


class _Open(msgspec.Struct, frozen=True, kw_only=True):
    """Unknown fields are accepted (and ignored by the Struct)."""


# --------------------------------------------------------------------------- request: message content parts


class TextPart(_Open, tag_field="type", tag="text", frozen=True, kw_only=True):
    """A text part of a message's content."""

    text: str


class ImageUrl(_Open, frozen=True, kw_only=True):
    """An image by ``http(s)://`` URL or ``data:image/...;base64,...`` URL."""

    url: Annotated[str, Meta(pattern="^(https?://|data:)")]
    detail: Literal["auto", "low", "high"] | UnsetType | None = UNSET


class ImageUrlPart(_Open, tag_field="type", tag="image_url", frozen=True, kw_only=True):
    """An image part (vision models)."""

    image_url: ImageUrl


class InputAudio(_Open, frozen=True, kw_only=True):
    """Base64 audio in a user message (Qwen-Omni)."""

    data: str
    format: str


class InputAudioPart(_Open, tag_field="type", tag="input_audio", frozen=True, kw_only=True):
    """An audio part (Qwen-Omni)."""

    input_audio: InputAudio


class VideoUrl(_Open, frozen=True, kw_only=True):
    """A video by URL."""

    url: str


class VideoUrlPart(_Open, tag_field="type", tag="video_url", frozen=True, kw_only=True):
    """A video part (DashScope vision models)."""

    video_url: VideoUrl


class VideoPart(_Open, tag_field="type", tag="video", frozen=True, kw_only=True):
    """A video given as a list of frame image URLs (DashScope vision models)."""

    video: list[str]


ContentPart = TextPart | ImageUrlPart | InputAudioPart | VideoUrlPart | VideoPart


# --------------------------------------------------------------------------- request: messages


class FunctionCall(_Open, frozen=True, kw_only=True):
    """A function the model called, with its JSON-encoded arguments."""

    name: str
    arguments: str


class ToolCall(_Open, frozen=True, kw_only=True):
    """A tool call made by the assistant."""

    id: str
    type: Literal["function"]
    function: FunctionCall
    index: int | UnsetType = UNSET


class SystemMessage(_Open, tag_field="role", tag="system", frozen=True, kw_only=True):
    """Instructions for the model."""

    content: str | list[TextPart]
    name: str | UnsetType | None = UNSET


class DeveloperMessage(_Open, tag_field="role", tag="developer", frozen=True, kw_only=True):
    """Instructions for the model (OpenAI's newer name for system; sent upstream as ``system``)."""

    content: str | list[TextPart]
    name: str | UnsetType | None = UNSET


class UserMessage(_Open, tag_field="role", tag="user", frozen=True, kw_only=True):
    """What the user said: text, or content parts (text, images, audio, video).

    Text parts alone are sent to the model as their text joined by newlines. Image, video and audio parts
    need a model that takes them (a vision or Omni model; without ``model`` the gateway picks
    ``QWEN_VLM_MODEL`` for images): a text-only model refuses them with 400."""

    content: str | list[ContentPart]
    name: str | UnsetType | None = UNSET


class AssistantMessage(_Open, tag_field="role", tag="assistant", frozen=True, kw_only=True):
    """An earlier answer of the model (``partial``: DashScope prefix continuation)."""

    content: str | list[TextPart] | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    tool_calls: list[ToolCall] | UnsetType | None = UNSET
    reasoning_content: str | UnsetType | None = UNSET
    partial: bool | UnsetType | None = UNSET


class ToolMessage(_Open, tag_field="role", tag="tool", frozen=True, kw_only=True):
    """The result of a tool call."""

    content: str | list[TextPart]
    tool_call_id: str


ChatMessage = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage


# --------------------------------------------------------------------------- request: options


class StreamOptions(_Open, frozen=True, kw_only=True):
    """Streaming options; ``include_usage`` adds a final chunk with ``choices: []`` and the usage."""

    include_usage: bool | UnsetType | None = UNSET


class TextFormat(_Open, tag_field="type", tag="text", frozen=True, kw_only=True):
    """Plain text output (the default)."""


class JsonObjectFormat(_Open, tag_field="type", tag="json_object", frozen=True, kw_only=True):
    """JSON output (the messages must mention JSON)."""


class JsonSchemaSpec(_Open, frozen=True, kw_only=True):
    """A JSON Schema the output must follow."""

    name: str
    schema: dict[str, Any] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class JsonSchemaFormat(_Open, tag_field="type", tag="json_schema", frozen=True, kw_only=True):
    """Output following a JSON Schema."""

    json_schema: JsonSchemaSpec


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class FunctionDefinition(_Open, frozen=True, kw_only=True):
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(_Open, frozen=True, kw_only=True):
    """A tool the model may call."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Open, frozen=True, kw_only=True):
    """The function the model must call."""

    name: str


class NamedToolChoice(_Open, frozen=True, kw_only=True):
    """Force a call of one function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice

Temperature = Annotated[
    float, Meta(ge=0, lt=2, description="Sampling temperature, from 0 up to (not including) 2.")
]
TopP = Annotated[float, Meta(gt=0, le=1, description="Nucleus sampling mass, above 0 up to 1.")]
#: ``user`` names the conversation (echoed in the ``X-Conversation-Id`` header): no control characters.
ConversationId = Annotated[
    str,
    Meta(
        pattern="^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        description="The conversation to continue (a new one when longer than 128 characters); no control "
        "characters.",
    ),
]
Penalty = Annotated[float, Meta(ge=-2, le=2, description="-2 to 2.")]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]


class ChatCompletionRequest(_Open, frozen=True, kw_only=True):
    """``POST /v1/chat/completions``: OpenAI's request body plus DashScope's extras.

    ``model`` may be left out (the gateway's default model is used). Fields not listed here are kept and passed
    through to the upstream as they are.
    """

    model: str | UnsetType = UNSET
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: TopP | UnsetType | None = UNSET
    max_tokens: PositiveInt | UnsetType | None = UNSET
    max_completion_tokens: PositiveInt | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    seed: Annotated[int, Meta(ge=0, le=2**31 - 1)] | UnsetType | None = UNSET
    presence_penalty: Penalty | UnsetType | None = UNSET
    frequency_penalty: Penalty | UnsetType | None = UNSET
    n: Annotated[int, Meta(ge=1, le=4)] | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    tool_choice: ToolChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
    user: ConversationId | UnsetType | None = UNSET
    modalities: list[Literal["text", "audio"]] | UnsetType | None = UNSET
    audio: dict[str, Any] | UnsetType | None = UNSET
    # DashScope extras (top-level keys on the wire; ``extra_body`` in the OpenAI SDK)
    enable_search: bool | UnsetType | None = UNSET
    search_options: dict[str, Any] | UnsetType | None = UNSET
    enable_thinking: bool | UnsetType | None = UNSET
    thinking_budget: PositiveInt | UnsetType | None = UNSET
    top_k: NonNegativeInt | UnsetType | None = UNSET
    repetition_penalty: Annotated[float, Meta(gt=0)] | UnsetType | None = UNSET
    translation_options: dict[str, Any] | UnsetType | None = UNSET
    vl_high_resolution_images: bool | UnsetType | None = UNSET


# --------------------------------------------------------------------------- response


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Usage(_Open, frozen=True, kw_only=True):
    """Token counts of a completion."""

    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    total_tokens: NonNegativeInt
    prompt_tokens_details: dict[str, Any] | UnsetType | None = UNSET
    completion_tokens_details: dict[str, Any] | UnsetType | None = UNSET


class ResponseMessage(_Open, frozen=True, kw_only=True):
    """The answer (``reasoning_content``: the thinking of thinking models)."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | UnsetType | None = UNSET
    reasoning_content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET


class Choice(_Open, frozen=True, kw_only=True):
    """One answer of a non-streaming completion."""

    index: NonNegativeInt
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | UnsetType | None = UNSET


class ChatCompletion(_Open, frozen=True, kw_only=True):
    """The response of a non-streaming ``POST /v1/chat/completions``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class FunctionCallDelta(_Open, frozen=True, kw_only=True):
    """A fragment of a streamed function call."""

    name: str | UnsetType | None = UNSET
    arguments: str | UnsetType | None = UNSET


class ToolCallDelta(_Open, frozen=True, kw_only=True):
    """A fragment of a streamed tool call; fragments with the same ``index`` belong together."""

    index: NonNegativeInt
    id: str | UnsetType | None = UNSET
    type: Literal["function"] | UnsetType | None = UNSET
    function: FunctionCallDelta | UnsetType | None = UNSET


class Delta(_Open, frozen=True, kw_only=True):
    """What a stream chunk adds to the answer."""

    role: Literal["assistant"] | UnsetType | None = UNSET
    content: str | UnsetType | None = UNSET
    reasoning_content: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET


class ChunkChoice(_Open, frozen=True, kw_only=True):
    """One choice's part of a stream chunk."""

    index: NonNegativeInt
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | UnsetType | None = UNSET


class ChatCompletionChunk(_Open, frozen=True, kw_only=True):
    """One ``data:`` event of a streaming completion (``text/event-stream``; the stream ends with
    ``data: [DONE]``). The usage chunk has ``choices: []``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


# --------------------------------------------------------------------------- errors, models, health


class ErrorDetail(_Open, frozen=True, kw_only=True):
    """What went wrong: OpenAI's ``type`` and ``code`` (e.g. ``invalid_request_error`` /
    ``invalid_api_key``), and the offending request field in ``param``."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Open, frozen=True, kw_only=True):
    """The body of every HTTP error: OpenAI's error shape."""

    error: ErrorDetail
    request_id: str | UnsetType = UNSET


class Model(_Open, frozen=True, kw_only=True):
    """A model the gateway serves."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Open, frozen=True, kw_only=True):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[Model]


class HealthCheck(_Open, frozen=True, kw_only=True):
    """One dependency's state (``up``, ``down``, ...), with details such as ``engine`` or ``latency_ms``."""

    status: str


class HealthProcess(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The process that answered: its ``pid``, and its ``worker`` number under ``serve --workers N`` (else null)."""

    pid: int
    worker: int | None = None


class HealthResponse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``GET /health``: the seed's ``status`` and ``timestamp`` (ISO 8601, local time), plus additive details.

    ``healthy``: everything answers; ``degraded``: the node serves but a dependency is away (HTTP 200);
    ``unhealthy``: a required dependency is down (HTTP 503).
    """

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: str
    version: str | UnsetType = UNSET
    upstream: Literal["dashscope", "simulated"] | UnsetType = UNSET
    checks: dict[str, HealthCheck] | UnsetType = UNSET
    process: HealthProcess | UnsetType = UNSET
