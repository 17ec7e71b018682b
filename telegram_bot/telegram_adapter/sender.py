"""Shows a reply in a Telegram chat as it streams, then delivers it whole.

While the model writes, private chats get `sendMessageDraft` (an animated preview Telegram
keeps for 30 s); where drafts are refused, the first text becomes a message that is edited.
Either way the preview is refreshed at most once per `STREAM_EDIT_INTERVAL`, by time, never by
character count, and the first text goes out at once. A typing action shows only if no text
has arrived after a short moment, and is renewed until the first text. The final answer is
rendered to entities, split at 4096 UTF-16 units, and each part is sent with a plain-text
fallback when Telegram rejects its formatting. Parts that are complete while the model is still
writing are sent as soon as they are complete. Every wait before sending again is `FloodWait`'s
(flood.py), bounded and cut short by shutdown: flood control (`RetryAfter`) on a preview makes
the next preview wait (and the final one, if that wait is allowed); a final edit or a new
message waits it out, and is sent again after a transient failure (5xx, network); a preview
edit stays best effort. A chat that cannot
receive messages (bot blocked, chat not found) ends the previews at once and raises
`ChatUnavailable` from the final send, so the handler marks the chat inactive instead of
retrying. A part that Telegram still finds too long is sent as plain text in halves.

While a reasoning model thinks, the preview says "Thinking…" (a message that shows only that is
turned into the line that ends the reply, if no answer comes); with `show_thought`
(SHOW_REASONING=collapsed) the answer starts with the thought in an expandable quote.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message, MessageEntity, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from ..models import Status
from .flood import FloodWait, retry_seconds
from .render import MAX_MESSAGE_UTF16, Part, render, with_thought

log = logging.getLogger(__name__)

T = TypeVar("T")

TYPING_DELAY = 0.4  # seconds of silence before "typing…" is worth a Bot API call
TYPING_RENEW = 4.5  # Telegram shows a chat action for about five seconds
THINKING = "💭 Thinking…"  # the preview while a reasoning model thinks
_draft_ids = itertools.count(1)


class ChatUnavailable(Exception):
    """The chat cannot receive messages any more (bot blocked, kicked, chat deleted)."""


@dataclass(frozen=True, slots=True)
class Undelivered:
    """What a sink has not delivered (yet): the answer with its status, or a plain notice
    (`status` None). When the chat turned out to have become a supergroup (`ChatMigrated`),
    this, and nothing else, goes to the new chat."""

    text: str
    status: Status | None


def entities_of(part: Part) -> list[MessageEntity]:
    return [MessageEntity(**entity) for entity in part.entities]


def is_parse_error(exc: TelegramError) -> bool:
    text = str(exc).lower()
    return "can't parse" in text or "entit" in text


def is_gone(exc: TelegramError) -> bool:
    """The chat cannot receive messages: blocked, kicked, deactivated or deleted."""
    return isinstance(exc, Forbidden) or (
        isinstance(exc, BadRequest) and "chat not found" in str(exc).lower()
    )


def halves(text: str) -> list[str]:
    """Splits a text Telegram found too long, at the newline (or space) nearest the middle."""
    middle = len(text) // 2
    cut = max(text.rfind("\n", 0, middle), text.rfind(" ", 0, middle))
    cut = cut if cut > middle // 2 else middle
    return [piece for piece in (text[:cut].strip(), text[cut:].strip()) if piece]


class TelegramReply:
    """A `ReplySink` for one answer in one chat."""

    # Learned once per Bot API server (keyed by its URL): that server has no drafts.
    drafts_refused: ClassVar[set[str]] = set()

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        interval: float,
        thread_id: int | None = None,
        reply_to: int | None = None,
        private: bool = True,
        markup: InlineKeyboardMarkup | None = None,
        flood: FloodWait,
        show_thought: bool = False,
    ) -> None:
        self.bot = bot
        self.flood = flood
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.reply_to = reply_to
        self.interval = interval
        self.markup = markup
        self.show_thought = show_thought
        self.thought = ""  # a reasoning model's, as `thinking` last reported it
        self._thinking_since = 0.0
        self.use_drafts = private and bot.base_url not in TelegramReply.drafts_refused
        self.draft_id = next(_draft_ids)
        self.messages: list[Message] = []  # finished parts, plus the one being edited
        self._shown: list[tuple[str, bool]] = []  # (text, has buttons) of each message
        self._latest = ""
        self._changed = asyncio.Event()
        self._first_text = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None
        self._previewing = False  # a preview is on the wire: let it land, never cancel it
        self._closing = False
        self._typing: asyncio.Task[None] | None = None
        self._typing_timer: asyncio.TimerHandle | None = None
        self._next_show = 0.0
        self._flood_until = 0.0  # flood control on a preview: the final waits until then
        self._migrated: ChatMigrated | None = None  # the group became a supergroup mid-reply
        self.undelivered: Undelivered | None = None  # set while (and if) a send fails

    # -- the ReplySink protocol ------------------------------------------------------------

    def start(self) -> None:
        """Begins the typing indicator; call before the model is asked."""
        # A timer, not a task: most replies show text before it fires, and cost nothing more.
        loop = asyncio.get_running_loop()
        self._typing_timer = loop.call_later(TYPING_DELAY, self._start_typing)

    def _start_typing(self) -> None:
        if not self._first_text.is_set():
            self._typing = asyncio.create_task(self._type_until_text())

    def partial(self, text: str) -> None:
        self._latest = text
        self._changed.set()
        if self._pacer is None:
            self._pacer = asyncio.create_task(self._pace())

    def thinking(self, thought: str) -> None:
        """No answer text yet: the preview says that the model thinks, and for how long (a
        changing line also keeps a draft alive past Telegram's 30 s)."""
        self.thought = thought
        if self._latest and not self._latest.startswith(THINKING):
            return
        now = time.monotonic()
        self._thinking_since = self._thinking_since or now
        seconds = int(now - self._thinking_since)
        self.partial(f"{THINKING} {seconds} s" if seconds else THINKING)

    @property
    def buttons(self) -> bool:
        """Whether this reply's messages carry buttons (not a private chat's draft preview)."""
        return self.markup is not None and not self.use_drafts

    async def final(self, text: str, status: Status) -> int | None:
        await self.close()
        self.undelivered = Undelivered(text, status)
        if self._migrated is not None:
            raise self._migrated  # the caller moves the chat and delivers there
        flood = self._flood_until - time.monotonic()
        if flood > 0:  # a preview met flood control: wait for it if that is allowed, else try
            await self.flood.pause(flood)
        parts = render(text) or [Part("…")]
        if self.show_thought and self.thought:
            parts = with_thought(parts, self.thought, MAX_MESSAGE_UTF16)
        for index, part in enumerate(parts):
            await self._deliver(index, part, final=True)
        self.undelivered = None
        return self.messages[0].message_id if self.messages else None

    async def close(self) -> None:
        """Stops the typing indicator and the preview task (idempotent)."""
        self._first_text.set()
        self._closing = True
        if self._typing_timer is not None:
            self._typing_timer.cancel()
        for task in (self._typing, self._pacer):
            if task is None or task.done():
                continue
            if task is self._pacer and self._previewing:
                # Cancelling a send in flight could deliver a message we never hear about,
                # and the final answer would then send it twice.
                self._changed.set()
                with contextlib.suppress(TelegramError, ChatUnavailable):
                    await task
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._typing = self._pacer = None

    async def send_notice(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """A short plain line in the chat (errors, refusals), with `markup`'s buttons."""
        await self.close()
        self.undelivered = Undelivered(text, None)
        if len(self._shown) == 1 and self._shown[0][0].startswith(THINKING):
            # Only "Thinking…" was shown: it becomes the line (and loses its Stop button).
            await self._edit(0, Part(text), markup)
            self._shown[0] = (text, markup is not None)
            self.undelivered = None
            return
        try:  # flood control on sendMessage is waited out by FloodWait (flood.py)
            await self.bot.send_message(self.chat_id, text, reply_markup=markup, **self._where())
        except TelegramError as exc:
            if is_gone(exc):
                raise ChatUnavailable(str(exc)) from exc
            raise
        self.undelivered = None

    # -- streaming preview -----------------------------------------------------------------

    async def _type_until_text(self) -> None:
        while not self._first_text.is_set():
            with contextlib.suppress(TelegramError):
                await self.bot.send_chat_action(
                    self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_text.wait(), TYPING_RENEW)

    async def _pace(self) -> None:
        while not self._closing:
            await self._changed.wait()
            if self._closing:
                return
            delay = self._next_show - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._changed.clear()
            self._next_show = time.monotonic() + self.interval
            self._previewing = True
            try:
                await self._preview(self._latest)
            except RetryAfter as exc:
                self._next_show = self._flood_until = time.monotonic() + retry_seconds(exc)
            except TelegramError as exc:  # a preview is best effort; the final send reports
                log.debug("Preview failed in chat %s: %s", self.chat_id, exc)
                if isinstance(exc, ChatMigrated):
                    self._migrated = exc
                    return
                if is_gone(exc):
                    return  # no preview storm into a chat that is gone
            finally:
                self._previewing = False

    async def _preview(self, text: str) -> None:
        parts = render(text)
        if not parts:
            return
        # Every part but the last is complete: send it for good now.
        done = len(parts) - 1
        for index in range(len(self._shown) if self.use_drafts else 0, done):
            await self._deliver(index, parts[index], final=True)
        current = parts[-1]
        self._first_text.set()
        if self.use_drafts and await self._draft(current):
            return
        await self._deliver(done, current, final=False)

    async def _draft(self, part: Part) -> bool:
        try:
            await self.bot.send_message_draft(
                self.chat_id,
                self.draft_id,
                part.text,
                entities=entities_of(part),
                message_thread_id=self.thread_id,
            )
            return True
        except BadRequest as exc:
            if is_parse_error(exc):
                await self.bot.send_message_draft(self.chat_id, self.draft_id, part.plain)
                return True
            log.info("Drafts refused (%s); streaming by editing a message instead", exc)
            TelegramReply.drafts_refused.add(self.bot.base_url)
            self.use_drafts = False
            return False

    # -- delivery ----------------------------------------------------------------------------

    async def _deliver(self, index: int, part: Part, *, final: bool) -> None:
        """Makes message `index` show `part`: edits it if it exists, sends it otherwise."""
        markup = None if final else self.markup
        wanted = (part.text, markup is not None)
        if index < len(self.messages):
            if self._shown[index] != wanted:
                await self._edit(index, part, markup, wait=final)
                self._shown[index] = wanted
        else:
            self.messages.append(await self._send(part, markup, reply=index == 0))
            self._shown.append(wanted)

    async def _send(
        self, part: Part, markup: InlineKeyboardMarkup | None, *, reply: bool
    ) -> Message:
        where = self._where(reply=reply)

        async def formatted() -> Message:
            return await self.bot.send_message(
                self.chat_id, part.text, entities=entities_of(part), reply_markup=markup, **where
            )

        async def plain() -> Message:
            return await self.bot.send_message(
                self.chat_id, part.plain, reply_markup=markup, **where
            )

        try:
            try:
                return await formatted()  # FloodWait (flood.py) waits out flood control
            except BadRequest as exc:
                if "too long" in str(exc).lower():
                    log.warning("Telegram found a part too long; sending it in two halves")
                    return await self._send_halves(part.plain, markup, where)
                if not is_parse_error(exc):
                    raise
                log.warning("Telegram rejected the formatting (%s); sending plain text", exc)
                return await plain()
        except TelegramError as exc:
            if is_gone(exc):
                raise ChatUnavailable(str(exc)) from exc
            raise

    async def _send_halves(
        self, text: str, markup: InlineKeyboardMarkup | None, where: dict[str, Any]
    ) -> Message:
        first: Message | None = None
        for piece in halves(text):
            sent = await self.bot.send_message(self.chat_id, piece, reply_markup=markup, **where)
            first = first or sent
        if first is None:
            raise BadRequest("message text is empty")
        return first

    async def _edit(
        self, index: int, part: Part, markup: InlineKeyboardMarkup | None, *, wait: bool = True
    ) -> None:
        """Edits message `index`; a preview edit (`wait=False`) lets flood control propagate,
        so the pacer skips updates instead of queueing behind the wait."""
        message_id = self.messages[index].message_id

        async def edit(text: str, entities: list[MessageEntity] | None) -> None:
            await self.bot.edit_message_text(
                text, self.chat_id, message_id, entities=entities, reply_markup=markup
            )

        try:
            try:
                if wait:
                    await self.flood.with_flood_wait(
                        lambda: edit(part.text, entities_of(part)), "an edit", delivery=True
                    )
                else:
                    await edit(part.text, entities_of(part))
            except BadRequest as exc:
                if "not modified" in str(exc).lower():
                    pass
                elif is_parse_error(exc):
                    await self.flood.with_flood_wait(
                        lambda: edit(part.plain, None), "an edit", delivery=True
                    )
                else:
                    raise
        except TelegramError as exc:
            if is_gone(exc):
                raise ChatUnavailable(str(exc)) from exc
            raise

    def _where(self, *, reply: bool = True) -> dict[str, Any]:
        where: dict[str, Any] = {}
        if self.thread_id:
            where["message_thread_id"] = self.thread_id
        if reply and self.reply_to is not None:
            where["reply_parameters"] = ReplyParameters(
                self.reply_to, allow_sending_without_reply=True
            )
        return where
