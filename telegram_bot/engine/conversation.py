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
call's tokens are booked per chat, user and UTC day, with the reply (`Store.add_reply`).

Memory (`memory.py`, `compaction.py`) builds each prompt within the model's window: persona,
rolling summary, recalled snippets, newest turns. A context-length error from the server raises
the learned token factor and retries once with a squeezed prompt. Old turns are folded into
the summary after the reply is out, still under the chat's lock, so the chat's next message
sees the result and no reply ever waits for a summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import tokens
from ..coordination.local import KeyedLocks
from ..errors import (
    ContextTooLong,
    ModelStreamInterrupted,
    NothingToRetry,
    NotYourQuestion,
    ReplyInterrupted,
)
from ..memory.assembler import Memory, MemoryStatus, Prompt, Unfolded, memory_status
from ..memory.compaction import Compactor
from ..models import Author, ChatKey, NewTurn, Role, Status, StoredTurn, Turn, Usage
from .limits import today

if TYPE_CHECKING:
    from ..config import Settings
    from ..llm.client import LLM, Completion, OnText
    from ..storage import Store

log = logging.getLogger(__name__)


class ReplySink(Protocol):
    """Where a reply goes: a Telegram chat, a terminal, a test."""

    def partial(self, text: str) -> None:
        """The reply so far; called often, must not block (throttling is the sink's job)."""

    async def final(self, text: str, status: Status) -> int | None:
        """Delivers the finished (or cut-short) reply; returns the platform's message id."""

    async def send_notice(self, text: str) -> None:
        """A short line after the reply (an error, or the confirmation of a stop)."""


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
    tokens: int = 0  # the stored reply's token count (0 when nothing was stored)


@dataclass(slots=True)
class _InFlight:
    """A model call that can be stopped, who asked for it, and why it was stopped."""

    call: asyncio.Future[Any]
    author_id: int | None
    stopped_as: Status | None = None
    notice: str | None = None  # what to say in the chat once the stopped text is delivered


@dataclass(slots=True)
class _Progress:
    """What a model call has produced so far: enough to store and book a reply cut short."""

    text: str = ""
    prompt_tokens: int = 0
    unfolded: Unfolded | None = None  # the last prompt's view of the unsummarised turns

    def unfolded_after(self, reply: Reply) -> Unfolded | None:
        """The unsummarised turns once the reply is stored: the prompt's, plus the reply."""
        if self.unfolded is None:
            return None
        return Unfolded(self.unfolded.summary, self.unfolded.tokens + reply.tokens)


