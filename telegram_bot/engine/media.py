"""Media in, text (and images) out: what a voice note, a photo or a file becomes for a turn.

Two steps, so nothing costly happens to a message the bot will not answer:

- `check` runs before the chat's turn and the usage limits, on what the platform said about
  the files (no download): too large for the platform (Telegram's 20 MB), a recording longer
  than MAX_VOICE_SECONDS, a file type the bot cannot read, a photo for a model known to refuse
  images. Each is one line for the user.
- `prepare` runs in the chat's turn, after the limits: it downloads through the message's
  `MediaSource`, then transcribes speech (booking its seconds on the user and chat: the
  transcript *is* the user's turn, so it has to exist before the turn is stored), reads a file's
  text, or keeps an image's bytes for this one model call.

What is stored is text a later prompt, the summary and recall can all read: the transcript, a
file framed with its name, or for images a short placeholder with the caption (`[photo:
caption]`), since the image itself is sent only in the turn it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from ..clock import today
from ..errors import (
    DocumentTooLong,
    FileTooLarge,
    NothingHeard,
    UnsupportedFile,
    VisionRefused,
    VoiceTooLong,
)
from ..llm.vision import IMAGE_MIMES, NO_CAPTION_HINT, Picture, sniff
from ..models import Attachment, MessageKind
from . import documents
from .turns import Incoming

if TYPE_CHECKING:
    from ..config import Settings
    from ..llm.client import LLM
    from ..llm.transcription import Transcriber
    from ..storage import Store

log = logging.getLogger(__name__)

# What a transcription file is called by kind, when the platform gives no name (the server
# reads the format from the extension).
_RECORDING_NAMES = {
    MessageKind.VOICE: ("voice.ogg", "audio/ogg"),
    MessageKind.VIDEO_NOTE: ("video_note.mp4", "video/mp4"),
    MessageKind.AUDIO: ("audio.mp3", "audio/mpeg"),
}
QUOTE_CHARS = 300  # of a transcript, shown back to the user


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready to be stored and answered."""

    text: str  # what is stored as the user's turn
    kind: MessageKind = MessageKind.TEXT
    duration: int | None = None
    pictures: tuple[Picture, ...] = ()  # for this turn's model call only
    hint: str = ""  # what the model is asked when an image came without a caption


def placeholder(kind: MessageKind, attachments: tuple[Attachment, ...], caption: str) -> str:
    """The stored text of a message with images: `[photo: caption]`, `[3 photos]`..."""
    count = len(attachments)
    if kind is MessageKind.PHOTO:
        first = attachments[0] if attachments else None
        if count == 1 and first is not None and first.name:
            what = f"image {first.name}"
        else:
            what = "photo" if count <= 1 else f"{count} photos"
    elif kind is MessageKind.DOCUMENT:
        what = f"file {attachments[0].name}" if attachments and attachments[0].name else "file"
    else:
        what = kind.value.replace("_", " ")
    return f"[{what}: {caption}]" if caption else f"[{what}]"


def quoted(transcript: str) -> str:
    """What the user is shown of their recording, so a mishearing is obvious."""
    short = " ".join(transcript.split())
    if len(short) > QUOTE_CHARS:
        short = short[:QUOTE_CHARS].rstrip() + "…"
    return f"🎤 “{short}”"


