"""What the bot does with input that is not a plain question.

- Edited messages, channel posts and messages from other bots are ignored (`gate`, which runs
  before every other handler). An edit is not answered anew: the answer to the original is
  already in the chat and in the history, and answering every typo fix would double the cost.
- Stickers, GIFs, videos and other messages the bot cannot read get one polite line in a
  private chat saying what it reads; in groups they pass in silence. (Voice notes, photos and
  files are `media.py`'s.)
- Unknown commands get a hint to /help (in groups only when addressed to this bot).
"""

from __future__ import annotations

import logging

from telegram import Message, Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop, CommandHandler

from ...errors import UnsupportedMessage
from ..services import Context

log = logging.getLogger(__name__)


async def gate(update: Update, context: Context) -> None:
    """Runs first: drops updates the bot deliberately does not answer."""
    if update.edited_message is not None or update.edited_channel_post is not None:
        log.debug("Ignoring an edited message in chat %s", update.effective_chat)
        raise ApplicationHandlerStop
    if update.channel_post is not None:
        raise ApplicationHandlerStop
    message = update.message
    user = update.effective_user
    if message is not None and user is not None and user.is_bot:
        anonymous_admin = (
            message.sender_chat is not None and message.sender_chat.id == message.chat.id
        )
        if not anonymous_admin:
            raise ApplicationHandlerStop


async def unsupported(update: Update, context: Context) -> None:
    """A sticker, GIF, video... in a private chat: say what the bot reads."""
    message = update.effective_message
    if message is None:
        return
    log.info("chat=%s non-text message (%s) answered with a note", message.chat_id, _kind(message))
    await message.reply_text(UnsupportedMessage.user_message())


def _kind(message: Message) -> str:
    for kind in ("sticker", "animation", "voice", "audio", "video", "video_note", "photo"):
        if getattr(message, kind):
            return kind
    return "document" if message.document else "other"


async def unknown_command(update: Update, context: Context) -> None:
    """Commands no handler knows: a hint to /help (silence for other bots' commands)."""
    message = update.effective_message
    if message is None or not message.text:
        return
    command, _, addressee = message.text.split()[0][1:].partition("@")
    me = context.services.bot_username.lower()
    if addressee and addressee.lower() != me:
        return  # meant for another bot
    if message.chat.type != ChatType.PRIVATE and not addressee:
        return  # a bare /command in a group may be for any bot there
    if command.lower() in known_commands(context):
        return
    await message.reply_text(f"I don't know /{command}. Send /help to see what I can do.")


def known_commands(context: Context) -> set[str]:
    return {
        name.lower()
        for handlers in context.application.handlers.values()
        for handler in handlers
        if isinstance(handler, CommandHandler)
        for name in handler.commands
    }
