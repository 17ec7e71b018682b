"""Prompt assembly from stored turns (pure functions: no I/O, no Telegram).

The prompt is the persona as the system message, then the chat's live turns oldest first. In
group chats a user turn is prefixed with the speaker's name, so the model knows who said what.
"""

from __future__ import annotations

from collections.abc import Sequence

from .models import Role, Turn

Message = dict[str, str]


def turn_message(turn: Turn) -> Message:
    text = turn.text
    if turn.role is Role.USER and turn.author is not None and turn.author.name:
        text = f"{turn.author.name}: {text}" if turn.chat.chat_id < 0 else text
    return {"role": turn.role.value, "content": text}


def build_prompt(persona: str, history: Sequence[Turn]) -> list[Message]:
    messages: list[Message] = [{"role": Role.SYSTEM.value, "content": persona}]
    messages.extend(turn_message(turn) for turn in history)
    return messages