class MediaReader:
    def __init__(
        self, store: Store, llm: LLM, transcriber: Transcriber, settings: Settings
    ) -> None:
        self.store = store
        self.llm = llm
        self.transcriber = transcriber
        self.settings = settings

    # -- before anything is downloaded ---------------------------------------------------

    def check(self, incoming: Incoming) -> None:
        """Refuses what the bot will not read, from the platform's description alone."""
        limit = incoming.source.max_bytes if incoming.source is not None else None
        for item in incoming.attachments:
            if limit is not None and item.size is not None and item.size > limit:
                log.info(
                    "chat=%s %s of %d bytes refused (too large)",
                    incoming.chat,
                    item.kind,
                    item.size,
                )
                raise FileTooLarge()
            if item.kind.heard:
                seconds = item.duration or 0
                if seconds > self.settings.max_voice_seconds:
                    log.info(
                        "chat=%s %s of %d s refused (MAX_VOICE_SECONDS)",
                        incoming.chat,
                        item.kind,
                        seconds,
                    )
                    raise VoiceTooLong(seconds, self.settings.max_voice_seconds)
            elif item.kind is MessageKind.PHOTO:
                if item.mime and item.mime.lower() not in IMAGE_MIMES:
                    raise UnsupportedFile(self.settings.max_document_chars)
            elif item.kind is MessageKind.DOCUMENT:
                self._check_document(item)
        if incoming.kind is MessageKind.PHOTO:
            self.check_vision()

    def _check_document(self, item: Attachment) -> None:
        limit = self.settings.max_document_chars
        kind = documents.file_kind(item)
        if kind is None:
            log.info("A file of type %s refused (not text)", item.mime or "unknown")
            raise UnsupportedFile(limit)
        if (
            kind == "text"
            and item.size is not None
            and item.size > limit * documents.BYTES_PER_CHAR
        ):
            raise DocumentTooLong(limit)

    def check_vision(self) -> None:
        if not self.llm.accepts_images():
            log.info(
                "A photo refused: %s takes no images (VISION_MODEL)", self.settings.image_model
            )
            raise VisionRefused()

    # -- in the chat's turn, after the limits ----------------------------------------------

    async def prepare(self, incoming: Incoming) -> Prepared:
        """Downloads and reads the message's files; raises a MediaError with the user's line."""
        kind = incoming.kind
        if kind is MessageKind.TEXT or incoming.source is None:
            text = incoming.text
            if kind is not MessageKind.TEXT:
                text = placeholder(kind, incoming.attachments, incoming.text)
            return Prepared(text, kind)
        if kind.heard:
            return await self._listen(incoming)
        if kind is MessageKind.PHOTO:
            pictures = await self.pictures(incoming)
            text = placeholder(kind, incoming.attachments, incoming.text)
            return Prepared(text, kind, pictures=pictures, hint=self.hint(incoming.text))
        return await self._read(incoming)

    @staticmethod
    def hint(caption: str) -> str:
        return "" if caption.strip() else NO_CAPTION_HINT

    async def pictures(self, incoming: Incoming) -> tuple[Picture, ...]:
        """The images' bytes, for one model call (a photo's turn, or its /retry)."""
        if incoming.source is None:
            return ()
        self.check_vision()
        found: list[Picture] = []
        for item in incoming.attachments:
            data = await incoming.source.fetch(item)
            sniffed = sniff(data)
            if sniffed is None:
                raise UnsupportedFile(self.settings.max_document_chars)
            mime, width, height = sniffed
            found.append(Picture(data, mime, width or item.width, height or item.height))
        return tuple(found)

    async def _listen(self, incoming: Incoming) -> Prepared:
        assert incoming.source is not None
        item = incoming.attachments[0]
        name, mime = _RECORDING_NAMES.get(item.kind, ("audio.ogg", "audio/ogg"))
        if item.name:
            name = PurePosixPath(item.name).name
        data = await incoming.source.fetch(item)
        seconds = item.duration or 0
        transcript = await self.transcriber.transcribe(
            data, name, item.mime or mime, seconds=seconds, label=str(incoming.chat)
        )
        user_id = incoming.author.user_id if incoming.author else None
        await self.store.record_usage(
            incoming.chat, user_id, today(), 0, 0, audio_seconds=max(seconds, 1)
        )
        if not any(ch.isalnum() for ch in transcript):
            log.info("chat=%s %s of %d s: nothing heard", incoming.chat, item.kind, seconds)
            raise NothingHeard()
        await incoming.source.heard(transcript)
        text = transcript
        if incoming.text:
            text = f"{incoming.text}\n\n[transcript of {name}]\n{transcript}"
        return Prepared(text, item.kind, duration=seconds or None)

    async def _read(self, incoming: Incoming) -> Prepared:
        assert incoming.source is not None
        item = incoming.attachments[0]
        kind = documents.file_kind(item)
        limit = self.settings.max_document_chars
        if kind is None:
            raise UnsupportedFile(limit)
        data = await incoming.source.fetch(item)
        if kind == "pdf":  # pypdf is pure Python: a long PDF must not block every other chat
            content = await asyncio.to_thread(documents.read, kind, data, limit)
        else:
            content = documents.read(kind, data, limit)
        name = PurePosixPath(item.name or "file").name
        log.info("chat=%s read a %s file of %d characters", incoming.chat, kind, len(content))
        return Prepared(documents.frame(name, content, incoming.text), MessageKind.DOCUMENT)
