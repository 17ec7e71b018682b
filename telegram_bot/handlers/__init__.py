"""Thin Telegram adapters, one module per feature; `register` wires them onto the Application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram.ext import CommandHandler, MessageHandler, filters

from . import chat, commands, errors

if TYPE_CHECKING:
    from ..app import BotApp


def register(application: BotApp) -> None:
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_))
    application.add_handler(CommandHandler("reset", commands.reset))
    application.add_handler(CommandHandler("memory", commands.memory))
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, chat.on_text)
    )
    application.add_error_handler(errors.on_error)
