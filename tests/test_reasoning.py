"""The thought/answer splitter of reasoning models' content (llm/reasoning.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telegram_bot.llm.reasoning import ThoughtSplitter, split_thought


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
