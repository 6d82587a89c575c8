"""``/v1/realtime``: OpenAI's Realtime protocol in front of Qwen.

Two backends, chosen by the ``model`` of the handshake (see :mod:`qwen_gateway.routes.realtime_ws`):

* the **cascade** (:mod:`.cascade`): the client's audio -> server VAD -> streaming recognition -> any chat model
  with the session's instructions, conversation and tools -> the shared answer stage (segmenter, TTS) -> audio in
  the negotiated format;
* **Qwen-Omni** (:mod:`.omni_session` on the connection, :mod:`.omni` the bridge): a pass-through session to
  DashScope's realtime endpoint, event names, session fields and audio translated both ways.

The wire types and the pure session rules are in :mod:`protocol.realtime` and :mod:`protocol.realtime_session`;
:mod:`.server` serves a connection (the backend seam: :func:`.server.backend_for`, :mod:`.passthrough`).
"""
