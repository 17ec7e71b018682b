"""Thin Telegram adapters, one module per feature; `register` wires them onto the Application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, TypeHandler, filters

from . import chat, commands, control, errors, input, usage

if TYPE_CHECKING:
    from ..app import BotApp


def register(application: BotApp) -> None:
    # Group -1 runs first and drops what the bot never answers (edits, channel posts, bots).
    application.add_handler(TypeHandler(Update, input.gate), group=-1)
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_))
    application.add_handler(CommandHandler("reset", commands.reset))
    application.add_handler(CommandHandler("stop", control.stop_command))
    application.add_handler(CommandHandler("retry", control.retry))
    application.add_handler(CommandHandler("usage", usage.usage))
    application.add_handler(
        CallbackQueryHandler(control.stop_button, pattern=f"^{chat.STOP_DATA}$")
    )
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, chat.on_text)
    )
    application.add_handler(
        MessageHandler(
            filters.ChatType.PRIVATE & ~filters.TEXT & ~filters.StatusUpdate.ALL, input.unsupported
        )
    )
    # Group 1 sees every command too; it answers only those no handler above knows.
    application.add_handler(MessageHandler(filters.COMMAND, input.unknown_command), group=1)
    application.add_error_handler(errors.on_error)
