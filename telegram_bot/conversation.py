"""The conversation engine: store the message, build the prompt, call the model, store the reply.

It imports nothing from `telegram`: the Telegram handlers, the console and the tests all drive
this same code through a `ReplySink`, which shows text as it streams and delivers the final
answer. The user's message is committed before the model is called, so no failure can lose it;
the reply is committed once, when it is complete or when it is cut short (marked partial or
stopped), so the database never holds a half-written turn. One chat's turns run one at a time
(a per-chat lock); different chats never wait for each other.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import tokens
from .compaction import Compactor
from .errors import ContextTooLong, ModelStreamInterrupted
from .locks import KeyedLocks
from .memory import Memory, MemoryStatus, Prompt, memory_status
from .models import Author, ChatKey, NewTurn, Role, Status, Usage

if TYPE_CHECKING:
    from .config import Settings
    from .llm import LLM, Completion, OnText
    from .store import Store

log = logging.getLogger(__name__)


class ReplySink(Protocol):
    """Where a reply goes: a Telegram chat, a terminal, a test."""

    def partial(self, text: str) -> None:
        """The reply so far; called often, must not block (throttling is the sink's job)."""

    async def final(self, text: str, status: Status) -> int | None:
        """Delivers the finished (or cut-short) reply; returns the platform's message id."""


@dataclass(frozen=True, slots=True)
class Incoming:
    chat: ChatKey
    text: str
    author: Author | None = None
    message_id: int | None = None
    chat_kind: str = "private"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    status: Status
    usage: Usage
    user_turn_id: int
    turn_id: int | None
    message_id: int | None


class Conversation:
    def __init__(self, store: Store, llm: LLM, settings: Settings) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self._locks = KeyedLocks()
        self.memory = Memory(store, settings)
        self.compactor = Compactor(store, llm, settings, self.memory)

    async def persona(self, chat: ChatKey) -> str:
        return await self.store.get_persona(chat.chat_id) or self.settings.system_prompt

    async def respond(self, incoming: Incoming, sink: ReplySink) -> Reply:
        """Answers one user message; raises ModelError after storing whatever can be kept."""
        async with self._locks.hold(incoming.chat):
            user_turn_id = await self._store_user_turn(incoming)
            persona = await self.persona(incoming.chat)
            latest = ""

            def on_text(text: str) -> None:
                nonlocal latest
                latest = text
                sink.partial(text)

            try:
                completion = await self._ask(incoming.chat, persona, user_turn_id, on_text)
            except ModelStreamInterrupted as exc:
                if exc.partial:
                    await self._finish(incoming, exc.partial, Status.PARTIAL, sink, user_turn_id)
                raise
            except asyncio.CancelledError:
                if latest:
                    await self._finish(incoming, latest, Status.PARTIAL, sink, user_turn_id)
                raise
            reply = await self._finish(
                incoming,
                completion.text,
                Status.COMPLETE,
                sink,
                user_turn_id,
                usage=completion.usage,
                model=completion.model,
            )
            # The reply is out; fold old turns into the summary now, still holding the chat's
            # lock so its next message sees the result (and never waits inside a reply).
            await self.compactor.maintain(incoming.chat, persona)
            return reply

    async def memory_status(self, chat: ChatKey) -> MemoryStatus:
        """What /memory shows: tokens in use against the budget, and the summary."""
        return await memory_status(self.memory, chat, await self.persona(chat))

    async def _ask(self, chat: ChatKey, persona: str, turn_id: int, on_text: OnText) -> Completion:
        """One model call within the window; on a context-length error (the server's tokenizer
        counts more than ours) it learns a higher factor, squeezes the prompt and retries once.
        """
        prompt = await self.memory.prompt(chat, persona, turn_id=turn_id)
        try:
            return await self._call(chat, prompt, on_text)
        except ContextTooLong:
            log.warning(
                "chat=%s context length exceeded at %d counted tokens; retrying smaller",
                chat,
                prompt.tokens,
            )
            await self.memory.overflowed(self.settings.openai_model)
            # The raised factor also lowers the verbatim cap, so the compaction that follows
            # the reply folds what this squeezed prompt had to leave out.
            prompt = await self.memory.prompt(chat, persona, squeeze=0.5, turn_id=turn_id)
            return await self._call(chat, prompt, on_text)

    async def _call(self, chat: ChatKey, prompt: Prompt, on_text: OnText) -> Completion:
        completion = await self.llm.chat(
            prompt.messages,
            max_tokens=self.memory.max_output_tokens,
            stream=self.settings.streaming,
            on_text=on_text,
            label=str(chat),
        )
        if not completion.usage_estimated:
            await self.memory.learn(
                self.settings.openai_model,
                prompt.tokens,
                completion.usage.prompt_tokens,
            )
        return completion

    async def reset(self, chat: ChatKey) -> int:
        """Starts a fresh conversation; earlier turns stay in the database, archived."""
        async with self._locks.hold(chat):
            archived = await self.store.archive(chat)
            self.compactor.forget(chat)
        log.info("chat=%s reset: %d messages archived", chat, archived)
        return archived

    async def _store_user_turn(self, incoming: Incoming) -> int:
        text = incoming.text
        return await self.store.add_turn(
            NewTurn(
                chat=incoming.chat,
                role=Role.USER,
                text=text,
                tokens=tokens.count_message(text, self.settings.openai_model),
                author=incoming.author,
                tg_message_id=incoming.message_id,
            ),
            chat_kind=incoming.chat_kind,
        )

    async def _finish(
        self,
        incoming: Incoming,
        text: str,
        status: Status,
        sink: ReplySink,
        user_turn_id: int,
        *,
        usage: Usage | None = None,
        model: str | None = None,
    ) -> Reply:
        """Delivers the reply, then stores it once, even when delivery fails."""
        message_id: int | None = None
        try:
            message_id = await sink.final(text, status)
        finally:
            turn_id = await self.store.add_turn(
                NewTurn(
                    chat=incoming.chat,
                    role=Role.ASSISTANT,
                    text=text,
                    tokens=tokens.count_message(text, self.settings.openai_model),
                    status=status,
                    tg_message_id=message_id,
                    reply_to=user_turn_id,
                    model=model,
                    usage=usage or Usage(),
                ),
                chat_kind=incoming.chat_kind,
            )
        return Reply(text, status, usage or Usage(), user_turn_id, turn_id, message_id)
