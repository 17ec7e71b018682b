"""A reasoning model's thought above its answer, in a quote the reader expands (SHOW_REASONING
=collapsed): Telegram's `expandable_blockquote` shows its first lines and opens on a tap.

The thought goes at the start of the answer's first message when it fits there; a thought that
does not fit beside the answer is shortened (its end kept: it leads to the answer), or, when
the first message is nearly full, becomes a message of its own before the answer.
"""

from __future__ import annotations

from typing import Final

from .spans import Entity, Part, utf16_len

QUOTE: Final = "expandable_blockquote"
MIN_BESIDE = 500  # UTF-16 units worth of thought for it to share the answer's first message
SEPARATOR: Final = "\n\n"


def with_thought(parts: list[Part], thought: str, limit: int) -> list[Part]:
    """`parts` (the rendered answer) with `thought` quoted at the start."""
    thought = thought.strip()
    if not thought:
        return parts
    if not parts:
        return [_quoted(thought, limit)]
    first = parts[0]
    room = limit - utf16_len(first.text) - len(SEPARATOR)
    if room < min(MIN_BESIDE, utf16_len(thought)):
        return [_quoted(thought, limit), *parts]
    quote = _quoted(thought, room)
    shift = utf16_len(quote.text) + len(SEPARATOR)
    entities = [
        *quote.entities,
        *(Entity(**{**entity, "offset": entity["offset"] + shift}) for entity in first.entities),
    ]
    merged = Part(quote.text + SEPARATOR + first.text, tuple(entities))
    return [merged, *parts[1:]]


def _quoted(thought: str, limit: int) -> Part:
    text = _tail(thought, limit)
    return Part(text, (Entity(type=QUOTE, offset=0, length=utf16_len(text)),))


def _tail(text: str, limit: int) -> str:
    """`text`, or its end after "…" within `limit` UTF-16 units."""
    if utf16_len(text) <= limit:
        return text
    keep = max(limit - 1, 1)
    tail = text[-keep:]
    while utf16_len(tail) > keep:  # astral characters take two units
        tail = tail[1:]
    return "…" + tail
