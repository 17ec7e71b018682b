"""What a message carries besides text, as the engine's typed `Attachment`s (pure helpers).

Like `updates.py`, one place for each decision: which Telegram objects are a recording (voice
notes, audio files, round video notes), which an image (photos, and images sent as files),
which a file to read. For a photo Telegram offers several sizes; the largest whose long side
is at most ~2,048 px is taken (Telegram makes 90, 320, 800, 1280 and 2560), since a model
scales anything larger down anyway. An attachment holds Telegram's `file_id`, never a file URL
(which contains the bot token).
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import Document, Message, PhotoSize

from ..llm.vision import IMAGE_MIMES, MAX_IMAGE_SIDE
from ..models import Attachment, MessageKind
from .updates import clean


def best_photo(sizes: Sequence[PhotoSize]) -> PhotoSize | None:
    """The largest size not above MAX_IMAGE_SIDE on its long side (else the smallest)."""
    if not sizes:
        return None
    fitting = [s for s in sizes if max(s.width, s.height) <= MAX_IMAGE_SIDE]
    if fitting:
        return max(fitting, key=lambda s: s.width * s.height)
    return min(sizes, key=lambda s: s.width * s.height)


def _photo(size: PhotoSize) -> Attachment:
    return Attachment(
        MessageKind.PHOTO,
        size.file_id,
        size=size.file_size,
        width=size.width,
        height=size.height,
        mime="image/jpeg",
    )


def _document(document: Document) -> Attachment:
    mime = (document.mime_type or "").lower() or None
    kind = MessageKind.PHOTO if mime in IMAGE_MIMES else MessageKind.DOCUMENT
    return Attachment(
        kind, document.file_id, size=document.file_size, name=document.file_name, mime=mime
    )


def attachments_of(message: Message) -> tuple[Attachment, ...]:
    """The message's recording, image or file (empty for text, stickers, GIFs, videos)."""
    if message.voice is not None:
        voice = message.voice
        return (
            Attachment(
                MessageKind.VOICE,
                voice.file_id,
                size=voice.file_size,
                duration=_seconds(voice.duration),
                mime=voice.mime_type or "audio/ogg",
            ),
        )
    if message.video_note is not None:
        note = message.video_note
        return (
            Attachment(
                MessageKind.VIDEO_NOTE,
                note.file_id,
                size=note.file_size,
                duration=_seconds(note.duration),
                mime="video/mp4",
            ),
        )
    if message.audio is not None:
        audio = message.audio
        return (
            Attachment(
                MessageKind.AUDIO,
                audio.file_id,
                size=audio.file_size,
                duration=_seconds(audio.duration),
                name=audio.file_name,
                mime=audio.mime_type,
            ),
        )
    if message.photo:
        best = best_photo(message.photo)
        return (_photo(best),) if best is not None else ()
    if message.document is not None and message.animation is None:
        return (_document(message.document),)
    return ()


def image_of(message: Message) -> Attachment | None:
    """The image a message shows (a photo, or an image sent as a file), if any."""
    found = attachments_of(message)
    return found[0] if found and found[0].kind is MessageKind.PHOTO else None


def caption_of(message: Message) -> str:
    return clean(message.caption or "")


def _seconds(duration: object) -> int:
    """A duration as PTB gives it (int seconds, or a timedelta with PTB_TIMEDELTA)."""
    total = getattr(duration, "total_seconds", None)
    if callable(total):
        return round(float(total()))
    return int(duration) if isinstance(duration, int | float) else 0
