"""Telegram's message-text rules, reimplemented just far enough to reject what Telegram rejects.

The bot under test formats LLM output as HTML/MarkdownV2 and splits long answers; the classic
production failures are "can't parse entities" and "message is too long". The parsers below
follow tdlib's (MessageEntity.cpp) structure and error wording so the bot meets the same errors
here as in production, and they produce the visible text plus UTF-16 entities that Telegram
would store, so edits can be compared the way Telegram compares them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT_UTF16 = 4096

ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)

# Entity fields Telegram insists on, per type.
_REQUIRED_ENTITY_FIELDS = {
    "text_link": "url",
    "text_mention": "user",
    "custom_emoji": "custom_emoji_id",
}

_HTML_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,8}));")
_HTML_SPECIAL = re.compile(r"[<&]")
_HTML_UNQUOTED_VALUE = re.compile(r"[A-Za-z0-9.\-]*")

_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD_LEGACY_MARKERS = frozenset("_*`[")


class TextRejected(Exception):
    """A text Telegram would refuse; `description` is the exact Bot API error description."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _entity_error(detail: str) -> TextRejected:
    return TextRejected(f"Bad Request: can't parse entities: {detail}")


@dataclass
class Rendered:
    """What Telegram stores for a text: the visible characters and their entities."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


def utf16_len(text: str) -> int:
    """Telegram measures lengths and offsets in UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


def render(text: str, parse_mode: str | None, entities: Any = None) -> Rendered:
    """Apply parse_mode (or explicit entities, which take precedence like in the Bot API)."""
    if entities:
        validate_entities(text, entities)
        return Rendered(text, [dict(e) for e in entities])
    mode = (parse_mode or "").lower()
    if not mode:
        return Rendered(text)
    if mode == "html":
        return _HtmlParser(text).parse()
    if mode == "markdownv2":
        return _MarkdownV2Parser(text).parse()
    if mode == "markdown":
        return _parse_markdown_legacy(text)
    raise TextRejected("Bad Request: unsupported parse_mode")


def visible_text(text: str, parse_mode: str | None, entities: Any = None) -> str:
    """Best-effort visible text for assertions; falls back to the raw text if it can't parse."""
    try:
        return render(text, parse_mode, entities).text
    except TextRejected:
        return text


# tdlib's clean_input_string turns these control characters into spaces (\r it drops, which
# would shift offsets; the bot sends none).
_CONTROL_TO_SPACE = {code: " " for code in (*range(0, 9), 11, 12, *range(14, 32))}


def trim(rendered: Rendered) -> Rendered:
    """Telegram turns control characters into spaces, then strips leading/trailing whitespace
    from stored texts; entities shift with it."""
    rendered = Rendered(rendered.text.translate(_CONTROL_TO_SPACE), rendered.entities)
    stripped_left = rendered.text.lstrip()
    shift = utf16_len(rendered.text) - utf16_len(stripped_left)
    text = stripped_left.rstrip()
    size = utf16_len(text)
    entities = []
    for entity in rendered.entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, size)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return Rendered(text, entities)


def validate_entities(text: str, entities: Any) -> None:
    if not isinstance(entities, list):
        raise _entity_error("entities must be an array")
    size = utf16_len(text)
    for entity in entities:
        _validate_entity(entity, size)


def _validate_entity(entity: Any, size: int) -> None:
    if not isinstance(entity, dict):
        raise _entity_error("entity must be an object")
    kind = entity.get("type")
    if kind not in ENTITY_TYPES:
        raise _entity_error(f'unsupported entity type "{kind}"')
    offset, length = entity.get("offset"), entity.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length <= 0:
        raise _entity_error(f"wrong offset/length of an entity of type {kind}")
    if offset + length > size:
        raise _entity_error(
            f"entity beginning at UTF-16 offset {offset} ends after the end of the text "
            f"at UTF-16 offset {size}"
        )
    required = _REQUIRED_ENTITY_FIELDS.get(kind)
    if required and not entity.get(required):
        raise _entity_error(f'entity of type {kind} must have the field "{required}"')


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _decode_html_entity(match: re.Match[str]) -> str | None:
    named, decimal, hexadecimal = match.groups()
    if named:
        return _HTML_NAMED_ENTITIES[named]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None  # tdlib keeps such "entities" as literal text
    return chr(code)


