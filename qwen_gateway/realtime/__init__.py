"""The backends of ``/v1/realtime``: what turns a client's OpenAI Realtime events into answers."""
