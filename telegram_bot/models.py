"""Domain records shared by the engine, the store and the adapters. No behaviour, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class MessageKind(StrEnum):
    """What a user sent: typed text, or media the bot turned into text (issue 14)."""

    TEXT = "text"
    VOICE = "voice"  # a voice note (OGG/Opus), transcribed
    AUDIO = "audio"  # an audio file, transcribed
    VIDEO_NOTE = "video_note"  # a round video note, its sound transcribed
    PHOTO = "photo"  # one or more images (an album, an image sent as a file)
    DOCUMENT = "document"  # a text-like file or a PDF, read as text

    @property
    def heard(self) -> bool:
        """Whether the message is speech, transcribed into the turn's text."""
        return self in (MessageKind.VOICE, MessageKind.AUDIO, MessageKind.VIDEO_NOTE)


class Status(StrEnum):
    """How a stored turn ended; only `complete` replies are certain to be whole."""

    COMPLETE = "complete"
    # the model stream broke, the process stopped mid-reply, or the answer reached the output
    # limit (`finish_reason: length`); /continue goes on from where it stopped
    PARTIAL = "partial"
    STOPPED = "stopped"  # the user pressed Stop / sent /stop
    FAILED = "failed"  # no text came back at all; kept for the record, never sent to the model


@dataclass(frozen=True, slots=True, order=True)
class ChatKey:
    """Which conversation a message belongs to: a Telegram chat, or a topic inside a forum.

    `thread_id` is 0 outside forum topics. The console uses chat_id 0, which Telegram never does.
    """

    chat_id: int
    thread_id: int = 0

    def __str__(self) -> str:
        return f"{self.chat_id}:{self.thread_id}" if self.thread_id else str(self.chat_id)


CONSOLE_CHAT = ChatKey(0)


@dataclass(frozen=True, slots=True)
class Author:
    user_id: int | None
    name: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that came with a message, as the platform described it (no bytes, no URL).

    `ref` is the platform's own id for the file (Telegram's `file_id`), enough to fetch its
    bytes again (/retry of a photo); never a download URL, which on Telegram holds the bot
    token. Stored with the turn as metadata (migration m008)."""

    kind: MessageKind
    ref: str
    size: int | None = None  # bytes, when the platform says
    duration: int | None = None  # seconds (voice, audio, video notes)
    width: int | None = None
    height: int | None = None
    name: str | None = None  # the file name (documents, audio files)
    mime: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, a reasoning model's thought (m012)
    # Of prompt_tokens, those the server reused from its prompt cache (as it reported them:
    # OpenAI's usage.prompt_tokens_details.cached_tokens, llama.cpp's timings.cache_n); 0 when
    # it does not say.
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Tokens summed over some days, chats or users, and how many model calls made them."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: int = 0  # of speech transcribed (billed per minute, not per token)
    reasoning_tokens: int = 0  # of completion_tokens, spent thinking (m012)
    cached_tokens: int = 0  # of prompt_tokens, served from the model server's prompt cache

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Turn:
    """One stored message of a conversation."""

    id: int
    chat: ChatKey
    role: Role
    text: str
    tokens: int
    created_at: datetime
    author: Author | None = None
    status: Status = Status.COMPLETE
    tg_message_id: int | None = None
    archived: bool = False
    summarised: bool = False
    kind: MessageKind = MessageKind.TEXT
    duration: int | None = None  # seconds of speech (voice, audio, video notes)
    attachments: tuple[Attachment, ...] = ()
    undelivered: bool = False  # stored, but Telegram has not confirmed it (m010)


@dataclass(frozen=True, slots=True)
class NewTurn:
    """A turn about to be stored; the store assigns id and timestamp."""

    chat: ChatKey
    role: Role
    text: str
    tokens: int
    author: Author | None = None
    status: Status = Status.COMPLETE
    tg_message_id: int | None = None
    reply_to: int | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    kind: MessageKind = MessageKind.TEXT
    duration: int | None = None
    attachments: tuple[Attachment, ...] = ()
    undelivered: bool = False  # a reply stored before it is sent (`Store.mark_delivered`)


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A user's message as the store holds it after `add_user_turn` / `add_overheard`.

    `created` is False when the message was already stored (Telegram delivered the update
    again after a crash, or another replica took it first); `answered` is True when a reply to
    it is stored, so the bot must not answer it again."""

    id: int
    created: bool = True
    answered: bool = False


@dataclass(frozen=True, slots=True)
class Summary:
    """The rolling summary of a conversation's earlier messages (ids first..last)."""

    id: int
    chat: ChatKey
    text: str
    tokens: int
    first_message_id: int
    last_message_id: int
    messages_covered: int  # all messages folded so far in this conversation
    created_at: datetime
    model: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class NewSummary:
    """A summary about to be stored; it covers every live message up to `last_message_id`."""

    chat: ChatKey
    text: str
    tokens: int
    first_message_id: int
    last_message_id: int
    model: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Backlog:
    """A conversation's summary and the turns not yet folded into it, read in one go."""

    summary: Summary | None
    turns: list[Turn]  # the newest unsummarised turns that fit the read's budget, oldest first
    complete: bool  # True when `turns` are every unsummarised turn of the conversation
    first_id: int | None = None  # the conversation's oldest live turn (summarised or not)


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """A raw Telegram update as it arrived (its JSON text), kept in the store's inbox from
    before Telegram is told it arrived until it has been handled.

    `chat` is the conversation it belongs to (None for updates without a chat); `received_at`
    is when the bot first received it (seconds since the epoch)."""

    update_id: int
    chat: ChatKey | None
    body: str
    received_at: float
