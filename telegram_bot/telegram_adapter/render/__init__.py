"""Render LLM Markdown into Telegram messages: plain text plus MessageEntity dicts.

Why entities and not HTML/MarkdownV2: with ``entities`` Telegram parses nothing, so an
unbalanced ``*``, a stray ``<`` or a half-streamed link can never cause "can't parse
entities"; the worst case is a span shown without formatting. See ``docs/rendering.md``.

Two stages, each in its own module, with the types they share in ``spans``:

- ``markdown``: Markdown -> plain text + entity spans, in one walk over pyromark's events
  (``links`` says which URLs Telegram accepts, ``tables`` lays tables out as monospace);
- ``split``: text + spans -> parts of at most ``limit`` UTF-16 units, cut at the best
  boundary, with each span clipped into the parts it crosses.

This module is the public API. It cleans the input up for both stages (newlines,
lone surrogates) and makes sure a renderer bug degrades to plain text, never to an error.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from .markdown import render_markdown
from .spans import Entity, Part, utf16_len
from .split import split
from .thought import with_thought

__all__ = [
    "MAX_MESSAGE_UTF16",
    "Entity",
    "Part",
    "render",
    "render_plain",
    "utf16_len",
    "with_thought",
]

MAX_MESSAGE_UTF16: Final = 4096

_log = logging.getLogger(__name__)


def render(markdown: str, limit: int = MAX_MESSAGE_UTF16) -> list[Part]:
    """Render (possibly partial) Markdown into parts of at most ``limit`` UTF-16 units each.

    Returns ``[]`` when there is nothing visible to send (empty or whitespace-only
    input, an empty code fence). Never raises on any ``str`` input.

    Deterministic, and greedy from the start: part *k* depends only on the rendered text
    up to its own window, so as streamed Markdown grows, a part that is already followed
    by another part stays the same, unless new input changes how earlier Markdown reads
    (a closing ``**`` or a setext underline arriving later, which shifts the visible text).
    """
    _check_limit(limit)
    markdown = _sanitize(markdown)
    try:
        text, spans, headings = render_markdown(markdown)
    except Exception:  # a renderer bug must not cost the user the reply
        _log.exception("Markdown rendering failed; sending the reply as plain text")
        text, spans, headings = markdown, [], set()
    return split(text, spans, limit, headings)


def render_plain(text: str, limit: int = MAX_MESSAGE_UTF16) -> list[str]:
    """Split plain text (no Markdown parsing) the same way ``render`` splits."""
    _check_limit(limit)
    return [part.text for part in split(_sanitize(text), [], limit, set())]


def _check_limit(limit: int) -> None:
    if limit < 2:  # an astral character needs 2 units; below that no progress is possible
        raise ValueError(f"limit must be at least 2 UTF-16 units, got {limit}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _sanitize(s: str) -> str:
    """Normalise newlines and repair surrogates (the parser and Telegram reject lone ones)."""
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    if _SURROGATE.search(s):
        s = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return s
