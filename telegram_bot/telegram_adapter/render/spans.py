"""The values that flow between the rendering stages, and how Telegram measures text.

``markdown`` turns Markdown into plain text plus ``Span``s (code-point indices, cheap to
clip and sort); ``split`` cuts that text into ``Part``s whose ``Entity`` offsets are in
UTF-16 code units, as Telegram counts them. Both import their shared types from here, so
neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

__all__ = ["Entity", "Part", "Span", "utf16_len"]

# A span is (start, end, type, argument) in code-point indices of the rendered text; the
# argument is the URL of a text_link or the language of a pre block.
Span = tuple[int, int, str, str | None]


class Entity(TypedDict):
    """A Telegram MessageEntity as a dict: ``telegram.MessageEntity(**entity)`` works.

    ``offset`` and ``length`` are in UTF-16 code units, relative to the part's text.
    """

    type: str
    offset: int
    length: int
    url: NotRequired[str]
    language: NotRequired[str]


@dataclass(frozen=True, slots=True)
class Part:
    """One Telegram message: send ``text`` with ``entities`` (no ``parse_mode``).

    Parts compare by value (handy to skip a no-op edit); they are not hashable
    because entities are dicts.
    """

    text: str
    entities: tuple[Entity, ...] = ()

    @property
    def plain(self) -> str:
        """The same content without formatting, for the plain-text fallback."""
        return self.text


def utf16_len(s: str) -> int:
    """Length of ``s`` in UTF-16 code units, as Telegram counts it."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2
