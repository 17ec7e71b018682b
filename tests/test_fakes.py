"""Tests of the fake Telegram and OpenAI servers themselves.

They talk to the fakes with plain aiohttp calls and with the real clients the bot uses
(python-telegram-bot's Bot, openai's AsyncOpenAI), so the fakes are known to be understood by
those clients before other tests rely on them.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import telegram
from telegram.error import BadRequest, ChatMigrated, Conflict, RetryAfter

from tests.fakes import Error, FakeOpenAI, FakeTelegram, Hang, Reply
from tests.fakes._telegram_text import TextRejected, render, utf16_len
from tests.fakes._tokens import local_count_messages
from tests.fakes.openai import ChatRequest, mask_key
from tests.fakes.telegram import NOT_MODIFIED, decode_field

TOKEN = "123:ABC"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def ai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=tg.base_url) as real_bot:
        yield real_bot


@pytest.fixture
async def client(ai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=ai.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


async def api(
    session: aiohttp.ClientSession, tg: FakeTelegram, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    """Call the fake with a JSON body, as some clients do."""
    async with session.post(f"{tg.base_url}{TOKEN}/{method}", json=params) as response:
        return response.status, await response.json()


# --------------------------------------------------------------------- Telegram: transport


async def test_wrong_token_is_unauthorized(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{tg.base_url}999:WRONG/getMe") as response:
        assert response.status == 401
        assert await response.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }
    assert tg.calls[0].failed


async def test_unknown_method_is_404_and_recorded(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    status, body = await api(http, tg, "sendTelepathy", chat_id=1)
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
    assert tg.calls[0].method == "sendTelepathy"
    assert tg.calls[0].failed


async def test_method_names_are_case_insensitive(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    status, body = await api(http, tg, "GETME")
    assert status == 200
    assert body["result"]["username"] == "test_bot"
    assert tg.calls_to("getme")[0].method == "getMe"


async def test_form_fields_are_decoded(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    form = {
        "chat_id": "42",
        "text": "[1, 2]",
        "entities": json.dumps([{"type": "bold", "offset": 0, "length": 1}]),
        "disable_notification": "true",
    }
    async with http.post(f"{tg.base_url}{TOKEN}/sendMessage", data=form) as response:
        assert response.status == 200
    [call] = tg.calls_to("sendMessage")
    assert call.params == {
        "chat_id": 42,
        "text": "[1, 2]",  # free text is never reinterpreted
        "entities": [{"type": "bold", "offset": 0, "length": 1}],
        "disable_notification": True,
    }
    assert call.raw["chat_id"] == "42"


async def test_multipart_bodies_are_decoded(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("chat_id", "-100123")
    form.add_field("reply_markup", json.dumps({"inline_keyboard": []}))
    form.add_field("document", b"hello", filename="a.txt", content_type="text/plain")
    async with http.post(f"{tg.base_url}{TOKEN}/sendDocument", data=form) as response:
        assert response.status == 404  # not implemented, but still recorded and decoded
    [call] = tg.calls
    assert call.params["chat_id"] == -100123
    assert call.params["reply_markup"] == {"inline_keyboard": []}
    assert call.params["document"].data == b"hello"


def test_decode_field_keeps_strings_that_only_look_special() -> None:
    assert decode_field("chat_id", "@channel") == "@channel"
    assert decode_field("callback_query_id", "123") == "123"
    assert decode_field("reply_markup", "{not json") == "{not json"
    assert decode_field("timeout", "1.5") == 1.5


async def test_delayed_call_is_visible_in_flight_and_stop_wakes_it(
    http: aiohttp.ClientSession,
) -> None:
    fake = await FakeTelegram(token=TOKEN).start()
    fake.delay("getMe", 60)
    request = asyncio.create_task(api(http, fake, "getMe"))
    [call] = await fake.wait_for("getMe")
    assert call.result is None  # recorded on arrival, not answered yet
    await fake.stop()  # wakes the delayed handler instead of waiting 60 s for it
    status, _ = await request
    assert status == 200
    assert call.result["username"] == "test_bot"


async def test_stop_ends_parked_long_polls(http: aiohttp.ClientSession) -> None:
    fake = await FakeTelegram(token=TOKEN).start()
    poll = asyncio.create_task(api(http, fake, "getUpdates", timeout=60))
    await fake.wait_for("getUpdates")
    await fake.stop()
    assert await poll == (200, {"ok": True, "result": []})


async def test_restart_keeps_the_port(tg: FakeTelegram, bot: telegram.Bot) -> None:
    port = tg.port
    await tg.stop()
    with pytest.raises(telegram.error.NetworkError):
        await bot.get_me()
    await tg.start()
    assert tg.port == port
    assert (await bot.get_me()).username == "test_bot"


async def test_drop_connection_once(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    tg.drop_connection("getUpdates")
    with pytest.raises(aiohttp.ClientError):
        await api(http, tg, "getUpdates")
    status, body = await api(http, tg, "getUpdates")
    assert (status, body) == (200, {"ok": True, "result": []})
    assert [call.failed for call in tg.calls] == [True, False]


async def test_dropped_connection_is_a_network_error_for_the_bot(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.drop_connection("sendMessage")
    with pytest.raises(telegram.error.NetworkError, match="Server disconnected"):
        await bot.send_message(42, "lost")
    assert (await bot.send_message(42, "delivered")).text == "delivered"


# --------------------------------------------------------------------- Telegram: updates


async def test_get_updates_honours_offset_and_limit(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    first = tg.send_text(42, "one")
    tg.send_text(42, "two")
    tg.send_text(42, "three")
    _, body = await api(http, tg, "getUpdates", limit=2)
    assert [u["message"]["text"] for u in body["result"]] == ["one", "two"]
    _, body = await api(http, tg, "getUpdates", offset=first["update_id"] + 1)
    assert [u["message"]["text"] for u in body["result"]] == ["two", "three"]
    assert len(tg.pending_updates) == 2  # "one" was confirmed and forgotten


async def test_long_poll_wakes_up_when_an_update_arrives(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(api(http, tg, "getUpdates", timeout=30))
    await tg.wait_for("getUpdates")
    tg.send_text(42, "hello")
    _, body = await poll
    assert [u["message"]["text"] for u in body["result"]] == ["hello"]


async def test_long_poll_times_out_empty(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    _, body = await api(http, tg, "getUpdates", timeout=0.05)
    assert body == {"ok": True, "result": []}


async def test_second_poll_terminates_the_first(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    first = asyncio.create_task(api(http, tg, "getUpdates", timeout=30))
    await tg.wait_for("getUpdates")
    second = asyncio.create_task(api(http, tg, "getUpdates", timeout=30))
    status, body = await first
    assert status == 409
    assert body["description"].startswith("Conflict: terminated by other getUpdates request")
    tg.send_text(1, "x")
    assert (await second)[0] == 200


async def test_delete_webhook_can_drop_pending_updates(
    tg: FakeTelegram, http: aiohttp.ClientSession
) -> None:
    tg.send_text(42, "stale")
    await api(http, tg, "deleteWebhook", drop_pending_updates=True)
    assert tg.pending_updates == []


def test_update_shapes_per_chat_type() -> None:
    tg = FakeTelegram()
    private = tg.send_text(42, "hi", username="alice")["message"]
    assert private["chat"] == {
        "id": 42,
        "type": "private",
        "first_name": "Alice",
        "username": "alice",
    }
    assert private["from"]["id"] == 42
    group = tg.send_text(-5, "hi all", user_id=7, chat_title="Friends")["message"]
    assert group["chat"] == {"id": -5, "type": "group", "title": "Friends"}
    assert group["from"]["id"] == 7
    topic = tg.send_text(-1001, "in topic", message_thread_id=3)["message"]
    assert topic["chat"]["type"] == "supergroup"
    assert topic["chat"]["is_forum"] is True
    assert topic["message_thread_id"] == 3
    post = tg.send_text(-1002, "news", chat_type="channel")
    assert post["channel_post"]["sender_chat"]["type"] == "channel"
    assert "from" not in post["channel_post"]


def test_ids_increment_and_replies_quote_the_original() -> None:
    tg = FakeTelegram()
    first = tg.send_text(42, "first")
    second = tg.send_text(42, "second", reply_to_message_id=first["message"]["message_id"])
    assert second["update_id"] == first["update_id"] + 1
    assert second["message"]["message_id"] == first["message"]["message_id"] + 1
    assert second["message"]["reply_to_message"]["text"] == "first"
    assert tg.send_text(43, "other chat")["message"]["message_id"] == 1


def test_send_command_adds_a_bot_command_entity() -> None:
    tg = FakeTelegram()
    message = tg.send_command(-5, "/reset@test_bot now", user_id=9)["message"]
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 15}]
    assert tg.send_command(1, "start")["message"]["text"] == "/start"


def test_edit_and_callback_updates() -> None:
    tg = FakeTelegram()
    original = tg.send_text(42, "tpyo")["message"]
    edited = tg.send_edit(42, original["message_id"], "typo")["edited_message"]
    assert edited["text"] == "typo"
    assert "edit_date" in edited
    query = tg.send_callback(42, 99, "regen")["callback_query"]
    assert query["data"] == "regen"
    assert query["message"]["date"] == 0  # unknown message: Telegram's inaccessible shape


# --------------------------------------------------------------------- Telegram: waiting


async def test_wait_for_counts_and_filters(tg: FakeTelegram, bot: telegram.Bot) -> None:
    waiter = asyncio.create_task(
        tg.wait_for("sendMessage", lambda call: call.chat_id == 2, count=2)
    )
    for chat_id in (1, 2, 1, 2):
        await bot.send_message(chat_id, f"to {chat_id}")
    calls = await waiter
    assert [tg.visible_text(call) for call in calls] == ["to 2", "to 2"]


async def test_wait_for_timeout_lists_recorded_methods(tg: FakeTelegram, bot: telegram.Bot) -> None:
    with pytest.raises(TimeoutError, match=r"sendMessage.*saw 0.*'getMe': 1"):
        await tg.wait_for("sendMessage", timeout=0.01)


async def test_wait_for_since_ignores_older_calls(tg: FakeTelegram, bot: telegram.Bot) -> None:
    await bot.send_message(1, "old")
    mark = len(tg.calls)
    task = asyncio.create_task(tg.wait_for("sendMessage", since=mark))
    await bot.send_message(1, "new")
    [call] = await task
    assert call.text == "new"


# --------------------------------------------------------------------- Telegram: real Bot


async def test_bot_get_me(tg: FakeTelegram, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123, "test_bot", True)
    assert me.can_read_all_group_messages is False
    tg.privacy_off = True
    assert (await bot.get_me()).can_read_all_group_messages is True


async def test_bot_send_message_html(tg: FakeTelegram, bot: telegram.Bot) -> None:
    message = await bot.send_message(42, "<b>Hi</b> &amp; <i>bye</i>", parse_mode="HTML")
    assert message.text == "Hi & bye"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 2),
        ("italic", 5, 3),
    ]
    assert message.from_user.username == "test_bot"
    [call] = tg.calls_to("sendMessage")
    assert call.params["parse_mode"] == "HTML"
    assert tg.visible_text(call) == "Hi & bye"
    assert tg.bot_messages[42][message.message_id]["text"] == "Hi & bye"


async def test_bot_send_message_malformed_html(tg: FakeTelegram, bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities: unsupported start tag"):
        await bot.send_message(42, "1 <br> 2", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)can't find end tag"):
        await bot.send_message(42, "<b>open", parse_mode="HTML")
    assert tg.calls_to("sendMessage")[-1].failed
    assert tg.bot_messages == {}


async def test_bot_send_message_too_long_and_empty(bot: telegram.Bot) -> None:
    await bot.send_message(42, "x" * 4096)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(42, "x" * 4097)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(42, "😀" * 2049)  # 4098 UTF-16 code units
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(42, "  \n ")


async def test_bot_send_message_draft(tg: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.send_message_draft(42, draft_id=7, text="Thinking") is True
    assert tg.drafts == {42: {7: "Thinking"}}
    assert tg.bot_messages == {}
    with pytest.raises(BadRequest, match="only in private chats"):
        await bot.send_message_draft(-5, draft_id=7, text="no")
    tg.drafts_supported = False
    with pytest.raises(BadRequest):
        await bot.send_message_draft(42, draft_id=8, text="no")


async def test_bot_edit_message(tg: FakeTelegram, bot: telegram.Bot) -> None:
    sent = await bot.send_message(42, "draft")
    edited = await bot.edit_message_text("final", chat_id=42, message_id=sent.message_id)
    assert isinstance(edited, telegram.Message)
    assert edited.text == "final"
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("final", chat_id=42, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=42, message_id=999)
    assert tg.calls_to("editMessageText")[-2].error == NOT_MODIFIED


async def test_plain_and_equivalent_html_edit_is_not_modified(bot: telegram.Bot) -> None:
    sent = await bot.send_message(42, "same")
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("same", 42, sent.message_id, parse_mode="HTML")


async def test_bot_reply_markup_edits_and_delete(tg: FakeTelegram, bot: telegram.Bot) -> None:
    keyboard = telegram.InlineKeyboardMarkup(
        [[telegram.InlineKeyboardButton("Again", callback_data="regen")]]
    )
    sent = await bot.send_message(42, "answer", reply_markup=keyboard)
    assert sent.reply_markup == keyboard
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_reply_markup(42, sent.message_id, reply_markup=keyboard)
    await bot.edit_message_reply_markup(42, sent.message_id, reply_markup=None)
    assert "reply_markup" not in tg.bot_messages[42][sent.message_id]
    assert await bot.delete_message(42, sent.message_id) is True
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(42, sent.message_id)


async def test_bot_reply_to_unknown_message(tg: FakeTelegram, bot: telegram.Bot) -> None:
    incoming = tg.send_text(42, "question")["message"]
    reply = await bot.send_message(42, "answer", reply_to_message_id=incoming["message_id"])
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "question"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(42, "answer", reply_to_message_id=555)
    await bot.send_message(42, "answer", reply_to_message_id=555, allow_sending_without_reply=True)


async def test_bot_retry_after(
    tg: FakeTelegram, bot: telegram.Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # else reading retry_after warns (-> error)
    tg.fail("sendMessage", status=429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(42, "hi")
    assert caught.value.retry_after == dtm.timedelta(seconds=3)
    await bot.send_message(42, "hi")  # times=1: the next call succeeds
    assert [call.failed for call in tg.calls_to("sendMessage")] == [True, False]


async def test_bot_chat_migrated_with_predicate(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.fail("sendMessage", migrate_to_chat_id=-100777, when=lambda p: p["chat_id"] == -5)
    await bot.send_message(42, "unaffected")
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-5, "hi group")
    assert caught.value.new_chat_id == -100777


async def test_fault_for_any_method_and_raw_body(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.fail("*", status=502, raw_body="<html>Bad Gateway</html>", times=2)
    for _ in range(2):
        with pytest.raises(telegram.error.NetworkError, match="Bad Gateway"):
            await bot.send_chat_action(42, "typing")
    assert await bot.send_chat_action(42, "typing") is True


async def test_bot_get_updates(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.send_text(42, "hello", first_name="Bob", username="bob")
    tg.send_command(-1001, "/reset@test_bot", user_id=7, chat_title="Team")
    updates = await bot.get_updates(timeout=1)
    assert len(updates) == 2
    hello, reset = (update.message for update in updates)
    assert (hello.text, hello.chat.id, hello.chat.type) == ("hello", 42, "private")
    assert (hello.from_user.first_name, hello.from_user.username) == ("Bob", "bob")
    assert reset.chat.title == "Team"
    assert reset.parse_entities(["bot_command"]) == {reset.entities[0]: "/reset@test_bot"}
    later = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert later == ()
    assert tg.pending_updates == []


async def test_bot_get_updates_long_poll(tg: FakeTelegram, bot: telegram.Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates")
    update = tg.send_callback(42, 1, "regen")
    [received] = await poll
    assert received.update_id == update["update_id"]
    assert received.callback_query.data == "regen"


async def test_bot_conflict_between_two_instances(tg: FakeTelegram, bot: telegram.Bot) -> None:
    # One Bot never overlaps its own polls (its getUpdates pool has a single connection).
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates")
    async with telegram.Bot(TOKEN, base_url=tg.base_url) as other:
        second = asyncio.create_task(other.get_updates(timeout=0))
        with pytest.raises(Conflict):
            await first
        assert await second == ()


async def test_bot_commands_and_members(tg: FakeTelegram, bot: telegram.Bot) -> None:
    await bot.set_my_commands([("reset", "Forget the conversation"), ("help", "Help")])
    assert [c.command for c in await bot.get_my_commands()] == ["reset", "help"]
    assert tg.my_commands()[0] == {"command": "reset", "description": "Forget the conversation"}
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([("Reset", "uppercase is invalid")])
    await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()
    tg.chat_creators[-5] = 1
    tg.chat_admins[-5] = {2}
    assert (await bot.get_chat_member(-5, 1)).status == "creator"
    assert (await bot.get_chat_member(-5, 2)).status == "administrator"
    assert (await bot.get_chat_member(-5, 3)).status == "member"
    admins = await bot.get_chat_administrators(-5)
    assert [admin.user.id for admin in admins] == [1, 2]
    chat = await bot.get_chat(-5)
    assert chat.type == "group"


async def test_bot_misc_methods(tg: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.send_chat_action(42, "typing") is True
    with pytest.raises(BadRequest, match="Wrong parameter action"):
        await bot.send_chat_action(42, "dancing")
    assert await bot.set_message_reaction(42, 1, "👍") is True
    assert await bot.answer_callback_query("1", text="ok") is True
    assert await bot.leave_chat(-5) is True
    assert await bot.delete_webhook() is True
    call = tg.calls_to("setMessageReaction")[0]
    assert call.params["reaction"] == [{"type": "emoji", "emoji": "👍"}]


# --------------------------------------------------------------------- Telegram: text rules


@pytest.mark.parametrize(
    ("html", "visible"),
    [
        ("<b>a</b><strong>b</strong><i>c</i><em>d</em><u>e</u><ins>f</ins>", "abcdef"),
        ("<s>a</s><strike>b</strike><del>c</del><tg-spoiler>d</tg-spoiler>", "abcd"),
        ('<span class="tg-spoiler">x</span> <a href="https://e.com?a=1&amp;b=2">l</a>', "x l"),
        ('<pre><code class="language-python">print(1 &lt; 2)</code></pre>', "print(1 < 2)"),
        ("<blockquote expandable>q</blockquote> &quot;&#65;&#x42;&nbsp;", 'q "AB&nbsp;'),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji> a > b', "👍 a > b"),
        ("<B>upper</B> and <b>empty end</>", "upper and empty end"),
        ("<a href=e.com title='t'>unquoted</a>", "unquoted"),
    ],
)
def test_html_accepted(html: str, visible: str) -> None:
    assert render(html, "HTML").text == visible


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<br>", 'Unsupported start tag "br" at byte offset 0'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("<b", "Unclosed start tag at byte offset 0"),
        ('<a href="x>y</a>', "Unclosed start tag at byte offset 0"),
        ("<a href=https://e.com>e</a>", "Unexpected end of name token at byte offset 8"),
        ("<i>é</b></i>", "Unmatched end tag at byte offset 5"),
    ],
)
def test_html_rejected(html: str, error: str) -> None:
    with pytest.raises(TextRejected) as caught:
        render(html, "HTML")
    assert caught.value.description.startswith("Bad Request: can't parse entities: ")
    assert error in caught.value.description


def test_html_entities_use_utf16_offsets() -> None:
    rendered = render("😀 <b>bold</b>", "HTML")
    assert rendered.entities == [{"type": "bold", "offset": 3, "length": 4}]
    assert utf16_len(rendered.text) == 7


@pytest.mark.parametrize(
    ("markdown", "visible"),
    [
        (r"*bold* _it_ __u__ ~s~ ||sp|| `co\`de`", "bold it u s sp co`de"),
        (
            r"Version 1\.2\! \(beta\) \- see [docs](https://e.com/a\)b)",
            "Version 1.2! (beta) - see docs",
        ),
        ("```python\nprint('x.y')\n```", "print('x.y')\n"),
        ("> quoted line", " quoted line"),
    ],
)
def test_markdown_v2_accepted(markdown: str, visible: str) -> None:
    assert render(markdown, "MarkdownV2").text == visible


@pytest.mark.parametrize(
    ("markdown", "error"),
    [
        ("Hello.", "Character '.' is reserved"),
        ("1 + 1", "Character '+' is reserved"),
        ("a (b)", "Character '(' is reserved"),
        ("*bold", "Can't find end of the entity starting at byte offset 0"),
        ("a _b", "Can't find end of the entity starting at byte offset 2"),
    ],
)
def test_markdown_v2_rejected(markdown: str, error: str) -> None:
    with pytest.raises(TextRejected, match="can't parse entities") as caught:
        render(markdown, "MarkdownV2")
    assert error in caught.value.description


def test_legacy_markdown_and_explicit_entities() -> None:
    assert render("*b* _i_ [l](u)", "Markdown").text == "b i l"
    with pytest.raises(TextRejected, match="Can't find end of the entity"):
        render("*open", "Markdown")
    entities = [{"type": "bold", "offset": 0, "length": 2}]
    assert render("😀", None, entities).entities == entities
    with pytest.raises(TextRejected, match="ends after the end of the text"):
        render("😀", None, [{"type": "bold", "offset": 1, "length": 2}])
    with pytest.raises(TextRejected, match='unsupported entity type "shiny"'):
        render("x", None, [{"type": "shiny", "offset": 0, "length": 1}])
    with pytest.raises(TextRejected, match="unsupported parse_mode"):
        render("x", "BBCode")


async def test_bot_entities_validated(bot: telegram.Bot) -> None:
    entity = telegram.MessageEntity("bold", offset=0, length=10)
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(42, "short", entities=[entity])
    with pytest.raises(BadRequest, match=r"(?i)character '!' is reserved"):
        await bot.send_message(42, "Hi!", parse_mode="MarkdownV2")


# --------------------------------------------------------------------- Telegram: control API


async def test_control_api(tg: FakeTelegram, http: aiohttp.ClientSession) -> None:
    base = f"{tg.origin}/_control"
    update = {"message": tg.make_message(5, "made")}
    async with http.post(f"{base}/updates", json=[update]) as response:
        assert (await response.json())["result"] == [1]
    async with http.post(f"{base}/send_text", json={"chat_id": 5, "text": "hi"}) as response:
        assert (await response.json())["result"]["message"]["text"] == "hi"
    async with http.post(f"{base}/fail", json={"method": "sendMessage", "status": 403}) as r:
        assert r.status == 200
    async with http.post(f"{base}/config", json={"bot_username": "other_bot"}) as response:
        assert (await response.json())["result"]["bot_username"] == "other_bot"
    status, body = await api(http, tg, "sendMessage", chat_id=5, text="x")
    assert (status, body["description"]) == (403, "Forbidden: bot was blocked by the user")
    await api(http, tg, "sendMessage", chat_id=5, text="y")
    async with http.get(f"{base}/calls", params={"method": "sendMessage", "since": 1}) as r:
        calls = await r.json()
    assert [c["params"]["text"] for c in calls["calls"]] == ["y"]
    assert calls["next"] == 2
    async with http.post(f"{base}/config", json={"nope": 1}) as response:
        assert response.status == 400
    async with http.post(f"{base}/reset") as response:
        assert response.status == 200
    assert tg.calls == []
    assert tg.pending_updates == []


async def read_ready_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(20):
        line = (await process.stdout.readline()).decode().strip()
    assert line.startswith("READY "), line
    return line.removeprefix("READY ")


async def test_standalone_telegram(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.telegram", "--port", "0",
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        base_url = await read_ready_line(process)
        origin = base_url.removesuffix("/bot")
        async with http.post(f"{origin}/_control/send_text", json={"chat_id": 1, "text": "hi"}):
            pass
        async with http.post(f"{base_url}{TOKEN}/getUpdates") as response:
            body = await response.json()
        assert body["result"][0]["message"]["text"] == "hi"
    finally:
        process.terminate()
        assert await process.wait() == 0


# --------------------------------------------------------------------- OpenAI


async def test_openai_non_streaming(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    completion = await client.chat.completions.create(model="local-model", messages=messages)
    assert completion.choices[0].message.content == "Echo: Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "local-model"
    assert completion.object == "chat.completion"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == ai.count_prompt_tokens(messages)
    assert completion.usage.completion_tokens == ai.count_completion_tokens("Echo: Hello there")
    [request] = ai.requests
    assert (request.model, request.stream, request.messages) == ("local-model", False, messages)
    assert request.headers["authorization"] == "Bearer sk-test"


async def test_openai_streaming_with_usage(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.enqueue(Reply("The quick brown fox", chunk_chars=5))
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["The q", "uick ", "brown", " fox"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == ai.count_completion_tokens("The quick brown fox")
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert ai.requests[0].include_usage


async def test_openai_streaming_without_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "abc"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: abc"


async def test_openai_reasoning_is_streamed_first(
    ai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    ai.enqueue(Reply("42", reasoning="Let me think", chunk_chars=100))
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "?"}], stream=True
    )
    deltas = [chunk.choices[0].delta async for chunk in stream]
    assert deltas[1].model_extra == {"reasoning_content": "Let me think"}
    assert deltas[2].content == "42"


async def test_openai_cut_stream(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.enqueue(Reply("0123456789abcdef", chunk_chars=4, cut_after_chars=6))
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received: list[str] = []
    finish_reasons: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            finish_reasons.append(chunk.choices[0].finish_reason)
    assert "".join(received) == "012345"
    assert finish_reasons == [None, None, None]


async def test_openai_cut_non_streaming(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.enqueue(Reply("never", cut_after_chars=0))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_openai_rate_limit(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.enqueue(
        Error(status=429, headers={"retry-after": "1", "x-ratelimit-remaining-requests": "0"})
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Echo: x"


async def test_openai_server_errors(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.enqueue(
        Error(status=500),
        Error(status=503, message="overloaded"),
        Error(502, raw_body="<h1>502</h1>"),
    )
    with pytest.raises(openai.InternalServerError, match="Sorry about that"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502


async def test_openai_context_window(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "word " * 50}]
    prompt = ai.count_prompt_tokens(messages)
    ai.context_window = prompt + 10
    ai.enqueue("kept for the next request")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=messages, max_tokens=11)
    assert caught.value.code == "context_length_exceeded"
    assert f"you requested {prompt + 11} tokens ({prompt} in the messages" in caught.value.message
    completion = await client.chat.completions.create(model="m", messages=messages, max_tokens=10)
    assert completion.choices[0].message.content == "kept for the next request"
    ai.token_factor = 1.3
    with pytest.raises(openai.BadRequestError, match="your messages resulted in"):
        await client.chat.completions.create(model="m", messages=messages)


async def test_openai_token_factor(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "count these tokens please"}]
    plain = ai.count_prompt_tokens(messages)
    ai.token_factor = 1.3
    completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == round(plain * 1.3)


async def test_openai_rejects_stream_options(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.reject_stream_options = True
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied"):
        await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )


async def test_openai_api_key(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    ai.api_key = "sk-right-key-1234"
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert "Incorrect API key provided: *******. You can find" in caught.value.message
    assert caught.value.code == "invalid_api_key"
    assert mask_key("sk-test-abcd") == "sk-*****abcd"


async def test_openai_hang_times_out(ai: FakeOpenAI) -> None:
    ai.enqueue(Hang(60))
    async with openai.AsyncOpenAI(
        base_url=ai.base_url, api_key="k", max_retries=0, timeout=0.2
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )


async def test_openai_responder_and_fifo(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    async def shout(request: ChatRequest) -> str:
        return request.last_user_text.upper()

    ai.responder = shout
    ai.enqueue("first", Reply("second"))
    texts = []
    for _ in range(3):
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "third"}]
        )
        texts.append(completion.choices[0].message.content)
    assert texts == ["first", "second", "THIRD"]


async def test_openai_wait_for_requests(ai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    waiter = asyncio.create_task(ai.wait_for_requests(2))
    for text in ("a", "b"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}]
        )
    assert [r.last_user_text for r in await waiter] == ["a", "b"]
    with pytest.raises(TimeoutError, match="saw 2"):
        await ai.wait_for_requests(3, timeout=0.01)


async def test_openai_models(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == ["gpt-4o-mini"]


async def test_openai_control_api(ai: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    base = f"{ai.origin}/_control"
    async with http.post(f"{base}/enqueue", json=["one", {"error": {"status": 429}}]) as r:
        assert (await r.json())["result"] == 2
    async with http.post(f"{base}/config", json={"chunk_chars": 3, "latency": 0}) as r:
        assert (await r.json())["result"]["chunk_chars"] == 3
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with http.post(f"{ai.base_url}/chat/completions", json=body) as r:
        assert (await r.json())["choices"][0]["message"]["content"] == "one"
    async with http.post(f"{ai.base_url}/chat/completions", json=body) as r:
        assert r.status == 429
    async with http.get(f"{base}/requests", params={"since": 1}) as r:
        listed = await r.json()
    assert [item["index"] for item in listed["requests"]] == [1]
    async with http.post(f"{base}/reset") as r:
        assert r.status == 200
    assert ai.requests == []


async def test_standalone_openai(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.openai", "--port", "0", "--chunk-chars", "4",
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        base_url = await read_ready_line(process)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"{base_url}/chat/completions", json=body) as response:
            reply = await response.json()
        assert reply["choices"][0]["message"]["content"] == "Echo: hi"
    finally:
        process.terminate()
        assert await process.wait() == 0


def test_local_token_counter_follows_the_cookbook() -> None:
    # 3 priming + 3 per message + "user" (1) + "hello" (1)
    assert local_count_messages([{"role": "user", "content": "hello"}]) == 8
    named = [{"role": "user", "name": "bob", "content": "hello"}]
    assert local_count_messages(named) == 8 + 1 + 1
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert local_count_messages(parts) == 8
