"""Render LLM Markdown into Telegram messages: plain text plus MessageEntity dicts.

Why entities and not HTML/MarkdownV2: with ``entities`` Telegram parses nothing, so an
unbalanced ``*``, a stray ``<`` or a half-streamed link can never cause "can't parse
entities"; the worst case is a span shown without formatting. Markdown is parsed by
``pyromark`` (pulldown-cmark, CommonMark + GFM tables/strikethrough/task lists), so
partial input behaves like any chat app: an unclosed fence renders the rest as code,
an unclosed ``**`` stays literal until its closer arrives. Raw HTML is shown as text,
link targets Telegram would reject (relative, ``javascript:``, ``localhost``) are shown
in brackets instead of becoming ``text_link`` entities. See ``docs/rendering.md``.

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
"""

from __future__ import annotations

import logging
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NotRequired, TypedDict

import pyromark

__all__ = [
    "MAX_MESSAGE_UTF16",
    "Entity",
    "Part",
    "render",
    "render_plain",
    "utf16_len",
]

MAX_MESSAGE_UTF16: Final = 4096

_log = logging.getLogger(__name__)


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
    def html(self) -> bool:
        """Always ``False``: text is never HTML, so never pass a ``parse_mode``."""
        return False

    @property
    def plain(self) -> str:
        """The same content without formatting, for the plain-text fallback."""
        return self.text


