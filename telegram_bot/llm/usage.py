"""A call's token usage: as the server reported it, else estimated with tiktoken.

Pure, no I/O. A reasoning model's thought counts as output and as reasoning tokens; what came
from the server's prompt cache is read from OpenAI's usage or llama.cpp's `timings`
(`prompt_cache.cached_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import tokens
from ..models import Usage
from .prompt_cache import cached_tokens
from .vision import Picture, image_tokens


def usage_of(
    raw: Any,
    messages: Sequence[dict[str, Any]],
    images: Sequence[Picture],
    text: str,
    model: str,
    thought: str = "",
    body: Any = None,
) -> tuple[Usage, bool]:
    """The usage and whether it was estimated (the server reported none)."""
    if isinstance(raw, dict) and raw.get("prompt_tokens") is not None:
        details = raw.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        if not reasoning and thought:  # a server that does not count them apart
            reasoning = tokens.count_text(thought, model)
        usage = Usage(
            int(raw["prompt_tokens"]),
            int(raw.get("completion_tokens") or 0),
            reasoning_tokens=int(reasoning or 0),
            cached_tokens=min(int(raw["prompt_tokens"]), cached_tokens(raw, body)),
        )
        return usage, False
    prompt = tokens.count_messages(list(messages), model)
    prompt += sum(image_tokens(model, p.width, p.height) for p in images)
    if images:  # the last message's text is in its parts, which count_messages skips
        prompt += sum(
            tokens.count_text(part.get("text", ""), model) for part in messages[-1]["content"]
        )
    reasoning = tokens.count_text(thought, model) if thought else 0
    completion = tokens.count_text(text, model) + reasoning
    return Usage(prompt, completion, reasoning, cached_tokens(None, body)), True
