"""When a group message is meant for the bot, and what of it the model should read (pure).

In a group the bot answers only what is meant for it: a message that @mentions it (a
`mention` entity with its username, or a `text_mention` of its user), a reply to one of its
own messages, or a command addressed to it (`/ask ...`, `/cmd@ThisBot`; python-telegram-bot's
CommandHandler already ignores `/cmd@OtherBot`). The mention is removed from what the model
reads, and a message the user replied to is quoted with the question.
"""

from __future__ import annotations

from telegram import Bot, Message, MessageEntity

from .updates import author_of, command_for

_EDGE_PUNCTUATION = " \t\n,:;\u00a0"
QUOTE_CHARS = 1000  # of a replied-to message, shown to the model with the question


def _index(text: str, utf16_offset: int) -> int:
    """Python string index of a Telegram (UTF-16) entity offset."""
    return len(text.encode("utf-16-le")[: utf16_offset * 2].decode("utf-16-le", "ignore"))


def body_of(message: Message) -> str:
    """The message's text, or a photo's, file's or recording's caption."""
    return message.text if message.text is not None else (message.caption or "")


def mention_spans(message: Message, bot_id: int, username: str) -> list[tuple[int, int]]:
    """Where the message mentions this bot, as (start, end) indices into `body_of(message)`."""
    text = body_of(message)
    spans = []
    entities = message.entities if message.text is not None else message.caption_entities
    for entity in entities or ():
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


def addressed_text(message: Message, bot: Bot) -> str | None:
    """The text meant for the model if this group message is addressed to the bot, else None.
    An empty string means the bot was addressed without a question."""
    text = body_of(message)
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
    author = author_of(replied)
    name = author.name if author else "someone"
    return f'[replying to {name}: "{quoted.strip()}"]\n{text}'


def is_for_me(message: Message, bot: Bot) -> bool:
    """Whether a group message asks something of the bot (for refusals: never answer chatter)."""
    text = message.text or ""
    return command_for(text, bot.username) is not None or addressed_text(message, bot) is not None
