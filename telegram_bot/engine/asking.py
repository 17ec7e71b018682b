"""One model call within the window, with what the call teaches the memory.

`Asker.ask` builds the prompt (the stored turns plus what this call carries: images, or the
answer being continued), calls the model and learns from the answer: the server's usage
calibrates the token factor; where streams carry no usage, the server's tokenizer is asked now
and then. A context-length error (a 400, or a stream that came back empty) teaches the memory
the window and the factor the error names (or raises the factor a step, or asks the server's
tokenizer) and the call is retried once with a squeezed prompt. `generation.py` runs it as a
stoppable task and stores the reply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import tokens
from ..errors import ContextTooLong, EmptyStream
from ..llm.vision import Picture, image_tokens
from ..memory.compose import Prompt, Unfolded
from ..models import Turn
from .continuation import Continuation
from .turns import Incoming, Reply

if TYPE_CHECKING:
    from ..config import Settings
    from ..llm.client import LLM, Completion, OnText
    from ..memory.assembler import Memory

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Progress:
    """What a model call has produced so far: enough to store and book a reply cut short."""

    text: str = ""
    thought: str = ""  # a reasoning model's, never stored as the reply
    prompt_tokens: int = 0
    unfolded: Unfolded | None = None  # the last prompt's view of the unsummarised turns

    def unfolded_after(self, reply: Reply) -> Unfolded | None:
        """The unsummarised turns once the reply is stored: the prompt's, plus the reply."""
        if self.unfolded is None:
            return None
        return Unfolded(self.unfolded.summary, self.unfolded.tokens + reply.tokens)


@dataclass(frozen=True, slots=True)
class Media:
    """What goes with the stored turns in this one call: the images and what the model is
    asked to do with them, or the answer it is asked to continue."""

    pictures: tuple[Picture, ...] = ()
    hint: str = ""
    continuing: Continuation | None = None  # the answer so far, after the question

    def tokens(self, model: str) -> int:
        """What the call adds to the stored turns' prompt: images, their hint, and the
        answer being continued."""
        cost = self.continuing.cost(model) if self.continuing else 0
        if not self.pictures:
            return cost
        cost += sum(image_tokens(model, p.width, p.height) for p in self.pictures)
        return cost + (tokens.count_text(self.hint, model) + 1 if self.hint else 0)


class Asker:
    def __init__(self, llm: LLM, settings: Settings, memory: Memory) -> None:
        self.llm = llm
        self.settings = settings
        self.memory = memory
        self._unmeasured = 0  # calls whose usage was estimated (no usage in streams)

    async def ask(
        self,
        incoming: Incoming,
        persona: str,
        turn_id: int,
        listeners: tuple[OnText, OnText],
        progress: Progress,
        question: Turn | None = None,
        media: Media | None = None,
    ) -> Completion:
        """One model call within the window; on a context-length error (the server's tokenizer
        counts more than ours) it learns a higher factor, squeezes the prompt and retries once.
        """
        chat = incoming.chat
        media = media or Media()
        attached = media.tokens(self.settings.image_model)
        prompt = await self.memory.prompt(
            chat, persona, turn_id=turn_id, question=question, attached=attached
        )
        try:
            return await self._call(incoming, prompt, listeners, progress, media)
        except ContextTooLong as exc:
            log.warning(
                "chat=%s context length exceeded at %d counted tokens (server: window %s, "
                "prompt %s); retrying smaller",
                chat,
                prompt.tokens,
                exc.window or "?",
                exc.prompt_tokens or "?",
            )
            await self._overflowed(exc, prompt)
        # The learned window or factor also lowers the verbatim cap, so the compaction that
        # follows the reply folds what this squeezed prompt had to leave out.
        prompt = await self.memory.prompt(
            chat, persona, squeeze=0.5, turn_id=turn_id, question=question, attached=attached
        )
        try:
            return await self._call(incoming, prompt, listeners, progress, media)
        except EmptyStream:  # empty again, smaller: a broken server, not an overflow
            raise
        except ContextTooLong as exc:  # learnt, so the next message fits; this one failed
            await self._overflowed(exc, prompt)
            raise

    async def _overflowed(self, exc: ContextTooLong, prompt: Prompt) -> None:
        """Learns what the overflow says; where it says nothing, asks the server's tokenizer."""
        counted, reported = prompt.tokens, exc.prompt_tokens
        if reported is None:
            measured = await self.llm.count_on_server(prompt.messages)
            if measured is not None:
                counted, reported = measured
        await self.memory.overflowed(
            self.settings.openai_model, window=exc.window, counted=counted, reported=reported
        )

    async def _call(
        self,
        incoming: Incoming,
        prompt: Prompt,
        listeners: tuple[OnText, OnText],
        progress: Progress,
        media: Media,
    ) -> Completion:
        progress.prompt_tokens = prompt.tokens
        progress.unfolded = prompt.unfolded
        messages = prompt.messages
        if media.continuing is not None:  # counted in the prompt's tokens (`attached`)
            messages = [*messages, *media.continuing.messages()]
        completion = await self.llm.chat(
            messages,
            max_tokens=self.memory.max_output_tokens,
            stream=self.settings.streaming,
            on_text=listeners[0],
            on_thought=listeners[1],
            label=str(incoming.chat),
            images=media.pictures,
            hint=media.hint,
            cache_for=str(incoming.chat),
        )
        # Image tokens are our estimate where the provider's rule is unknown: learning the
        # text tokenizer's factor from such a call would skew it.
        if not completion.usage_estimated and not media.pictures:
            await self.memory.learn(
                self.settings.openai_model, prompt.tokens, completion.usage.prompt_tokens
            )
        elif not media.pictures:
            await self._calibrate(prompt)
        return completion

    async def _calibrate(self, prompt: Prompt) -> None:
        """No usage came back: every 16th such call (the first included) asks the server's
        tokenizer, where it has one, how it counts this prompt."""
        self._unmeasured += 1
        if self._unmeasured % 16 != 1:
            return
        measured = await self.llm.count_on_server(prompt.messages)
        if measured is not None:
            await self.memory.learn(self.settings.openai_model, *measured)
