"""What the model sees of a conversation: persona, summary, recalled snippets, recent turns.

Every turn's prompt is assembled in this order, within the token budget (`budget.py`):

1. one system message: the persona, then the chat's rolling summary (framed as a summary of
   earlier conversation), then archive snippets recalled for the new message (framed with when
   they were said). One system message, because many local chat templates reject a second;
2. the recent turns verbatim, newest kept, oldest dropped first;
3. the new message.

The pure part (`compose`, `fit_newest`, `fit_recall`) takes stored turns and returns messages
plus their exact count; `Memory` does the I/O around it and owns the learned per-model
correction factor (`Calibration`). Summaries are written by `compaction.py` after the reply.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import tokens
from ..errors import PromptTooLong
from ..models import ChatKey, Role, Status, Summary, Turn
from . import budget
from .recall import query_words

if TYPE_CHECKING:
    from ..config import Settings
    from ..storage import Store

log = logging.getLogger(__name__)

Message = dict[str, str]

SUMMARY_HEADER = (
    "Summary of the earlier part of this conversation (those messages are no longer shown "
    "to you; rely on this summary for what was said there):"
)
RECALL_HEADER = (
    "Messages recalled from earlier in this conversation because they may matter for the "
    "latest message (date and time in UTC, then who said it):"
)
RECALL_CANDIDATES = 12
# After a reply that did not finish (/stop, shutdown, a broken stream), wherever a model reads
# it: the next prompt, recalled lines and the summariser's transcript alike.
CUT_SHORT = "[reply cut short]"


@functools.lru_cache(maxsize=1024)
def _count_text(text: str, model: str) -> int:
    """Counts that repeat turn after turn (persona, summary, recalled lines), memoised."""
    return tokens.count_text(text, model)


def turn_text(turn: Turn, text: str | None = None) -> str:
    """The turn's text (or `text`, a cut of it) as a model reads it: a reply that did not
    finish says so, so neither the model nor the summariser takes half an answer for a whole."""
    text = turn.text if text is None else text
    if turn.status is Status.PARTIAL or turn.status is Status.STOPPED:
        return f"{text.rstrip()} {CUT_SHORT}"
    return text


def turn_message(turn: Turn) -> Message:
    text = turn_text(turn)
    if turn.role is Role.USER and turn.author is not None and turn.author.name:
        text = f"{turn.author.name}: {text}" if turn.chat.chat_id < 0 else text
    return {"role": turn.role.value, "content": text}


def build_prompt(persona: str, history: Sequence[Turn]) -> list[Message]:
    """Persona plus turns, no budget: kept for callers that need the plain shape."""
    messages: list[Message] = [{"role": Role.SYSTEM.value, "content": persona}]
    messages.extend(turn_message(turn) for turn in history)
    return messages


def turn_cost(turn: Turn, model: str = "") -> int:
    """Tokens the turn takes in a prompt. The stored count is exact unless a speaker prefix
    was added (group chats), which is then counted."""
    message = turn_message(turn)
    if message["content"] == turn.text and turn.tokens > 0:
        return turn.tokens
    return tokens.count_message(message["content"], model)


def speaker(turn: Turn) -> str:
    if turn.role is Role.ASSISTANT:
        return "Assistant"
    return turn.author.name if turn.author is not None and turn.author.name else "User"


def recalled_line(turn: Turn) -> str:
    when = turn.created_at.strftime("%Y-%m-%d %H:%M")
    return f"[{when}] {speaker(turn)}: {turn_text(turn)}"


def summary_section(text: str) -> str:
    return f"\n\n{SUMMARY_HEADER}\n{text}"


def recall_section(lines: Sequence[str]) -> str:
    return f"\n\n{RECALL_HEADER}\n" + "\n".join(lines)


def fit_newest(turns: Sequence[Turn], cap: int, model: str = "") -> list[Turn]:
    """The newest turns whose costs fit `cap`, oldest first (a gap never opens in between)."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        cost = turn_cost(turn, model)
        if used + cost > cap:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return kept


def fit_recall(candidates: Sequence[Turn], cap: int, model: str = "") -> list[Turn]:
    """The best-ranked candidates whose lines fit `cap` with the header, in time order."""
    if not candidates:
        return []
    used = _count_text(recall_section([]), model)
    chosen: list[Turn] = []
    for turn in candidates:
        cost = _count_text("\n" + recalled_line(turn), model)
        if used + cost <= cap:
            chosen.append(turn)
            used += cost
    return sorted(chosen, key=lambda t: t.id)


@dataclass(frozen=True, slots=True)
class Unfolded:
    """The turns not yet summarised, as the prompt's read found them: compaction decides from
    this whether a fold is due without reading them all again after every reply."""

    summary: Summary | None
    tokens: int  # what every unsummarised turn costs in a prompt, the new message included


@dataclass(frozen=True, slots=True)
class Prompt:
    """An assembled prompt with its exact token count (as tiktoken counts it)."""

    messages: list[Message]
    tokens: int
    limit: int
    history: int  # turns sent verbatim (without the new message)
    dropped: int  # older unsummarised turns left out for lack of room
    recalled: int
    summary: bool
    unfolded: Unfolded | None = None  # None when the read did not hold every such turn


