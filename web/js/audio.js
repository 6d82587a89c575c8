// The audio page: hold-to-talk (or an audio file) over WS /v1/chat/audio.

import { voicePage } from "./voice.js";

/** Decoded bytes per audio packet (the seed's limit). */
const PACKET_BYTES = 8 * 1024;

void voicePage({
  kind: "audio",
  path: "/v1/chat/audio",
  packetBytes: PACKET_BYTES,
  parts: (audio) => [{ bytes: audio }],
});
