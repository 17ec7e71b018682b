"""Where a conversation's memory stands, for /memory (and the console)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ChatKey, Summary
from .assembler import Memory
from .compose import fit_newest, turn_cost


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
