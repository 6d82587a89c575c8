"""What an uploaded VLM image is, from its first bytes (a client's file name or MIME type is not trusted)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ImageFormat", "UnknownImageFormat", "sniff_image"]


class UnknownImageFormat(ValueError):
    """The bytes are not an image format the vision models accept. Raised before any upstream call."""

    code = "unsupported_image_format"


@dataclass(frozen=True, slots=True)
class ImageFormat:
    """An image format: the stored file's extension and its MIME type (for ``data:`` URLs)."""

    ext: str
    mime: str


_JPEG = ImageFormat("jpg", "image/jpeg")
_PNG = ImageFormat("png", "image/png")
_GIF = ImageFormat("gif", "image/gif")
_WEBP = ImageFormat("webp", "image/webp")
_BMP = ImageFormat("bmp", "image/bmp")


def sniff_image(data: bytes) -> ImageFormat:
    """The format of an image from its first bytes: JPEG, PNG, GIF, WebP or BMP.

    Raises:
        UnknownImageFormat: anything else (or too short to tell).
    """
    if data[:3] == b"\xff\xd8\xff":
        return _JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _PNG
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _GIF
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _WEBP
    if data[:2] == b"BM" and len(data) >= 26:
        return _BMP
    raise UnknownImageFormat(
        "the image is not JPEG, PNG, GIF, WebP or BMP" if data else "the image is empty"
    )
