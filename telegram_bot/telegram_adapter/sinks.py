"""The one place a reply sink (a `TelegramReply`) is made, so every reply streams, replies
and carries its buttons the same way: Stop while it is written, and, below an answer that
reached the output limit, Continue (where the reply carries buttons: not a private chat's
draft preview). Each button lives as long as it means something: Stop until the answer is
final, Continue until it is pressed."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType

from ..models import ChatKey
from .sender import TelegramReply
from .services import Context

STOP_DATA = "stop"
STOP_MARKUP = InlineKeyboardMarkup([[InlineKeyboardButton("⏹ Stop", callback_data=STOP_DATA)]])
CONTINUE_DATA = "continue"
CONTINUE_MARKUP = InlineKeyboardMarkup(
    [[InlineKeyboardButton("▶ Continue", callback_data=CONTINUE_DATA)]]
)


def reply_sink(
    context: Context, key: ChatKey, *, reply_to: int | None = None, drafts: bool = False
) -> TelegramReply:
    """A sink into the conversation `key` (its forum topic included). `drafts`: preview the
    stream with Telegram's draft animation (private chats) rather than by edits that carry a
    Stop button."""
    return TelegramReply(
        context.bot,
        key.chat_id,
        interval=context.services.settings.stream_edit_interval,
        thread_id=key.thread_id or None,
        reply_to=reply_to,
        private=drafts,
        markup=STOP_MARKUP,
        flood=context.services.flood,
        show_thought=context.services.settings.show_reasoning == "collapsed",
    )


def answer_sink(update: Update, context: Context, key: ChatKey) -> TelegramReply:
    """The sink for the answer to this update's message: a reply to it in a group; in a
    private chat a draft preview, unless STOP_BUTTON trades drafts for a Stop button."""
    message = update.effective_message
    private = update.effective_chat is not None and update.effective_chat.type == ChatType.PRIVATE
    reply_to = None if private or message is None else message.message_id
    drafts = private and not context.services.settings.stop_button
    return reply_sink(context, key, reply_to=reply_to, drafts=drafts)
