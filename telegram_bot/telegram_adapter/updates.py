"""What every handler needs from an update: whose conversation it is, who wrote it, and its
text as the model should read it. Pure helpers over python-telegram-bot's objects.

One place for each decision, so the handlers, the ordering of updates and the Stop button
always agree. Above all the chat key: a forum topic is a conversation of its own, but in a
supergroup without topics Telegram also puts a `message_thread_id` on every reply (the reply
chain's first message) without `is_topic_message`, and that is *not* a conversation of its
own: only `is_topic_message` makes a topic.
"""

from __future__ import annotations

import re
import unicodedata

from telegram import (
    MaybeInaccessibleMessage,
    Message,
    MessageOrigin,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
    Update,
)

from ..models import Author, ChatKey

_KEEP = frozenset("\n\t")
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+|$)")


# -- whose conversation --------------------------------------------------------------------------


def key_of(message: MaybeInaccessibleMessage) -> ChatKey:
    """The conversation a message belongs to: its chat, and its forum topic if it has one."""
    topic = isinstance(message, Message) and message.is_topic_message
    thread = message.message_thread_id if topic and isinstance(message, Message) else None
    return ChatKey(message.chat.id, thread or 0)


def chat_key(update: Update) -> ChatKey | None:
    """The conversation an update belongs to (a button press: the message it sits under)."""
    query = update.callback_query
    message = query.message if query is not None else update.effective_message
    if message is not None:
        return key_of(message)
    chat = update.effective_chat
    return ChatKey(chat.id) if chat is not None else None


# -- who said it ---------------------------------------------------------------------------------


def author_of(message: Message) -> Author | None:
    """Who said it, as the model will see it: a person's display name, or the chat's title for
    a message posted as a chat (an anonymous admin, a linked channel). Names are single-line
    and short, so they cannot pass for a line of the transcript."""
    if message.sender_chat is not None:
        title = message.sender_chat.title or message.sender_chat.username or "Admin"
        return Author(None, clean_name(title))
    user = message.from_user
    if user is None:
        return None
    return Author(user.id, clean_name(user.full_name or user.username or str(user.id)))


def clean_name(name: str) -> str:
    return " ".join(clean(name).replace(":", " ").split())[:64] or "Someone"


# -- what it says --------------------------------------------------------------------------------


def clean(text: str) -> str:
    """Drops control characters (C0/C1, not newlines or tabs) and surrounding whitespace;
    zero-width joiners (which build emoji) and right-to-left text are kept as they are."""
    if text.isprintable():
        return text.strip()
    return "".join(ch for ch in text if ch in _KEEP or unicodedata.category(ch) != "Cc").strip()


def origin_name(origin: MessageOrigin) -> str:
    if isinstance(origin, MessageOriginUser):
        return clean(origin.sender_user.full_name) or "someone"
    if isinstance(origin, MessageOriginHiddenUser):
        return clean(origin.sender_user_name) or "someone"
    if isinstance(origin, MessageOriginChat):
        return clean(origin.sender_chat.title or "") or "a chat"
    if isinstance(origin, MessageOriginChannel):
        return clean(origin.chat.title or "") or "a channel"
    return "someone"


def text_of(message: Message) -> str:
    """The text to answer: cleaned, and for a forward, quoted with where it came from, so the
    model knows the words are someone else's."""
    text = clean(message.text or "")
    origin = message.forward_origin
    if origin is None or not text:
        return text
    quoted = "\n".join(f"> {line}" for line in text.splitlines())
    return f"Forwarded message from {origin_name(origin)}:\n{quoted}"


# -- commands ------------------------------------------------------------------------------------


def command_for(text: str, username: str) -> str | None:
    """The command name if `text` is a command for this bot (`/cmd` or `/cmd@ThisBot`)."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    target = match.group(2)
    return match.group(1).lower() if target is None or target.lower() == username.lower() else None


def command_argument(text: str) -> str:
    """What follows "/cmd" or "/cmd@bot", keeping the argument's own line breaks."""
    match = _COMMAND.match(text)
    return text[match.end() :].strip() if match else text.strip()


def is_stop_command(text: str) -> bool:
    """`/stop`, `/stop@SomeBot` or `/stop …`, in any case (as CommandHandler matches it); not
    `/stopwatch` or any other command that merely starts with it, which waits its turn."""
    return text[:5].lower() == "/stop" and (len(text) == 5 or text[5] in "@ \t\n")
