"""Markdown -> plain text plus entity spans, in one walk over pyromark's events.

Markdown is parsed by ``pyromark`` (pulldown-cmark, CommonMark + GFM tables/strikethrough/
task lists), so partial input behaves like any chat app: an unclosed fence renders the rest
as code, an unclosed ``**`` stays literal until its closer arrives. The walk appends visible
text and keeps a stack of entities whose end it has not seen; an entity becomes a ``Span``
when it closes. Events are dispatched through tables of unbound methods, built once.

Telegram's constraints are met here, not patched later: bold/italic/strikethrough are cut
around inline code (they may not overlap it), blockquotes do not nest, raw HTML is shown as
text, and link targets Telegram would reject (relative, ``javascript:``, ``localhost``) are
shown in brackets instead of becoming ``text_link`` entities. The walk also records where
headings end, so the splitter does not cut right after one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import pyromark

from .links import telegram_url_ok
from .spans import Span
from .tables import Table, format_table

__all__ = ["render_markdown"]

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


def render_markdown(markdown: str) -> tuple[str, list[Span], set[int]]:
    """The visible text of ``markdown``, its entity spans, and where its headings end."""
    return _Renderer().run(markdown)


class _Open:
    """An entity whose end has not been seen yet."""

    __slots__ = ("arg", "kind", "mark", "start")

    def __init__(self, kind: str, start: int, arg: str | None, mark: int) -> None:
        self.kind = kind
        self.start = start
        self.arg = arg
        self.mark = mark  # index into the output pieces, to recover a link's text


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
        self.spans: list[Span] = []
        self.headings: set[int] = set()  # where headings end: do not cut right after them
        self.stack: list[_Open] = []
        self.lists: list[int | None] = []  # next number per open list, None = bullets
        self.items = 0  # open list items
        self.fresh_item = False  # just wrote a list marker: the next block needs no break
        self.quotes = 0
        self.sink: list[str] | None = None  # diverts text of code/HTML blocks, table cells
        self.table: Table | None = None

    def run(self, markdown: str) -> tuple[str, list[Span], set[int]]:
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
        if self.table is None and not self._in_link() and telegram_url_ok(url):
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
        self.table = Table()

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
            self._emit(format_table(rows))
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
