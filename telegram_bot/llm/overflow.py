"""Every way a model server says "the prompt is too long", and what its error says about it.

A 400 (or 413) whose text carries one of `CONTEXT_MARKERS` is an overflow: OpenAI's and vLLM's
`context_length_exceeded` / "maximum context length", llama.cpp's llama-server "exceeds the
available context size" (its body also has `n_ctx` and `n_prompt_tokens` as numbers),
llama-cpp-python's unstreamed 400 (OpenAI's wording). `overflow` reads the window and the
prompt's size where the error gives them, so the engine learns both from one refusal. (The
third form, llama-cpp-python's empty 200 stream, is recognised in `client.py`.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import ContextTooLong

CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "too many tokens",
    "exceeds the available context size",  # llama.cpp's llama-server
    "exceed_context_size_error",
    "exceed context window",  # llama-cpp-python's own ValueError
)
# Where overflow errors say the window and the prompt's size, as OpenAI, vLLM,
# llama-cpp-python (non-streamed) and llama-server word them (docs/real-servers.md).
_WINDOW_PATTERNS = (
    re.compile(r"maximum context length is (\d+)"),
    re.compile(r"available context size \((\d+) tokens\)"),
    re.compile(r"context window of (\d+)"),
)
_PROMPT_PATTERNS = (
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"messages resulted in (\d+) tokens"),
    re.compile(r"request \((\d+) tokens\) exceeds"),
    re.compile(r"your request has (\d+) input tokens"),
    re.compile(r"requested tokens \((\d+)\) exceed"),
)


def overflow(body: Any, message: str) -> ContextTooLong:
    """ContextTooLong with the window and the prompt's size where the error says them
    (llama-server's body has both as numbers: `n_ctx`, `n_prompt_tokens`)."""
    fields = body if isinstance(body, dict) else {}
    window = _number(fields.get("n_ctx")) or _first(_WINDOW_PATTERNS, message)
    prompt = _number(fields.get("n_prompt_tokens")) or _first(_PROMPT_PATTERNS, message)
    return ContextTooLong(window, prompt)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _first(patterns: Sequence[re.Pattern[str]], text: str) -> int | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return int(found.group(1))
    return None
