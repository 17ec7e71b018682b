"""Voice notes, audio files, round video notes, photos (albums too) and files: read the update
into the engine's typed attachments and answer like a typed message.

The handler only reads the update (`attachments.py`: which file, its size and duration; the
caption as the question) and gives the engine a way to download the files (`downloads.py`);
the engine decides the rest (too long, too large, over a limit, not readable) and every refusal
or failure is one line in the chat (`replies.answer`). In a group, a message counts as
addressed by the usual rules (`addressing.py`: a caption that mentions the bot, a reply to the
bot's message); an unaddressed photo or file is kept as context by its placeholder, never
downloaded, and an unaddressed recording passes in silence (transcribing chatter would cost).
"""

from __future__ import annotations

import logging

from telegram import Message, Update
from telegram.constants import ChatType

from ...engine.turns import Incoming
from ...models import Attachment, ChatKey, MessageKind
from ..addressing import addressed_text, with_quote
from ..attachments import attachments_of, caption_of
from ..downloads import TelegramMedia
from ..replies import answer
from ..services import Context
from ..updates import author_of, chat_key

log = logging.getLogger(__name__)


async def on_media(update: Update, context: Context) -> None:
    """A message with a recording, photo or file, in a private chat or a group."""
    message = update.effective_message
    key = chat_key(update)
    if message is None or key is None:
        return
    messages = await _album(update, context, key, message)
    if not messages:
        return  # a later part of an album: its first part answers for all of them
    attachments = _together(messages)
    if not attachments:
        return
    caption = next((caption_of(m) for m in messages if m.caption), "")
    text = caption
    if message.chat.type != ChatType.PRIVATE:
        addressed = addressed_text(message, context.bot)
        if addressed is None:
            await _overhear(context, key, message, attachments, caption)
            return
        text = with_quote(message, addressed, context.bot.id)
    log.info("chat=%s %s message (%d attachments)", key, attachments[0].kind, len(attachments))
    await respond(update, context, key, message, text, attachments)


async def respond(
    update: Update,
    context: Context,
    key: ChatKey,
    message: Message,
    text: str,
    attachments: tuple[Attachment, ...],
) -> None:
    """Answers a message with attachments (also a question replying to someone's photo)."""
    incoming = Incoming(
        key,
        text,
        author_of(message),
        message.message_id,
        message.chat.type,
        attachments=attachments,
        source=TelegramMedia(context.bot, message),
    )
    engine = context.services.engine
    await answer(update, context, key, lambda sink: engine.respond(incoming, sink))


async def _album(update: Update, context: Context, key: ChatKey, message: Message) -> list[Message]:
    """The message, or for the first part of an album every part (later parts: none)."""
    group_id = message.media_group_id
    if not group_id:
        return [message]
    albums = context.services.albums
    leader = albums.is_leader(key, group_id, update.update_id)
    if not albums.add(key, group_id, message):
        return [message]  # came after its album was answered: on its own
    return await albums.gather(key, group_id) if leader else []


def _together(messages: list[Message]) -> tuple[Attachment, ...]:
    """The attachments answered together: an album's images, else the first message's file."""
    found = [item for m in messages for item in attachments_of(m)]
    if not found:
        return ()
    if found[0].kind is MessageKind.PHOTO:
        return tuple(item for item in found if item.kind is MessageKind.PHOTO)
    return (found[0],)


async def _overhear(
    context: Context,
    key: ChatKey,
    message: Message,
    attachments: tuple[Attachment, ...],
    caption: str,
) -> None:
    keep = context.services.settings.group_context_messages
    if keep <= 0 or attachments[0].kind.heard:
        return
    incoming = Incoming(
        key, caption, author_of(message), message.message_id, message.chat.type, attachments
    )
    await context.services.engine.overhear(incoming, keep)
