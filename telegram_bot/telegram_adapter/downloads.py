"""A message's files, fetched from Telegram for the engine (`engine.turns.MediaSource`).

`getFile` turns a `file_id` into a path under the Bot API's file URL, which contains the bot
token: the URL is used for the download and nowhere else (never logged, never in an exception
text, never sent to a model provider: the engine receives bytes). The Bot API serves files up
to 20 MB; a larger one is refused before anything is fetched, and "file is too big" from
getFile says the same. Telegram errors are translated here, into the engine's lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError

from ..engine.media import quoted
from ..errors import DownloadFailed, FileTooLarge
from ..models import Attachment

log = logging.getLogger(__name__)

BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass(slots=True)
class TelegramMedia:
    """The files of one message (and the message to answer with what was heard)."""

    bot: Bot
    message: Message
    max_bytes: int = BOT_API_DOWNLOAD_LIMIT

    async def fetch(self, attachment: Attachment) -> bytes:
        chat = self.message.chat_id
        try:
            file = await self.bot.get_file(attachment.ref)
            if file.file_size is not None and file.file_size > self.max_bytes:
                raise FileTooLarge()
            data = bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            if "too big" in str(exc).lower():
                log.info("chat=%s %s refused by getFile (over 20 MB)", chat, attachment.kind)
                raise FileTooLarge() from None
            log.warning("chat=%s download of a %s failed: %s", chat, attachment.kind, exc.message)
            raise DownloadFailed() from None
        except TelegramError as exc:
            # Not the exception's text: a transport error may name the file URL (the token).
            log.warning(
                "chat=%s download of a %s failed (%s)", chat, attachment.kind, type(exc).__name__
            )
            raise DownloadFailed() from None
        log.debug("chat=%s downloaded a %s of %d bytes", chat, attachment.kind, len(data))
        return data

    async def heard(self, transcript: str) -> None:
        """Replies to the recording with what was heard, before the answer streams."""
        try:
            await self.message.reply_text(quoted(transcript), do_quote=True)
        except TelegramError as exc:  # the answer still comes; the quote is a courtesy
            log.info("chat=%s could not show the transcript: %s", self.message.chat_id, exc)
