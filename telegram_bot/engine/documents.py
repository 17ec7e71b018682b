"""Files a user sends, read as text for the model (pure, no I/O).

A text-like file (plain text, Markdown, CSV, JSON, source code...) is decoded as UTF-8 (or
UTF-16 with a byte-order mark); a PDF's text is extracted with `pypdf`. Either reaches the model
framed with its file name, followed by the caption as the question, and is stored that way, so a
follow-up question, the summary and recall all read the same text. What is a text file is
decided from its name and type before it is downloaded, so a video sent as a file is refused
without fetching it.
"""

from __future__ import annotations

import io
import logging
from pathlib import PurePosixPath
from typing import Literal

from ..errors import DocumentTooLong, DocumentUnreadable
from ..models import Attachment

log = logging.getLogger(__name__)

FileKind = Literal["text", "pdf"]

_SUFFIX_WORDS = """
txt text md markdown rst org adoc csv tsv json jsonl ndjson yaml yml toml ini cfg conf env
xml html htm css scss svg log sql tex bib srt vtt diff patch properties gradle
py pyi ipynb js mjs cjs jsx ts tsx java kt kts scala groovy c h cc cpp cxx hpp hh cs go rs
rb php pl pm lua r jl swift m mm dart ex exs erl hs ml fs clj lisp el vim sh bash zsh fish
ps1 bat cmd makefile dockerfile cmake proto graphql vue svelte
"""
TEXT_SUFFIXES = frozenset(_SUFFIX_WORDS.split())
TEXT_MIMES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-python",
        "application/x-python-code",
        "application/sql",
        "application/csv",
        "application/x-tex",
        "application/x-subrip",
    }
)
# UTF-8 takes at most 4 bytes a character: a larger text file cannot be within the limit.
BYTES_PER_CHAR = 4


def file_kind(attachment: Attachment) -> FileKind | None:
    """ "text", "pdf", or None for a file the bot does not read, from its name and type."""
    mime = (attachment.mime or "").lower().split(";")[0].strip()
    name = PurePosixPath(attachment.name or "").name.lower()
    suffix = name.rsplit(".", 1)[-1] if "." in name else name
    if mime == "application/pdf" or suffix == "pdf":
        return "pdf"
    if mime.startswith("text/") or mime in TEXT_MIMES or suffix in TEXT_SUFFIXES:
        return "text"
    return None


def decode_text(data: bytes) -> str:
    """A text file's characters; raises DocumentUnreadable for binary content."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.decode("utf-8-sig", errors="replace")
    if "\x00" in text or text.count("\ufffd") > max(8, len(text) // 100):
        raise DocumentUnreadable()
    return text.replace("\r\n", "\n")


def pdf_text(data: bytes, limit: int) -> str:
    """The text of a PDF's pages, in order; stops reading past `limit` characters (the caller
    refuses it then). Raises DocumentUnreadable for a broken or encrypted file."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentUnreadable()
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = (page.extract_text() or "").strip()
            pages.append(text)
            total += len(text)
            if total > limit:
                break
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        log.info("A PDF could not be read: %s", type(exc).__name__)
        raise DocumentUnreadable() from exc
    return "\n\n".join(page for page in pages if page)


def read(kind: FileKind, data: bytes, limit: int) -> str:
    """The file's text within `limit` characters; raises DocumentTooLong or
    DocumentUnreadable."""
    text = (pdf_text(data, limit) if kind == "pdf" else decode_text(data)).strip()
    if not text:
        raise DocumentUnreadable()
    if len(text) > limit:
        raise DocumentTooLong(limit)
    return text


def frame(name: str, text: str, question: str) -> str:
    """The file as the model reads it: clearly marked, then the user's question."""
    question = question or "(No question came with the file: summarise it, or respond to it.)"
    return f"[Attached file: {name}]\n{text}\n[End of file: {name}]\n\n{question}"
