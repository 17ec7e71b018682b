"""Token-budget arithmetic: how many tokens each part of a prompt may take (pure, no I/O).

The model's window holds the prompt *and* the reply, so the prompt may use at most
`window − output − margin` tokens as the *server* counts them. We count with tiktoken; a local
model's tokenizer may count more, so our limit is divided by a learned correction factor
(`Calibration` in memory.py). Whatever the configured budgets say, the parts are scaled down to
fit that limit, so no combination of settings can produce a request the window cannot hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_WINDOW = 8192
MIN_MARGIN = 32

# Windows of well-known model families, matched by substring of the lower-cased model name,
# most specific first. Names cover OpenAI's API and the usual Ollama / llama.cpp / vLLM tags;
# local servers often run a smaller context than the model supports, so owners of those
# should set MODEL_CONTEXT_WINDOW to what the server was started with.
_KNOWN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-3.5-turbo", 16_385),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("claude", 200_000),
    ("llama3.1", 131_072),
    ("llama3.2", 131_072),
    ("llama3.3", 131_072),
    ("llama-3.1", 131_072),
    ("llama-3.2", 131_072),
    ("llama-3.3", 131_072),
    ("llama3", 8_192),
    ("llama2", 4_096),
    ("qwen2.5", 32_768),
    ("qwen3", 32_768),
    ("mistral-nemo", 128_000),
    ("mistral", 32_768),
    ("mixtral", 32_768),
    ("gemma3", 131_072),
    ("gemma2", 8_192),
    ("phi3", 4_096),
    ("phi4", 16_384),
    ("deepseek", 65_536),
)


def context_window_for(model: str) -> int:
    """The context window of a known model family; 8192 for anything else. Never raises."""
    name = model.rsplit("/", 1)[-1].lower()
    for marker, window in _KNOWN_WINDOWS:
        if marker in name:
            return window
    return DEFAULT_WINDOW


def safety_margin(window: int) -> int:
    """Tokens left free for miscounting (names, tool framing, template quirks): 2%, ≥ 32."""
    return max(MIN_MARGIN, window // 50)


def output_reserve(window: int, max_output_tokens: int) -> int:
    """Tokens reserved for the reply: MAX_OUTPUT_TOKENS, but never more than half the window.

    A reply reservation larger than the window would leave no room for any prompt; halving it
    keeps the bot answering (and this is what is sent as `max_tokens`).
    """
    return max(1, min(max_output_tokens, window // 2))


def prompt_limit(window: int, max_output_tokens: int, factor: float = 1.0) -> int:
    """The most prompt tokens *we* may count, so the server's count still fits the window."""
    room = window - output_reserve(window, max_output_tokens) - safety_margin(window)
    return max(0, math.floor(room / max(factor, 1.0)))


@dataclass(frozen=True, slots=True)
class Allocation:
    """Token caps of the variable parts of one prompt; their sum fits `limit − fixed`."""

    limit: int  # prompt tokens allowed, as we count them
    fixed: int  # persona + new message + framing overhead, always sent
    summary: int
    history: int
    recall: int

    @property
    def total(self) -> int:
        return self.fixed + self.summary + self.history + self.recall


def allocate(
    *,
    limit: int,
    fixed: int,
    summary_budget: int,
    history_budget: int,
    recall_budget: int,
    varying: int = 0,
) -> Allocation:
    """Caps for summary, verbatim history and recall within what `fixed` leaves of `limit`.

    When the configured budgets together ask for more than is left, each is scaled down in
    proportion (rounded down), so the sum can never pass the limit. `varying` is the part of
    `fixed` that changes from turn to turn (the new message): the shares are taken of what is
    left without it, and what it then needs comes out of recall first, then the verbatim
    history, the summary last. So in a small window the summary's cap (and with it the system
    message a server's prompt cache holds) does not move with the length of each new message.
    """
    free = max(0, limit - fixed)
    budgets = [max(0, summary_budget), max(0, history_budget), max(0, recall_budget)]
    asked = sum(budgets)
    if asked <= free:
        return Allocation(limit, fixed, *budgets)
    base = free + max(0, varying)  # what is left before the new message: the same every turn
    caps = [b * base // asked if asked > base else b for b in budgets]
    over = sum(caps) - free
    for part in (2, 1, 0):  # recall, then history, then the summary give way
        taken = min(caps[part], max(0, over))
        caps[part] -= taken
        over -= taken
    summary, history, recall = caps
    return Allocation(limit, fixed, summary, history, recall)
