"""Separates a reasoning model's thought from its answer, as the content streams (pure).

Reasoning models (DeepSeek-R1, Qwen3, ...) think before they answer. A server with a
reasoning parser sends the thought apart (`reasoning_content` or `reasoning` deltas; the
client reads those itself); one without it (Ollama, llama.cpp without `--reasoning-format`)
sends it inline in the content, as `<think>…</think>` before the answer. Some chat templates
open the `<think>` in the prompt, so the stream starts inside the thought and only its
`</think>` shows: the text before a lone closing tag was thought, too.

`ThoughtSplitter` is fed the content deltas as they come and always knows the answer and the
thought so far. A tag may be split across deltas, so a tail that could be the start of a tag is
held back until the next delta (or `finish`) says what it is. Only a thought at the start is
one: once the answer has begun, a `<think>` in it (a model explaining the tags) is text.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


class ThoughtSplitter:
    """Feed it content deltas; read `answer` and `thought` (both accumulated) at any time."""

    def __init__(self) -> None:
        self._answer: list[str] = []
        self._thought: list[str] = []
        self._held = ""  # a tail that may be the start of a tag
        self._inside = False  # within an opened <think>
        self._done = False  # a thought block has closed: no more tags are special
        self._started = False  # the answer has text that is not whitespace
        self._answer_edits = 0  # how often the answer changed (appended to, or taken back)

    @property
    def answer(self) -> str:
        return "".join(self._answer)

    @property
    def thought(self) -> str:
        return "".join(self._thought).strip()

    @property
    def thinking(self) -> bool:
        """True while the model is inside its thought (as far as the content tells)."""
        return self._inside

    def feed(self, delta: str) -> tuple[bool, bool]:
        """Takes the next content delta; says whether it changed (the answer, the thought)."""
        if self._started and not self._held and "<" not in delta:  # most deltas: answer text
            self._add_answer(delta)
            return bool(delta), False
        answer, thought = self._answer_edits, len(self._thought)
        text = self._held + delta
        self._held = ""
        while text:
            if self._done:
                if not self._started:  # the answer starts after the thought
                    self._clear_answer()
                    text = text.lstrip()
                self._add_answer(text)
                break
            text = self._in_thought(text) if self._inside else self._before_thought(text)
        return self._answer_edits != answer, len(self._thought) != thought

    def _add_answer(self, text: str) -> None:
        if text:
            self._answer.append(text)
            self._answer_edits += 1
            self._started = self._started or not text.isspace()

    def _clear_answer(self) -> None:
        if self._answer:
            self._answer.clear()
            self._answer_edits += 1

    def finish(self) -> None:
        """The stream ended: a held tail is text after all (an unclosed thought stays one)."""
        held, self._held = self._held, ""
        if self._inside:
            self._thought.append(held)
        else:
            self._add_answer(held)

    def _in_thought(self, text: str) -> str:
        end = text.find(CLOSE)
        if end < 0:
            keep = _tag_prefix(text, CLOSE)
            self._thought.append(text[: len(text) - keep])
            self._held = text[len(text) - keep :]
            return ""
        self._thought.append(text[:end])
        self._inside, self._done = False, True
        return text[end + len(CLOSE) :].lstrip()

    def _before_thought(self, text: str) -> str:
        """No thought yet: a leading <think> opens one; a lone </think> turns what came
        before it into thought (the template opened it); otherwise it is answer text."""
        so_far = text if self._started else self.answer + text
        start = so_far.lstrip()
        if not self._started and OPEN.startswith(start[: len(OPEN)]):
            if start.startswith(OPEN):
                self._clear_answer()
                self._inside = True
                return start[len(OPEN) :]
            if OPEN.startswith(start):  # "<thi": wait for the rest
                self._clear_answer()
                self._held = so_far
                return ""
        end = text.find(CLOSE)
        if end >= 0:
            self._thought = [*self._answer, text[:end]]
            self._clear_answer()
            self._done, self._started = True, False
            return text[end + len(CLOSE) :].lstrip()
        keep = _tag_prefix(text, CLOSE)
        self._add_answer(text[: len(text) - keep])
        self._held = text[len(text) - keep :]
        return ""


def _tag_prefix(text: str, tag: str) -> int:
    """How many characters at the end of `text` could begin `tag` (0 if none)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def split_thought(content: str) -> tuple[str, str]:
    """(answer, thought) of a whole content string (a non-streamed completion)."""
    splitter = ThoughtSplitter()
    splitter.feed(content)
    splitter.finish()
    return splitter.answer, splitter.thought
