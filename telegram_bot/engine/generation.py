"""One reply: call the model within the window, stream it to the sink, store it however the
call ends.

The call runs as a task of its own, registered with `RunningReplies` (a coordination
interface), so /stop, the Stop button or shutdown can cancel it, which closes the model's
stream; the text so far is kept and stored as `stopped` or `partial`. The same cut ends an
answer that passes ANSWER_TIMEOUT or MAX_ANSWER_CHARS, however the server streams (one that
never stops, or trickles under the read timeout). The call itself, within the window and
retried once smaller after a context-length error, is `asking.Asker`'s. The
reply is stored once, when it is complete or cut short, together with what it cost
(`Store.add_reply`), so the database never holds a half-written turn; it is stored before it
is delivered, marked undelivered until the sink has delivered it (`Store.mark_delivered`).

An answer that reaches the output limit (`finish_reason: length`) is kept and stored as
`partial`, and the `Reply` says so (`at_limit`), so the adapter can offer /continue; a
continuation (`continuation.py`) streams only the new text and stores the whole answer in place
of the cut one. A reasoning model's thought goes to the sink (`ReplySink.thinking`), never into
the stored reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import tokens
from ..clock import today
from ..errors import (
    AnswerNotSaved,
    AnswerTooLong,
    AnswerTooSlow,
    ModelError,
    ModelStreamInterrupted,
    ModelTimeout,
    ReplyInterrupted,
    StorageError,
)
from ..llm.vision import Picture
from ..models import NewTurn, Role, Status, Turn, Usage
from .asking import Asker, Media, Progress
from .continuation import Continuation
from .turns import Incoming, Reply, ReplySink

if TYPE_CHECKING:
    from ..config import Settings
    from ..coordination import RunningReplies
    from ..llm.client import LLM, Completion
    from ..memory.assembler import Memory
    from ..storage import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _StopRequest:
    """Why a running call was stopped, and the line to post once its text is delivered (or
    the error to raise: an answer cut at ANSWER_TIMEOUT or MAX_ANSWER_CHARS)."""

    task: asyncio.Future[Any] | None = None
    status: Status | None = None
    notice: str | None = None
    error: ModelError | None = None

    def __call__(self, status: Status, notice: str | None) -> None:
        if self.status is not None:
            return
        self.status, self.notice = status, notice
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def cut(self, error: ModelError) -> None:
        """Ends the answer where it is, as cut short, with `error`'s line below it."""
        if self.status is None:
            self.error = error
            self(Status.PARTIAL, None)


