"""The conversation engine: a user's message in, the model's reply out, both stored.

It imports nothing from `telegram`: the Telegram handlers, the console and the tests all drive
this same code, through a `ReplySink` that shows text as it streams and delivers the answer.
The engine owns every decision about a message: whether it is too long or over a usage limit
(refused before anything is stored), whether Telegram delivered it again after it was
answered (the store's insert-or-get says so), storing it before the model is called (so no
failure can lose it), overheard group chatter, the chat's persona, /retry and /reset.

What must hold across every turn of the bot is behind `Coordination` (in process memory by
default, shared by replicas otherwise): one chat's turns run one at a time, in order, while
different chats never wait for each other; running replies can be stopped from anywhere; the
per-minute rate window. The model call itself is `generation.ReplyWriter`; /continue (the rest
of an answer that stopped early, `continuation.py`) is a call of it too. Old turns are
folded into the summary after the reply is out, still in the chat's turn, so the chat's next
message sees the result and no reply ever waits for a summary.

A message with media (a voice note, photos, a file) follows the same path: `media.MediaReader`
refuses what it cannot read before anything else, and in the chat's turn, after the limits,
turns it into the text that is stored (a transcript, a framed file, a photo's placeholder)
and the images sent with this one call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .. import tokens
from ..coordination import Coordination, StopOutcome
from ..coordination.local import local_coordination
from ..errors import (
    InputTooLong,
    LimitReached,
    NothingToContinue,
    NothingToRetry,
    NotYourQuestion,
    PromptTooLong,
)
from ..llm.transcription import Transcriber
from ..llm.vision import Picture
from ..memory.assembler import Memory
from ..memory.compaction import Compactor
from ..memory.status import MemoryStatus, memory_status
from ..models import Author, ChatKey, MessageKind, NewTurn, Role, Status, StoredTurn, Turn, Usage
from .asking import Progress
from .continuation import Continuation, continuable
from .generation import ReplyWriter
from .limits import Limits
from .media import MediaReader, Prepared, placeholder
from .turns import Incoming, MediaSource, Persona, Reply, ReplySink

if TYPE_CHECKING:
    from ..config import Settings
    from ..llm.client import LLM
    from ..storage import Store

log = logging.getLogger(__name__)

# Answers a crash may have left stored but unsent that are sent as they are: complete ones, and
# partial ones (one that reached the output limit is whole up to there; /continue goes on).
_WHOLE = (Status.COMPLETE, Status.PARTIAL)


class Conversation:
    def __init__(
        self,
        store: Store,
        llm: LLM,
        settings: Settings,
        coordination: Coordination | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self.coordination = coordination or local_coordination(settings.rate_limit_per_minute)
        self.limits = Limits(store, settings, self.coordination.rate)
        self.memory = Memory(store, settings)
        self.compactor = Compactor(store, llm, settings, self.memory)
        self.writer = ReplyWriter(store, llm, settings, self.memory, self.coordination.replies)
        self.media = MediaReader(store, llm, transcriber or Transcriber(settings), settings)

    # -- a user's message ----------------------------------------------------------------

    async def discover_window(self) -> None:
        """Asks the model server for its context window (bounded; silent when it says
        nothing) and logs the one line saying which window is used and where it came from."""
        info = await self.llm.probe_server()
        self.memory.use_server_window(info.window, info.source)

    async def respond(self, incoming: Incoming, sink: ReplySink) -> Reply | None:
        """Answers one user message; raises ModelError after storing whatever can be kept.

        Raises InputTooLong, LimitReached or a MediaError before anything is stored. Returns
        None when the message was answered already (Telegram delivered it again)."""
        self._check_length(incoming.text)
        self.media.check(incoming)
        async with self.coordination.turns.hold(incoming.chat):
            await self._check_limits(incoming.author, incoming.chat)
            prepared = await self.media.prepare(incoming)
            self._check_fits(prepared)
            stored = await self._store(incoming, prepared)
            if stored.answered:
                unsent = await self._unsent_answer(incoming.chat, stored.id)
                if unsent is not None:  # a crash between storing the answer and sending it
                    return await self._send_again(unsent, stored.id, sink)
                log.info(
                    "chat=%s message %s was delivered again; already answered",
                    incoming.chat,
                    incoming.message_id,
                )
                return None
            persona = (await self.persona(incoming.chat)).text
            progress = Progress()
            reply = await self.writer.write(
                incoming,
                persona,
                sink,
                stored.id,
                progress=progress,
                pictures=prepared.pictures,
                hint=prepared.hint,
            )
            # The reply is out; fold old turns into the summary now, still in the chat's turn,
            # so its next message sees the result (and never waits inside a reply).
            await self.compactor.maintain(incoming.chat, persona, progress.unfolded_after(reply))
            return reply

    async def overhear(self, incoming: Incoming, keep: int) -> StoredTurn | None:
        """Keeps a group message not addressed to the bot as context (the newest `keep` since
        the bot was last addressed); never a reply or a model call. None when not kept.

        A photo or a file is kept as its placeholder (`[photo: caption]`), never downloaded;
        recordings are not kept (transcribing chatter nobody asked about would cost)."""
        text = incoming.text
        if incoming.kind is not MessageKind.TEXT:
            if incoming.kind.heard:
                return None
            text = placeholder(incoming.kind, incoming.attachments, incoming.text)
        if keep <= 0 or not text or len(text) > self.settings.max_input_chars:
            return None
        prepared = Prepared(text, incoming.kind)
        async with self.coordination.turns.hold(incoming.chat):
            return await self.store.add_overheard(
                self._new_turn(incoming, prepared), keep=keep, chat_kind=incoming.chat_kind
            )

    def _check_length(self, text: str) -> None:
        limit = self.settings.max_input_chars
        if len(text) > limit:
            log.info("message of %d chars refused (MAX_INPUT_CHARS)", len(text))
            raise InputTooLong(limit)

    def _check_fits(self, prepared: Prepared) -> None:
        """A file's text that could never fit the model's window is refused before it is
        stored (it would otherwise sit in the history, answered by no prompt)."""
        if prepared.kind is not MessageKind.DOCUMENT:
            return
        cost = tokens.count_message(prepared.text, self.settings.openai_model)
        if cost > self.memory.limit() * 9 // 10:
            log.info("a file of %d tokens refused (the model's window)", cost)
            raise PromptTooLong()

    async def _check_limits(self, author: Author | None, chat: ChatKey) -> None:
        user_id = author.user_id if author else None
        refusal = await self.limits.check(user_id, chat.chat_id)
        if refusal is not None:
            log.info("chat=%s user=%s over a limit (%s)", chat, user_id or "-", refusal.kind)
            raise LimitReached(refusal.message(), refusal.kind)

    async def _store(self, incoming: Incoming, prepared: Prepared) -> StoredTurn:
        """Stores the message, or finds it stored: Telegram delivers an update again when the
        bot died before confirming it, and it is then stored once and answered at most once."""
        return await self.store.add_user_turn(
            self._new_turn(incoming, prepared), chat_kind=incoming.chat_kind
        )

    def _new_turn(self, incoming: Incoming, prepared: Prepared) -> NewTurn:
        return NewTurn(
            chat=incoming.chat,
            role=Role.USER,
            text=prepared.text,
            tokens=tokens.count_message(prepared.text, self.settings.openai_model),
            author=incoming.author,
            tg_message_id=incoming.message_id,
            kind=prepared.kind,
            duration=prepared.duration,
            attachments=incoming.attachments,
        )

    # -- the chat's settings and state ---------------------------------------------------

    async def persona(self, chat: ChatKey) -> Persona:
        """The chat's persona (a forum's topics share it), or SYSTEM_PROMPT."""
        stored = await self.store.get_persona(chat.chat_id)
        if stored is None:
            return Persona(self.settings.system_prompt, chosen=False)
        return Persona(stored, chosen=True)

    async def memory_status(self, chat: ChatKey) -> MemoryStatus:
        """What /memory shows: tokens in use against the budget, and the summary."""
        return await memory_status(self.memory, chat, (await self.persona(chat)).text)

    async def reset(self, chat: ChatKey) -> int:
        """Starts a fresh conversation; earlier turns stay in the database, archived."""
        async with self.coordination.turns.hold(chat):
            archived = await self.store.archive(chat)
            self.compactor.forget(chat)
        log.info("chat=%s reset: %d messages archived", chat, archived)
        return archived

    # -- running replies -----------------------------------------------------------------

    async def stop(
        self, chat: ChatKey, by_user: int | None = None, *, notice: str | None = None
    ) -> StopOutcome:
        """Stops the chat's running reply, if `by_user` may (in a group only the person who
        asked, or anyone for a reply nobody asked; None: anyone, as in a private chat).

        `notice` is sent to the reply's sink right after the text written so far, so a
        confirmation lands below that text and before any message queued behind the reply.
        """
        return await self.coordination.replies.stop(chat, by_user, notice)

    def interrupt_all(self) -> int:
        """Shutdown: cuts every reply this process writes short; each is delivered and stored
        as partial."""
        return self.coordination.replies.interrupt_local()

    @property
    def busy(self) -> int:
        """How many replies this process is writing right now."""
        return self.coordination.replies.local_count

    # -- /retry --------------------------------------------------------------------------

    async def retry(
        self,
        chat: ChatKey,
        sink: ReplySink,
        by_user: int | None = None,
        *,
        may_retry_others: Callable[[], Awaitable[bool]] | None = None,
        source: MediaSource | None = None,
    ) -> Reply:
        """Answers the chat's last question again; the new answer replaces the old one.

        The old answer is archived and linked to the new one (`superseded_by`) only once the
        new one is stored, so a failed retry leaves the conversation as it was. An answer that
        was stored but never delivered (Telegram did not take it) is sent as it is instead,
        without asking the model again: the user has not seen it yet. With
        `may_retry_others` (groups) a question someone else asked is retried only if it says
        so (an admin); otherwise NotYourQuestion. Both refusals come before the usage limits
        are counted: a retry that asks nothing of the model costs nothing. A question with
        photos fetches them again through `source` (without one, the model reads only the
        placeholder); a recording or a file is retried from its stored text.
        """
        async with self.coordination.turns.hold(chat):
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
            if old and old[-1].undelivered and old[-1].status in _WHOLE:
                return await self._send_again(old[-1], question.id, sink)
            # Usage is booked on whoever asked for the retry.
            author = Author(by_user, question.author.name if question.author else "")
            await self._check_limits(author, chat)
            incoming = Incoming(
                chat,
                question.text,
                author,
                question.tg_message_id,
                attachments=question.attachments,
                source=source,
            )
            pictures: tuple[Picture, ...] = ()
            if question.kind is MessageKind.PHOTO:
                pictures = await self.media.pictures(incoming)
            persona = (await self.persona(chat)).text
            # The prompt answers the question as it stood: later turns (the answers being
            # replaced) are not shown to the model.
            replaces = [turn.id for turn in old]
            bare = placeholder(MessageKind.PHOTO, question.attachments, "") == question.text
            reply = await self.writer.write(
                incoming,
                persona,
                sink,
                question.id,
                replaces,
                question,
                pictures=pictures,
                hint=self.media.hint("" if bare else question.text),
            )
            await self.compactor.maintain(chat, persona)
            return reply

    # -- /continue -----------------------------------------------------------------------

    async def continue_(
        self,
        chat: ChatKey,
        sink: ReplySink,
        by_user: int | None = None,
        *,
        may_continue_others: Callable[[], Awaitable[bool]] | None = None,
    ) -> Reply:
        """Goes on with the chat's last answer where it stopped (the output limit, a stop, a
        broken stream): the rest is delivered as new messages, and the whole answer is stored
        in place of the cut one (archived, linked to it as /retry does), so the model later
        reads one answer. NothingToContinue when the last answer is complete or there is none;
        in a group only the person who asked, or an admin (`may_continue_others`), as /retry.
        A cut answer that was never delivered is sent as it is first, without the model.
        """
        async with self.coordination.turns.hold(chat):
            exchange = await self.store.last_exchange(chat)
            if exchange is None or not exchange[1] or not continuable(exchange[1][-1]):
                raise NothingToContinue()
            question, old = exchange
            asker = question.author.user_id if question.author else None
            if (
                may_continue_others is not None
                and asker not in (None, by_user)
                and not await may_continue_others()
            ):
                raise NotYourQuestion()
            answer = old[-1]
            if answer.undelivered:  # the user has not seen it: that first, /continue again
                return await self._send_again(answer, question.id, sink)
            author = Author(by_user, question.author.name if question.author else "")
            await self._check_limits(author, chat)
            incoming = Incoming(chat, question.text, author, question.tg_message_id)
            persona = (await self.persona(chat)).text
            model = self.settings.openai_model
            continuing = Continuation.of(answer.text, self.memory.limit() // 2, model)
            log.info("chat=%s continuing answer %d", chat, answer.id)
            reply = await self.writer.write(
                incoming,
                persona,
                sink,
                question.id,
                [turn.id for turn in old],
                question,
                continuing=continuing,
            )
            await self.compactor.maintain(chat, persona)
            return reply

    async def _unsent_answer(self, chat: ChatKey, question_id: int) -> Turn | None:
        """The complete answer to this question, stored but never confirmed sent, if it is the
        conversation's last exchange: what a crash between storing and sending leaves, which
        the question's redelivery (or the inbox after a restart) then sends, once."""
        exchange = await self.store.last_exchange(chat)
        if exchange is None or exchange[0].id != question_id or not exchange[1]:
            return None
        answer = exchange[1][-1]
        return answer if answer.undelivered and answer.status in _WHOLE else None

    async def _send_again(self, answer: Turn, question_id: int, sink: ReplySink) -> Reply:
        """Delivers a stored answer the chat never received, as it is (nothing new is stored)."""
        log.info("chat=%s sending undelivered answer %d again", answer.chat, answer.id)
        message_id = await sink.final(answer.text, answer.status)
        await self.store.mark_delivered(answer.id, message_id)
        return Reply(
            answer.text, answer.status, Usage(), question_id, answer.id, message_id, answer.tokens
        )
