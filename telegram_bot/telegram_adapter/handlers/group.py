"""Group chats: answer what is addressed to the bot, overhear the rest as context.

What counts as addressed is `addressing.py`. Everything else the bot can see is "overheard":
the engine keeps the newest GROUP_CONTEXT_MESSAGES since the last addressed message (see
migration m003) without a reply or a model call, so "@bot what do you think about that?" can
refer to it. With Telegram's privacy mode on (the default) the bot sees little besides what is
addressed to it; `membership.log_privacy_mode` says so once at start-up.
"""

from __future__ import annotations

from telegram import Update

from ...engine.turns import Incoming
from ...errors import StorageError
from ..addressing import addressed_text, with_quote
from ..services import Context
from ..updates import author_of, chat_key, command_argument, text_of
from .chat import on_text


async def on_group_text(update: Update, context: Context) -> None:
    """Every text message in a group: answer it if it is for the bot, else overhear it."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    text = addressed_text(message, context.bot)
    if text is None:
        await overhear(update, context)
        return
    if not text:
        await message.reply_text(
            f"Yes? Ask me something: @{context.bot.username} what's the tallest mountain?",
            do_quote=True,
        )
        return
    await on_text(update, context, text=with_quote(message, text, context.bot.id))


async def on_ask(update: Update, context: Context) -> None:
    """/ask <question>: the explicit way to address the bot (works with privacy mode on)."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    question = command_argument(message.text)
    if not question:
        await message.reply_text("Usage: /ask <your question>", do_quote=True)
        return
    await on_text(update, context, text=with_quote(message, question, context.bot.id))


async def overhear(update: Update, context: Context) -> None:
    """Keeps an unaddressed group message as context; never replies, never calls the model."""
    message = update.effective_message
    key = chat_key(update)
    keep = context.services.settings.group_context_messages
    if message is None or key is None or not message.text or keep <= 0:
        return
    kind = message.chat.type
    incoming = Incoming(key, text_of(message), author_of(message), message.message_id, kind)
    try:
        await context.services.engine.overhear(incoming, keep)
    except StorageError:  # logged by the store; chatter nobody addressed gets no line
        return
