"""/continue: the rest of an answer that stopped before it was finished (pure, no I/O).

An answer stops early when it reaches the output limit (`finish_reason: length`, stored as
`partial`), when its stream breaks, or when it is stopped. The model is asked to go on from
there: the prompt answers the same question as the answer did, then carries the answer so far
as the assistant's turn and a short user turn asking for the rest. A trailing assistant turn
alone ("prefill") is continued only by some servers (llama.cpp, vLLM with
`continue_final_message`); OpenAI and most chat templates answer it with a new turn, so the
instruction is what works everywhere.

The rest is delivered as new messages; what is stored is one answer, the two halves joined
(`Continuation.join`), replacing the cut one, so the model later sees one assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import tokens
from ..models import Role, Status, Turn

INSTRUCTION = (
    "Your previous answer was cut off before it was finished. Continue it exactly where it "
    "stopped, mid-word or mid-line if that is where it ended. Do not repeat anything you "
    "already wrote, do not start over, do not comment on the continuation: write only the "
    "rest of the answer (inside a code block, go on with its code)."
)
MIN_OVERLAP = 4  # characters a continuation must repeat before its repetition is dropped
MAX_OVERLAP = 400


def continuable(turn: Turn) -> bool:
    """Whether an answer stopped before it was finished and may be continued: cut at the
    output limit or a bound, a broken stream, a shutdown (`partial`) or a stop (`stopped`)."""
    return turn.role is Role.ASSISTANT and turn.status in (Status.PARTIAL, Status.STOPPED)


@dataclass(frozen=True, slots=True)
class Continuation:
    """The answer so far, which the model is asked to continue; `shown` is what of it the
    model reads (all of it, or its end when it would take too much of a small window)."""

    text: str
    shown: str = ""

    @classmethod
    def of(cls, text: str, max_tokens: int, model: str) -> Continuation:
        """Continues `text`, showing the model at most about `max_tokens` of its end."""
        cost = tokens.count_text(text, model)
        if cost <= max_tokens:
            return cls(text, text)
        keep = max(1, len(text) * max_tokens // max(cost, 1) - 1)
        return cls(text, "…" + text[-keep:])

    def messages(self) -> list[dict[str, str]]:
        """What follows the question in the prompt: the answer so far, then the request."""
        return [
            {"role": Role.ASSISTANT.value, "content": self.shown or self.text},
            {"role": Role.USER.value, "content": INSTRUCTION},
        ]

    def cost(self, model: str) -> int:
        """The tokens `messages` add to the prompt."""
        return sum(tokens.count_message(m["content"], model) for m in self.messages())

    def join(self, more: str) -> tuple[str, str]:
        """(shown, stored): the new text to deliver, and the whole answer to store. A model
        that repeats the end of the answer so far before going on has the repetition dropped."""
        shown = more[_overlap(self.text, more) :]
        return shown, self.text + shown


def _overlap(before: str, after: str) -> int:
    """The length of the longest end of `before` that `after` starts with (at least
    MIN_OVERLAP characters, else 0)."""
    longest = min(len(before), len(after), MAX_OVERLAP)
    for size in range(longest, MIN_OVERLAP - 1, -1):
        if before.endswith(after[:size]):
            return size
    return 0
