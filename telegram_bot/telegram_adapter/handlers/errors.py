"""The one error handler: log first (with the traceback), then tell the user briefly."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import Forbidden, InvalidToken, RetryAfter, TelegramError

from ...errors import BotError, StorageError
from ..services import Context

log = logging.getLogger(__name__)


async def on_error(update: object, context: Context) -> None:
    if update is None and isinstance(context.error, TelegramError):
        # Polling hit a network fault, flood control or a body that is not JSON (a proxy's
        # page); python-telegram-bot keeps polling (with back-off): one calm line.
        log.warning("Fetching updates failed (%s); polling goes on", context.error)
        return
    chat = update.effective_chat if isinstance(update, Update) else None
    if isinstance(context.error, InvalidToken):
        # The token was revoked: the process is stopping (lifecycle.py); nothing can be sent.
        log.warning(
            "chat=%s answer dropped: Telegram rejected the bot token", chat.id if chat else "-"
        )
        return
    if isinstance(context.error, RetryAfter | Forbidden):
        # Telegram refuses to take messages for this chat now: telling the user would only
        # be refused as well (a retry storm), so log one line and drop this update's answer.
        log.warning("chat=%s answer dropped: %s", chat.id if chat else "-", context.error)
        return
    if isinstance(context.error, StorageError):
        line = context.error.describe()  # the store logged the cause, at ERROR, once
    else:
        log.error("Unhandled error while processing an update", exc_info=context.error)
        line = BotError.user_message()
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    try:
        await context.bot.send_message(update.effective_chat.id, line)
    except TelegramError as exc:
        log.warning("Could not tell chat %s about the error: %s", update.effective_chat.id, exc)
