"""Stop and retry: the Stop button, /stop and /retry.

The Stop button and /stop bypass the chat's queue (see `app.ordering_key`), so they reach the
engine while the reply they stop is still streaming. In a group only the person who asked may
stop a reply. /stop's confirmation is posted by the stopped reply itself, right below the text
written so far (and before any message queued behind it); the button's is a toast. /retry
waits its turn like any message, then answers the last question again; in a group only the
person who asked it, or an admin, may retry it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from telegram import Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from ...errors import NothingToRetry, NotYourQuestion
from ...models import ChatKey
from .admin import is_manager
from .chat import answer
from .commands import chat_key

if TYPE_CHECKING:
    from ...engine.conversation import Reply
    from ..app import Context
    from ..sender import TelegramReply

log = logging.getLogger(__name__)

NOTHING_TO_STOP = "Nothing to stop: I'm not writing anything right now."
NOT_YOURS = "Only the person who asked can stop this answer."
STOPPED = "Stopped."


def _outcome(
    context: Context, key: ChatKey | None, stopper: int | None, notice: str | None = None
) -> str:
    """Stops the chat's running reply if `stopper` may; says what happened."""
    engine = context.services.engine
    if key is not None and engine.stop(key, stopper, notice=notice):
        return STOPPED
    if key is not None and engine.is_writing(key):
        return NOT_YOURS
    return NOTHING_TO_STOP


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
    outcome = _outcome(context, chat_key(update), _stopper(update), notice=STOPPED)
    if outcome != STOPPED:  # a stopped reply posts the confirmation below its own text
        await message.reply_text(outcome)


async def stop_button(update: Update, context: Context) -> None:
    query = update.callback_query
    if query is None:
        return
    message = query.message
    key = None
    if message is not None:
        thread = getattr(message, "message_thread_id", None) if message.is_accessible else None
        key = ChatKey(message.chat.id, thread or 0)
    outcome = _outcome(context, key, _stopper(update))
    log.info("chat=%s Stop pressed: %s", key, outcome)
    try:
        await query.answer(outcome)
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

    async def produce(sink: TelegramReply) -> Reply:
        try:
            return await services.engine.retry(
                key, sink, user_id, may_retry_others=_admin_check(update, context)
            )
        except (NothingToRetry, NotYourQuestion):
            services.limits.refund(user_id)  # refused before the model: costs no slot
            raise

    await answer(update, context, key, produce)


def _admin_check(update: Update, context: Context) -> Callable[[], Awaitable[bool]] | None:
    """In a group, whether the sender may retry someone else's question: admins and owners
    may (as they may /reset); in a private chat every question is the user's own."""
    chat = update.effective_chat
    if chat is None or chat.type == ChatType.PRIVATE:
        return None

    async def check() -> bool:
        try:
            return await is_manager(update, context)
        except TelegramError as exc:
            log.warning("chat=%s could not fetch the administrators: %s", chat.id, exc)
            return False

    return check
