"""Group chats: when the bot speaks, what it overhears, and its membership of a group.

In a group the bot answers only what is meant for it: a message that @mentions it (a `mention`
entity with its username, or a `text_mention` of its user), a reply to one of its own messages,
or a command addressed to it (`/ask ...`, `/cmd@ThisBot`; python-telegram-bot's CommandHandler
already ignores `/cmd@OtherBot`). Its answer is a reply to that message, in the same forum topic.

Everything else it can see is "overheard": stored as context (the newest GROUP_CONTEXT_MESSAGES
since the last addressed message, see migrations.m003) without a reply or a model call, so
"@bot what do you think about that?" can refer to it. With Telegram's privacy mode on (the
default) the bot sees little besides what is addressed to it; `log_privacy_mode` says so once at
start-up. Membership: an introduction when added, silence once removed (the chat is marked
inactive), and a group that becomes a supergroup takes its history and settings along.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from telegram import Bot, ChatMember, ChatMemberRestricted, Message, MessageEntity, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError

from ... import tokens
from ...models import Author, ChatKey, NewTurn, Role
from ..sender import TelegramReply, Undelivered
from .commands import chat_key
from .input import clean, text_of

if TYPE_CHECKING:
    from ...config import Settings
    from ..app import Context, Services

log = logging.getLogger(__name__)

GROUP_TYPES = frozenset({ChatType.GROUP, ChatType.SUPERGROUP})
_PRESENT = frozenset(
    {ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER}
)
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+|$)")
_EDGE_PUNCTUATION = " \t\n,:;\u00a0"
QUOTE_CHARS = 1000  # of a replied-to message, shown to the model with the question


# -- addressing (pure helpers over a Message) -------------------------------------------------


def _index(text: str, utf16_offset: int) -> int:
    """Python string index of a Telegram (UTF-16) entity offset."""
    return len(text.encode("utf-16-le")[: utf16_offset * 2].decode("utf-16-le", "ignore"))


def mention_spans(message: Message, bot_id: int, username: str) -> list[tuple[int, int]]:
    """Where the message mentions this bot, as (start, end) indices into `message.text`."""
    text = message.text or ""
    spans = []
    for entity in message.entities or ():
        start = _index(text, entity.offset)
        end = _index(text, entity.offset + entity.length)
        named = entity.type == MessageEntity.MENTION and (
            text[start:end].lower() == f"@{username}".lower()
        )
        linked = entity.type == MessageEntity.TEXT_MENTION and (
            entity.user is not None and entity.user.id == bot_id
        )
        if named or linked:
            spans.append((start, end))
    return spans


def strip_mentions(text: str, spans: list[tuple[int, int]], name: str) -> str:
    """The text for the model: a mention at either end is dropped with its punctuation
    ("@bot, what?" -> "what?", "thanks @bot!" -> "thanks!"); one inside a sentence becomes
    the bot's name ("I told @bot so" -> "I told TestBot so")."""
    for start, end in sorted(spans, reverse=True):
        before, after = text[:start], text[end:]
        if not before.strip():
            text = before + after.lstrip(_EDGE_PUNCTUATION)
        elif not after.strip(" \t\n.!?"):
            text = before.rstrip(_EDGE_PUNCTUATION) + after.strip()
        else:
            text = before + name + after
    return text.strip()


