"""What goes into the engine and what comes out of it, whatever the platform (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..models import Attachment, Author, ChatKey, MessageKind, Status, Usage

# Below an answer that reached the output limit (`Reply.at_limit`).
AT_LIMIT = "The answer reached the length limit. Send /continue for the rest."


class ReplySink(Protocol):
    """Where a reply goes: a Telegram chat, a terminal, a test."""

    def partial(self, text: str) -> None:
        """The reply so far; called often, must not block (throttling is the sink's job)."""

    async def final(self, text: str, status: Status) -> int | None:
        """Delivers the finished (or cut-short) reply; returns the platform's message id."""

    async def send_notice(self, text: str) -> None:
        """A short line after the reply (an error, or the confirmation of a stop)."""

    def thinking(self, thought: str) -> None:
        """A reasoning model's thought so far (before the answer; called often, must not
        block): the sink shows that the model is thinking, and may show the thought with the
        answer (SHOW_REASONING). Never part of the answer."""


class MediaSource(Protocol):
    """How the engine reaches a message's files on its platform (Telegram: getFile)."""

    max_bytes: int  # the largest file the platform lets the bot download

    async def fetch(self, attachment: Attachment) -> bytes:
        """The file's bytes; raises DownloadFailed or FileTooLarge (errors.py)."""

    async def heard(self, transcript: str) -> None:
        """Shows the user what was heard in their recording, before the answer."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A user's message for the engine: the platform's own types stay in its adapter.

    `text` is what the user typed (a caption, for media); `attachments` what came with it, in
    order (several photos: an album), fetched through `source` once the message may be
    answered."""

    chat: ChatKey
    text: str
    author: Author | None = None
    message_id: int | None = None  # the platform's id: a redelivered message is stored once
    chat_kind: str = "private"
    attachments: tuple[Attachment, ...] = ()
    source: MediaSource | None = None

    @property
    def kind(self) -> MessageKind:
        return self.attachments[0].kind if self.attachments else MessageKind.TEXT


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    status: Status
    usage: Usage
    user_turn_id: int
    turn_id: int | None
    message_id: int | None
    tokens: int = 0  # the stored reply's token count (0 when nothing was stored)
    at_limit: bool = False  # it reached the output limit unfinished: /continue goes on


@dataclass(frozen=True, slots=True)
class Persona:
    """A chat's system prompt, and whether the chat chose it (else SYSTEM_PROMPT)."""

    text: str
    chosen: bool