class Conversation:
    def __init__(self, store: Store, llm: LLM, settings: Settings) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self._locks = KeyedLocks()
        self._inflight: dict[ChatKey, _InFlight] = {}
        self.memory = Memory(store, settings)
        self.compactor = Compactor(store, llm, settings, self.memory)

    async def persona(self, chat: ChatKey) -> str:
        return await self.store.get_persona(chat.chat_id) or self.settings.system_prompt

    async def respond(self, incoming: Incoming, sink: ReplySink) -> Reply | None:
        """Answers one user message; raises ModelError after storing whatever can be kept.

        None when the message was answered already (Telegram delivered it again)."""
        async with self._locks.hold(incoming.chat):
            stored = await self._store_user_turn(incoming)
            if stored.answered:
                log.info(
                    "chat=%s message %s was delivered again; already answered",
                    incoming.chat,
                    incoming.message_id,
                )
                return None
            user_turn_id = stored.id
            persona = await self.persona(incoming.chat)
            progress = _Progress()
            reply = await self._generate(incoming, persona, sink, user_turn_id, progress=progress)
            # The reply is out; fold old turns into the summary now, still holding the chat's
            # lock so its next message sees the result (and never waits inside a reply).
            await self.compactor.maintain(incoming.chat, persona, progress.unfolded_after(reply))
            return reply

    async def _generate(
        self,
        incoming: Incoming,
        persona: str,
        sink: ReplySink,
        user_turn_id: int,
        replaces: Sequence[int] = (),
        question: Turn | None = None,
        *,
        progress: _Progress | None = None,
    ) -> Reply:
        """Calls the model and stores its reply, however the call ends."""
        progress = progress or _Progress()

        def on_text(text: str) -> None:
            progress.text = text
            sink.partial(text)

        def finish(text: str, status: Status) -> Awaitable[Reply]:
            usage = self._estimate(progress.prompt_tokens, text)
            return self._finish(
                incoming, text, status, sink, user_turn_id, usage=usage, replaces=replaces
            )

        try:
            completion = await self._stoppable(
                incoming,
                self._ask(incoming.chat, persona, user_turn_id, on_text, progress, question),
            )
        except ModelStreamInterrupted as exc:
            if exc.partial:
                await finish(exc.partial, Status.PARTIAL)
            raise
        except asyncio.CancelledError:
            if progress.text:
                await finish(progress.text, Status.PARTIAL)
            raise
        except _Stopped as stop:
            log.info(
                "chat=%s reply %s after %d characters",
                incoming.chat,
                stop.status,
                len(progress.text),
            )
            reply = Reply("", stop.status, Usage(), user_turn_id, None, None)
            if progress.text:
                reply = await finish(progress.text, stop.status)
            if stop.notice:  # in the chat's turn: below the stopped text, before what is queued
                await sink.send_notice(stop.notice)
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

    async def _ask(
        self,
        chat: ChatKey,
        persona: str,
        turn_id: int,
        on_text: OnText,
        progress: _Progress,
        question: Turn | None = None,
    ) -> Completion:
        """One model call within the window; on a context-length error (the server's tokenizer
        counts more than ours) it learns a higher factor, squeezes the prompt and retries once.
        """
        prompt = await self.memory.prompt(chat, persona, turn_id=turn_id, question=question)
        try:
            return await self._call(chat, prompt, on_text, progress)
        except ContextTooLong:
            log.warning(
                "chat=%s context length exceeded at %d counted tokens; retrying smaller",
                chat,
                prompt.tokens,
            )
            await self.memory.overflowed(self.settings.openai_model)
            # The raised factor also lowers the verbatim cap, so the compaction that follows
            # the reply folds what this squeezed prompt had to leave out.
            prompt = await self.memory.prompt(
                chat, persona, squeeze=0.5, turn_id=turn_id, question=question
            )
            return await self._call(chat, prompt, on_text, progress)

    async def _call(
        self, chat: ChatKey, prompt: Prompt, on_text: OnText, progress: _Progress
    ) -> Completion:
        progress.prompt_tokens = prompt.tokens
        progress.unfolded = prompt.unfolded
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

    async def memory_status(self, chat: ChatKey) -> MemoryStatus:
        """What /memory shows: tokens in use against the budget, and the summary."""
        return await memory_status(self.memory, chat, await self.persona(chat))

    def stop(self, chat: ChatKey, by_user: int | None = None, *, notice: str | None = None) -> bool:
        """Stops the chat's running reply; False if none is running or it is not `by_user`'s.

        In a group only the person who asked (or anyone, for a reply nobody asked) may stop it.
        `notice` is sent to the reply's sink right after the text written so far, so a
        confirmation lands below that text and before any message queued behind the reply.
        """
        running = self._inflight.get(chat)
        if running is None or running.call.done() or running.stopped_as is not None:
            return False
        if by_user is not None and running.author_id not in (None, by_user):
            return False
        running.stopped_as = Status.STOPPED
        running.notice = notice
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

    async def retry(
        self,
        chat: ChatKey,
        sink: ReplySink,
        by_user: int | None = None,
        *,
        may_retry_others: Callable[[], Awaitable[bool]] | None = None,
    ) -> Reply:
        """Answers the chat's last question again; the new answer replaces the old one.

        The old answer is archived and linked to the new one (`superseded_by`) only once the
        new one is stored, so a failed retry leaves the conversation as it was. With
        `may_retry_others` (groups) a question someone else asked is retried only if it says
        so (an admin); otherwise NotYourQuestion, before anything reaches the model.
        """
        async with self._locks.hold(chat):
            exchange = await self.store.last_exchange(chat)
            if exchange is None:
                raise NothingToRetry()
            question, old = exchange
            asker = question.author.user_id if question.author else None
            if (
                may_retry_others is not None
                and asker not in (None, by_user)
                and not await may_retry_others()
            ):
                raise NotYourQuestion()
            # Usage is booked on whoever asked for the retry.
            author = Author(by_user, question.author.name if question.author else "")
            incoming = Incoming(chat, question.text, author, question.tg_message_id)
            persona = await self.persona(chat)
            # The prompt answers the question as it stood: later turns (the answers being
            # replaced) are not shown to the model.
            replaces = [turn.id for turn in old]
            reply = await self._generate(incoming, persona, sink, question.id, replaces, question)
            await self.compactor.maintain(chat, persona)
            return reply

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
            raise _Stopped(running.stopped_as, running.notice) from None
        finally:
            if self._inflight.get(incoming.chat) is running:
                del self._inflight[incoming.chat]

    def _estimate(self, prompt_tokens: int, text: str) -> Usage:
        """Tokens of a call that ended early (the server's count never arrived)."""
        return Usage(prompt_tokens, tokens.count_text(text, self.settings.openai_model))

    async def reset(self, chat: ChatKey) -> int:
        """Starts a fresh conversation; earlier turns stay in the database, archived."""
        async with self._locks.hold(chat):
            archived = await self.store.archive(chat)
            self.compactor.forget(chat)
        log.info("chat=%s reset: %d messages archived", chat, archived)
        return archived

    async def _store_user_turn(self, incoming: Incoming) -> StoredTurn:
        """Stores the message, or finds it stored: Telegram delivers an update again when the
        bot died before confirming it, and it is then stored once and answered at most once."""
        text = incoming.text
        return await self.store.add_user_turn(
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
        replaces: Sequence[int] = (),
    ) -> Reply:
        """Delivers the reply, then stores it once, even when delivery fails."""
        message_id: int | None = None
        try:
            message_id = await sink.final(text, status)
        finally:
            count = tokens.count_message(text, self.settings.openai_model)
            author_id = incoming.author.user_id if incoming.author else None
            turn_id = await self.store.add_reply(
                NewTurn(
                    chat=incoming.chat,
                    role=Role.ASSISTANT,
                    text=text,
                    tokens=count,
                    status=status,
                    tg_message_id=message_id,
                    reply_to=user_turn_id,
                    model=model,
                    usage=usage or Usage(),
                ),
                user_id=author_id,
                day=today(),
                chat_kind=incoming.chat_kind,
            )
            if replaces:
                await self.store.supersede(replaces, turn_id)
        return Reply(text, status, usage or Usage(), user_turn_id, turn_id, message_id, count)


class _Stopped(Exception):
    """Internal: the model call was stopped on purpose (status says why)."""

    def __init__(self, status: Status, notice: str | None = None) -> None:
        super().__init__(status.value)
        self.status = status
        self.notice = notice
