"""Thin Telegram adapters, one module per feature; `register` wires them onto the Application."""

from __future__ import annotations

from telegram import Update
from telegram.ext import (
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from ..services import BotApp
from ..sinks import CONTINUE_DATA, STOP_DATA
from . import admin, chat, commands, control, errors, gate, group, input, media, membership, usage

# Recordings, photos and files (an animated GIF also carries a document: it is not one).
MEDIA = (
    filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.PHOTO | filters.Document.ALL
) & ~filters.ANIMATION


def register(application: BotApp) -> None:
    # First drop what the bot never answers (edits, channel posts, other bots: a refusal to
    # another bot could start a ping-pong); then the allowlist, for every other update type
    # (see gate.py). Both run before any handler that stores or answers anything.
    application.add_handler(TypeHandler(Update, input.gate), group=-2)
    application.add_handler(TypeHandler(Update, gate.gate), group=-1)
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_))
    application.add_handler(CommandHandler("reset", admin.reset))
    application.add_handler(CommandHandler("ask", group.on_ask))
    application.add_handler(CommandHandler("persona", admin.persona))
    application.add_handler(CommandHandler("memory", commands.memory))
    application.add_handler(CommandHandler("stop", control.stop_command))
    application.add_handler(CommandHandler("retry", control.retry))
    application.add_handler(CommandHandler("continue", control.continue_command))
    application.add_handler(CommandHandler("usage", usage.usage))
    application.add_handler(CallbackQueryHandler(control.stop_button, pattern=f"^{STOP_DATA}$"))
    application.add_handler(
        CallbackQueryHandler(control.continue_button, pattern=f"^{CONTINUE_DATA}$")
    )
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, chat.on_text)
    )
    application.add_handler(
        MessageHandler(
            filters.ChatType.GROUPS & filters.TEXT & ~filters.COMMAND, group.on_group_text
        )
    )
    application.add_handler(MessageHandler(MEDIA, media.on_media))
    application.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, membership.on_migration))
    application.add_handler(
        ChatMemberHandler(membership.on_my_membership, ChatMemberHandler.MY_CHAT_MEMBER)
    )
    application.add_handler(
        MessageHandler(
            filters.ChatType.PRIVATE & ~filters.TEXT & ~filters.StatusUpdate.ALL, input.unsupported
        )
    )
    # Group 1 sees every command too; it answers only those no handler above knows.
    application.add_handler(MessageHandler(filters.COMMAND, input.unknown_command), group=1)
    application.add_error_handler(errors.on_error)