def compose(
    persona: str,
    new: Turn,
    history: Sequence[Turn],
    *,
    limit: int,
    summary: str = "",
    recalled: Sequence[Turn] = (),
    model: str = "",
) -> Prompt:
    """Builds the messages and guarantees their count is ≤ `limit`.

    Parts are given already fitted to their caps, but token counts of joined text are not
    exactly additive, so the result is counted once and, if still over, trimmed in order of
    least value: recalled lines, the oldest verbatim turns, the summary, then the persona.
    Raises PromptTooLong when even the new message alone cannot fit.
    """
    new_cost = turn_cost(new, model)
    floor = tokens.TOKENS_REPLY_PRIMING + tokens.TOKENS_PER_MESSAGE + new_cost
    if floor > limit:
        raise PromptTooLong()
    history = list(history)
    recalled = list(recalled)
    all_turns = len(history)
    while True:
        system = persona
        if summary:
            system += summary_section(summary)
        if recalled:
            system += recall_section([recalled_line(t) for t in recalled])
        history_cost = sum(turn_cost(t, model) for t in history)
        # The persona alone (no summary or recall yet: most prompts) repeats: memoised.
        count = _count_text if system is persona else tokens.count_text
        total = floor + count(system, model) + history_cost
        if total <= limit:
            break
        if recalled:
            recalled.pop(0)
        elif history:
            history.pop(0)
        elif summary:
            summary = tokens.truncate_text(summary, tokens.count_text(summary, model) // 2, model)
        else:  # only the persona is left to give way; its count falls every round
            persona_tokens = tokens.count_text(persona, model)
            persona = tokens.truncate_text(persona, min(limit - floor, persona_tokens - 1), model)
    messages: list[Message] = [{"role": Role.SYSTEM.value, "content": system}]
    messages.extend(turn_message(t) for t in history)
    messages.append(turn_message(new))
    return Prompt(
        messages,
        total,
        limit,
        history=len(history),
        dropped=all_turns - len(history),
        recalled=len(recalled),
        summary=bool(summary),
    )


def assemble(
    persona: str,
    new: Turn,
    older: Sequence[Turn],
    alloc: budget.Allocation,
    *,
    summary: str = "",
    candidates: Sequence[Turn] = (),
    model: str = "",
) -> Prompt:
    """The whole prompt from stored parts and this turn's caps (pure).

    `older` are the unsummarised turns before the new message; `candidates` are recall hits,
    best first. Hits still inside the verbatim window are skipped (they are sent anyway).
    """
    history = fit_newest(older, alloc.history, model)
    summary_text = ""
    if summary and alloc.summary > 0:
        room = alloc.summary - _count_text(summary_section(""), model)
        fits = _count_text(summary, model) <= room
        summary_text = summary if fits else tokens.truncate_text(summary, room, model)
    oldest = history[0].id if history else new.id
    recalled = fit_recall([t for t in candidates if t.id < oldest], alloc.recall, model)
    prompt = compose(
        persona,
        new,
        history,
        limit=alloc.limit,
        summary=summary_text,
        recalled=recalled,
        model=model,
    )
    dropped = len(older) - prompt.history
    return Prompt(
        prompt.messages,
        prompt.tokens,
        prompt.limit,
        prompt.history,
        dropped,
        prompt.recalled,
        prompt.summary,
    )


class Calibration:
    """Per-model correction factor between the server's prompt count and ours.

    A local model's tokenizer may count 30% more than tiktoken; dividing our limit by the
    factor keeps the server's count inside the window. The factor rises at once to what the
    server reports (the next request must fit) and relaxes slowly when it reports less. It
    never goes below 1 (counting too low is the dangerous direction) or above 4. `Memory`
    saves it in the store, so a restart does not overflow once to learn it again.
    """

    MAX = 4.0

    def __init__(self) -> None:
        self._factors: dict[str, float] = {}

    def factor(self, model: str) -> float:
        return self._factors.get(model, 1.0)

    def load(self, factors: dict[str, float]) -> None:
        for model, factor in factors.items():
            self._factors.setdefault(model, min(self.MAX, max(1.0, factor)))

    def observe(self, model: str, counted: int, reported: int) -> bool:
        """Learns from one exchange; True when the factor changed enough to be worth saving."""
        if counted < 16 or reported <= 0:  # too small to say anything about the tokenizer
            return False
        ratio = reported / counted
        current = self.factor(model)
        learned = ratio if ratio > current else 0.8 * current + 0.2 * ratio
        learned = min(self.MAX, max(1.0, learned))
        self._factors[model] = learned
        if abs(learned - current) <= 0.01:
            return False
        log.info("model=%s token correction factor %.2f -> %.2f", model, current, learned)
        return True

    def overflowed(self, model: str) -> None:
        """The server said the prompt was too long although our count fit: count higher."""
        self._factors[model] = min(self.MAX, self.factor(model) * 1.25)
        log.info("model=%s token correction factor raised to %.2f", model, self._factors[model])


class Memory:
    """Assembles each turn's prompt from the store within the budget."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.calibration = Calibration()
        self._loaded = False

    async def load_factors(self) -> None:
        """Reads the factors learned before a restart, once per process."""
        if not self._loaded:
            self.calibration.load(await self.store.token_factors())
            self._loaded = True

    async def learn(self, model: str, counted: int, reported: int) -> None:
        if self.calibration.observe(model, counted, reported):
            await self.store.set_token_factor(model, self.calibration.factor(model))

    async def overflowed(self, model: str) -> None:
        self.calibration.overflowed(model)
        await self.store.set_token_factor(model, self.calibration.factor(model))

    @property
    def model(self) -> str:
        return self.settings.openai_model

    @property
    def window(self) -> int:
        return self.settings.context_window

    @property
    def max_output_tokens(self) -> int:
        """What to send as `max_tokens`: MAX_OUTPUT_TOKENS, at most half the window."""
        return budget.output_reserve(self.window, self.settings.max_output_tokens)

    def limit(self) -> int:
        return budget.prompt_limit(
            self.window, self.settings.max_output_tokens, self.calibration.factor(self.model)
        )

    def allocation(
        self, persona: str, new_cost: int, summary: Summary | None, squeeze: float = 1.0
    ) -> budget.Allocation:
        """Caps for this turn; `squeeze` < 1 shrinks them (retry after a context error)."""
        s = self.settings
        persona_cost = tokens.TOKENS_PER_MESSAGE + _count_text(persona, self.model)
        fixed = tokens.TOKENS_REPLY_PRIMING + persona_cost + new_cost
        summary_ask = 0
        if summary is not None and s.summary_token_budget > 0:
            section = _count_text(summary_section(summary.text), self.model)
            summary_ask = min(s.summary_token_budget + 64, section)
        return budget.allocate(
            limit=self.limit(),
            fixed=fixed,
            summary_budget=int(summary_ask * squeeze),
            history_budget=int(s.history_token_budget * squeeze),
            recall_budget=int(s.recall_token_budget * squeeze),
        )

    async def prompt(
        self,
        chat: ChatKey,
        persona: str,
        squeeze: float = 1.0,
        *,
        turn_id: int | None = None,
        question: Turn | None = None,
    ) -> Prompt:
        """The prompt answering stored message `turn_id` (default: the chat's newest).

        `question` (/retry) is that message itself: it may have been folded into the summary
        since (chatter after it pushes it out of the verbatim turns), and is then answered
        with the summary as its context rather than not at all."""
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
        alloc = self.allocation(persona, turn_cost(new, self.model), summary, squeeze)
        candidates: list[Turn] = []
        words = query_words(new.text) if alloc.recall > 0 else []
        if words:
            history = fit_newest(older, alloc.history, self.model)
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
            model=self.model,
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


@dataclass(frozen=True, slots=True)
class MemoryStatus:
    """Where a conversation stands, for /memory."""

    verbatim_tokens: int
    verbatim_messages: int
    history_budget: int
    summary: Summary | None
    summary_budget: int
    prompt_limit: int
    window: int
    output_reserve: int


async def memory_status(memory: Memory, chat: ChatKey, persona: str) -> MemoryStatus:
    s = memory.settings
    summary = await memory.store.current_summary(chat) if s.summary_token_budget else None
    cap = memory.history_cap(persona, summary)
    turns = fit_newest(await memory.store.unsummarised_turns(chat, cap), cap, memory.model)
    return MemoryStatus(
        verbatim_tokens=sum(turn_cost(t, memory.model) for t in turns),
        verbatim_messages=len(turns),
        history_budget=cap,
        summary=summary,
        summary_budget=s.summary_token_budget,
        prompt_limit=memory.limit(),
        window=memory.window,
        output_reserve=memory.max_output_tokens,
    )


def describe(status: MemoryStatus) -> str:
    """The /memory answer: plain text, numbers first, then the summary itself."""
    lines = [
        "Memory of this conversation",
        f"• Recent messages, sent word for word: {status.verbatim_tokens:,} of "
        f"{status.history_budget:,} tokens ({status.verbatim_messages} messages)",
    ]
    summary = status.summary
    if status.summary_budget <= 0:
        lines.append("• Summaries are off (SUMMARY_TOKEN_BUDGET=0): older messages are dropped.")
    elif summary is None:
        lines.append("• No summary yet: the whole conversation still fits.")
    else:
        lines.append(
            f"• Summary: {summary.tokens:,} of {status.summary_budget:,} tokens, covering "
            f"{summary.messages_covered} earlier messages"
        )
    lines.append(
        f"• Each prompt stays under {status.prompt_limit:,} tokens (model window "
        f"{status.window:,}, {status.output_reserve:,} kept for the reply)"
    )
    if summary is not None:
        lines += ["", "Summary of the earlier conversation:", summary.text]
    return "\n".join(lines)
