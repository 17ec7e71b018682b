"""Text messages: hand them to the engine and show its reply as it streams.

Before the model is asked: the text is cleaned (forwards quoted, see `input.py`), refused if
too long or over a usage limit (one line, nothing stored or sent to the model), and skipped if
Telegram delivered it again after a crash and it was already answered. `answer` is shared with
/retry: it builds the sink (with a Stop button where the reply streams by edits) and turns
every failure into one line in the chat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.error import ChatMigrated

from ...engine.conversation import Incoming, Reply
from ...errors import BotError, InputTooLong, ModelError
from ...models import Author, ChatKey
from ..sender import ChatUnavailable, TelegramReply
from .commands import chat_key
from .group import author_of_message, redeliver_after_migration
from .input import clean, text_of

if TYPE_CHECKING:
    from ..app import Context

log = logging.getLogger(__name__)

STOP_DATA = "stop"
STOP_MARKUP = InlineKeyboardMarkup([[InlineKeyboardButton("⏹ Stop", callback_data=STOP_DATA)]])


def author_of(update: Update) -> Author | None:
    message = update.effective_message
    return author_of_message(message) if message is not None else None


def reply_sink(update: Update, context: Context, key: ChatKey) -> TelegramReply:
    chat = update.effective_chat
    message = update.effective_message
    assert chat is not None and message is not None
    settings = context.services.settings
    private = chat.type == ChatType.PRIVATE
    return TelegramReply(
        context.bot,
        chat.id,
        interval=settings.stream_edit_interval,
        thread_id=key.thread_id or None,
        reply_to=None if private else message.message_id,
        # Drafts have no buttons: STOP_BUTTON trades them for an edited message with one.
        private=private and not settings.stop_button,
        markup=STOP_MARKUP,
    )


async def answer(
    update: Update,
    context: Context,
    key: ChatKey,
    produce: Callable[[TelegramReply], Awaitable[Reply | None]],
) -> None:
    """Runs one reply into the chat; every failure ends as one line there and one in the log."""
    sink = reply_sink(update, context, key)
    sink.start()
    try:
        try:
            await produce(sink)
        except BotError as exc:
            if isinstance(exc, ModelError):
                log.warning("chat=%s model error: %s", key, type(exc).__name__)
            await sink.send_notice(exc.user_message())
    except ChatUnavailable as exc:  # from the answer or from the notice
        log.info("chat=%s cannot receive messages (%s); marking it inactive", key, exc)
        await context.services.store.set_chat_active(key.chat_id, False)
    except ChatMigrated as exc:
        log.info("chat=%s became supergroup %s while replying", key, exc.new_chat_id)
        await redeliver_after_migration(context, key, exc.new_chat_id, sink.undelivered)
    finally:
        await sink.close()


async def on_text(update: Update, context: Context, *, text: str | None = None) -> None:
    """Answers a message; `text` replaces the message's own (a group mention stripped, /ask)."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None or message.text is None:
        return
    services = context.services
    key = chat_key(update)
    text = text_of(message) if text is None else clean(text)
    if not text:
        return  # only whitespace or control characters: nothing to answer
    if len(text) > services.settings.max_input_chars:
        log.info("chat=%s message of %d chars refused (MAX_INPUT_CHARS)", key, len(text))
        await message.reply_text(
            f"{InputTooLong.user_message()} (limit: {services.settings.max_input_chars} characters)"
        )
        return
    author = author_of(update)
    refusal = await services.limits.check(author.user_id if author else None, chat.id)
    if refusal is not None:
        log.info(
            "chat=%s user=%s over a limit (%s)",
            key,
            author.user_id if author else "-",
            refusal.kind,
        )
        await message.reply_text(refusal.message())
        return
    incoming = Incoming(key, text, author, message.message_id, chat.type)
    await answer(update, context, key, lambda sink: services.engine.respond(incoming, sink))
