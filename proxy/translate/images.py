"""Image parts of vision requests: ``data:`` URLs checked and turned into Ollama's base64 ``images``.

Pure. ``http(s)`` URLs are refused here; when the operator enables image fetching, the shell fetches
them safely (``proxy.imagefetch``) and rewrites them into data URLs before translation.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from proxy.errors import InvalidRequestError

__all__ = ["IMAGE_TYPES", "data_url_to_base64", "sniff_image_type"]

IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The image type the leading bytes say, or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def data_url_to_base64(url: str, param: str) -> str:
    """Return the base64 payload of an image data URL, or raise a 400 naming ``param``."""
    if url.startswith(("http://", "https://")):
        raise InvalidRequestError(
            "Image URLs are not fetched by this gateway (image_fetch is disabled); send the image "
            "as a base64 data URL (data:image/png;base64,...).",
            param=param,
            code="unsupported_parameter",
        )
    if not url.startswith("data:"):
        raise InvalidRequestError("Invalid image URL: expected a data: URL or an http(s) URL.", param=param)
    header, sep, payload = url.partition(",")
    mime, _, encoding = header[5:].partition(";")
    mime = mime.strip().lower()
    if not sep or encoding.strip().lower() != "base64":
        raise InvalidRequestError("Invalid image data URL: expected data:<type>;base64,<data>.", param=param)
    if mime not in IMAGE_TYPES:
        raise InvalidRequestError(
            f"Unsupported image type {mime or '(none)'!r}: use jpeg, png, webp or gif.",
            param=param,
            code="invalid_image_format",
        )
    payload = payload.strip()
    try:
        raw = b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("Invalid base64 data in the image data URL.", param=param,
                                  code="invalid_image_format") from None
    sniffed = sniff_image_type(raw[:16])
    if sniffed is None or (sniffed != mime and not (mime == "image/jpg" and sniffed == "image/jpeg")):
        raise InvalidRequestError(
            f"The image data is not a valid {mime} image.", param=param, code="invalid_image_format"
        )
    return payload
