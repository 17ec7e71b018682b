"""Reasoning models end to end: the user sees that the model thinks, then the answer without
the thought; the thought is never stored, never sent back, and booked in /usage. The fake
model thinks in `reasoning_content` deltas (llama-server with a reasoning parser, vLLM,
DeepSeek) or inline in `<think>…</think>` (Ollama, llama.cpp without one)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes import Chunks, FakeOpenAI, FakeTelegram, Reply
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, ask

Query = Callable[..., list[tuple[Any, ...]]]
THOUGHT = "The user asks for two plus two. Two plus two is four. I should answer briefly."
ANSWER = "Two plus two is **4**."
THINKING = "💭 Thinking…"


def thinking_reply(*, inline: bool) -> Reply:
    # Slow enough that the preview shows the thinking before the answer begins.
    return Reply(
        ANSWER, reasoning=THOUGHT, think_inline=inline, chunk_chars=12, delay_per_chunk=0.05
    )


@pytest.mark.parametrize("inline", [False, True], ids=["reasoning_content", "think_tags"])
async def test_the_user_sees_thinking_then_the_answer_and_the_thought_goes_nowhere(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query, inline: bool
) -> None:
    ai.enqueue(thinking_reply(inline=inline), "You're welcome.")
    [answer] = await ask(tg, ALICE, "what is 2+2?")
    assert tg.visible_text(answer) == "Two plus two is 4."
    drafts = [tg.visible_text(c) for c in tg.calls_to("sendMessageDraft")]
    assert drafts[0] == THINKING, "not a silent wait while the model thinks"
    assert not any("plus two is four" in d for d in drafts), "the thought is never previewed"
    stored = await eventually(
        lambda: db("SELECT text FROM messages WHERE role = 'assistant'"), bool
    )
    assert stored == [(ANSWER,)]
    await ask(tg, ALICE, "thanks")
    sent = " ".join(str(m["content"]) for m in ai.requests[1].messages)
    assert ANSWER in sent and "four" not in sent and "think>" not in sent
    [usage] = await ask(tg, ALICE, "/usage")
    thinking = re.search(r"of them ([\d,]+) thinking", tg.visible_text(usage))
    assert thinking is not None, tg.visible_text(usage)
    assert int(thinking[1].replace(",", "")) > 10


async def test_a_stream_that_starts_inside_the_thought_shows_only_the_answer(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """The chat template opened <think> in the prompt: the content only closes it."""
    ai.enqueue(Chunks(["Okay, a greeting", " is wanted.</th", "ink>\n\nHello", " there!"]))
    [answer] = await ask(tg, ALICE, "hi")
    assert tg.visible_text(answer) == "Hello there!"
    stored = await eventually(
        lambda: db("SELECT text FROM messages WHERE role = 'assistant'"), bool
    )
    assert stored == [("Hello there!",)]


async def test_show_reasoning_collapsed_quotes_the_thought_above_the_answer(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(show_reasoning="collapsed").start()
    try:
        ai.enqueue(thinking_reply(inline=False))
        [answer] = await ask(tg, ALICE, "what is 2+2?")
        text = tg.visible_text(answer)
        assert text == f"{THOUGHT}\n\nTwo plus two is 4."
        entities = answer.params["entities"]
        [quote] = [e for e in entities if e["type"] == "expandable_blockquote"]
        assert (quote["offset"], quote["length"]) == (0, len(THOUGHT))
        [bold] = [e for e in entities if e["type"] == "bold"]
        assert text[bold["offset"] : bold["offset"] + bold["length"]] == "4"
        stored = await eventually(
            lambda: db("SELECT text FROM messages WHERE role = 'assistant'"), bool
        )
        assert stored == [(ANSWER,)], "shown, never stored"
    finally:
        await bot.stop()


async def test_a_model_that_thinks_past_the_output_limit_says_so(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """With buttons (edit mode), the "Thinking…" message becomes the line: nothing is left
    saying it thinks, with a Stop button, forever."""
    bot = await bot_factory(max_output_tokens=16, stop_button=True).start()
    try:
        ai.enqueue(Reply(ANSWER, reasoning=THOUGHT * 3, chunk_chars=12, delay_per_chunk=0.05))
        tg.send_text(ALICE, "what is 2+2?", user_id=ALICE)
        [edit] = await tg.wait_for(
            "editMessageText", lambda c: "output limit" in tg.visible_text(c)
        )
        assert tg.visible_text(edit) == (
            "The model spent its whole output limit thinking and wrote no answer. Please try again."
        )
        assert not edit.params.get("reply_markup")
        [placeholder] = [c for c in tg.calls_to("sendMessage") if not c.failed]
        assert tg.visible_text(placeholder) == THINKING
        assert db("SELECT text FROM messages WHERE role = 'assistant'") == []
    finally:
        await bot.stop()


async def test_without_streaming_the_thought_is_left_out_too(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(streaming=False).start()
    try:
        ai.enqueue(
            Reply(ANSWER, reasoning=THOUGHT), Reply(ANSWER, reasoning=THOUGHT, think_inline=True)
        )
        [first] = await ask(tg, ALICE, "what is 2+2?")
        [second] = await ask(tg, ALICE, "and again?")
        assert tg.visible_text(first) == tg.visible_text(second) == "Two plus two is 4."
        assert "four" not in str(ai.requests[1].messages)
    finally:
        await bot.stop()


async def test_stop_while_the_model_thinks_turns_thinking_into_stopped(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(stop_button=True).start()
    try:
        ai.enqueue(Reply(ANSWER, reasoning=THOUGHT * 20, chunk_chars=4, delay_per_chunk=0.2))
        tg.send_text(ALICE, "what is 2+2?", user_id=ALICE)
        [placeholder] = await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == THINKING)
        [[button]] = placeholder.params["reply_markup"]["inline_keyboard"]
        assert button["text"] == "⏹ Stop", "thinking can be stopped like writing"
        # The line counts the seconds, so a long think is never a still screen.
        await tg.wait_for("editMessageText", lambda c: tg.visible_text(c) == f"{THINKING} 1 s")
        tg.send_command(ALICE, "/stop", user_id=ALICE)
        [edit] = await tg.wait_for("editMessageText", lambda c: tg.visible_text(c) == "Stopped.")
        assert edit.params["message_id"] == placeholder.result["message_id"]
        assert not edit.params.get("reply_markup")
        assert [c for c in tg.calls_to("sendMessage") if not c.failed] == [placeholder]
        assert db("SELECT text FROM messages WHERE role = 'assistant'") == []
    finally:
        await bot.stop()
