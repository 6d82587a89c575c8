// The VLM page: an image (file or camera) and a spoken question over WS /v1/chat/vlm.

import { $, showError } from "./common.js";
import { prepareImage, snapshot } from "./media.js";
import { voicePage } from "./voice.js";

/** Decoded bytes per packet (the seed's VLM limit). */
const PACKET_BYTES = 50 * 1024;

/** @type {Uint8Array | null} */
let image = null;
/** @type {string | null} */
let previewUrl = null;
/** @type {MediaStream | null} */
let camera = null;

const preview = /** @type {HTMLImageElement} */ ($("#preview"));
const video = /** @type {HTMLVideoElement} */ ($("#camera"));
const placeholder = $("#image-placeholder");
const info = $("#image-info");
const snap = /** @type {HTMLButtonElement} */ ($("#snap"));
const cameraButton = /** @type {HTMLButtonElement} */ ($("#camera-button"));
const cameraLabel = $("#camera-label");
const imageFile = /** @type {HTMLInputElement} */ ($("#image-file"));
const error = $("#error");

/**
 * @param {Uint8Array} bytes
 * @param {string} label
 */
function useImage(bytes, label) {
  image = bytes;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(new Blob([/** @type {BlobPart} */ (bytes)]));
  preview.src = previewUrl;
  preview.hidden = false;
  placeholder.hidden = true;
  info.textContent = `${label} · ${(bytes.length / 1024).toFixed(0)} KiB`;
  info.dataset.bytes = String(bytes.length);
}

function stopCamera() {
  camera?.getTracks().forEach((t) => t.stop());
  camera = null;
  video.hidden = true;
  snap.hidden = true;
  cameraLabel.textContent = "Camera";
}

imageFile.addEventListener("change", async () => {
  const f = imageFile.files?.[0];
  if (!f) return;
  stopCamera();
  try {
    useImage(await prepareImage(f), f.name);
  } catch (exc) {
    showError(error, exc);
  }
  imageFile.value = "";
});

cameraButton.addEventListener("click", async () => {
  if (camera) {
    stopCamera();
    return;
  }
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (exc) {
    showError(error, new Error(`Camera: ${exc instanceof Error ? exc.message : String(exc)}`));
    return;
  }
  video.srcObject = camera;
  video.hidden = false;
  preview.hidden = true;
  placeholder.hidden = true;
  snap.hidden = false;
  cameraLabel.textContent = "Close camera";
  await video.play();
});

snap.addEventListener("click", async () => {
  try {
    const bytes = await snapshot(video);
    stopCamera();
    useImage(bytes, "camera");
  } catch (exc) {
    showError(error, exc);
  }
});

void voicePage({
  kind: "vlm",
  path: "/v1/chat/vlm",
  packetBytes: PACKET_BYTES,
  parts: (audio) => {
    if (!image) throw new Error("Pick or capture an image first, then ask about it.");
    return [
      { type: "image", bytes: image },
      { type: "audio", bytes: audio },
    ];
  },
});
