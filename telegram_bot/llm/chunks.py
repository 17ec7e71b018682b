"""Reads a chat-completions stream, chunk by chunk: the answer and a reasoning model's
thought apart (inline `<think>` content through `reasoning.ThoughtSplitter`, or
`reasoning_content` / `reasoning` deltas), the finish_reason and the usage. No I/O: the client
(`client.py`) iterates the stream and hands each chunk (plain JSON) to `StreamReader.read`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import ModelError
from .reasoning import ThoughtSplitter

log = logging.getLogger(__name__)

OnText = Callable[[str], None]


class StreamReader:
    """Reads a stream's chunks: the answer and the thought apart (inline `<think>` content or
    `reasoning_content` / `reasoning` deltas), the finish_reason and the usage."""

    def __init__(self, on_text: OnText | None, on_thought: OnText | None) -> None:
        self.on_text = on_text
        self.on_thought = on_thought
        self.content = ThoughtSplitter()
        self.reasoning: list[str] = []
        self.finish: str | None = None
        self.usage: Any = None
        self.timings: Any = None  # llama-server's last chunk carries `timings` (cache_n)

    def read(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        if chunk.get("timings") is not None:
            self.timings = chunk
        if not chunk.get("choices"):
            return
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        thought = reasoning_of(delta)
        if thought:
            self.reasoning.append(thought)
            self._thought_changed()
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            # Joining it would raise TypeError and lose the text so far.
            log.warning("The model server sent a delta whose content is not text: %.80r", content)
            raise ModelError()  # the caller keeps the text so far, as for a broken stream
        if content:
            answer_changed, thought_changed = self.content.feed(content)
            if thought_changed:
                self._thought_changed()
            if answer_changed and self.on_text is not None:
                self.on_text(self.content.answer)
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]

    @property
    def thought(self) -> str:
        return "".join(self.reasoning).strip() or self.content.thought

    def answer(self) -> str:
        """The answer so far; at the end of the stream, with any held-back tail."""
        if self.finish is not None or self.usage is not None:
            self.content.finish()
        return self.content.answer

    def _thought_changed(self) -> None:
        if self.on_thought is not None:
            self.on_thought(self.thought)


def reasoning_of(part: dict[str, Any]) -> str:
    """The thought a message or delta carries apart from its content: `reasoning_content`
    (llama.cpp, vLLM, DeepSeek) or `reasoning` (OpenRouter, Ollama's OpenAI API)."""
    value = part.get("reasoning_content") or part.get("reasoning")
    return value if isinstance(value, str) else ""
