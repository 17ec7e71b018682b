"""Long conversations end to end: budget, rolling summaries, recall, the window guarantee.

The real bot runs against the fake servers; the fake model plays a summariser when it receives
a summary request (recognised by its instructions), so the summaries are whatever that fake
writes, and every assertion is about what reached the model or the user. Every test runs on
SQLite and on PostgreSQL (`every_backend`): recall, summaries and token factors are the store's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date
from typing import Any

from telegram_bot import tokens
from telegram_bot.memory.compose import RECALL_HEADER, SUMMARY_RECALL_HEADER
from telegram_bot.models import Author, ChatKey, NewSummary, NewTurn, Role
from tests.databases import Database, every_backend
from tests.fakes import ChatRequest, Error, FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.test_private_chat import ALICE, BOB, ask, final_messages

__all__ = ["every_backend"]  # the `database` fixture: these tests run on every backend

Query = Callable[..., list[tuple[Any, ...]]]
SMALL = {"history_token_budget": 300, "summary_token_budget": 200, "recall_token_budget": 200}


def is_summary(request: ChatRequest) -> bool:
    first = request.messages[0].get("content", "") if request.messages else ""
    return isinstance(first, str) and first.startswith("You maintain the running summary")


def chat_requests(ai: FakeOpenAI) -> list[ChatRequest]:
    return [r for r in ai.requests if not is_summary(r)]


def prompt_text(request: ChatRequest) -> str:
    return "\n".join(str(m.get("content", "")) for m in request.messages)


def summariser(summary: str | Callable[[ChatRequest], Any]) -> Callable[[ChatRequest], Any]:
    """A responder: summary requests get `summary`, chat requests a short answer."""

    def respond(request: ChatRequest) -> Any:
        if is_summary(request):
            return summary(request) if callable(summary) else summary
        return f"Noted ({len(request.messages)})."

    return respond


def filler(i: int) -> str:
    return (
        f"Filler message {i}: let us talk about gardening, tomatoes, compost, seedlings and how "
        "the weather changed over the last few days here."
    )


async def seed(
    database: Database, chat: ChatKey, texts: list[str], model: str = "gpt-4o-mini"
) -> list[int]:
    """Stores earlier turns (user and assistant alternating) the way the bot would."""
    store = database.store()
    await store.open()
    ids = []
    for i, text in enumerate(texts):
        count = tokens.count_message(text, model)
        if i % 2 == 0:
            turn = NewTurn(chat, Role.USER, text, count, author=Author(chat.chat_id, "Alice"))
            ids.append((await store.add_user_turn(turn)).id)
        else:
            turn = NewTurn(chat, Role.ASSISTANT, text, count, reply_to=ids[-1])
            ids.append(await store.add_reply(turn, user_id=None, day=date.today()))
    await store.close()
    return ids


async def test_compaction_folds_old_turns_into_a_persisted_summary(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice talked about gardening; SUMMARY-MARK.")
    turn = 0
    while not [r for r in ai.requests if is_summary(r)]:
        await ask(tg, ALICE, filler(turn))
        turn += 1
        assert turn < 20, "the verbatim turns passed the budget but nothing was folded"
    [request] = [r for r in ai.requests if is_summary(r)]
    assert "<transcript>" in request.messages[1]["content"]
    assert filler(0) in request.messages[1]["content"]
    summaries = await eventually(
        lambda: db(
            "SELECT text, first_message_id, last_message_id, messages_covered FROM summaries"
        ),
        bool,
    )
    [(text, first, last, covered)] = summaries
    assert text == "Alice talked about gardening; SUMMARY-MARK."
    marked = db("SELECT id FROM messages WHERE summarised ORDER BY id")
    assert [row[0] for row in marked] == list(range(first, last + 1))
    assert covered == len(marked)
    count = "SELECT COUNT(*) FROM messages WHERE chat_id = ?"
    await eventually(lambda: db(count, (ALICE,))[0][0], lambda n: n == 2 * turn)  # none deleted
    # The low-water mark: right after the fold at most half the budget stayed verbatim (one
    # more exchange may have been stored since).
    live = db("SELECT SUM(tokens) FROM messages WHERE NOT summarised AND chat_id = ?", (ALICE,))
    assert live[0][0] <= SMALL["history_token_budget"] // 2 + 60

    await bot.restart()  # the summary and the marks live in the database
    await ask(tg, ALICE, "What did we talk about?")
    prompt = chat_requests(ai)[-1]
    system = prompt.messages[0]["content"]
    assert SUMMARY_RECALL_HEADER in system and "SUMMARY-MARK" in system
    assert filler(0) not in prompt_text(prompt), "folded turns are not resent verbatim"
    assert db("SELECT COUNT(*) FROM messages WHERE summarised")[0][0] == len(marked)
    await bot.stop()


async def test_a_fact_from_turn_5_is_recalled_at_turn_200(
    bot_factory: Callable[..., RunningBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    database: Database,
) -> None:
    texts = [filler(i) if i != 4 else "By the way, my dog's name is Biscuit." for i in range(198)]
    ids = await seed(database, ChatKey(ALICE), texts)
    store = database.store()  # an older, lossy summary that forgot the dog
    await store.open()
    await store.save_summary(
        NewSummary(ChatKey(ALICE), "Alice likes gardening.", 6, ids[0], ids[150])
    )
    await store.close()
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice likes gardening.")
    [reply] = await ask(tg, ALICE, "What was my dog's name again?")
    assert tg.visible_text(reply).startswith("Noted")
    [system, *_, last] = [m["content"] for m in chat_requests(ai)[-1].messages]
    # The summary's header says how recalled lines read; they follow the message, bare.
    assert SUMMARY_RECALL_HEADER in system and RECALL_HEADER not in last
    question, recalled = last.split("\n\n<recalled_messages>\n", 1)
    assert 'Alice: "By the way, my dog\'s name is Biscuit."' in recalled
    assert "Biscuit" not in system, "recalled lines are never in the system message"
    assert question == "What was my dog's name again?", "the message itself comes first"
    await bot.stop()


async def test_recall_finds_turns_the_window_dropped_when_there_is_no_summary(
    bot_factory: Callable[..., RunningBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    database: Database,
) -> None:
    texts = [filler(i) if i != 4 else "By the way, my dog's name is Biscuit." for i in range(40)]
    await seed(database, ChatKey(ALICE), texts)
    bot = await bot_factory(**{**SMALL, "summary_token_budget": 0}).start()
    ai.responder = summariser("unused")
    await ask(tg, ALICE, "What was my dog's name again?")
    [system, *_, last] = [m["content"] for m in chat_requests(ai)[-1].messages]
    assert "<conversation_summary>" not in system, "no summary to explain recall"
    question, recalled = last.split(f"\n\n{RECALL_HEADER}\n", 1)  # so the lines explain it
    assert question == "What was my dog's name again?"
    assert 'Alice: "By the way, my dog\'s name is Biscuit."' in recalled
    await bot.stop()


async def test_an_old_turn_beyond_the_prompts_read_is_still_folded(
    bot_factory: Callable[..., RunningBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    database: Database,
) -> None:
    # The prompt reads the newest 2 x 300 + 16,000 tokens of unsummarised turns, compaction
    # up to 10 x 300 + 16,000: a pasted document in between is only seen by compaction's own
    # read, which must still happen although the turns the prompt saw fit the budget.
    document = "DOC-START " + "tomato compost seedling " * 4_450
    assert 16_600 < tokens.count_message(document, "gpt-4o-mini") < 19_000
    await seed(database, ChatKey(ALICE), [document, "Got it."])
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice pasted a document about tomatoes.")
    await ask(tg, ALICE, "Thanks!")
    [request] = await eventually(lambda: [r for r in ai.requests if is_summary(r)], bool)
    assert "DOC-START" in request.messages[1]["content"]
    assert "DOC-START" not in prompt_text(chat_requests(ai)[-1]), "too long to be sent verbatim"
    await bot.stop()


async def test_recall_never_crosses_chats_or_a_reset(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("They chatted.")  # a summariser that forgets everything
    await ask(tg, ALICE, "The code for the garage door is 4471.")
    for i in range(8):
        await ask(tg, ALICE, filler(i))
    await ask(tg, ALICE, "What is the garage door code?")
    last = chat_requests(ai)[-1].messages[-1]["content"]
    assert "4471" in last.split("<recalled_messages>")[-1], "recalled in its own chat"
    await ask(tg, BOB, "What is the garage door code?")
    assert "4471" not in prompt_text(chat_requests(ai)[-1])
    await ask(tg, ALICE, "/reset")
    await ask(tg, ALICE, "What is the garage door code?")
    assert "4471" not in prompt_text(chat_requests(ai)[-1])
    await bot.stop()


async def test_a_context_length_error_leads_to_compaction_and_a_successful_retry(
    bot_factory: Callable[..., RunningBot],
    tg: FakeTelegram,
    ai: FakeOpenAI,
    database: Database,
    db: Query,
) -> None:
    window = 2000
    texts = [filler(i) for i in range(80)]
    await seed(database, ChatKey(ALICE), texts)
    bot = await bot_factory(
        model_context_window=window,
        max_output_tokens=200,
        history_token_budget=1500,
        summary_token_budget=150,
        recall_token_budget=0,
    ).start()
    ai.context_window = window
    ai.token_factor = 1.8  # a local model whose tokenizer counts 80% more than tiktoken
    ai.responder = summariser("Alice talked about gardening at length.")
    [reply] = await ask(tg, ALICE, "Still there?")
    assert tg.visible_text(reply).startswith("Noted"), "the retry answered"
    first, second = chat_requests(ai)[:2]
    assert first.prompt_tokens + 200 > window, "the first attempt overflowed the server"
    assert second.prompt_tokens + 200 <= window
    await eventually(lambda: db("SELECT COUNT(*) FROM summaries")[0][0], bool)
    for i in range(3):  # and from now on every prompt fits
        await ask(tg, ALICE, filler(100 + i))
    later = chat_requests(ai)[2:]
    assert all(r.prompt_tokens + 200 <= window for r in later)
    assert "try again" not in " ".join(tg.visible_text(c) for c in final_messages(tg, ALICE))
    await bot.stop()


async def test_the_correction_factor_converges_on_a_tokenizer_counting_more(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    window = 1500
    bot = await bot_factory(
        model_context_window=window,
        max_output_tokens=200,
        history_token_budget=1200,
        summary_token_budget=150,
        recall_token_budget=100,
    ).start()
    ai.context_window = window
    ai.token_factor = 1.3
    ai.responder = summariser("Alice talked about gardening.")
    for i in range(14):
        await ask(tg, ALICE, filler(i) + " " + filler(i + 1))
    requests = chat_requests(ai)
    overflowed = [r for r in requests if r.prompt_tokens + 200 > window]
    assert len(overflowed) <= 1, "at most the first exchange may overflow"
    assert all(r.prompt_tokens + 200 <= window for r in requests[2:])
    # ...and the room is used, not wasted: the later prompts fill most of what is allowed.
    assert max(r.prompt_tokens for r in requests[-4:]) > 0.5 * (window - 200)
    texts = [tg.visible_text(c) for c in final_messages(tg, ALICE)]
    assert len(texts) == 14 and all(t.startswith("Noted") for t in texts)
    # The factor is remembered across a restart: a big first message after it does not
    # overflow (with a forgotten factor of 1.0 this prompt would be counted 1.3x too low).
    await bot.restart()
    before = len(ai.requests)
    await ask(tg, ALICE, "Keep this list: " + " ".join(f"item{i}" for i in range(380)))
    after_restart = [r for r in ai.requests[before:] if not is_summary(r)]
    assert after_restart[0].prompt_tokens + 200 <= window
    await bot.stop()


async def test_a_failing_summary_call_does_not_block_the_reply(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser(lambda _request: Error(status=500))
    for i in range(10):
        [reply] = await ask(tg, ALICE, filler(i))
        assert tg.visible_text(reply).startswith("Noted")
    assert [r for r in ai.requests if is_summary(r)], "compaction was attempted"
    assert db("SELECT COUNT(*) FROM summaries") == [(0,)]
    assert db("SELECT COUNT(*) FROM messages WHERE summarised") == [(0,)]
    count = "SELECT COUNT(*) FROM messages WHERE chat_id = ?"
    await eventually(lambda: db(count, (ALICE,)), lambda rows: rows == [(20,)])
    # The oldest turns were dropped from the prompt (not from the database).
    verbatim = chat_requests(ai)[-1].messages[1:]
    assert filler(0) not in "\n".join(m["content"] for m in verbatim)
    assert tokens.count_messages(verbatim) <= SMALL["history_token_budget"] + 50
    # When the summariser works again, a later turn retries and catches up.
    ai.responder = summariser("Recovered summary.")
    for i in range(10, 16):
        await ask(tg, ALICE, filler(i))
    rows = await eventually(lambda: db("SELECT text FROM summaries"), bool)
    assert rows[-1] == ("Recovered summary.",)
    await bot.stop()


async def test_memory_command_shows_budget_coverage_and_the_summary(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = summariser("Alice grows tomatoes; she asked about the weather.")
    [status] = await ask(tg, ALICE, "/memory")
    text = tg.visible_text(status)
    assert "No summary yet" in text and "of 300 tokens" in text
    for i in range(8):
        await ask(tg, ALICE, filler(i))
    [status] = await ask(tg, ALICE, "/memory")
    text = tg.visible_text(status)
    assert "of 200 tokens, covering" in text and "earlier messages" in text
    assert "Alice grows tomatoes; she asked about the weather." in text
    [menu] = await tg.wait_for("setMyCommands")
    assert "memory" in {c["command"] for c in menu.params["commands"]}
    assert not [r for r in chat_requests(ai) if "/memory" in prompt_text(r)]
    await bot.stop()


async def test_an_unknown_local_model_name_just_works(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(openai_model="my-finetune:q4_K_M", max_output_tokens=100_000).start()
    assert dataclasses.replace(bot.settings).context_window == 8192
    [reply] = await ask(tg, ALICE, "hello there")
    assert tg.visible_text(reply) == "Echo: hello there"
    [request] = ai.requests
    assert request.model == "my-finetune:q4_K_M"
    assert request.body["max_tokens"] == 4096, "the reply reservation is capped at half the window"
    await bot.stop()


async def test_a_message_too_long_for_the_window_gets_a_clear_answer(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(model_context_window=512, max_output_tokens=128).start()
    [notice] = await ask(tg, ALICE, "word " * 600)
    assert "too long for this model" in tg.visible_text(notice)
    assert ai.requests == [], "nothing the window cannot hold is ever sent"
    assert db("SELECT COUNT(*) FROM messages WHERE chat_id = ?", (ALICE,)) == [(1,)]
    [reply] = await ask(tg, ALICE, "short one")
    assert tg.visible_text(reply) == "Echo: short one"
    await bot.stop()


def sectioned_summariser() -> Callable[[ChatRequest], Any]:
    """Summary requests: an appended section (asked for the new turns alone) gets a numbered
    section, a write or consolidation a long text the bot must cut to its share of the budget."""
    calls: list[str] = []

    def respond(request: ChatRequest) -> Any:
        if not is_summary(request):
            return f"Noted ({len(request.messages)})."
        data = str(request.messages[1]["content"])
        kind = "section" if "<summary_so_far>" in data else "whole"
        calls.append(kind)
        return f"{kind}-{len(calls)} " + "gardening tomatoes " * 100

    respond.calls = calls  # type: ignore[attr-defined]
    return respond


async def test_a_fold_appends_to_the_summary_so_the_system_message_stays_a_prefix(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(**SMALL).start()
    ai.responder = respond = sectioned_summariser()
    await ask(tg, ALICE, "The code for the garage door is 4471.")
    systems: list[str] = []
    turn = 0
    while "whole" not in respond.calls[1:]:  # the first write, appends, then a consolidation
        await ask(tg, ALICE, filler(turn))
        systems.append(str(chat_requests(ai)[-1].messages[0]["content"]))
        turn += 1
        assert turn < 60, "the summary never passed its budget"
    assert respond.calls[:2] == ["whole", "section"]
    # Across the fold that appended, the persona and the summary so far stayed a prefix of
    # the system message (a server's prompt cache reuses them); the section follows them.
    with_summary = [s for s in systems if SUMMARY_RECALL_HEADER in s]
    appended = next(s for s in with_summary if "section-2" in s)
    before = with_summary[with_summary.index(appended) - 1]
    assert "whole-1" in before and "section-2" not in before
    kept = before.rsplit("\n</conversation_summary>", 1)[0]
    assert appended.startswith(kept + "\n\nsection-2 ")
    # The consolidation rewrote it within the budget; the fact is still found by recall.
    rows = await eventually(
        lambda: db("SELECT text, tokens FROM summaries ORDER BY id"),
        lambda rows: len(rows) >= 3,
    )
    assert rows[1][0].startswith("whole-1 ") and "\n\nsection-2 " in rows[1][0]
    consolidated = rows[2][0]
    assert consolidated.startswith("whole-3 ") and "section-" not in consolidated
    assert all(count <= SMALL["summary_token_budget"] for _text, count in rows)
    await ask(tg, ALICE, "What is the garage door code?")
    last = chat_requests(ai)[-1].messages[-1]["content"]
    assert "4471" in last.split("<recalled_messages>")[-1]
    await bot.stop()