class ReplyWriter:
    def __init__(
        self,
        store: Store,
        llm: LLM,
        settings: Settings,
        memory: Memory,
        replies: RunningReplies,
    ) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self.memory = memory
        self.replies = replies
        self._asker = Asker(llm, settings, memory)

    async def write(
        self,
        incoming: Incoming,
        persona: str,
        sink: ReplySink,
        user_turn_id: int,
        replaces: Sequence[int] = (),
        question: Turn | None = None,
        *,
        progress: Progress | None = None,
        pictures: Sequence[Picture] = (),
        hint: str = "",
        continuing: Continuation | None = None,
    ) -> Reply:
        """Calls the model and stores its reply, however the call ends. `pictures` go with
        the user's message in this call only (`hint`: what to do with them, no caption). The
        answer is cut short at MAX_ANSWER_CHARS or ANSWER_TIMEOUT, like a stop, whatever the
        server does. `continuing`: the model goes on with that answer so far; only the new
        text reaches the sink, the joined answer is stored (it `replaces` the cut one)."""
        progress = progress or Progress()
        media = Media(tuple(pictures), hint, continuing)
        request = _StopRequest()
        limit = self.settings.answer_chars

        def on_text(text: str) -> None:
            if len(text) > limit:
                text = text[:limit]
                request.cut(AnswerTooLong())
            progress.text = text
            sink.partial(text)

        def on_thought(thought: str) -> None:
            progress.thought = thought
            sink.thinking(thought)

        def finish(text: str, status: Status) -> Awaitable[Reply]:
            usage = self._estimate(progress.prompt_tokens, text, progress.thought)
            return self._finish(
                incoming,
                text,
                status,
                sink,
                user_turn_id,
                usage=usage,
                replaces=replaces,
                continuing=continuing,
            )

        try:
            completion = await self._stoppable(
                incoming,
                lambda: self._asker.ask(
                    incoming,
                    persona,
                    user_turn_id,
                    (on_text, on_thought),
                    progress,
                    question,
                    media,
                ),
                request,
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
            if stop.error is not None:  # cut at a bound: the text is kept, the line explains
                raise (stop.error if progress.text else ModelTimeout()) from None
            if stop.status is Status.PARTIAL:
                raise ReplyInterrupted() from None
            return reply
        if completion.thought and completion.thought != progress.thought:  # not streamed
            sink.thinking(completion.thought)
        if completion.at_limit:
            log.info("chat=%s answer reached the output limit", incoming.chat)
        return await self._finish(
            incoming,
            completion.text,
            Status.PARTIAL if completion.at_limit else Status.COMPLETE,
            sink,
            user_turn_id,
            usage=completion.usage,
            model=completion.model,
            replaces=replaces,
            continuing=continuing,
            at_limit=completion.at_limit,
        )

    async def _stoppable(
        self, incoming: Incoming, call: Callable[[], Awaitable[Completion]], request: _StopRequest
    ) -> Completion:
        """Runs the model call as its own task, registered so a stop can cancel it, and cut at
        the answer's deadline."""
        author_id = incoming.author.user_id if incoming.author else None
        await self.replies.begin(incoming.chat, author_id, request)
        deadline = asyncio.get_running_loop().call_later(
            self.settings.answer_deadline, request.cut, AnswerTooSlow()
        )
        try:
            request.task = task = asyncio.ensure_future(call())
            if request.status is not None:  # stopped before the call even started
                task.cancel()
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if request.status is None or (current is not None and current.cancelling()):
                raise
            raise _Stopped(request.status, request.notice, request.error) from None
        finally:
            deadline.cancel()
            await self.replies.end(incoming.chat)

    def _estimate(self, prompt_tokens: int, text: str, thought: str = "") -> Usage:
        """Tokens of a call that ended early (the server's count never arrived)."""
        model = self.settings.openai_model
        thinking = tokens.count_text(thought, model) if thought else 0
        return Usage(prompt_tokens, tokens.count_text(text, model) + thinking, thinking)

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
        continuing: Continuation | None = None,
        at_limit: bool = False,
    ) -> Reply:
        """Stores the reply (marked undelivered), delivers it, then marks it delivered: a
        delivery that fails or waits, or a crash in between, never loses the answer. A
        continuation delivers its new text and stores the whole answer."""
        shown, text = continuing.join(text) if continuing else (text, text)
        count = tokens.count_message(text, self.settings.openai_model)
        author_id = incoming.author.user_id if incoming.author else None
        turn_id: int | None = None
        unsaved: StorageError | None = None
        try:
            turn_id = await self.store.add_reply(
                NewTurn(
                    chat=incoming.chat,
                    role=Role.ASSISTANT,
                    text=text,
                    tokens=count,
                    status=status,
                    reply_to=user_turn_id,
                    model=model,
                    usage=usage or Usage(),
                    undelivered=True,
                ),
                user_id=author_id,
                day=today(),
                chat_kind=incoming.chat_kind,
            )
            if replaces:
                await self.store.supersede(replaces, turn_id)
        except StorageError as exc:  # logged by the store; the answer still goes out
            if turn_id is None:
                unsaved = exc
        message_id = await sink.final(shown, status)
        if unsaved is not None:
            raise AnswerNotSaved() from unsaved
        if turn_id is not None:
            with contextlib.suppress(StorageError):  # logged; /retry would send it again
                await self.store.mark_delivered(turn_id, message_id)
        return Reply(
            text, status, usage or Usage(), user_turn_id, turn_id, message_id, count, at_limit
        )


class _Stopped(Exception):
    """Internal: the model call was stopped on purpose (status says why)."""

    def __init__(
        self, status: Status, notice: str | None = None, error: ModelError | None = None
    ) -> None:
        super().__init__(status.value)
        self.status = status
        self.notice = notice
        self.error = error
