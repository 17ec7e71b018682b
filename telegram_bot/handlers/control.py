"""Stop and retry: the Stop button, /stop and /retry.

The Stop button and /stop bypass the chat's queue (see `app.ordering_key`), so they reach the
engine while the reply they stop is still streaming. In a group only the person who asked may
stop a reply. /retry waits its turn like any message, then answers the last question again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telegram import Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from ..models import ChatKey
from .chat import answer
from .commands import chat_key

if TYPE_CHECKING:
    from ..app import Context

log = logging.getLogger(__name__)

NOTHING_TO_STOP = "Nothing to stop: I'm not writing anything right now."


def _stopper(update: Update) -> int | None:
    """Who is stopping; None in a private chat, where anyone in it may."""
    chat = update.effective_chat
    user = update.effective_user
    if chat is None or chat.type == ChatType.PRIVATE or user is None:
        return None
    return user.id


async def stop_command(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    stopped = context.services.engine.stop(chat_key(update), _stopper(update))
    await message.reply_text("Stopped." if stopped else NOTHING_TO_STOP)


async def stop_button(update: Update, context: Context) -> None:
    query = update.callback_query
    if query is None:
        return
    message = query.message
    key = None
    if message is not None:
        thread = getattr(message, "message_thread_id", None) if message.is_accessible else None
        key = ChatKey(message.chat.id, thread or 0)
    stopped = key is not None and context.services.engine.stop(key, _stopper(update))
    log.info("chat=%s Stop pressed: %s", key, "stopped" if stopped else "nothing running")
    try:
        await query.answer("Stopped." if stopped else NOTHING_TO_STOP)
    except TelegramError as exc:  # the answer is cosmetic; the stop already happened
        log.debug("Could not answer the Stop button: %s", exc)


async def retry(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    key = chat_key(update)
    user = update.effective_user
    services = context.services
    user_id = user.id if user else None
    refusal = await services.limits.check(user_id, key.chat_id)
    if refusal is not None:  # a retry costs as much as a question
        await message.reply_text(refusal.message())
        return
    await answer(update, context, key, lambda sink: services.engine.retry(key, sink, user_id))
