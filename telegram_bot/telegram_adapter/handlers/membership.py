"""The bot's membership of chats: added, removed, a group becoming a supergroup, and what
group privacy mode lets it see.

An introduction when added to a group; silence once removed (the chat is marked inactive); a
group that becomes a supergroup takes its history and settings along (`migration.py`). At
start-up the bot logs once what works with its privacy setting and how to change it.
"""

from __future__ import annotations

import logging

from telegram import Bot, ChatMember, ChatMemberRestricted, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError

from ...config import Settings
from ..migration import follow_migration
from ..services import Context

log = logging.getLogger(__name__)

GROUP_TYPES = frozenset({ChatType.GROUP, ChatType.SUPERGROUP})
_PRESENT = frozenset(
    {ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER}
)


def introduction(bot: Bot) -> str:
    return (
        f"Hi, I'm {bot.first_name}, an AI assistant. In this group I answer when you mention me "
        f"(@{bot.username}), reply to one of my messages, or write /ask <question>; I stay quiet "
        "otherwise. I see who says what, and everyone here shares one conversation with me. "
        "Admins can change my persona (/persona) or start afresh (/reset). /help lists it all."
    )


async def on_my_membership(update: Update, context: Context) -> None:
    """The bot was added to or removed from a chat (or blocked / unblocked in private)."""
    change = update.my_chat_member
    if change is None:
        return
    chat = change.chat
    was_in, now_in = _present(change.old_chat_member), _present(change.new_chat_member)
    services = context.services
    services.guard.admins.forget(chat.id)
    if was_in and not now_in:
        log.info("chat=%s removed the bot (%s); marking it inactive", chat.id, chat.type)
        await services.store.set_chat_active(chat.id, False)
        return
    if now_in and not was_in:
        await services.store.set_chat_active(chat.id, True)
        if chat.type in GROUP_TYPES:
            log.info("chat=%s added the bot (%s %r)", chat.id, chat.type, chat.title)
            try:
                await context.bot.send_message(chat.id, introduction(context.bot))
            except TelegramError as exc:
                log.warning("chat=%s could not send the introduction: %s", chat.id, exc)


def _present(member: ChatMember) -> bool:
    if member.status in _PRESENT:
        return True
    return isinstance(member, ChatMemberRestricted) and member.is_member


async def on_migration(update: Update, context: Context) -> None:
    """A group became a supergroup: Telegram tells both the old and the new chat."""
    message = update.effective_message
    if message is None:
        return
    if message.migrate_to_chat_id:
        await follow_migration(context.services, message.chat.id, message.migrate_to_chat_id)
    elif message.migrate_from_chat_id:
        await follow_migration(context.services, message.migrate_from_chat_id, message.chat.id)


# -- privacy mode ----------------------------------------------------------------------------------


def privacy_note(can_read_all: bool, keep: int) -> str:
    """What works in groups with the bot's current privacy setting, and how to change it."""
    if not can_read_all:
        return (
            "Group privacy mode is ON: in groups I receive only /commands, replies to my "
            "messages and @mentions, so I answer those but cannot keep other messages as "
            "context (GROUP_CONTEXT_MESSAGES). To let me read all group messages, open "
            "@BotFather -> /mybots -> your bot -> Bot Settings -> Group Privacy -> Turn off, "
            "then remove and re-add me to each group (or make me a group admin)."
        )
    kept = (
        f"I keep the last {keep} unaddressed messages per group as context"
        if keep
        else "GROUP_CONTEXT_MESSAGES=0, so I keep none of them"
    )
    return (
        "Group privacy mode is OFF: I receive every group message; "
        f"{kept}, and answer only what is addressed to me. To limit what I receive, open "
        "@BotFather -> /mybots -> your bot -> Bot Settings -> Group Privacy -> Turn on."
    )


def log_privacy_mode(can_read_all: bool, settings: Settings) -> None:
    log.info("%s", privacy_note(can_read_all, settings.group_context_messages))