def utf16_len(s: str) -> int:
    """Length of ``s`` in UTF-16 code units, as Telegram counts it."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


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
        text, spans, headings = _Renderer().run(markdown)
    except Exception:  # a renderer bug must not cost the user the reply
        _log.exception("Markdown rendering failed; sending the reply as plain text")
        text, spans, headings = markdown, [], set()
    return _split(text, spans, limit, headings)


def render_plain(text: str, limit: int = MAX_MESSAGE_UTF16) -> list[str]:
    """Split plain text (no Markdown parsing) the same way ``render`` splits."""
    _check_limit(limit)
    return [part.text for part in _split(_sanitize(text), [], limit, set())]


def _check_limit(limit: int) -> None:
    if limit < 2:  # an astral character needs 2 units; below that no progress is possible
        raise ValueError(f"limit must be at least 2 UTF-16 units, got {limit}")


# --- input clean-up ---------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _sanitize(s: str) -> str:
    """Normalise newlines and repair surrogates (the parser and Telegram reject lone ones)."""
    if "\r" in s:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    if _SURROGATE.search(s):
        s = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return s


# --- Markdown -> (text, spans) ----------------------------------------------------------

# A span is (start, end, type, argument) in code-point indices of the rendered text; the
# argument is the URL of a text_link or the language of a pre block.
_Span = tuple[int, int, str, str | None]

_OPTIONS: Final = (
    pyromark.Options.ENABLE_TABLES
    | pyromark.Options.ENABLE_STRIKETHROUGH
    | pyromark.Options.ENABLE_TASKLISTS
    # Single "~x~" would otherwise be strikethrough; as subscript we print it back verbatim.
    | pyromark.Options.ENABLE_SUBSCRIPT
)
_PARSER: Final = pyromark.Markdown(options=_OPTIONS)

# Telegram: these may not overlap code/pre, so they are split around inline code.
_SPLITTABLE: Final = frozenset({"bold", "italic", "strikethrough", "underline"})
_BULLET: Final = "•"
_MAX_INDENT: Final = 6  # nesting levels shown as indentation (deeper would grow quadratically)
_RULE: Final = "──────────"
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_LANG_JUNK = re.compile(r"[^\w+#.-]")


class _Open:
    """An entity whose end has not been seen yet."""

    __slots__ = ("arg", "kind", "mark", "start")

    def __init__(self, kind: str, start: int, arg: str | None, mark: int) -> None:
        self.kind = kind
        self.start = start
        self.arg = arg
        self.mark = mark  # index into the output pieces, to recover a link's text


class _Table:
    __slots__ = ("cell", "row", "rows")

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.row: list[str] = []
        self.cell: list[str] = []


class _Renderer:
    """Walks pyromark events once, appending visible text and recording entity spans."""

    __slots__ = (
        "fresh_item",
        "headings",
        "items",
        "lists",
        "newlines",
        "out",
        "pos",
        "quotes",
        "sink",
        "spans",
        "stack",
        "table",
    )

    def __init__(self) -> None:
        self.out: list[str] = []
        self.pos = 0  # len("".join(self.out))
        self.newlines = 0  # block-separating newlines at the end of the output
        self.spans: list[_Span] = []
        self.headings: set[int] = set()  # where headings end: do not cut right after them
        self.stack: list[_Open] = []
        self.lists: list[int | None] = []  # next number per open list, None = bullets
        self.items = 0  # open list items
        self.fresh_item = False  # just wrote a list marker: the next block needs no break
        self.quotes = 0
        self.sink: list[str] | None = None  # diverts text of code/HTML blocks, table cells
        self.table: _Table | None = None

    def run(self, markdown: str) -> tuple[str, list[_Span], set[int]]:
        if not markdown.strip():
            return "", [], set()
        emit = self._emit
        for event in _PARSER.events(markdown):
            if not isinstance(event, dict):  # "SoftBreak", "HardBreak", "Rule"
                self._on_bare(event)
                continue
            for key, value in event.items():
                if not isinstance(value, str):
                    _HANDLERS.get(key, _Renderer._on_other)(self, value)
                elif key == "Text":
                    emit(value)
                elif key in _SIMPLE:  # e.g. {"Start": "Paragraph"}
                    _SIMPLE[key].get(value, _Renderer._nothing)(self)
                else:
                    _HANDLERS.get(key, _Renderer._on_other)(self, value)
        return "".join(self.out), self.spans, self.headings

    # output primitives

    def _emit(self, s: str) -> None:
        if self.sink is not None:
            self.sink.append(s)
        elif s:
            self.out.append(s)
            self.pos += len(s)
            self.newlines = 0

    def _block(self) -> None:
        """Separate a new block from what precedes it."""
        if self.fresh_item:
            self.fresh_item = False
        elif self.pos:
            self._newlines(1 if self.items else 2)

    def _newlines(self, need: int) -> None:
        if self.newlines < need:
            self.out.append("\n" * (need - self.newlines))
            self.pos += need - self.newlines
            self.newlines = need

    def _span(self, start: int, kind: str, arg: str | None = None) -> None:
        if self.pos > start:
            self.spans.append((start, self.pos, kind, arg))

    def _in_link(self) -> bool:
        return any(o.kind in _LINKS for o in self.stack)

    # event handlers

    def _on_bare(self, event: object) -> None:
        if event == "Rule":
            self._block()
            self._emit(_RULE)
        else:  # SoftBreak, HardBreak
            self._emit(" " if self.table is not None else "\n")

    def _on_code(self, code: str) -> None:
        if self.sink is not None or self._in_link():
            self._emit(code)
            return
        start = self.pos
        for o in self.stack:  # Telegram: bold/italic/... may not overlap code, cut them
            if o.kind in _SPLITTABLE:
                self._span(o.start, o.kind)
        self._emit(code)
        self._span(start, "code")
        for o in self.stack:
            if o.kind in _SPLITTABLE:
                o.start = self.pos

    def _on_inline_html(self, html: str) -> None:
        # Raw HTML is shown as typed ("use a <div>"), except line breaks inside table cells.
        self._emit(" " if self.table is not None and _BR.fullmatch(html) else html)

    def _on_task(self, checked: object) -> None:
        self._emit("☑ " if checked else "☐ ")

    def _on_other(self, value: object) -> None:
        # Events of extensions we do not style (math, footnotes): keep their text.
        if isinstance(value, str):
            self._emit(value)

    def _on_start(self, tag: object) -> None:
        if isinstance(tag, dict):
            for key, value in tag.items():
                _START_WITH.get(key, _Renderer._start_block)(self, value)

    def _on_end(self, tag: object) -> None:
        if isinstance(tag, dict):
            for key in tag:
                _END.get(key, _Renderer._nothing)(self)

    # starts and ends

    def _nothing(self) -> None:
        pass

    def _start_block(self, _value: object) -> None:
        self._block()

    def _start_italic(self) -> None:
        self._push("italic")

    def _start_bold(self) -> None:
        self._push("bold")

    def _start_strike(self) -> None:
        self._push("strikethrough")

    def _tilde(self) -> None:
        self._emit("~")  # single-tilde "subscript" is printed back as typed

    def _start_heading(self, _value: object) -> None:
        self._block()
        self._push("bold")

    def _end_heading(self) -> None:
        self._pop()
        self.headings.add(self.pos)

    def _start_list(self, value: object) -> None:
        self._block()
        self.lists.append(value if isinstance(value, int) else None)

    def _end_list(self) -> None:
        if self.lists:
            self.lists.pop()

    def _start_item(self) -> None:
        if self.pos:
            self._newlines(1)
        depth = min(max(len(self.lists) - 1, 0), _MAX_INDENT)
        number = self.lists[-1] if self.lists else None
        if number is None:
            marker = _BULLET
        else:
            marker = f"{number}."
            self.lists[-1] = number + 1
        self._emit(f"{'  ' * depth}{marker} ")
        self.items += 1
        self.fresh_item = True

    def _end_item(self) -> None:
        self.items -= 1
        self.fresh_item = False

    def _start_quote(self, _value: object) -> None:
        self._block()
        self.quotes += 1
        if self.quotes == 1:  # Telegram blockquotes cannot nest
            self._push("blockquote")

    def _end_quote(self) -> None:
        self.quotes -= 1
        if self.quotes == 0:
            self._pop()

    def _start_link(self, value: object) -> None:
        url = value.get("dest_url", "") if isinstance(value, dict) else ""
        if self.table is None and not self._in_link() and _telegram_url_ok(url):
            self._push("text_link", url)
        else:
            self._push("badlink", url)

    def _start_code(self, kind: object) -> None:
        self._block()
        info = kind.get("Fenced", "") if isinstance(kind, dict) else ""
        self._push("pre", _language(info))
        self.sink = []

    def _end_code(self) -> None:
        code = "".join(self.sink or ())
        self.sink = None
        self._emit(code.removesuffix("\n"))
        self._pop()

    def _start_html(self) -> None:
        self._block()
        self.sink = []

    def _end_html(self) -> None:
        html = "".join(self.sink or ())
        self.sink = None
        self._emit(html.rstrip("\n"))

    def _start_table(self, _value: object) -> None:
        self._block()
        self.table = _Table()

    def _start_row(self) -> None:
        if self.table is not None:
            self.table.row = []

    def _start_cell(self) -> None:
        if self.table is not None:
            self.table.cell = self.sink = []

    def _end_cell(self) -> None:
        if self.table is not None:
            self.table.row.append("".join(self.table.cell).strip())
            self.sink = None

    def _end_row(self) -> None:
        if self.table is not None:
            self.table.rows.append(self.table.row)

    def _end_table(self) -> None:
        if self.table is not None:
            rows, self.table = self.table.rows, None
            start = self.pos
            self._emit(_format_table(rows))
            self._span(start, "pre")

    # entity bookkeeping

    def _push(self, kind: str, arg: str | None = None) -> None:
        self.stack.append(_Open(kind, self.pos, arg, len(self.out)))

    def _pop(self) -> None:
        if not self.stack:
            return
        o = self.stack.pop()
        if self.table is not None:
            return
        if o.kind == "badlink":
            self._close_bad_link(o)
            return
        if o.kind == "text_link" and self.pos == o.start:
            self._emit(o.arg or "")  # image without alt text: show its address
        self._span(o.start, o.kind, o.arg)

    def _close_bad_link(self, o: _Open) -> None:
        url = o.arg or ""
        shown = "".join(self.out[o.mark :])
        if not shown.strip():
            self._emit(url)
        elif url and url != shown and not self._in_link():
            self._emit(f" ({url})")


_LINKS: Final = frozenset({"text_link", "badlink"})
_HANDLERS: Final[dict[str, Callable[[_Renderer, Any], None]]] = {
    "Start": _Renderer._on_start,
    "End": _Renderer._on_end,
    "Code": _Renderer._on_code,
    "InlineHtml": _Renderer._on_inline_html,
    "Html": _Renderer._emit,
    "TaskListMarker": _Renderer._on_task,
}
_START: Final[dict[str, Callable[[_Renderer], None]]] = {
    "Paragraph": _Renderer._block,
    "DefinitionList": _Renderer._block,
    "DefinitionListTitle": _Renderer._block,
    "DefinitionListDefinition": _Renderer._block,
    "Emphasis": _Renderer._start_italic,
    "Strong": _Renderer._start_bold,
    "Strikethrough": _Renderer._start_strike,
    "Subscript": _Renderer._tilde,
    "Superscript": _Renderer._nothing,
    "Item": _Renderer._start_item,
    "HtmlBlock": _Renderer._start_html,
    "TableHead": _Renderer._start_row,
    "TableRow": _Renderer._start_row,
    "TableCell": _Renderer._start_cell,
}
_START_WITH: Final[dict[str, Callable[[_Renderer, Any], None]]] = {
    "Heading": _Renderer._start_heading,
    "List": _Renderer._start_list,
    "BlockQuote": _Renderer._start_quote,
    "CodeBlock": _Renderer._start_code,
    "Link": _Renderer._start_link,
    "Image": _Renderer._start_link,
    "Table": _Renderer._start_table,
}
_END: Final[dict[str, Callable[[_Renderer], None]]] = {
    "Emphasis": _Renderer._pop,
    "Strong": _Renderer._pop,
    "Strikethrough": _Renderer._pop,
    "Link": _Renderer._pop,
    "Image": _Renderer._pop,
    "Heading": _Renderer._end_heading,
    "Subscript": _Renderer._tilde,
    "Item": _Renderer._end_item,
    "List": _Renderer._end_list,
    "BlockQuote": _Renderer._end_quote,
    "CodeBlock": _Renderer._end_code,
    "HtmlBlock": _Renderer._end_html,
    "TableCell": _Renderer._end_cell,
    "TableHead": _Renderer._end_row,
    "TableRow": _Renderer._end_row,
    "Table": _Renderer._end_table,
}
_SIMPLE: Final = {"Start": _START, "End": _END}


def _language(info: str) -> str | None:
    words = info.split()
    if not words:
        return None
    lang = _LANG_JUNK.sub("", words[0])[:32]
    return lang or None


def _telegram_url_ok(url: str) -> bool:
    """Would Telegram accept ``url`` in a text_link? (A rejected one fails the whole message.)

    Mirrors tdlib's ``parse_url``/``check_link``: http(s) only, a host containing a dot,
    a valid port. Anything else is printed next to the link text instead.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or any(c.isspace() for c in url):
        return False
    authority = _PATH_START.split(rest, maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]
    host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return "." in host and host != "." and _HOST_OK.fullmatch(host.lower()) is not None


