"""A message for the bot (any private text, an addressed group message, /ask): hand it to the
engine and show its reply as it streams. A question that replies to a photo is answered with
the photo (`media.respond`).

The handler only reads the update (whose conversation, who wrote it, the text cleaned, a
forward quoted with its origin); the engine decides the rest: too long, over a usage limit,
already answered, stored before the model is asked. `replies.answer` turns every failure into
one line in the chat.
"""

from __future__ import annotations

from telegram import Update

from ...engine.turns import Incoming
from ..attachments import image_of
from ..replies import answer
from ..services import Context
from ..updates import author_of, chat_key, clean, text_of
from .media import respond


async def on_text(update: Update, context: Context, *, text: str | None = None) -> None:
    """Answers a message; `text` replaces the message's own (a group mention stripped, /ask)."""
    message = update.effective_message
    key = chat_key(update)
    if message is None or key is None or message.text is None:
        return
    text = text_of(message) if text is None else clean(text)
    if not text:
        return  # only whitespace or control characters: nothing to answer
    replied = message.reply_to_message
    image = image_of(replied) if replied is not None else None
    if image is not None:  # a question about a photo: the model gets to see it
        await respond(update, context, key, message, text, (image,))
        return
    incoming = Incoming(key, text, author_of(message), message.message_id, message.chat.type)
    engine = context.services.engine
    await answer(update, context, key, lambda sink: engine.respond(incoming, sink))