def is_reply_to_me(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot_id:
        return False
    # In a forum topic every message "replies" to the topic's creation message.
    return replied.forum_topic_created is None


def command_for(text: str, username: str) -> str | None:
    """The command name if `text` is a command for this bot (`/cmd` or `/cmd@ThisBot`)."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    target = match.group(2)
    return match.group(1).lower() if target is None or target.lower() == username.lower() else None


def addressed_text(message: Message, bot: Bot) -> str | None:
    """The text meant for the model if this group message is addressed to the bot, else None.
    An empty string means the bot was addressed without a question."""
    text = message.text or ""
    spans = mention_spans(message, bot.id, bot.username)
    if spans:
        return strip_mentions(text, spans, bot.first_name)
    if is_reply_to_me(message, bot.id):
        return text.strip()
    return None


def with_quote(message: Message, text: str, bot_id: int) -> str:
    """Prefixes the message the user replied to ("@bot is this true?" as a reply to Carol), so
    the model knows what "this" is even when privacy mode hid that message from the bot."""
    replied = message.reply_to_message
    if replied is None or replied.forum_topic_created is not None:
        return text
    if replied.from_user is not None and replied.from_user.id == bot_id:
        return text  # the bot's own message is already in the history
    quoted = message.quote.text if message.quote else (replied.text or replied.caption or "")
    if not quoted.strip():
        return text
    if len(quoted) > QUOTE_CHARS:
        quoted = quoted[:QUOTE_CHARS].rstrip() + "…"
    author = author_of_message(replied)
    name = author.name if author else "someone"
    return f'[replying to {name}: "{quoted.strip()}"]\n{text}'


def is_for_me(message: Message, bot: Bot) -> bool:
    """Whether a group message asks something of the bot (for refusals: never answer chatter)."""
    text = message.text or ""
    return command_for(text, bot.username) is not None or addressed_text(message, bot) is not None


def command_argument(text: str) -> str:
    """What follows "/cmd" or "/cmd@bot", keeping the argument's own line breaks."""
    match = _COMMAND.match(text)
    return text[match.end() :].strip() if match else text.strip()


def author_of_message(message: Message) -> Author | None:
    """Who said it, as the model will see it: a person's display name, or the chat's title for
    a message posted as a chat (an anonymous admin, a linked channel). Names are single-line
    and short, so they cannot pass for a line of the transcript."""
    if message.sender_chat is not None:
        title = message.sender_chat.title or message.sender_chat.username or "Admin"
        return Author(None, _clean_name(title))
    user = message.from_user
    if user is None:
        return None
    return Author(user.id, _clean_name(user.full_name or user.username or str(user.id)))


def _clean_name(name: str) -> str:
    return " ".join(clean(name).replace(":", " ").split())[:64] or "Someone"


# -- handlers ----------------------------------------------------------------------------------


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
    from .chat import on_text

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
    from .chat import on_text

    await on_text(update, context, text=with_quote(message, question, context.bot.id))


async def overhear(update: Update, context: Context) -> None:
    """Keeps an unaddressed group message as context; never replies, never calls the model."""
    message = update.effective_message
    settings = context.services.settings
    keep = settings.group_context_messages
    if message is None or not message.text or keep <= 0:
        return
    text = text_of(message)
    if not text or len(text) > settings.max_input_chars:
        return
    turn = NewTurn(
        chat=chat_key(update),
        role=Role.USER,
        text=text,
        tokens=tokens.count_message(text, settings.openai_model),
        author=author_of_message(message),
        tg_message_id=message.message_id,
    )
    chat = update.effective_chat
    await context.services.store.add_overheard(
        turn, keep=keep, chat_kind=chat.type if chat else "group"
    )


# -- membership ----------------------------------------------------------------------------------


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


async def follow_migration(services: Services, old_chat_id: int, new_chat_id: int) -> None:
    """Moves the chat's history, summaries and settings to its new id (idempotent)."""
    moved = await services.store.move_chat(old_chat_id, new_chat_id)
    services.guard.admins.forget(old_chat_id)
    if moved:
        log.info("chat=%s became supergroup %s: %d messages moved", old_chat_id, new_chat_id, moved)


async def redeliver_after_migration(
    context: Context, old: ChatKey, new_chat_id: int, lost: Undelivered | None = None
) -> None:
    """A reply failed because the group had just become a supergroup: move the chat, then
    deliver what the old chat did not receive (`lost`: the answer, already stored, or an error
    line) to the new one, so the question is still answered. Never the newest stored turn: the
    supergroup may have been answered in between."""
    services = context.services
    if services.guard.follow_migration(old.chat_id, new_chat_id):
        log.warning("Allowed group %s is now %s: add it to ALLOWED_CHAT_IDS", old, new_chat_id)
    await follow_migration(services, old.chat_id, new_chat_id)
    if lost is None:
        return
    sink = TelegramReply(
        context.bot,
        new_chat_id,
        interval=services.settings.stream_edit_interval,
        thread_id=old.thread_id or None,
        private=False,
    )
    if lost.status is None:
        await sink.send_notice(lost.text)
    else:
        await sink.final(lost.text, lost.status)


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