@dataclass
class _OpenTag:
    name: str
    start: int  # UTF-16 offset in the visible text
    argument: str = ""
    expandable: bool = False
    language: str = ""


class _HtmlParser:
    """A transliteration of tdlib's parse_html: same acceptance rules, same error messages."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.i = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def parse(self) -> Rendered:
        while self.i < len(self.src):
            match = _HTML_SPECIAL.search(self.src, self.i)
            end = match.start() if match else len(self.src)
            self._emit(self.src[self.i : end])
            self.i = end
            if match is None:
                break
            if match.group() == "&":
                self._entity()
            elif self._peek(1) == "/":
                self._end_tag()
            else:
                self._start_tag()
        if self.stack:
            raise _entity_error(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return Rendered("".join(self.out), self.entities)

    def _peek(self, ahead: int = 0) -> str:
        index = self.i + ahead
        return self.src[index] if index < len(self.src) else ""

    def _emit(self, chunk: str) -> None:
        if chunk:
            self.out.append(chunk)
            self.utf16 += utf16_len(chunk)

    def _entity(self) -> None:
        match = _HTML_ENTITY.match(self.src, self.i)
        decoded = _decode_html_entity(match) if match else None
        if match is None or decoded is None:
            self._emit("&")
            self.i += 1
            return
        self._emit(decoded)
        self.i = match.end()

    def _skip_spaces(self) -> None:
        while self._peek().isspace():
            self.i += 1

    def _read_until(self, stops: str) -> str:
        start = self.i
        while self.i < len(self.src) and not self.src[self.i].isspace():
            if self.src[self.i] in stops:
                break
            self.i += 1
        return self.src[start : self.i]

    def _start_tag(self) -> None:
        begin = self.i
        at = _byte_offset(self.src, begin)
        self.i += 1
        name = self._read_until(">").lower()
        if self.i >= len(self.src):
            raise _entity_error(f"Unclosed start tag at byte offset {at}")
        if name not in _HTML_TAG_TYPES:
            raise _entity_error(f'Unsupported start tag "{name}" at byte offset {at}')
        tag = _OpenTag(name, self.utf16)
        self._attributes(tag, at)
        self.i += 1  # the '>'
        if name == "span" and tag.argument != "tg-spoiler":
            raise _entity_error(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
        self.stack.append(tag)

    def _attributes(self, tag: _OpenTag, at: int) -> None:
        while True:
            self._skip_spaces()
            if self.i >= len(self.src):
                raise _entity_error(f"Unclosed start tag at byte offset {at}")
            if self._peek() == ">":
                return
            attribute = self._read_until("=>").lower()
            if not attribute:
                raise _entity_error(
                    f'Empty attribute name in the tag "{tag.name}" at byte offset {at}'
                )
            self._skip_spaces()
            if self._peek() != "=":
                if tag.name == "blockquote" and attribute == "expandable":
                    tag.expandable = True
                    continue
                raise _entity_error(
                    "Expected equal sign in declaration of an attribute of the tag "
                    f'"{tag.name}" at byte offset {at}'
                )
            self.i += 1
            self._skip_spaces()
            self._apply_attribute(tag, attribute, self._attribute_value(tag, at))

    def _attribute_value(self, tag: _OpenTag, at: int) -> str:
        quote = self._peek()
        if not quote:
            raise _entity_error(f'Unclosed start tag "{tag.name}" at byte offset {at}')
        if quote not in "'\"":
            return self._unquoted_value()
        end = self.src.find(quote, self.i + 1)
        if end < 0:
            raise _entity_error(f"Unclosed start tag at byte offset {at}")
        raw = self.src[self.i + 1 : end]
        self.i = end + 1
        return _HTML_ENTITY.sub(lambda m: _decode_html_entity(m) or m.group(), raw)

    def _unquoted_value(self) -> str:
        """tdlib allows bare [A-Za-z0-9.-] values, which must end at a space or '>'."""
        match = _HTML_UNQUOTED_VALUE.match(self.src, self.i)
        assert match is not None  # the pattern also matches the empty string
        self.i = match.end()
        if not (self._peek().isspace() or self._peek() == ">"):
            at = _byte_offset(self.src, match.start())
            raise _entity_error(f"Unexpected end of name token at byte offset {at}")
        return match.group()

    @staticmethod
    def _apply_attribute(tag: _OpenTag, attribute: str, value: str) -> None:
        if (
            (tag.name == "a" and attribute == "href")
            or (tag.name == "span" and attribute == "class")
            or (tag.name == "tg-emoji" and attribute == "emoji-id")
        ):
            tag.argument = value
        elif tag.name == "code" and attribute == "class" and value.startswith("language-"):
            tag.language = value.removeprefix("language-")

    def _end_tag(self) -> None:
        begin = self.i
        at = _byte_offset(self.src, begin)
        if not self.stack:
            raise _entity_error(f"Unexpected end tag at byte offset {at}")
        self.i += 2
        name = self._read_until(">").lower()
        self._skip_spaces()
        if self._peek() != ">":
            raise _entity_error(f"Unclosed end tag at byte offset {at}")
        self.i += 1
        tag = self.stack.pop()
        if name and name != tag.name:
            raise _entity_error(
                f'Unmatched end tag at byte offset {at}, expected "</{tag.name}>", '
                f'found "</{name}>"'
            )
        self._close(tag)

    def _close(self, tag: _OpenTag) -> None:
        length = self.utf16 - tag.start
        if tag.name == "code" and self.stack and self.stack[-1].name == "pre":
            self.stack[-1].language = tag.language  # <pre><code class="language-x"> is one entity
            return
        if length <= 0:
            return
        entity: dict[str, Any] = {"type": _HTML_TAG_TYPES[tag.name], "offset": tag.start}
        entity["length"] = length
        if tag.name == "a":
            if not tag.argument:
                return
            entity["url"] = tag.argument
        elif tag.name == "tg-emoji":
            entity["custom_emoji_id"] = tag.argument
        elif tag.name == "pre" and tag.language:
            entity["language"] = tag.language
        elif tag.name == "blockquote" and tag.expandable:
            entity["type"] = "expandable_blockquote"
        self.entities.append(entity)


@dataclass
class _OpenMark:
    kind: str
    start: int  # UTF-16 offset in the visible text
    at: int  # byte offset of the opening marker, for error messages
    language: str = ""


class _MarkdownV2Parser:
    """tdlib's MarkdownV2 rules: reserved characters must be escaped, entities must close."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.i = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenMark] = []
        self.entities: list[dict[str, Any]] = []

    def parse(self) -> Rendered:
        while self.i < len(self.src):
            self._step()
        if self.stack:
            raise _entity_error(
                f"Can't find end of the entity starting at byte offset {self.stack[-1].at}"
            )
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return Rendered("".join(self.out), self.entities)

    def _peek(self, ahead: int = 0) -> str:
        index = self.i + ahead
        return self.src[index] if index < len(self.src) else ""

    def _emit(self, chunk: str) -> None:
        self.out.append(chunk)
        self.utf16 += utf16_len(chunk)

    def _in_code(self) -> bool:
        return bool(self.stack) and self.stack[-1].kind in ("code", "pre")

    def _step(self) -> None:
        char = self.src[self.i]
        following = self._peek(1)
        if char == "\\" and following and 0 < ord(following) <= 126:
            self._emit(following)
            self.i += 2
            return
        if char not in _MDV2_RESERVED or (self._in_code() and char != "`"):
            self._emit(char)
            self.i += 1
            return
        if self._closes_top(char):
            self._close()
        else:
            self._open(char)

    def _closes_top(self, char: str) -> bool:
        if not self.stack:
            return False
        kind = self.stack[-1].kind
        following = self._peek(1)
        return {
            "bold": char == "*",
            "italic": char == "_" and following != "_",
            "underline": char == "_" and following == "_",
            "strikethrough": char == "~",
            "spoiler": char == "|" and following == "|",
            "code": char == "`",
            "pre": self.src.startswith("```", self.i),
            "text_link": char == "]",
            "custom_emoji": char == "]",
        }[kind]

    def _open(self, char: str) -> None:
        at = _byte_offset(self.src, self.i)
        kind, width = self._marker(char)
        if kind == "blockquote":
            self.i += width  # a quoted line: formatting only, nothing to close
            return
        if not kind:
            raise _entity_error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        self.i += width
        mark = _OpenMark(kind, self.utf16, at)
        if kind == "pre":
            mark.language = self._pre_language()
        self.stack.append(mark)

    def _marker(self, char: str) -> tuple[str, int]:
        following = self._peek(1)
        at_line_start = self.i == 0 or self.src[self.i - 1] == "\n"
        if char == "*":
            return "bold", 1
        if char == "_":
            return ("underline", 2) if following == "_" else ("italic", 1)
        if char == "~":
            return "strikethrough", 1
        if char == "|" and following == "|":
            return "spoiler", 2
        if char == "`":
            return ("pre", 3) if self.src.startswith("```", self.i) else ("code", 1)
        if char == "[":
            return "text_link", 1
        if char == "!" and following == "[":
            return "custom_emoji", 2
        if char == ">" and at_line_start:
            return "blockquote", 1
        return "", 0

    def _pre_language(self) -> str:
        newline = self.src.find("\n", self.i)
        if newline < 0:
            return ""
        language = self.src[self.i : newline]
        if not language or any(c.isspace() or c == "`" for c in language):
            return ""
        self.i = newline + 1
        return language

    def _close(self) -> None:
        mark = self.stack.pop()
        self.i += {"underline": 2, "spoiler": 2, "pre": 3}.get(mark.kind, 1)
        entity: dict[str, Any] = {"type": mark.kind, "offset": mark.start}
        entity["length"] = self.utf16 - mark.start
        if mark.kind in ("text_link", "custom_emoji"):
            url = self._link_target(mark)
            if mark.kind == "custom_emoji":
                entity["custom_emoji_id"] = url.rpartition("id=")[2]
            elif url:
                entity["url"] = url
            else:
                return
        if mark.kind == "pre" and mark.language:
            entity["language"] = mark.language
        if entity["length"] > 0:
            self.entities.append(entity)

    def _link_target(self, mark: _OpenMark) -> str:
        if self._peek() != "(":
            return ""
        url: list[str] = []
        self.i += 1
        while self.i < len(self.src) and self.src[self.i] != ")":
            if self.src[self.i] == "\\" and self._peek(1):
                self.i += 1
            url.append(self.src[self.i])
            self.i += 1
        if self.i >= len(self.src):
            raise _entity_error(f"Can't find end of a URL at byte offset {mark.at}")
        self.i += 1
        return "".join(url)


