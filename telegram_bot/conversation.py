"""The conversation engine: store the message, build the prompt, call the model, store the reply.

It imports nothing from `telegram`: the Telegram handlers, the console and the tests all drive
this same code through a `ReplySink`, which shows text as it streams and delivers the final
answer. The user's message is committed before the model is called, so no failure can lose it;
the reply is committed once, when it is complete or when it is cut short (marked partial or
stopped), so the database never holds a half-written turn. One chat's turns run one at a time
(a per-chat lock); different chats never wait for each other.

A running model call can be stopped (`stop`: the user's Stop button or /stop; `interrupt_all`:
shutdown): the call is a task of its own, cancelled so the model's stream is closed, and the
text so far is kept and stored as `stopped` or `partial`. `retry` answers the last question
again; the replaced answer is archived and linked to its successor, never deleted. Every model
call's tokens are booked per chat, user and UTC day (`Store.record_usage`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import tokens
from .errors import ModelStreamInterrupted, NothingToRetry, ReplyInterrupted
from .limits import today
from .locks import KeyedLocks
from .memory import build_prompt
from .models import Author, ChatKey, NewTurn, Role, Status, Usage

if TYPE_CHECKING:
    from .config import Settings
    from .llm import LLM, Completion
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


@dataclass(slots=True)
class _InFlight:
    """A model call that can be stopped, who asked for it, and why it was stopped."""

    call: asyncio.Future[Any]
    author_id: int | None
    stopped_as: Status | None = None


class Conversation:
    def __init__(self, store: Store, llm: LLM, settings: Settings) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self._locks = KeyedLocks()
        self._inflight: dict[ChatKey, _InFlight] = {}

    async def persona(self, chat: ChatKey) -> str:
        return await self.store.get_persona(chat.chat_id) or self.settings.system_prompt

    async def respond(self, incoming: Incoming, sink: ReplySink) -> Reply:
        """Answers one user message; raises ModelError after storing whatever can be kept."""
        async with self._locks.hold(incoming.chat):
            user_turn_id = await self._store_user_turn(incoming)
            messages = await self._prompt(incoming.chat)
            return await self._generate(incoming, messages, sink, user_turn_id)

    async def _generate(
        self,
        incoming: Incoming,
        messages: list[dict[str, str]],
        sink: ReplySink,
        user_turn_id: int,
        replaces: Sequence[int] = (),
    ) -> Reply:
        """Calls the model and stores its reply, however the call ends."""
        latest = ""

        def on_text(text: str) -> None:
            nonlocal latest
            latest = text
            sink.partial(text)

        def finish(text: str, status: Status, usage: Usage | None = None) -> Awaitable[Reply]:
            usage = usage or self._estimate(messages, text)
            return self._finish(
                incoming, text, status, sink, user_turn_id, usage=usage, replaces=replaces
            )

        try:
            completion = await self._stoppable(
                incoming,
                self.llm.chat(
                    messages,
                    max_tokens=self.settings.max_output_tokens,
                    stream=self.settings.streaming,
                    on_text=on_text,
                    label=str(incoming.chat),
                ),
            )
        except ModelStreamInterrupted as exc:
            if exc.partial:
                await finish(exc.partial, Status.PARTIAL)
            raise
        except asyncio.CancelledError:
            if latest:
                await finish(latest, Status.PARTIAL)
            raise
        except _Stopped as stop:
            log.info(
                "chat=%s reply %s after %d characters", incoming.chat, stop.status, len(latest)
            )
            reply = Reply("", stop.status, Usage(), user_turn_id, None, None)
            if latest:
                reply = await finish(latest, stop.status)
            if stop.status is Status.PARTIAL:
                raise ReplyInterrupted() from None
            return reply
        return await self._finish(
            incoming,
            completion.text,
            Status.COMPLETE,
            sink,
            user_turn_id,
            usage=completion.usage,
            model=completion.model,
            replaces=replaces,
        )

    def stop(self, chat: ChatKey, by_user: int | None = None) -> bool:
        """Stops the chat's running reply; False if none is running or it is not `by_user`'s.

        In a group only the person who asked (or anyone, for a reply nobody asked) may stop it.
        """
        running = self._inflight.get(chat)
        if running is None or running.call.done() or running.stopped_as is not None:
            return False
        if by_user is not None and running.author_id not in (None, by_user):
            return False
        running.stopped_as = Status.STOPPED
        running.call.cancel()
        return True

    def interrupt_all(self) -> int:
        """Shutdown: cuts every running reply short; each is delivered and stored as partial."""
        count = 0
        for running in list(self._inflight.values()):
            if not running.call.done() and running.stopped_as is None:
                running.stopped_as = Status.PARTIAL
                running.call.cancel()
                count += 1
        return count

    def is_writing(self, chat: ChatKey) -> bool:
        return chat in self._inflight

    @property
    def busy(self) -> int:
        """How many replies are being written right now."""
        return len(self._inflight)

    async def retry(self, chat: ChatKey, sink: ReplySink, by_user: int | None = None) -> Reply:
        """Answers the chat's last question again; the new answer replaces the old one.

        The old answer is archived and linked to the new one (`superseded_by`) only once the
        new one is stored, so a failed retry leaves the conversation as it was.
        """
        async with self._locks.hold(chat):
            exchange = await self.store.last_exchange(chat)
            if exchange is None:
                raise NothingToRetry()
            question, old = exchange
            # Usage is booked on whoever asked for the retry.
            author = Author(by_user, question.author.name if question.author else "")
            incoming = Incoming(chat, question.text, author, question.tg_message_id)
            messages = await self._prompt(chat)
            while len(messages) > 1 and messages[-1]["role"] == "assistant":
                messages.pop()  # the answers being replaced are not shown to the model
            replaces = [turn.id for turn in old]
            return await self._generate(incoming, messages, sink, question.id, replaces)

    async def _stoppable(self, incoming: Incoming, call: Awaitable[Completion]) -> Completion:
        """Runs the model call as its own task, so `stop` can cancel it (closing the stream)."""
        task = asyncio.ensure_future(call)
        author_id = incoming.author.user_id if incoming.author else None
        running = self._inflight[incoming.chat] = _InFlight(task, author_id)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if running.stopped_as is None or (current is not None and current.cancelling()):
                raise
            raise _Stopped(running.stopped_as) from None
        finally:
            if self._inflight.get(incoming.chat) is running:
                del self._inflight[incoming.chat]

    def _estimate(self, messages: list[dict[str, str]], text: str) -> Usage:
        """Tokens of a call that ended early (the server's count never arrived)."""
        model = self.settings.openai_model
        return Usage(tokens.count_messages(messages, model), tokens.count_text(text, model))

    async def reset(self, chat: ChatKey) -> int:
        """Starts a fresh conversation; earlier turns stay in the database, archived."""
        async with self._locks.hold(chat):
            archived = await self.store.archive(chat)
        log.info("chat=%s reset: %d messages archived", chat, archived)
        return archived

    async def _store_user_turn(self, incoming: Incoming) -> int:
        if incoming.message_id is not None:
            # Telegram redelivers an update the bot died before confirming: store it once.
            known = await self.store.find_user_turn(incoming.chat, incoming.message_id)
            if known is not None:
                return known[0]
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

    async def _prompt(self, chat: ChatKey) -> list[dict[str, str]]:
        persona = await self.persona(chat)
        history = await self.store.recent_turns(chat, self.settings.history_token_budget)
        return build_prompt(persona, history)

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
        replaces: Sequence[int] = (),
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
            if replaces:
                await self.store.supersede(replaces, turn_id)
            if usage is not None and usage.total:
                author_id = incoming.author.user_id if incoming.author else None
                await self.store.record_usage(
                    incoming.chat, author_id, today(), usage.prompt_tokens, usage.completion_tokens
                )
        return Reply(text, status, usage or Usage(), user_turn_id, turn_id, message_id)


class _Stopped(Exception):
    """Internal: the model call was stopped on purpose (status says why)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.value)
        self.status = status
