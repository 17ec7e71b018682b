"""Stop, retry and continue: the Stop button, /stop, /retry, /continue and the Continue button.

The Stop button and /stop bypass the chat's queue (see `ordering.ordering_key`), so they reach
the engine while the reply they stop is still streaming. In a group only the person who asked
may stop a reply. /stop's confirmation is posted by the stopped reply itself, right below the
text written so far (and before any message queued behind it); the button's is a toast.
/retry waits its turn like any message, then answers the last question again; in a group only
the person who asked it, or an admin, may retry it. /continue and the Continue button (below an
answer that reached the output limit) wait their turn too, then go on with the last answer
where it stopped, with the same rule in groups; the button is taken off once pressed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from ...coordination import StopOutcome
from ...engine.turns import Reply
from ...models import ChatKey
from ..downloads import TelegramMedia
from ..replies import answer
from ..sender import TelegramReply
from ..services import Context
from ..updates import chat_key
from .admin import is_manager

log = logging.getLogger(__name__)

# What /retry and /continue ask of the engine: the chat, the sink, who asks, and (in a group)
# how to check that an admin may have someone else's answer.
AdminCheck = Callable[[], Awaitable[bool]] | None
_OnOwnAnswer = Callable[[ChatKey, TelegramReply, int | None, AdminCheck], Awaitable[Reply | None]]

STOPPED = "Stopped."
SAYS = {
    StopOutcome.STOPPED: STOPPED,
    StopOutcome.NOT_YOURS: "Only the person who asked can stop this answer.",
    StopOutcome.NOTHING: "Nothing to stop: I'm not writing anything right now.",
}


async def _stop(
    context: Context, key: ChatKey | None, update: Update, notice: str | None = None
) -> StopOutcome:
    """Stops the chat's running reply if the sender may."""
    if key is None:
        return StopOutcome.NOTHING
    return await context.services.engine.stop(key, _stopper(update), notice=notice)


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
    outcome = await _stop(context, chat_key(update), update, notice=STOPPED)
    if outcome is not StopOutcome.STOPPED:  # a stopped reply posts "Stopped." below its text
        await message.reply_text(SAYS[outcome])


async def stop_button(update: Update, context: Context) -> None:
    query = update.callback_query
    if query is None:
        return
    key = chat_key(update)
    outcome = await _stop(context, key, update)
    log.info("chat=%s Stop pressed: %s", key, outcome.value)
    try:
        await query.answer(SAYS[outcome])
    except TelegramError as exc:  # the answer is cosmetic; the stop already happened
        log.debug("Could not answer the Stop button: %s", exc)


async def retry(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    engine = context.services.engine
    await _again(
        update,
        context,
        # A photo question fetches its images again (their Telegram file ids are stored).
        lambda key, sink, user_id, check: engine.retry(
            key, sink, user_id, may_retry_others=check, source=TelegramMedia(context.bot, message)
        ),
    )


async def continue_command(update: Update, context: Context) -> None:
    await _continue(update, context)


async def continue_button(update: Update, context: Context) -> None:
    query = update.callback_query
    if query is None:
        return
    try:  # pressed once: the button goes, the continuation shows the rest
        await query.answer()
        await query.edit_message_reply_markup(None)
    except TelegramError as exc:  # cosmetic; the continuation still runs
        log.debug("Could not take the Continue button off: %s", exc)
    await _continue(update, context)


async def _continue(update: Update, context: Context) -> None:
    engine = context.services.engine
    await _again(
        update,
        context,
        lambda key, sink, user_id, check: engine.continue_(
            key, sink, user_id, may_continue_others=check
        ),
    )


async def _again(update: Update, context: Context, call: _OnOwnAnswer) -> None:
    """/retry and /continue: the engine goes back to the chat's last answer, in the chat's
    turn; in a group only the person who asked (or an admin, `check`) may have it."""
    key = chat_key(update)
    if key is None or update.effective_message is None:
        return
    user = update.effective_user
    user_id = user.id if user else None
    check = _admin_check(update, context)
    await answer(update, context, key, lambda sink: call(key, sink, user_id, check))


def _admin_check(update: Update, context: Context) -> AdminCheck:
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
