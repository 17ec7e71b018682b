"""Behaviour of telegram_bot.telegram_adapter.render as a Telegram user would notice it."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from telegram_bot.telegram_adapter.render import (
    MAX_MESSAGE_UTF16,
    Entity,
    Part,
    render,
    render_plain,
    utf16_len,
)

# Telegram's rules for entities sent with a message (Bot API "MessageEntity" docs + tdlib).
STYLE = {"bold", "italic", "underline", "strikethrough", "spoiler"}
BLOCK = {"blockquote"}
KNOWN = STYLE | BLOCK | {"code", "pre", "text_link"}


def u16_slice(text: str, offset: int, length: int) -> str:
    """The substring an entity covers (offsets are UTF-16 code units)."""
    raw = text.encode("utf-16-le")
    return raw[2 * offset : 2 * (offset + length)].decode("utf-16-le")


def assert_valid(part: Part, limit: int = MAX_MESSAGE_UTF16) -> None:
    """Everything Telegram would reject (or silently mangle) about one message."""
    text = part.text
    assert text.strip(), "Telegram rejects an empty message"
    assert text == text.strip(" \n\t"), "Telegram trims the ends; so should we"
    assert utf16_len(text) <= limit
    assert len(part.entities) <= 100
    n = utf16_len(text)
    spans = []
    for e in part.entities:
        assert set(e) <= {"type", "offset", "length", "url", "language"}
        assert e["type"] in KNOWN, e
        assert e["length"] > 0 and e["offset"] >= 0 and e["offset"] + e["length"] <= n, e
        u16_slice(text, e["offset"], e["length"])  # raises if it cuts a surrogate pair
        if e["type"] == "text_link":
            assert re.match(r"https?://[^/?#\s]*\.", e["url"]), e
        spans.append((e["offset"], e["offset"] + e["length"], e["type"]))
    for a_start, a_end, a_type in spans:
        for b_start, b_end, b_type in spans:
            if (a_start, a_end, a_type) == (b_start, b_end, b_type):
                continue
            overlap = a_start < b_end and b_start < a_end
            if not overlap:
                continue
            a_in_b = b_start <= a_start and a_end <= b_end
            b_in_a = a_start <= b_start and b_end <= a_end
            assert a_in_b or b_in_a, f"entities cross: {a_type} {b_type} in {text!r}"
            if a_type in ("code", "pre") and b_in_a:
                assert b_type not in STYLE | {"text_link", "code", "pre"}, (a_type, b_type)
            if a_type in BLOCK and b_type in BLOCK:
                raise AssertionError("blockquotes cannot nest")


def covered(part: Part, kind: str) -> list[str]:
    return [
        u16_slice(part.text, e["offset"], e["length"]) for e in part.entities if e["type"] == kind
    ]


def one(markdown: str) -> Part:
    parts = render(markdown)
    assert len(parts) == 1, parts
    assert_valid(parts[0])
    return parts[0]


def squash(s: str) -> str:
    """Drop what may vanish at a split: whitespace and characters Telegram counts as blank."""
    return re.sub(
        r"[\s\x00-\x1f\u180e\u200b-\u200f\u202a-\u202e\u2060\u2800\u3164\ufeff\uffa0\u115f\u1160]+",
        "",
        s,
    )


# --- formatting survives ------------------------------------------------------------------


def test_inline_styles_become_entities_without_markup() -> None:
    part = one("Say **hello**, *there* and `run()` or ~~not~~ [docs](https://example.org/x).")
    assert part.text == "Say hello, there and run() or not docs."
    assert covered(part, "bold") == ["hello"]
    assert covered(part, "italic") == ["there"]
    assert covered(part, "code") == ["run()"]
    assert covered(part, "strikethrough") == ["not"]
    assert covered(part, "text_link") == ["docs"]
    assert part.entities[-1].get("url") == "https://example.org/x"


def test_entities_are_dicts_that_telegram_message_entity_accepts() -> None:
    telegram = pytest.importorskip("telegram")
    part = one("**b** ```py\nx = 1\n```")
    for entity in part.entities:
        telegram.MessageEntity(**entity)
    assert part.plain == part.text


def test_headings_lists_quotes_and_code_blocks() -> None:
    md = (
        "# Title\n\nIntro\n\n- one\n- two\n  1. nested\n\n> quoted *line*\n\n"
        "```python\ndef f():\n    return 1\n```\n\n| a | b |\n|---|---|\n| 1 | 22 |"
    )
    part = one(md)
    assert part.text.startswith("Title\n\nIntro\n\n• one\n• two\n  1. nested")
    assert covered(part, "bold") == ["Title"]
    assert covered(part, "blockquote") == ["quoted line"]
    assert "def f():\n    return 1" in covered(part, "pre")
    pre = [e for e in part.entities if e["type"] == "pre"]
    assert pre[0].get("language") == "python"
    assert "a | b\n--+---\n1 | 22" in covered(part, "pre")


def test_code_inside_bold_splits_the_bold_around_it() -> None:
    part = one("**use `pip install x` now**")
    assert part.text == "use pip install x now"
    assert covered(part, "code") == ["pip install x"]
    assert covered(part, "bold") == ["use ", " now"]


def test_link_targets_telegram_would_reject_are_shown_as_text() -> None:
    part = one("[readme](./README.md), [local](http://localhost:8000), [x](javascript:alert(1))")
    assert part.entities == ()
    assert "readme (./README.md)" in part.text
    assert "local (http://localhost:8000)" in part.text
    assert "x (javascript:alert(1))" in part.text


def test_raw_html_and_special_characters_are_kept_literally() -> None:
    part = one("Wrap it in a <div> & use <b>bold x < y")
    assert part.text == "Wrap it in a <div> & use <b>bold x < y"
    assert part.entities == ()


def test_math_and_identifiers_are_not_mangled() -> None:
    part = one("2 * 3 * 4, snake_case_name, __init__.py, **kwargs, ~2 minutes and ~3~ too")
    assert part.text == "2 * 3 * 4, snake_case_name, init.py, **kwargs, ~2 minutes and ~3~ too"


def test_rtl_text_keeps_order_and_formatting() -> None:
    part = one("שלום **עולם** and مرحبا *بالعالم*")
    assert part.text == "שלום עולם and مرحبا بالعالم"
    assert covered(part, "bold") == ["עולם"]
    assert covered(part, "italic") == ["بالعالم"]


def test_offsets_are_in_utf16_units_after_emoji() -> None:
    part = one("🚀👍🏽 **bold** 𝕏")
    assert covered(part, "bold") == ["bold"]
    assert part.entities[0]["offset"] == 7  # 🚀=2, 👍=2, 🏽=2, space=1


# --- partial / malformed input --------------------------------------------------------------


def test_unclosed_fence_renders_the_rest_as_code() -> None:
    part = one("Here:\n```python\ndef f(x):\n    return x * 2 **")
    assert covered(part, "pre") == ["def f(x):\n    return x * 2 **"]


def test_unclosed_bold_is_literal_and_becomes_bold_when_closed() -> None:
    assert one("This is **important").text == "This is **important"
    assert covered(one("This is **important**"), "bold") == ["important"]


@pytest.mark.parametrize(
    "markdown",
    [
        "**bold _mixed* text__",
        "*a **b* c**",
        "[unfinished](https://exa",
        "`unclosed code",
        "> quote\n>> nested **bold\n> end",
        "``` \n",
        "- [x] done\n- [ ] todo\n* \n",
        "<b><i>html</b></i> &amp; &bogus;",
        "a\r\nb\rc\x00d",
        "lone \ud83d surrogate",
        "| a |\n|---|\n| `x` **y** [z](https://z.io) |",
        "***",
        "![](https://example.com/i.png)",
    ],
)
def test_malformed_markdown_still_gives_valid_messages(markdown: str) -> None:
    for part in render(markdown):
        assert_valid(part)


def test_deep_nesting_does_not_blow_up() -> None:
    parts = render("> " * 200 + "- " * 300 + "deep")
    for part in parts:
        assert_valid(part)
    assert parts[-1].text.endswith("deep")
    assert sum(len(p.text) for p in parts) < 20 * 300  # indentation is capped, not quadratic


def test_nothing_to_send_gives_no_parts() -> None:
    assert render("") == []
    assert render(" \n\n ") == []
    assert render("```python\n") == []


# --- splitting ------------------------------------------------------------------------------


def long_reply() -> str:
    chunks = []
    for i in range(6):
        chunks.append(f"## Step {i}\n\n" + "Some **explanation** of the step. " * 20)
        body = "\n".join(f"    value_{i}_{j} = compute({j})  # line {j}" for j in range(30))
        chunks.append(f"```python\ndef step_{i}():\n{body}\n```")
    return "\n\n".join(chunks)


def test_long_reply_splits_into_valid_parts_without_losing_text() -> None:
    md = long_reply()
    assert len(md) > 10_000
    parts = render(md)
    assert len(parts) >= 3
    for part in parts:
        assert_valid(part)
    whole = render(md, limit=1_000_000)[0].text
    assert squash("".join(p.plain for p in parts)) == squash(whole)


def test_code_block_cut_by_a_split_is_reopened_with_its_language() -> None:
    parts = render(long_reply())
    code_lines = set(re.findall(r"value_\d+_\d+ = compute\(\d+\)  # line \d+", long_reply()))
    seen = set()
    for part in parts:
        for e in part.entities:
            if e["type"] == "pre":
                assert e.get("language") == "python"
                seen.update(
                    re.findall(
                        r"value_\d+_\d+ = compute\(\d+\)  # line \d+",
                        u16_slice(part.text, e["offset"], e["length"]),
                    )
                )
    assert seen == code_lines  # every code line is rendered as code in some part


def test_split_prefers_paragraphs_then_lines_then_sentences_then_words() -> None:
    para = ("word " * 30).strip()  # 149 characters
    parts = render_plain(f"{para}\n\n{para}\n\n{para}", limit=400)
    assert parts == [f"{para}\n\n{para}", para]  # not "\n"-cut inside the third paragraph
    assert render_plain("a line\n" * 100, limit=50)[0] == "\n".join(["a line"] * 7)
    words = render_plain("alpha beta gamma delta", limit=12)
    assert words == ["alpha beta", "gamma delta"]
    sentences = render_plain("Lorem ipsum dolor. Sit amet consectetur", limit=25)
    assert sentences == ["Lorem ipsum dolor.", "Sit amet consectetur"]
    # A boundary near the start of the window would leave a tiny part: a later one wins.
    assert render_plain("Hi.\n\n" + "word " * 20, limit=60)[0].startswith("Hi.\n\nword word")
    assert render_plain("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_keeps_headings_and_intro_lines_with_what_follows() -> None:
    body = "text " * 30
    parts = render(f"{body}\n\n## Heading\n\n{body}", limit=200)
    assert parts[1].text.startswith("Heading")
    plain = render_plain(f"{body}\n\nHere is the code:\n\n{body}", limit=200)
    assert plain[1].startswith("Here is the code:")


def test_split_never_breaks_surrogate_pairs_or_emoji_sequences() -> None:
    text = "😀" * 10
    parts = render_plain(text, limit=5)
    assert parts == ["😀😀", "😀😀", "😀😀", "😀😀", "😀😀"]
    family = "👨\u200d👩\u200d👧"  # one visible family emoji
    parts = render_plain("ab" + family * 3, limit=9)
    assert "".join(parts) == "ab" + family * 3
    assert all(utf16_len(p) <= 9 for p in parts)
    assert all(not p.startswith("\u200d") and not p.endswith("\u200d") for p in parts)
    parts = render_plain("e\u0301" * 10, limit=5)  # e + combining acute
    assert all(not p.startswith("\u0301") for p in parts)


def test_split_counts_utf16_not_code_points() -> None:
    md = "**" + "𝕏" * 3000 + "**"  # 3000 code points, 6000 UTF-16 units
    parts = render(md)
    assert len(parts) == 2
    for part in parts:
        assert_valid(part)
        assert covered(part, "bold") == [part.text]


def test_splitting_is_stable_while_streaming() -> None:
    md = long_reply()
    final = render(md)
    for cut in range(5_000, len(md), 733):
        partial = render(md[:cut])
        for earlier, now in zip(partial[:-1], final, strict=False):
            assert earlier == now
        for part in partial:
            assert_valid(part)


def test_streaming_prefixes_of_a_typical_reply_are_all_valid() -> None:
    md = (
        "Sure! **Steps**:\n\n1. Install `x`\n2. Run [this](https://e.org/a_(b))\n\n"
        "```bash\npip install x && x --help\n```\n\n> Note: *done* ~~maybe~~ 🚀\n\n"
        "| a | b |\n|-|-|\n|1|2|"
    )
    for cut in range(len(md) + 1):
        for part in render(md[:cut]):
            assert_valid(part)


def test_too_many_entities_keep_code_and_links_first() -> None:
    md = " ".join(f"*i{n}* `c{n}`" for n in range(80))
    (part,) = render(md)
    assert_valid(part)
    kinds = Counter(e["type"] for e in part.entities)
    assert kinds["code"] == 80 and kinds["italic"] == 20


def test_limit_must_leave_room_for_one_character() -> None:
    with pytest.raises(ValueError):
        render("x", limit=1)


# --- properties -----------------------------------------------------------------------------

TOKENS = [*"ab שׁ*_~`[]()#>-!\\ \n", "\n\n", "😀", "👍🏽", "e\u0301", "```", "**", "1. ", "- "]
MARKDOWNISH = st.lists(st.sampled_from(TOKENS), max_size=150).map("".join)
LETTERS = set("abשׁ😀👍🏽é\u0301")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(md=MARKDOWNISH, limit=st.integers(min_value=2, max_value=120))
@example(md="~~~`a", limit=2)  # a tilde fence's info string may hold backticks
def test_property_parts_fit_entities_valid_nothing_lost(md: str, limit: int) -> None:
    parts = render(md, limit)
    for part in parts:
        assert_valid(part, limit)
    whole = render(md, limit=1_000_000)
    whole_text = whole[0].text if whole else ""
    assert squash("".join(p.text for p in parts)) == squash(whole_text)
    # Markup characters may be consumed; letters and emoji never are, except a fence's
    # info string (it becomes the code block's language). Link targets are shown.
    content = re.sub(r"`{3,}[^`\n]*|~{3,}[^\n]*", "", md)
    source = Counter(c for c in content if c in LETTERS)
    shown = Counter(c for c in whole_text if c in LETTERS)
    assert not source - shown, (source - shown, whole_text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), limit=st.integers(min_value=2, max_value=100))
def test_property_plain_split_keeps_everything(text: str, limit: int) -> None:
    parts = render_plain(text, limit)
    assert all(0 < utf16_len(p) <= limit for p in parts)
    clean = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    assert squash("".join(parts)) == squash(clean.replace("\r", ""))


def test_entity_typeddict_shape() -> None:
    entity: Entity = {"type": "bold", "offset": 0, "length": 1}
    assert Part("x", (entity,)).entities[0]["type"] == "bold"