_PATH_START = re.compile(r"[/?#]")
_HOST_OK = re.compile(r"(?:[a-z0-9._~!$,*'();&+=-]|%[0-9a-f]{2}|[^\x00-\x7f])+")


def _format_table(rows: list[list[str]]) -> str:
    """Lay a table out as monospace text (Telegram has no tables)."""
    columns = max((len(r) for r in rows), default=0)
    widths = [0] * columns
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _display_width(cell))
    lines = [_table_line(row, widths) for row in rows]
    if len(lines) > 1:
        lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _table_line(row: list[str], widths: list[int]) -> str:
    cells = [c + " " * (w - _display_width(c)) for c, w in zip(row, widths, strict=False)]
    return " | ".join(cells).rstrip()


def _display_width(s: str) -> int:
    if s.isascii():
        return len(s)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


# --- splitting ---------------------------------------------------------------------------

_TRIM: Final = " \n\t"  # what Telegram itself trims at both ends of a message
# Characters tdlib treats as empty: a part made only of these is rejected as empty.
_BLANK: Final = frozenset(
    " \n\t\r\f\v\xa0\u1680\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u2028\u2029\u202f\u205f\u2060\u2800\u3000\u3164\ufeff\uffa0"
    "\u115f\u1160" + "".join(map(chr, range(0x2000, 0x200B)))
)
_SENTENCE_END = re.compile(r"[.!?…](?=\s)|[。！？]")
_SPACE = re.compile(r"\s")
_MAX_BACKOFF: Final = 32


def _split(text: str, spans: list[_Span], limit: int, headings: set[int]) -> list[Part]:
    return [
        part
        for start, end in _ranges(_Text(text, spans, headings), limit)
        if (part := _make_part(text, spans, start, end)) is not None
    ]


class _Text:
    """The rendered text plus what the splitter needs to know about it."""

    __slots__ = ("astral", "code_ends", "code_starts", "headings", "text")

    def __init__(self, text: str, spans: Sequence[_Span], headings: set[int]) -> None:
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


def _make_part(text: str, spans: Iterable[_Span], start: int, end: int) -> Part | None:
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


def _entities(text: str, spans: list[_Span]) -> tuple[Entity, ...]:
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


def _outer_first(span: _Span) -> tuple[int, int]:
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
