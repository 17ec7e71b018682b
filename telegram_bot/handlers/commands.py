"""/start, /help, /reset, /memory and the command menu."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telegram import Bot, BotCommand, Update
from telegram.error import TelegramError

from ..models import ChatKey

if TYPE_CHECKING:
    from ..app import Context

log = logging.getLogger(__name__)

COMMANDS = (
    ("help", "What I can do"),
    ("reset", "Start a fresh conversation"),
    ("memory", "What I remember of this conversation"),
)


def chat_key(update: Update) -> ChatKey:
    message = update.effective_message
    chat = update.effective_chat
    if chat is None:
        raise ValueError("update without a chat")
    thread = message.message_thread_id if message and message.is_topic_message else 0
    return ChatKey(chat.id, thread or 0)


def help_text() -> str:
    lines = [f"/{name} — {description}" for name, description in COMMANDS]
    return (
        "Just send me a message and I'll answer. I remember our conversation, even after I "
        "restart.\n\nCommands:\n" + "\n".join(lines)
    )


async def start(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    model = context.services.settings.openai_model
    await message.reply_text(
        f"Hi! I'm an AI assistant (model: {model}). Ask me anything — I'll answer as I write, "
        "and I remember what we talked about.\n\n" + help_text()
    )


async def help_(update: Update, context: Context) -> None:
    if update.effective_message is not None:
        await update.effective_message.reply_text(help_text())


async def reset(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    archived = await context.services.engine.reset(chat_key(update))
    note = f" ({archived} earlier messages archived)" if archived else ""
    await message.reply_text(f"Started a fresh conversation{note}. What's on your mind?")


async def memory(update: Update, context: Context) -> None:
    message = update.effective_message
    chat = update.effective_chat
    if message is None or chat is None:
        return
    from ..memory import describe
    from .sender import TelegramReply

    key = chat_key(update)
    status = await context.services.engine.memory_status(key)
    sink = TelegramReply(
        context.bot,
        chat.id,
        interval=context.services.settings.stream_edit_interval,
        thread_id=key.thread_id or None,
        reply_to=message.message_id,
        private=False,
    )
    for part in split_plain(describe(status)):
        await sink.send_notice(part)


def split_plain(text: str, limit: int = 4000) -> list[str]:
    """Plain text in Telegram-sized pieces, cut at line ends where possible."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*parts, text] if text else parts


async def publish_commands(bot: Bot) -> None:
    """Registers the command menu; a failure only costs the menu, so it is logged, not raised."""
    try:
        await bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
    except TelegramError as exc:
        log.warning("Could not register the command menu: %s", exc)
