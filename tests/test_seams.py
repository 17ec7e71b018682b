"""Where the features meet: groups × memory × stop/retry × usage limits × migration.

Each test drives the real bot over the fake servers through a path that crosses two features
(a summary call in a group's usage, /retry after group chatter, a migration with usage on
both ids, a command that only looks like /stop).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.fakes import FakeOpenAI, FakeTelegram, Reply
from tests.fakes import _telegram_objects as objects
from tests.harness import RunningBot, eventually
from tests.test_admin import ANONYMOUS_ADMIN_BOT
from tests.test_groups import ALICE, BOB, CAROL, GROUP, mention, replied_to, replies, say, sent
from tests.test_memory import SMALL, filler, is_summary, summariser

Query = Callable[..., list[tuple[Any, ...]]]
Factory = Callable[..., RunningBot]
SLOW = Reply(
    "This answer goes on and on, one slow word after another. " * 40,
    chunk_chars=6,
    delay_per_chunk=0.2,
)


def texts(tg: FakeTelegram, chat: int = GROUP) -> list[str]:
    return [tg.visible_text(c) for c in sent(tg, chat)]


async def test_summary_calls_are_booked_to_the_group_and_count_against_its_limit(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice talked about gardening.")
    asked = 0
    while not [r for r in ai.requests if is_summary(r)]:
        say(tg, ALICE, f"@test_bot {filler(asked)}")
        asked += 1
        await replies(tg, asked)
        assert asked < 20, "the history passed its budget but nothing was folded"
    calls = len(ai.requests)
    sql = "SELECT SUM(calls), SUM(prompt_tokens) FROM usage WHERE chat_id = ?"
    booked = await eventually(lambda: db(sql, (GROUP,))[0], lambda row: row[0] == calls)
    assert booked[1] == sum(r.prompt_tokens for r in ai.requests), "summary prompts included"
    rows = db("SELECT user_id, calls FROM usage WHERE chat_id = ? ORDER BY user_id", (GROUP,))
    assert rows[0] == (0, calls - asked), "summaries are charged to the chat, not to Alice"
    await bot.stop()

    # The group's daily limit sees the summaries: with the chat's answers alone under it, the
    # next question is still refused, and nothing reaches the model.
    answers = db("SELECT SUM(prompt_tokens + completion_tokens) FROM usage WHERE user_id != 0")
    bot = await bot_factory(**SMALL, daily_token_limit_chat=answers[0][0] + 1).start()
    say(tg, BOB, "@test_bot one more?")
    await replies(tg, asked + 1)
    assert "This chat has used today's allowance" in texts(tg)[-1]
    assert len(ai.requests) == calls
    await bot.stop()


async def test_a_command_that_merely_starts_with_stop_waits_its_turn(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue(SLOW)
    tg.send_text(ALICE, "write an essay", user_id=ALICE)
    drafts = await tg.wait_for("sendMessageDraft", count=2)
    tg.send_command(ALICE, "/stopwatch", user_id=ALICE)
    # Give a queue-jumping /stopwatch ample chances to be answered while the essay streams.
    await tg.wait_for("sendMessageDraft", count=len(drafts) + 4)
    tg.send_command(ALICE, "/stop", user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: c.chat_id == ALICE and not c.failed, count=3)
    said = [tg.visible_text(c) for c in tg.calls_to("sendMessage") if not c.failed]
    essay = SLOW.text
    assert essay.startswith(said[0]) and len(said[0]) < len(essay), "/stop jumped the queue"
    assert said[1] == "Stopped.", "confirmed below the stopped text"
    assert said[2].startswith("I don't know /stopwatch"), "answered after the essay, in order"


async def test_in_a_group_only_the_asker_stops_a_reply(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue(SLOW)
    say(tg, ALICE, "@test_bot write an essay")
    await tg.wait_for("editMessageText", lambda c: c.chat_id == GROUP, count=2)
    say(tg, BOB, "/stop")
    say(tg, BOB, "/stop@other_bot")
    await tg.wait_for(
        "sendMessage", lambda c: c.chat_id == GROUP and "Only the person" in tg.visible_text(c)
    )
    say(tg, ALICE, "/stop")
    await tg.wait_for(
        "sendMessage", lambda c: c.chat_id == GROUP and tg.visible_text(c) == "Stopped."
    )
    notes = texts(tg)[1:]  # after the streamed essay
    assert notes == ["Only the person who asked can stop this answer.", "Stopped."]
    sql = "SELECT status FROM messages WHERE role = 'assistant'"
    assert await eventually(lambda: db(sql), bool) == [("stopped",)]


async def test_retry_in_a_group_answers_the_last_question_not_the_chatter_after_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    tg.chat_admins[GROUP] = {CAROL}
    ai.responder = lambda request: f"re: {request.last_user_text}"
    asked = say(tg, ALICE, "@test_bot name a prime")
    await replies(tg, 1)
    say(tg, BOB, "lunch anyone?")  # overheard, not a question for the bot
    await eventually(lambda: db("SELECT COUNT(*) FROM messages")[0][0], lambda n: n == 3)

    say(tg, BOB, "/retry")  # not the asker, not an admin
    [refusal] = (await replies(tg, 2))[1:]
    assert "Only the person who asked" in tg.visible_text(refusal)
    assert len(ai.requests) == 1, "a refused retry reaches no model"

    say(tg, ALICE, "/retry")
    again = (await replies(tg, 3))[2]
    assert tg.visible_text(again) == "re: Alice: name a prime"
    assert ai.requests[-1].messages[-1]["content"] == "Alice: name a prime"
    say(tg, CAROL, "/retry")  # an admin may regenerate anyone's answer
    await replies(tg, 4)
    assert ai.requests[-1].last_user_text == "Alice: name a prime"
    sql = "SELECT archived FROM messages WHERE role = 'assistant' ORDER BY id"
    # The replaced answer is archived just after the new one is stored: wait for both.
    rows = await eventually(lambda: db(sql), lambda r: r == [(1,), (1,), (0,)])
    assert rows == [(1,), (1,), (0,)], "each retry replaced the answer before it"
    assert replied_to(sent(tg)[0]) == asked


async def test_migration_adds_up_usage_both_ids_had_on_the_same_day(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    old, new = -5151, -100_5151
    say(tg, ALICE, "@test_bot in the old group", chat=old)
    await replies(tg, 1, chat=old)
    say(tg, ALICE, "@test_bot already in the supergroup", chat=new)  # before the service message
    await replies(tg, 1, chat=new)
    sql = "SELECT chat_id, prompt_tokens + completion_tokens FROM usage ORDER BY chat_id"
    before = await eventually(lambda: db(sql), lambda rows: len(rows) == 2)
    service = {"message_id": 99, "date": 1, "chat": objects.chat(old, "group")}
    tg.push_update({"message": {**service, "from": objects.user(ALICE), "migrate_to_chat_id": new}})
    after = await eventually(lambda: db(sql), lambda rows: len(rows) == 1)
    assert after == [(new, sum(total for _, total in before))], "nothing was lost in the move"
    day = datetime.now(UTC).date().isoformat()
    assert db("SELECT day, calls FROM usage") == [(day, 2)]


async def test_a_groups_daily_limit_also_holds_for_an_anonymous_admin(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    running = await bot_factory(daily_token_limit_chat=1).start()
    say(tg, ALICE, "@test_bot first question")
    await replies(tg, 1)
    said = "@test_bot and one on the house?"
    anonymous = tg.make_message(GROUP, said, user_id=ANONYMOUS_ADMIN_BOT)
    anonymous["from"] = objects.user(
        ANONYMOUS_ADMIN_BOT, "Group", username="GroupAnonymousBot", is_bot=True
    )
    anonymous["sender_chat"] = anonymous["chat"]
    anonymous["entities"] = mention(said)
    tg.push_update({"message": anonymous})
    await replies(tg, 2)
    assert "This chat has used today's allowance" in texts(tg)[-1]
    assert len(ai.requests) == 1, "nothing more reached the model"
    await running.stop()


async def test_a_migrated_group_keeps_its_summary_recall_and_memory_command(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    old, new = -6161, -100_6161
    running = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice talked about gardening; SUMMARY-MARK.")
    say(tg, ALICE, "@test_bot my locker code is 4711, remember it", chat=old)
    asked = 1
    await replies(tg, asked, chat=old)
    while not [r for r in ai.requests if is_summary(r)]:
        say(tg, ALICE, f"@test_bot {filler(asked)}", chat=old)
        asked += 1
        await replies(tg, asked, chat=old)
        assert asked < 20, "nothing was folded"
    service = {"message_id": 99, "date": 1, "chat": objects.chat(old, "group")}
    tg.push_update({"message": {**service, "from": objects.user(ALICE), "migrate_to_chat_id": new}})
    # The service message and the next question are both in the old chat's queue.
    say(tg, BOB, "/memory", chat=old)
    await replies(tg, asked + 1, chat=old)
    say(tg, BOB, "@test_bot what is the locker code?", chat=new)
    await replies(tg, 1, chat=new)
    prompt = "\n".join(str(m["content"]) for m in ai.requests[-1].messages)
    assert "SUMMARY-MARK" in prompt, "the summary followed the group"
    assert "4711" in prompt, "the early fact still reaches the prompt in the supergroup"
    say(tg, BOB, "/memory", chat=new)
    [memory] = (await replies(tg, 2, chat=new))[1:]
    assert "SUMMARY-MARK" in tg.visible_text(memory)
    await running.stop()


async def test_retry_of_a_question_already_folded_into_the_summary_is_answered(
    bot_factory: Factory, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    """Chatter after a question can push it into the summary (a retry's answer is stored
    after the chatter, and compaction keeps only the newest turns verbatim): /retry then
    answers it with the summary as context, instead of failing."""
    running = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice asked for a prime; Bob chatted about gardens. SUMMARY-MARK")
    say(tg, ALICE, "@test_bot name a prime")
    await replies(tg, 1)
    for n in range(12):
        say(tg, BOB, filler(n))  # overheard chatter, no reply
    count = "SELECT COUNT(*) FROM messages"
    await eventually(lambda: db(count)[0][0], lambda n: n == 14)
    say(tg, ALICE, "/retry")
    await replies(tg, 2)
    folded = "SELECT summarised FROM messages WHERE text = 'name a prime'"
    await eventually(lambda: db(folded), lambda rows: rows == [(1,)])

    say(tg, ALICE, "/retry")
    [again] = (await replies(tg, 3))[2:]
    assert tg.visible_text(again).startswith("Noted"), tg.visible_text(again)
    request = ai.requests[-1]
    assert not is_summary(request)
    assert request.messages[-1] == {"role": "user", "content": "Alice: name a prime"}
    assert "SUMMARY-MARK" in request.messages[0]["content"], "the summary is the context"
    sql = "SELECT archived FROM messages WHERE role = 'assistant' ORDER BY id"
    # The replaced answer is archived just after the new one is stored: wait for both.
    rows = await eventually(lambda: db(sql), lambda r: r == [(1,), (1,), (0,)])
    assert rows == [(1,), (1,), (0,)], "the new answer replaced the one before it"
    await running.stop()
