"""Thin Telegram adapters, one module per feature; `register` wires them onto the Application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram import Update
from telegram.ext import (
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from . import admin, chat, commands, errors, gate, group

if TYPE_CHECKING:
    from ..app import BotApp


def register(application: BotApp) -> None:
    # The allowlist runs before everything else, for every update type (see gate.py).
    application.add_handler(TypeHandler(Update, gate.gate), group=-1)
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_))
    application.add_handler(CommandHandler("reset", commands.reset))
    application.add_handler(CommandHandler("ask", group.on_ask))
    application.add_handler(CommandHandler("persona", admin.persona))
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, chat.on_text)
    )
    application.add_handler(
        MessageHandler(
            filters.ChatType.GROUPS & filters.TEXT & ~filters.COMMAND, group.on_group_text
        )
    )
    application.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, group.on_migration))
    application.add_handler(
        ChatMemberHandler(group.on_my_membership, ChatMemberHandler.MY_CHAT_MEMBER)
    )
    application.add_error_handler(errors.on_error)
