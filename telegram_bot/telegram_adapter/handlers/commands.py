"""/start, /help, /memory and the command menu.

The menu is one declarative table, `MENU`: each command names where it applies (private chats,
every group member, group admins), and `publish_commands` registers each Telegram scope's list
from it, so everyone sees the commands they can actually use. A new command is one new row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import (
    Bot,
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeDefault,
    Update,
)
from telegram.constants import ChatType
from telegram.error import TelegramError

from ...memory.status import describe
from ..services import Context
from ..sinks import reply_sink
from ..updates import chat_key

log = logging.getLogger(__name__)

PRIVATE = "private"  # private chats
GROUP = "group"  # every member of a group
ADMIN = "admin"  # group administrators (they also see every GROUP command)


@dataclass(frozen=True, slots=True)
class MenuCommand:
    name: str
    description: str
    where: frozenset[str]


def _command(name: str, description: str, *where: str) -> MenuCommand:
    return MenuCommand(name, description, frozenset(where))


MENU: tuple[MenuCommand, ...] = (
    _command("help", "What I can do", PRIVATE, GROUP),
    _command("ask", "Ask me something", GROUP),
    _command("reset", "Start a fresh conversation", PRIVATE, ADMIN),
    _command("persona", "Show the persona (admins: change it)", GROUP),
    _command("persona", "Show or change my persona", PRIVATE, ADMIN),
    _command("memory", "What I remember of this conversation", PRIVATE, GROUP),
    _command("stop", "Stop the answer being written", PRIVATE, GROUP),
    _command("retry", "Answer my last question again", PRIVATE, GROUP),
    _command("continue", "Go on with an answer that stopped early", PRIVATE, GROUP),
    _command("usage", "Tokens you used today and this month", PRIVATE, GROUP),
)


def menu_for(scope: str) -> list[tuple[str, str]]:
    """(name, description) of the commands shown in `scope`; the first row of a name wins."""
    wanted = {scope, GROUP} if scope == ADMIN else {scope}
    chosen: dict[str, str] = {}
    for command in MENU:
        # A more specific row (e.g. the admins' wording) replaces a general one.
        specific = command.name not in chosen or scope in command.where
        if command.where & wanted and specific:
            chosen[command.name] = command.description
    return list(chosen.items())


COMMANDS = tuple(menu_for(PRIVATE))


def help_text(private: bool = True) -> str:
    if private:
        lines = [f"/{name} — {description}" for name, description in COMMANDS]
        return (
            "Just send me a message and I'll answer. I remember our conversation, even after I "
            "restart.\n\nCommands:\n" + "\n".join(lines)
        )
    lines = [f"/{name} — {description}" for name, description in menu_for(ADMIN)]
    return (
        "In this group I answer when you mention me, reply to one of my messages, or use "
        "/ask <question>; everyone here shares one conversation with me. Only admins can "
        "/reset it or change my persona.\n\nCommands:\n" + "\n".join(lines)
    )


def _is_private(update: Update) -> bool:
    return update.effective_chat is None or update.effective_chat.type == ChatType.PRIVATE


async def start(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None:
        return
    model = context.services.settings.openai_model
    await message.reply_text(
        f"Hi! I'm an AI assistant (model: {model}). Ask me anything — I'll answer as I write, "
        "and I remember what we talked about.\n\n" + help_text(_is_private(update))
    )


async def help_(update: Update, context: Context) -> None:
    if update.effective_message is not None:
        await update.effective_message.reply_text(help_text(_is_private(update)))


async def memory(update: Update, context: Context) -> None:
    message = update.effective_message
    key = chat_key(update)
    if message is None or key is None:
        return
    status = await context.services.engine.memory_status(key)
    sink = reply_sink(context, key, reply_to=message.message_id)
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
    """Registers the command menu per scope; a failure only costs the menu, so it is logged."""
    scopes: list[tuple[BotCommandScope, str]] = [
        (BotCommandScopeDefault(), PRIVATE),
        (BotCommandScopeAllPrivateChats(), PRIVATE),
        (BotCommandScopeAllGroupChats(), GROUP),
        (BotCommandScopeAllChatAdministrators(), ADMIN),
    ]
    for scope, where in scopes:
        commands = [BotCommand(name, text) for name, text in menu_for(where)]
        try:
            await bot.set_my_commands(commands, scope=scope)
        except TelegramError as exc:
            log.warning("Could not register the command menu (%s): %s", scope.type, exc)
