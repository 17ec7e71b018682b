"""Runs one reply into a chat, and turns every way it can fail into one line there.

Shared by a message's answer and /retry: the engine writes into a sink (`sinks.py`); a
`BotError` (the model failed, a limit, input too long...) becomes its one line in the chat and
a log line (in a group, a refusal at most once per user per REFUSAL_INTERVAL); a chat that
cannot receive messages is marked inactive; a group that became a supergroup mid-reply gets
the answer in its new chat; an answer the Bot API would not take after the sender's retries
(stored, marked undelivered) is announced with a /retry hint. An answer that reached the output
limit gets one line below it saying how to get the rest (/continue, and a Continue button
where the reply carries buttons).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.constants import ChatType
from telegram.error import ChatMigrated, TelegramError

from ..engine.turns import AT_LIMIT, Reply
from ..errors import AnswerNotDelivered, BotError, InputTooLong, LimitReached, ModelError
from ..models import ChatKey
from .flood import is_transient
from .migration import redeliver_after_migration
from .sender import ChatUnavailable, TelegramReply
from .services import Context
from .sinks import CONTINUE_MARKUP, answer_sink

log = logging.getLogger(__name__)


async def answer(
    update: Update,
    context: Context,
    key: ChatKey,
    produce: Callable[[TelegramReply], Awaitable[Reply | None]],
) -> None:
    """Runs one reply into the chat; every failure ends as one line there and one in the log."""
    sink = answer_sink(update, context, key)
    sink.start()
    try:
        try:
            reply = await produce(sink)
            if reply is not None and reply.at_limit:
                await sink.send_notice(AT_LIMIT, CONTINUE_MARKUP if sink.buttons else None)
        except BotError as exc:
            if isinstance(exc, ModelError):
                log.warning("chat=%s model error: %s", key, type(exc).__name__)
            if not await _said_recently(update, context, exc):
                await sink.send_notice(exc.describe())
    except ChatUnavailable as exc:  # from the answer or from the notice
        log.info("chat=%s cannot receive messages (%s); marking it inactive", key, exc)
        await context.services.store.set_chat_active(key.chat_id, False)
    except ChatMigrated as exc:
        log.info("chat=%s became supergroup %s while replying", key, exc.new_chat_id)
        await redeliver_after_migration(context, key, exc.new_chat_id, sink.undelivered)
    except TelegramError as exc:
        if not is_transient(exc):
            raise
        await _undelivered(sink, key, exc)
    finally:
        await sink.close()


async def _said_recently(update: Update, context: Context, exc: BotError) -> bool:
    """In a group, a refusal (a usage limit, a message too long) is said to each user at most
    once per REFUSAL_INTERVAL, as the allowlist's are, so a burst of mentions cannot become a
    burst of refusals. The engine refuses and logs every one; how often a chat is told is the
    adapter's call: a private chat (and the console) hears every refusal, only its own user
    is there to be spammed."""
    chat = update.effective_chat
    if not isinstance(exc, LimitReached | InputTooLong) or chat is None:
        return False
    if chat.type == ChatType.PRIVATE:
        return False
    message = update.effective_message
    as_chat = message is not None and message.sender_chat is not None
    user = None if as_chat or update.effective_user is None else update.effective_user.id
    if await context.services.guard.refusals.answer_now(("refusal", chat.id, user)):
        return False
    log.debug("chat=%s user=%s refused again (%s); not saying it again", chat.id, user, exc)
    return True


async def _undelivered(sink: TelegramReply, key: ChatKey, exc: TelegramError) -> None:
    """The Bot API failed even after the sender's retries (a 5xx, a network error)."""
    lost = sink.undelivered
    if lost is None or lost.status is None:  # a line, not an answer: nothing to retry
        log.warning("chat=%s could not deliver a notice: %s", key, exc)
        return
    log.warning(
        "chat=%s could not deliver the answer (%s); it is stored, /retry sends it", key, exc
    )
    try:
        await sink.send_notice(AnswerNotDelivered.user_message())
    except TelegramError as again:
        log.warning("chat=%s could not say so either: %s", key, again)
