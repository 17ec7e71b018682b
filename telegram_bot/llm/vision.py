"""Images for the model: content parts, their token cost, and which models refuse them.

An image reaches the model as an `image_url` part whose URL is a `data:` URL holding its bytes,
never a link: a Telegram file URL contains the bot token, and the provider would log it. The
parts go on the newest user message only, the turn the image arrives in; every other turn
carries the stored placeholder text (`[photo: caption]`), so the prompt stays in its budget.

A model that rejects an image (its server's 400; llama.cpp's llama-server started without
`--mmproj` answers 500 "image input is not supported", llama-cpp-python's server without a
clip model a 500 from its chat template) is remembered per server and model in
`VisionMemory`, in process memory: no request with an image is sent to it again until a
restart (settings change only at one).

What an image costs in the prompt, `image_tokens`, follows the provider's published rule where
we know it (OpenAI's tiles) and an estimate otherwise (one token per 28×28 pixels, as
Qwen2.5-VL counts, the most expensive of the common local vision models; at least 576, what
LLaVA 1.5 spends on any image, small or not: measured on llama-server; Gemma 3 spends 256).
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Telegram's photo sizes run 90, 320, 800, 1280 and 2560 px on the long side: the largest one
# at most this long is sent (OpenAI scales anything larger down to 2048 anyway).
MAX_IMAGE_SIDE = 2048
IMAGE_MIMES = ("image/jpeg", "image/png", "image/webp", "image/gif")
# LLaVA 1.5 resizes every image to 336 px and spends 24 × 24 tokens on it, however small.
MIN_LOCAL_IMAGE_TOKENS = 576

# A model that gets no caption is told what to do with the image.
NO_CAPTION_HINT = "(No caption: look at the image and respond to it.)"

_REFUSAL_MARKERS = (
    "image_url is only supported",
    "image input is not supported",
    "does not support image",
    "not support image",
    "not a multimodal model",
    "multimodal",
    "mmproj",
    "vision",
    "image input",
    "image content",
    "images are not supported",
    # llama-cpp-python's server without a clip model: its text-only chat template meets a
    # list of parts (measured, docs/real-servers.md).
    'not "list"',
)
_BAD_IMAGE_MARKERS = ("invalid image", "unsupported image", "invalid_image", "image_parse_error")


@dataclass(frozen=True, slots=True)
class Picture:
    """An image's bytes for one model call; `width`/`height` when known (for its cost)."""

    data: bytes
    mime: str = "image/jpeg"
    width: int | None = None
    height: int | None = None

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(slots=True)
class VisionMemory:
    """(server, model) pairs that refused an image since start-up."""

    refused: set[tuple[str, str]] = field(default_factory=set)

    def refuses(self, base_url: str, model: str) -> bool:
        return (base_url, model) in self.refused

    def remember(self, base_url: str, model: str) -> None:
        self.refused.add((base_url, model))


def attach(
    messages: Sequence[Mapping[str, Any]], pictures: Sequence[Picture], hint: str = ""
) -> list[dict[str, Any]]:
    """The messages with `pictures` as image parts of the last one (the new user turn)."""
    wire = [dict(message) for message in messages]
    if not pictures or not wire:
        return wire
    last = wire[-1]
    text = str(last.get("content") or "")
    if hint:
        text = f"{text}\n{hint}" if text else hint
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend({"type": "image_url", "image_url": {"url": p.data_url()}} for p in pictures)
    last["content"] = parts
    return wire


def rejects_images(status: int, message: str) -> bool | None:
    """Whether a server's error to a request with images means the model takes no images:
    True (remember it), False (the image itself was bad), None (unrelated to images)."""
    lowered = message.lower()
    if any(marker in lowered for marker in _BAD_IMAGE_MARKERS):
        return False
    if status in (400, 415, 422, 500, 501) and any(m in lowered for m in _REFUSAL_MARKERS):
        return True
    return True if status == 400 else None


# -- what an image costs -------------------------------------------------------------------------


# OpenAI's tile rule (platform.openai.com/docs/guides/images-vision, "Calculating costs"): the
# image is scaled to fit 2048×2048, then so that its short side is at most 768; it costs a base
# plus a price per 512-px tile. gpt-4o-mini reports the same images at a higher count.
def _tile_rule(model: str) -> tuple[int, int] | None:
    """(base, per tile) for the OpenAI models priced by tiles; None for the others."""
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith("gpt-4o-mini"):
        return (2833, 5667)
    if name.startswith(("gpt-4o", "chatgpt-4o", "gpt-4-turbo", "gpt-4.5")):
        return (85, 170)
    if name == "gpt-4.1" or name.startswith("gpt-4.1-20"):  # its mini and nano count patches
        return (85, 170)
    if name.startswith(("o1", "o3")) and "mini" not in name:
        return (75, 150)
    return None


def _tiles(width: int, height: int) -> int:
    scale = min(1.0, MAX_IMAGE_SIDE / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    return math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def image_tokens(model: str, width: int | None, height: int | None) -> int:
    """Prompt tokens one image costs: the provider's rule where known, else an estimate."""
    width, height = max(width or MAX_IMAGE_SIDE, 1), max(height or MAX_IMAGE_SIDE, 1)
    rule = _tile_rule(model)
    if rule is not None:
        base, per_tile = rule
        return base + per_tile * _tiles(width, height)
    scale = min(1.0, MAX_IMAGE_SIDE / max(width, height))
    patches = math.ceil(width * scale / 28) * math.ceil(height * scale / 28)
    return max(MIN_LOCAL_IMAGE_TOKENS, patches)


# -- what an image is ----------------------------------------------------------------------------


def sniff(data: bytes) -> tuple[str, int | None, int | None] | None:
    """(MIME type, width, height) of a JPEG, PNG, GIF or WebP from its first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "image/gif", width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", None, None
    if data.startswith(b"\xff\xd8"):
        return ("image/jpeg", *_jpeg_size(data))
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from a JPEG's frame header (SOFn), walking its segments."""
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None, None
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + length
    return None, None
