"""Answers that reach the output limit, and /continue: the real bot over real HTTP against the
fakes (the fake model stops at the request's `max_tokens` with `finish_reason: length`, as a
real one does), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telegram_bot.errors import NotYourQuestion
from tests.databases import every_backend
from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.harness import RunningBot, eventually
from tests.test_groups import BOB, GROUP, replies, say
from tests.test_private_chat import ALICE, ask
from tests.test_stop_retry import CUT_SHORT

__all__ = ["every_backend"]

Query = Callable[..., list[tuple[Any, ...]]]
AT_LIMIT = "The answer reached the length limit. Send /continue for the rest."
# About 60 tokens: more than the 32 the tests allow per answer.
LISTING = " ".join(f"item{n}," for n in range(1, 40))
MORE = " ".join(f"entry{n}," for n in range(1, 40))
REST = "and that is the whole list."


def live_answers(db: Query) -> list[tuple[str, str]]:
    return db(
        "SELECT text, status FROM messages WHERE role = 'assistant' AND NOT archived "
        "AND NOT undelivered ORDER BY id"
    )


async def test_an_answer_cut_at_the_limit_says_so_and_continue_delivers_the_rest_as_one_answer(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        ai.enqueue(LISTING)
        cut, line = await ask(tg, ALICE, "list everything", replies=2)
        shown = tg.visible_text(cut)
        assert shown and LISTING.startswith(shown) and len(shown) < len(LISTING)
        assert tg.visible_text(line) == AT_LIMIT
        assert ai.requests[0].body["max_tokens"] == 32
        [(stored, status)] = await eventually(lambda: live_answers(db), bool)
        assert status == "partial" and stored == shown

        ai.enqueue(REST)
        [rest] = await ask(tg, ALICE, "/continue")
        assert tg.visible_text(rest) == REST, "only the rest is delivered, as a new message"
        asked = ai.requests[1].messages
        assert [m["role"] for m in asked[1:]] == ["user", "assistant", "user"]
        assert asked[1]["content"] == "list everything"
        assert asked[2]["content"] == stored, "the model goes on from the text so far"
        assert "Continue" in asked[3]["content"] and "repeat" in asked[3]["content"]

        # Stored as one answer: the model later sees one assistant turn with both halves.
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "complete"
        )
        assert whole == stored + REST
        ai.enqueue("You're welcome.")
        await ask(tg, ALICE, "thanks")
        history = [(m["role"], m["content"]) for m in ai.requests[2].messages[1:]]
        assert history == [
            ("user", "list everything"),
            ("assistant", stored + REST),
            ("user", "thanks"),
        ]
        archived = db("SELECT text FROM messages WHERE role = 'assistant' AND archived")
        assert archived == [(stored,)], "the cut half is kept, archived, never shown again"
    finally:
        await bot.stop()


async def test_a_cut_answer_reads_as_cut_until_it_is_continued(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        ai.enqueue(LISTING, "Fine.")
        cut, _ = await ask(tg, ALICE, "list everything", replies=2)
        await ask(tg, ALICE, "never mind")
        history = [m["content"] for m in ai.requests[1].messages[1:]]
        assert history[1] == f"{tg.visible_text(cut)} {CUT_SHORT}"
    finally:
        await bot.stop()


async def test_continue_with_nothing_to_continue_says_so(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    [line] = await ask(tg, ALICE, "/continue")
    assert tg.visible_text(line) == "Nothing to continue: my last answer here is complete."
    ai.enqueue("A whole answer.")
    await ask(tg, ALICE, "hi")
    [line] = await ask(tg, ALICE, "/continue")
    assert tg.visible_text(line) == "Nothing to continue: my last answer here is complete."
    assert len(ai.requests) == 1, "nothing was asked of the model"


async def test_the_continue_button_goes_on_and_goes_away(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32, stop_button=True).start()
    try:
        ai.enqueue(LISTING, REST)
        cut, line = await ask(tg, ALICE, "list everything", replies=2)
        assert tg.visible_text(line) == AT_LIMIT
        [[button]] = line.params["reply_markup"]["inline_keyboard"]
        assert button["text"] == "▶ Continue"
        tg.send_callback(ALICE, line.result["message_id"], button["callback_data"])
        await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == REST and not c.failed)
        [removed] = await tg.wait_for("editMessageReplyMarkup")
        assert removed.params["message_id"] == line.result["message_id"]
        assert not removed.params.get("reply_markup"), "pressed once, the button goes"
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "complete"
        )
        assert whole == tg.visible_text(cut) + REST
    finally:
        await bot.stop()


async def test_a_continuation_cut_again_can_be_continued_again(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        ai.enqueue(LISTING, MORE, REST)
        first, _ = await ask(tg, ALICE, "list everything", replies=2)
        second, line = await ask(tg, ALICE, "/continue", replies=2)
        assert tg.visible_text(line) == AT_LIMIT
        await ask(tg, ALICE, "/continue")
        assert ai.requests[2].messages[2]["content"] == (
            tg.visible_text(first) + tg.visible_text(second)
        ), "the second continuation goes on from both parts"
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "complete"
        )
        assert whole == tg.visible_text(first) + tg.visible_text(second) + REST
        assert len(db("SELECT id FROM messages WHERE role = 'assistant' AND NOT archived")) == 1
    finally:
        await bot.stop()


async def test_retry_after_a_continuation_replaces_the_whole_answer(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        ai.enqueue(LISTING, REST, "A short list.")
        await ask(tg, ALICE, "list everything", replies=2)
        await ask(tg, ALICE, "/continue")
        [again] = await ask(tg, ALICE, "/retry")
        assert tg.visible_text(again) == "A short list."
        assert [m["content"] for m in ai.requests[2].messages[1:]] == ["list everything"]
        rows = await eventually(
            lambda: live_answers(db), lambda rows: rows == [("A short list.", "complete")]
        )
        assert rows
    finally:
        await bot.stop()


async def test_stopping_a_continuation_keeps_both_parts(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        slow = Reply("more " * 25, chunk_chars=5, delay_per_chunk=0.2)
        ai.enqueue(LISTING, slow)
        cut, _ = await ask(tg, ALICE, "list everything", replies=2)
        tg.send_command(ALICE, "/continue", user_id=ALICE)
        await tg.wait_for("sendMessageDraft", lambda c: "more" in tg.visible_text(c))
        partial, confirmation = await ask(tg, ALICE, "/stop", replies=2)
        assert tg.visible_text(confirmation) == "Stopped."
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "stopped"
        )
        assert whole.rstrip() == tg.visible_text(cut) + tg.visible_text(partial)
    finally:
        await bot.stop()


async def test_in_a_group_only_the_asker_continues_with_the_button(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        ai.enqueue(LISTING, REST)
        say(tg, ALICE, "@test_bot list everything")
        cut, line = await replies(tg, 2)
        assert tg.visible_text(line) == AT_LIMIT
        [[button]] = line.params["reply_markup"]["inline_keyboard"]
        tg.send_callback(GROUP, line.result["message_id"], button["callback_data"], user_id=BOB)
        [*_, refusal] = await replies(tg, 3)
        assert tg.visible_text(refusal) == NotYourQuestion.user_message()
        assert len(ai.requests) == 1
        say(tg, ALICE, "/continue")
        [*_, rest] = await replies(tg, 4)
        assert tg.visible_text(rest) == REST
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "complete"
        )
        assert whole == tg.visible_text(cut) + REST
    finally:
        await bot.stop()


async def test_a_cut_answer_that_never_arrived_is_sent_first_then_continued(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """m010's mark: the cut answer was stored but Telegram would not take it (an hour of
    flood control). /continue sends it as it is first; the model goes on only after that."""
    bot = await bot_factory(max_output_tokens=32).start()
    try:
        tg.fail("sendMessage", status=429, retry_after=3600, when=lambda p: p["chat_id"] == ALICE)
        ai.enqueue(LISTING, REST)
        tg.send_text(ALICE, "list everything", user_id=ALICE)
        await tg.wait_for("sendMessage", lambda c: c.failed)
        query = "SELECT text, status FROM messages WHERE role = 'assistant' AND undelivered"
        [(cut, status)] = await eventually(lambda: db(query), bool)
        assert status == "partial"
        sent = await ask(tg, ALICE, "/continue")
        assert tg.visible_text(sent[0]) == cut.strip()
        assert len(ai.requests) == 1, "the stored answer is sent; the model is not asked"
        [rest] = await ask(tg, ALICE, "/continue")
        assert tg.visible_text(rest) == REST
        [(whole, _)] = await eventually(
            lambda: live_answers(db), lambda rows: rows and rows[0][1] == "complete"
        )
        assert whole == cut + REST
    finally:
        await bot.stop()
