"""Pure parts of reasoning models and /continue: the thought/answer splitter
(llm/reasoning.py), the thought quoted above the answer (render/thought.py), and joining a
continuation to the answer it continues (engine/continuation.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telegram_bot.engine.continuation import Continuation
from telegram_bot.llm.reasoning import ThoughtSplitter, split_thought
from telegram_bot.telegram_adapter.render import render, utf16_len, with_thought


def fed(*deltas: str) -> ThoughtSplitter:
    splitter = ThoughtSplitter()
    for delta in deltas:
        splitter.feed(delta)
    splitter.finish()
    return splitter


def test_inline_thought_is_not_the_answer() -> None:
    assert split_thought("<think>Let me add 2 and 2.</think>\n\nIt is 4.") == (
        "It is 4.",
        "Let me add 2 and 2.",
    )


def test_tags_split_across_deltas() -> None:
    splitter = fed("<th", "ink>hm", "m, four</th", "ink>", "\n\n", "Four", ".")
    assert (splitter.answer, splitter.thought) == ("Four.", "hmm, four")


def test_a_stream_that_starts_inside_an_unclosed_thought() -> None:
    """The chat template opened <think> in the prompt: only its </think> shows."""
    splitter = ThoughtSplitter()
    splitter.feed("Okay, the user wants ")
    assert splitter.answer == "Okay, the user wants "  # not known to be thought yet
    splitter.feed("a greeting.</think>Hello!")
    splitter.finish()
    assert (splitter.answer, splitter.thought) == ("Hello!", "Okay, the user wants a greeting.")


def test_while_thinking_nothing_of_the_thought_shows_as_answer() -> None:
    splitter = ThoughtSplitter()
    splitter.feed("<think>step one, ")
    assert splitter.thinking and splitter.answer == ""
    assert splitter.thought == "step one,"


def test_an_unfinished_thought_stays_thought() -> None:
    """A model cut at the output limit while still thinking has no answer."""
    assert split_thought("<think>still going") == ("", "still going")


def test_plain_answers_and_tags_inside_an_answer_are_text() -> None:
    assert split_thought("Use <think> tags like <this>.") == ("Use <think> tags like <this>.", "")
    assert fed("a <", " b").answer == "a < b"
    assert fed("x <", "/th").answer == "x </th"


@given(
    thought=st.text(alphabet="ab <>/\n", max_size=30).filter(lambda t: "</think>" not in t),
    answer=st.text(alphabet="ab <>/\n", min_size=1, max_size=30).filter(
        lambda t: t.strip() and "</think>" not in t
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=8),
)
def test_any_chunking_gives_the_same_split(thought: str, answer: str, cuts: list[int]) -> None:
    content = f"<think>{thought}</think>{answer}"
    points = sorted({min(c, len(content)) for c in cuts})
    deltas = [content[a:b] for a, b in zip([0, *points], [*points, len(content)], strict=True)]
    splitter = fed(*deltas)
    assert (splitter.answer, splitter.thought) == (answer.lstrip(), thought.strip())


# -- the thought above the answer (SHOW_REASONING=collapsed) ------------------------------------


def test_a_thought_goes_above_the_answer_in_its_first_message() -> None:
    [part] = with_thought(render("It is **4**."), "Two and two.", 4096)
    assert part.text == "Two and two.\n\nIt is 4."
    assert [(e["type"], e["offset"], e["length"]) for e in part.entities] == [
        ("expandable_blockquote", 0, 12),
        ("bold", 20, 1),
    ]


def test_a_thought_beside_a_full_first_message_gets_its_own() -> None:
    answer = render("word " * 900)  # fills the first message
    parts = with_thought(answer, "a long thought " * 400, 4096)
    assert len(parts) == len(answer) + 1 and parts[1:] == answer
    quote = parts[0]
    assert utf16_len(quote.text) <= 4096 and quote.text.startswith("…")
    assert quote.entities == ({"type": "expandable_blockquote", "offset": 0, "length": 4096},)


# -- /continue: joining the halves --------------------------------------------------------------


def test_a_continuation_joins_where_the_answer_stopped() -> None:
    cut = Continuation("The quick brown fox jumps ov")
    assert cut.join("er the lazy dog.") == (
        "er the lazy dog.",
        "The quick brown fox jumps over the lazy dog.",
    )


def test_a_continuation_that_repeats_the_end_has_the_repetition_dropped() -> None:
    cut = Continuation("The quick brown fox jumps ov")
    shown, whole = cut.join("fox jumps over the lazy dog.")
    assert whole == "The quick brown fox jumps over the lazy dog." and shown == "er the lazy dog."
    assert cut.join("a cat")[1] == "The quick brown fox jumps ova cat", "short overlaps are text"


def test_the_model_reads_the_end_of_an_answer_too_long_for_a_small_window() -> None:
    text = "".join(f"line {n}\n" for n in range(400))
    cut = Continuation.of(text, 100, "gpt-4o-mini")
    assert cut.text == text and cut.shown.startswith("…") and text.endswith(cut.shown[1:])
    assert cut.cost("gpt-4o-mini") < 200
