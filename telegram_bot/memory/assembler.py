"""Each turn's prompt, read from the store and fitted to the model's window.

`Memory` does the I/O around the pure assembly (`compose.py`): one read of the conversation's
summary and unsummarised turns (`Store.backlog`), the recall search when older turns exist,
the caps for this turn (`budget.py`), and the learned per-model correction factor
(`calibration.py`), saved in the store so a restart does not overflow once to learn it again.
The window is MODEL_CONTEXT_WINDOW, else what the server said at start-up (`llm/server_info.py`),
else the family table; an overflow error that names a smaller window lowers it for good (this
process), whatever the source.
Summaries are written by `compaction.py` after the reply.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from .. import tokens
from ..models import ChatKey, Summary, Turn
from . import budget
from .calibration import Calibration
from .compose import (
    RECALL_CANDIDATES,
    Prompt,
    Unfolded,
    assemble,
    count_repeated,
    fit_newest,
    summary_section,
    turn_cost,
)
from .recall import query_words, unseen

if TYPE_CHECKING:
    from ..config import Settings
    from ..storage import Store

log = logging.getLogger(__name__)


class Memory:
    """Assembles each turn's prompt from the store within the budget."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.calibration = Calibration()
        self._loaded = False
        self.server_window: int | None = None  # what the server said at start-up
        self.window_source = ""
        self._learned_window: int | None = None  # what an overflow error said, if smaller

    def use_server_window(self, window: int | None, source: str) -> None:
        """Adopts the window the server reported; logs the one line saying which is used."""
        self.server_window, self.window_source = window, source
        s = self.settings
        if s.model_context_window:
            where = "MODEL_CONTEXT_WINDOW"
            if window and window < s.model_context_window:
                where += f"; the server says {window} ({source}), so expect overflows"
        elif window:
            where = source
        else:
            where = f"model family table for {self.model!r}; the server does not say it"
        log.info("Context window: %d tokens (%s)", self.window, where)

    async def load_factors(self) -> None:
        """Reads the factors learned before a restart, once per process."""
        if not self._loaded:
            self.calibration.load(await self.store.token_factors())
            self._loaded = True

    async def learn(self, model: str, counted: int, reported: int) -> None:
        if self.calibration.observe(model, counted, reported):
            await self.store.set_token_factor(model, self.calibration.factor(model))

    async def overflowed(
        self,
        model: str,
        *,
        window: int | None = None,
        counted: int = 0,
        reported: int | None = None,
    ) -> None:
        """The server refused a prompt we counted `counted` as too long: learns the window and
        the token factor from what its error said (`window`, `reported`), or, where it said
        nothing, raises the factor by a step."""
        explained = False
        if window and window < self.window:
            log.warning(
                "model=%s the server's context window is %d tokens, not %d: using %d",
                model,
                window,
                self.window,
                window,
            )
            self._learned_window = window
            explained = True
        if reported and counted >= 16 and reported / counted > self.calibration.factor(model):
            self.calibration.observe(model, counted, reported)  # it must cover this count
            explained = True
        elif not explained:
            self.calibration.overflowed(model)
        await self.store.set_token_factor(model, self.calibration.factor(model))

    @property
    def model(self) -> str:
        return self.settings.openai_model

    @property
    def window(self) -> int:
        s = self.settings
        window = s.model_context_window or self.server_window or s.context_window
        return min(window, self._learned_window or window)

    @property
    def max_output_tokens(self) -> int:
        """What to send as `max_tokens`: MAX_OUTPUT_TOKENS, at most half the window."""
        return budget.output_reserve(self.window, self.settings.max_output_tokens)

    @property
    def recall(self) -> bool:
        """Whether the chat recalls at all: a setting, so the summary's header, which explains
        recalled lines, stays the same from turn to turn (`compose.summary_section`)."""
        return self.settings.recall_token_budget > 0

    def limit(self) -> int:
        return budget.prompt_limit(
            self.window, self.settings.max_output_tokens, self.calibration.factor(self.model)
        )

    def allocation(
        self, persona: str, new_cost: int, summary: Summary | None, squeeze: float = 1.0
    ) -> budget.Allocation:
        """Caps for this turn; `squeeze` < 1 shrinks them (retry after a context error)."""
        s = self.settings
        persona_cost = tokens.TOKENS_PER_MESSAGE + count_repeated(persona, self.model)
        fixed = tokens.TOKENS_REPLY_PRIMING + persona_cost + new_cost
        summary_ask = 0
        if summary is not None and s.summary_token_budget > 0:
            section = count_repeated(summary_section(summary.text, self.recall), self.model)
            framing = count_repeated(summary_section("", self.recall), self.model)
            summary_ask = min(s.summary_token_budget + framing + 16, section)
        return budget.allocate(
            limit=self.limit(),
            fixed=fixed,
            summary_budget=int(summary_ask * squeeze),
            history_budget=int(s.history_token_budget * squeeze),
            recall_budget=int(s.recall_token_budget * squeeze),
            varying=new_cost,
        )

    async def prompt(
        self,
        chat: ChatKey,
        persona: str,
        squeeze: float = 1.0,
        *,
        turn_id: int | None = None,
        question: Turn | None = None,
        attached: int = 0,
    ) -> Prompt:
        """The prompt answering stored message `turn_id` (default: the chat's newest).

        `question` (/retry) is that message itself: it may have been folded into the summary
        since (chatter after it pushes it out of the verbatim turns), and is then answered
        with the summary as its context rather than not at all. `attached`: tokens of the
        images sent with the new message (this call only)."""
        s = self.settings
        await self.load_factors()
        backlog = await self.store.backlog(chat, 2 * s.history_token_budget + 16_000)
        summary = backlog.summary if s.summary_token_budget else None
        turns = backlog.turns
        if turn_id is not None:  # messages stored while this one waited are not its history
            turns = [t for t in turns if t.id <= turn_id]
        if question is not None and (not turns or turns[-1].id != question.id):
            turns = [t for t in turns if t.id < question.id] + [question]
        if not turns:
            raise RuntimeError(f"chat {chat} has no stored message to answer")
        new, older = turns[-1], turns[:-1]
        alloc = self.allocation(persona, turn_cost(new, self.model) + attached, summary, squeeze)
        candidates: list[Turn] = []
        words = query_words(new.text) if alloc.recall > 0 else []
        history = fit_newest(older, alloc.history, self.model) if words else []
        if words:  # what the prompt shows anyway is not searched for
            words = unseen(words, [summary.text if summary else "", *(t.text for t in history)])
        if words:
            before = history[0].id if history else new.id
            if backlog.first_id is not None and backlog.first_id < before:  # else none older
                candidates = await self.store.search_turns(
                    chat, words, before_id=before, limit=RECALL_CANDIDATES
                )
        prompt = assemble(
            persona,
            new,
            older,
            alloc,
            summary=summary.text if summary else "",
            candidates=candidates,
            recall=self.recall,
            model=self.model,
            attached=attached,
        )
        if question is None and backlog.complete and len(turns) == len(backlog.turns):
            cost = sum(turn_cost(t, self.model) for t in older) + turn_cost(new, self.model)
            prompt = dataclasses.replace(prompt, unfolded=Unfolded(summary, cost))
        log.debug(
            "chat=%s prompt tokens=%d limit=%d verbatim=%d dropped=%d recalled=%d summary=%s",
            chat,
            prompt.tokens,
            prompt.limit,
            prompt.history,
            prompt.dropped,
            prompt.recalled,
            prompt.summary,
        )
        return prompt

    def history_cap(self, persona: str, summary: Summary | None) -> int:
        """The verbatim-history cap compaction keeps under (no new message counted)."""
        return self.allocation(persona, 0, summary).history
