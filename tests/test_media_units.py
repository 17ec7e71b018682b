"""The pure parts of media: image costs, image sniffing, which files are read, placeholders."""

from __future__ import annotations

import pytest

from telegram_bot.engine import documents
from telegram_bot.engine.media import placeholder, quoted
from telegram_bot.errors import DocumentTooLong, DocumentUnreadable
from telegram_bot.llm.vision import Picture, attach, image_tokens, rejects_images, sniff
from telegram_bot.models import Attachment, MessageKind
from tests.fakes import media_files as files


@pytest.mark.parametrize(
    ("model", "size", "cost"),
    [
        # OpenAI's documented examples: 1024×1024 is 4 tiles; 2048×4096 is scaled to 768×1536.
        ("gpt-4o", (1024, 1024), 85 + 170 * 4),
        ("gpt-4o", (2048, 4096), 85 + 170 * 6),
        ("gpt-4o-2024-08-06", (512, 512), 85 + 170),
        ("gpt-4o-mini", (1024, 1024), 2833 + 5667 * 4),
        ("o1", (512, 512), 75 + 150),
        # Anything else: one token per 28×28 pixels, at least 576 (LLaVA 1.5 spends 576 on any
        # image: measured on a real llama-server in tests/real/test_llama_vision.py).
        ("qwen2.5vl", (1280, 960), 46 * 35),
        ("gemma3", (64, 64), 576),
        ("llava", (320, 320), 576),
        ("llava", (640, 640), 576),
    ],
)
def test_image_costs_follow_the_providers_rule(
    model: str, size: tuple[int, int], cost: int
) -> None:
    assert image_tokens(model, *size) == cost


def test_images_are_recognised_from_their_bytes() -> None:
    assert sniff(files.jpeg(40, 24)) == ("image/jpeg", 40, 24)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (300).to_bytes(4, "big") * 2
    assert sniff(png) == ("image/png", 300, 300)
    assert sniff(b"PK\x03\x04 a zip") is None


def test_image_parts_carry_data_urls_and_the_hint() -> None:
    messages = [{"role": "system", "content": "p"}, {"role": "user", "content": "[photo]"}]
    wire = attach(messages, [Picture(b"\xff\xd8abc")], hint="(respond)")
    assert wire[0] == messages[0] and messages[1]["content"] == "[photo]"
    text, image = wire[1]["content"]
    assert text == {"type": "text", "text": "[photo]\n(respond)"}
    assert image["image_url"]["url"] == "data:image/jpeg;base64,/9hhYmM="


def test_a_refusal_is_told_from_a_bad_image() -> None:
    assert rejects_images(400, "image_url is only supported by certain models.")
    assert rejects_images(500, "image input is not supported - hint: provide the mmproj")
    assert rejects_images(400, "You uploaded an unsupported image.") is False
    assert rejects_images(503, "overloaded") is None


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("notes.md", None, "text"),
        ("data.csv", "text/csv", "text"),
        ("main.py", "text/x-python", "text"),
        ("config", "application/json", "text"),
        ("Makefile", None, "text"),
        ("report.PDF", None, "pdf"),
        ("x", "application/pdf", "pdf"),
        ("movie.mp4", "video/mp4", None),
        ("archive.zip", "application/zip", None),
    ],
)
def test_which_files_are_read(name: str, mime: str | None, kind: str | None) -> None:
    assert documents.file_kind(Attachment(MessageKind.DOCUMENT, "f", name=name, mime=mime)) == kind


def test_file_text_is_decoded_or_refused() -> None:
    assert documents.read("text", "héllo\r\nwörld".encode(), 100) == "héllo\nwörld"
    assert documents.read("text", "bom ok".encode("utf-16"), 100) == "bom ok"
    with pytest.raises(DocumentUnreadable):
        documents.read("text", b"\x00\x01\x02binary", 100)
    with pytest.raises(DocumentTooLong):
        documents.read("text", b"x" * 101, 100)
    with pytest.raises(DocumentUnreadable):
        documents.read("pdf", b"%PDF-1.4 broken", 100)
    assert "Invoice 7" in documents.read("pdf", files.pdf(["Invoice 7"]), 100)


def test_placeholders_and_quotes() -> None:
    photo = Attachment(MessageKind.PHOTO, "f")
    assert placeholder(MessageKind.PHOTO, (photo,), "look") == "[photo: look]"
    assert placeholder(MessageKind.PHOTO, (photo,) * 3, "") == "[3 photos]"
    document = Attachment(MessageKind.DOCUMENT, "f", name="a.txt")
    assert placeholder(MessageKind.DOCUMENT, (document,), "why?") == "[file a.txt: why?]"
    assert quoted("  hello\n world ") == "🎤 “hello world”"
    assert quoted("word " * 200).endswith("…”")
