"""What the model sees of a conversation, assembled from stored turns (pure: no I/O).

Every prompt is, in this order (the order a server's prompt cache can reuse turn after turn):

1. one system message: the persona, then the chat's rolling summary (framed as a summary of
   earlier conversation), then archive snippets recalled for the new message (framed with when
   they were said). One system message, because many local chat templates reject a second;
2. the recent turns verbatim, newest kept, oldest dropped first;
3. the new message.

`assemble` takes stored turns and this turn's caps (`budget.Allocation`) and returns the
messages plus their exact count; `compose` guarantees that count is within the limit. The
I/O around it (reading the store, the learned correction factor) is `assembler.Memory`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from .. import tokens
from ..errors import PromptTooLong
from ..models import Role, Status, Summary, Turn
from . import budget

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
def count_repeated(text: str, model: str) -> int:
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
    used = count_repeated(recall_section([]), model)
    chosen: list[Turn] = []
    for turn in candidates:
        cost = count_repeated("\n" + recalled_line(turn), model)
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
    attached: int = 0,
) -> Prompt:
    """Builds the messages and guarantees their count is ≤ `limit`.

    `attached` is what the new message's images cost (`llm.vision.image_tokens`): they are
    added to it as content parts by the model client, and counted here.

    Parts are given already fitted to their caps, but token counts of joined text are not
    exactly additive, so the result is counted once and, if still over, trimmed in order of
    least value: recalled lines, the oldest verbatim turns, the summary, then the persona.
    Raises PromptTooLong when even the new message alone cannot fit.
    """
    new_cost = turn_cost(new, model)
    floor = tokens.TOKENS_REPLY_PRIMING + tokens.TOKENS_PER_MESSAGE + new_cost + attached
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
        count = count_repeated if system is persona else tokens.count_text
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
    attached: int = 0,
) -> Prompt:
    """The whole prompt from stored parts and this turn's caps (pure).

    `older` are the unsummarised turns before the new message; `candidates` are recall hits,
    best first. Hits still inside the verbatim window are skipped (they are sent anyway).
    """
    history = fit_newest(older, alloc.history, model)
    summary_text = ""
    if summary and alloc.summary > 0:
        room = alloc.summary - count_repeated(summary_section(""), model)
        fits = count_repeated(summary, model) <= room
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
        attached=attached,
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
