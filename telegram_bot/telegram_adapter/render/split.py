"""Cut rendered text plus spans into parts Telegram accepts: the splitting stage.

Splitting works on the rendered plain text, so the limit is measured exactly as
Telegram does (UTF-16 code units of the visible text). Greedily from the start, each
part takes the longest window that fits and cuts at the best boundary in the window's
second half: paragraph break, else line break, else sentence end, else whitespace; failing
that, the last paragraph/line break anywhere; only as a last resort mid-word, and never
inside a surrogate pair or before a combining mark/ZWJ. It avoids cutting right after a
heading or a line ending in ":", and inside code prefers a cut before an unindented line
(Telegram strips a message's leading spaces). Entities crossing a cut are clipped into
both parts, so a code block is closed at the end of one part and reopened with the same
language in the next. Only whitespace at a cut is dropped.

Each part's spans then become ``Entity`` dicts with UTF-16 offsets, outer entities first,
trimmed to Telegram's entity budget when a part has too many.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import Final

from .spans import Entity, Part, Span

__all__ = ["split"]

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # two UTF-16 units each
_TRIM: Final = " \n\t"  # what Telegram itself trims at both ends of a message
# Characters tdlib treats as empty: a part made only of these is rejected as empty. That
# includes control characters, which tdlib turns into spaces (or drops, as it drops U+202A-E)
# before it looks: a part that is only "\x1f" is empty to Telegram.
_BLANK: Final = frozenset(
    " \n\t\r\f\v\xa0\u1680\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u202f\u205f\u2060\u2800\u3000\u3164"
    "\ufeff\uffa0\u115f\u1160"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "".join(map(chr, range(0x20)))
)
_SENTENCE_END = re.compile(r"[.!?…](?=\s)|[。！？]")
_SPACE = re.compile(r"\s")
_MAX_BACKOFF: Final = 32


def split(text: str, spans: list[Span], limit: int, headings: set[int]) -> list[Part]:
    """Cut ``text`` into parts of at most ``limit`` UTF-16 units, each with its entities.

    ``headings`` holds where headings end: a cut goes right after one only if nothing
    else fits. Parts that would be blank to Telegram are left out.
    """
    return [
        part
        for start, end in _ranges(_Text(text, spans, headings), limit)
        if (part := _make_part(text, spans, start, end)) is not None
    ]


class _Text:
    """The rendered text plus what the splitter needs to know about it."""

    __slots__ = ("astral", "code_ends", "code_starts", "headings", "text")

    def __init__(self, text: str, spans: Sequence[Span], headings: set[int]) -> None:
        self.text = text
        self.astral = [] if text.isascii() else [m.start() for m in _ASTRAL.finditer(text)]
        pre = sorted((s, e) for s, e, kind, _ in spans if kind == "pre")
        self.code_starts = [s for s, _ in pre]
        self.code_ends = [e for _, e in pre]
        self.headings = headings

    def in_code(self, i: int) -> bool:
        k = bisect_right(self.code_starts, i) - 1
        return k >= 0 and i < self.code_ends[k]

    def introduces_next(self, i: int) -> bool:
        """Is the break at ``i`` right after a heading or a line ending in ":"?"""
        text = self.text
        while i > 0 and text[i - 1] == "\n":
            i -= 1
        return i in self.headings or (i > 0 and text[i - 1] == ":")


def _ranges(doc: _Text, limit: int) -> list[tuple[int, int]]:
    """Greedy cut points: [(start, end)] in code points, each ≤ limit UTF-16 units."""
    text, n = doc.text, len(doc.text)
    ranges: list[tuple[int, int]] = []
    start = _skip_trim(text, 0)
    while start < n:
        end = _window_end(start, n, limit, doc.astral)
        if end >= n:
            ranges.append((start, n))
            break
        cut = _choose_cut(doc, start, end)
        ranges.append((start, cut))
        start = _skip_trim(text, cut)
    return ranges


def _skip_trim(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _TRIM:
        i += 1
    return i


def _window_end(start: int, n: int, limit: int, astral: list[int]) -> int:
    """Largest end such that text[start:end] fits in ``limit`` UTF-16 units."""
    hi = min(n, start + limit)
    if not astral:
        return hi
    base = start + bisect_left(astral, start)
    lo = start
    while lo < hi:  # binary search on the monotonic UTF-16 offset
        mid = (lo + hi + 1) // 2
        if mid + bisect_left(astral, mid) - base <= limit:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, start + 1)


def _choose_cut(doc: _Text, start: int, end: int) -> int:
    """Where to end the part that starts at ``start`` and must end by ``end``.

    Only ``text[start:end + 1]`` is consulted, so the choice is stable while text grows.
    First the best boundary in the second half of the window (paragraph > line > sentence
    > word), so parts stay reasonably full; then a paragraph or line break anywhere; then
    any boundary even right after a heading; only then a cut inside a word.
    """
    middle = start + max(1, (end - start) // 2)
    passes = (
        (middle, (_paragraph, _line, _sentence, _word), False),
        (start + 1, (_paragraph, _line), False),
        (start + 1, (_paragraph, _line, _sentence, _word), True),
    )
    for lo, finders, after_intro in passes:
        for find in finders:
            cut = find(doc, lo, end, after_intro)
            if cut > start:
                return cut
    return _grapheme_safe(doc.text, start, end)


def _paragraph(doc: _Text, lo: int, end: int, after_intro: bool) -> int:
    return _line_break(doc, "\n\n", lo, end, after_intro)


def _line(doc: _Text, lo: int, end: int, after_intro: bool) -> int:
    return _line_break(doc, "\n", lo, end, after_intro)


def _line_break(doc: _Text, needle: str, lo: int, end: int, after_intro: bool) -> int:
    """Index of the last ``needle`` within [lo, end); -1 if none.

    Inside a code block a break followed by an unindented line is preferred, because
    Telegram strips the leading spaces of a message.
    """
    text, first, hi = doc.text, -1, end
    while (i := text.rfind(needle, lo, hi)) >= 0:
        hi = i + len(needle) - 1
        if not after_intro and doc.introduces_next(i):
            continue
        if first < 0:
            first = i
        if text[i + len(needle)] not in " \t" or not doc.in_code(i):
            return i
    return first


def _sentence(doc: _Text, lo: int, end: int, after_intro: bool) -> int:
    best = -1
    for m in _SENTENCE_END.finditer(doc.text, lo, end + 1):  # + 1: the lookahead char
        if m.end() <= end:
            best = m.end()
    return best


def _word(doc: _Text, lo: int, end: int, after_intro: bool) -> int:
    best = -1
    for m in _SPACE.finditer(doc.text, lo, end + 1):
        best = m.start()
    return best


def _grapheme_safe(text: str, start: int, end: int) -> int:
    """Back a hard cut off so it does not separate a character from its modifiers."""
    cut = end
    while _joins_previous(text, cut):
        cut -= 1
        if cut <= start + 1 or end - cut > _MAX_BACKOFF:
            return end  # one endless cluster: cut it anyway
    return cut


def _joins_previous(text: str, i: int) -> bool:
    """Would a cut before ``text[i]`` split a user-perceived character?"""
    if i >= len(text):
        return False
    c, p = text[i], text[i - 1]
    return (
        p == "\u200d"
        or c in "\u200d\ufe0e\ufe0f\u20e3"
        or "\U0001f3fb" <= c <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= c <= "\U000e007f"  # tag sequences (subdivision flags)
        or ("\U0001f1e6" <= c <= "\U0001f1ff" and "\U0001f1e6" <= p <= "\U0001f1ff")
        or unicodedata.category(c) in ("Mn", "Mc", "Me")
    )


def _make_part(text: str, spans: Iterable[Span], start: int, end: int) -> Part | None:
    chunk = text[start:end]
    body = chunk.lstrip(_TRIM)
    start += len(chunk) - len(body)
    body = body.rstrip(_TRIM)
    end = start + len(body)
    if _BLANK.issuperset(body):
        return None
    clipped = [
        (max(s, start) - start, min(e, end) - start, kind, arg)
        for s, e, kind, arg in spans
        if s < end and e > start
    ]
    return Part(body, _entities(body, clipped))


def _entities(text: str, spans: list[Span]) -> tuple[Entity, ...]:
    astral = [] if text.isascii() else [m.start() for m in _ASTRAL.finditer(text)]
    result: list[Entity] = []
    for s, e, kind, arg in sorted(spans, key=_outer_first):
        if e <= s or text[s:e].isspace():
            continue  # Telegram drops whitespace-only entities anyway
        offset = s + bisect_left(astral, s) if astral else s
        stop = e + bisect_left(astral, e) if astral else e
        entity: Entity = {"type": kind, "offset": offset, "length": stop - offset}
        if kind == "text_link" and arg:
            entity["url"] = arg
        elif kind == "pre" and arg:
            entity["language"] = arg
        result.append(entity)
    if len(result) > _MAX_ENTITIES or sum(len(e.get("url", "")) for e in result) > _MAX_URLS:
        result = _within_budget(result)
    return tuple(result)


def _outer_first(span: Span) -> tuple[int, int]:
    return span[0], -span[1]


# Telegram ignores entities after the 100th and rejects a message whose entities are too
# large in total (ENTITIES_TOO_LONG, about 9500 bytes including URLs). Past either budget
# we keep the entities that matter most for reading: code first, emphasis last.
_MAX_ENTITIES: Final = 100
_MAX_URLS: Final = 4000
_IMPORTANCE: Final = {
    "pre": 0,
    "blockquote": 1,
    "code": 2,
    "text_link": 3,
    "bold": 4,
    "italic": 5,
    "strikethrough": 6,
}


def _within_budget(entities: list[Entity]) -> list[Entity]:
    ranked = sorted(entities, key=lambda e: (_IMPORTANCE.get(e["type"], 9), e["offset"]))
    kept: list[Entity] = []
    url_chars = 0
    for entity in ranked:
        url_chars += len(entity.get("url", ""))
        if len(kept) < _MAX_ENTITIES and url_chars <= _MAX_URLS:
            kept.append(entity)
        else:
            url_chars -= len(entity.get("url", ""))
    return sorted(kept, key=lambda e: (e["offset"], -e["length"]))
