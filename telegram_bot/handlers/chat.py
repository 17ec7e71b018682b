"""Text messages: hand them to the engine and show its reply as it streams."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telegram import Update
from telegram.constants import ChatType
from telegram.error import ChatMigrated

from ..conversation import Incoming
from ..errors import InputTooLong, ModelError
from ..models import Author
from .commands import chat_key
from .group import author_of_message, redeliver_after_migration
from .sender import ChatUnavailable, TelegramReply

if TYPE_CHECKING:
    from ..app import Context

log = logging.getLogger(__name__)


def author_of(update: Update) -> Author | None:
    message = update.effective_message
    return author_of_message(message) if message is not None else None


async def on_text(update: Update, context: Context, *, text: str | None = None) -> None:
    """Answers a message; `text` replaces the message's own (a group mention stripped, /ask)."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None or message.text is None:
        return
    services = context.services
    key = chat_key(update)
    private = chat.type == ChatType.PRIVATE
    sink = TelegramReply(
        context.bot,
        chat.id,
        interval=services.settings.stream_edit_interval,
        thread_id=key.thread_id or None,
        reply_to=None if private else message.message_id,
        private=private,
    )
    text = (message.text if text is None else text).strip()
    if not text:
        return
    if len(text) > services.settings.max_input_chars:
        log.info("chat=%s message of %d chars refused (MAX_INPUT_CHARS)", key, len(text))
        await sink.send_notice(
            f"{InputTooLong.user_message()} (limit: {services.settings.max_input_chars} characters)"
        )
        return
    incoming = Incoming(key, text, author_of(update), message.message_id, chat.type)
    sink.start()
    try:
        await services.engine.respond(incoming, sink)
    except ModelError as exc:
        log.warning("chat=%s model error: %s", key, type(exc).__name__)
        await sink.send_notice(exc.user_message())
    except ChatUnavailable as exc:
        log.info("chat=%s cannot receive messages (%s); marking it inactive", key, exc)
        await services.store.set_chat_active(chat.id, False)
    except ChatMigrated as exc:
        log.info("chat=%s became supergroup %s while replying", key, exc.new_chat_id)
        await redeliver_after_migration(context, key, exc.new_chat_id)
    finally:
        await sink.close()