_LEGACY_TYPES = {"*": "bold", "_": "italic", "`": "code", "[": "text_link"}


def _parse_markdown_legacy(source: str) -> Rendered:
    """Telegram's legacy "Markdown": non-nesting *bold*, _italic_, `code`, ```pre```, [a](url)."""
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    utf16 = 0
    i = 0
    while i < len(source):
        char = source[i]
        if char == "\\" and source[i + 1 : i + 2] in _MD_LEGACY_MARKERS:
            out.append(source[i + 1])
            utf16 += 1
            i += 2
            continue
        if char not in _MD_LEGACY_MARKERS:
            out.append(char)
            utf16 += utf16_len(char)
            i += 1
            continue
        inner, entity, i = _legacy_entity(source, i)
        if entity:
            entities.append({**entity, "offset": utf16, "length": utf16_len(inner)})
        out.append(inner)
        utf16 += utf16_len(inner)
    return Rendered("".join(out), entities)


def _legacy_entity(source: str, i: int) -> tuple[str, dict[str, Any], int]:
    at = _byte_offset(source, i)
    unclosed = _entity_error(f"Can't find end of the entity starting at byte offset {at}")
    if source.startswith("```", i):
        end = source.find("```", i + 3)
        if end < 0:
            raise unclosed
        return source[i + 3 : end], {"type": "pre"}, end + 3
    char = source[i]
    end = source.find("]" if char == "[" else char, i + 1)
    if end < 0:
        raise unclosed
    inner = source[i + 1 : end]
    entity: dict[str, Any] = {"type": _LEGACY_TYPES[char]}
    if char != "[":
        return inner, (entity if inner else {}), end + 1
    if not source.startswith("(", end + 1):
        return inner, {}, end + 1
    close = source.find(")", end + 2)
    if close < 0:
        raise unclosed
    entity["url"] = source[end + 2 : close]
    return inner, entity, close + 1
