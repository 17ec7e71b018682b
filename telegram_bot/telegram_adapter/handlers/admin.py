"""/persona and /reset, and who may change a chat (the rules themselves live in
`engine/access.py`).

`/persona` shows the chat's persona to anyone; changing it and /reset are for the user in
their private chat, a group's administrators and the owners. Group admins come from one
getChatAdministrators call per group, cached (ADMIN_CACHE_SECONDS); an anonymous admin posting
as the group counts as an admin. A persona is stored per chat as text, applies from the next
message, and is always sent as the system message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Message, Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from ...engine.personas import preset_named
from ...models import ChatKey
from ..services import Context
from ..updates import chat_key, command_argument

log = logging.getLogger(__name__)

SHOWN_CHARS = 3000
NOT_ALLOWED = "Only this group's admins can do that."
PERSONA_USAGE = (
    "/persona — show the current persona\n"
    "/persona <text> — set a new one (it becomes my system prompt)\n"
    "/persona list — the ready-made presets\n"
    "/persona use <name> — switch to a preset\n"
    "/persona default — back to the default"
)


def _in_group(message: Message) -> bool:
    """Quote the command in a group (several people talk), not in a private chat."""
    return message.chat.type != ChatType.PRIVATE


async def reset(update: Update, context: Context) -> None:
    message = update.effective_message
    key = chat_key(update)
    if message is None or key is None or not await may_manage(update, context):
        return
    archived = await context.services.engine.reset(key)
    note = f" ({archived} earlier messages archived)" if archived else ""
    await message.reply_text(f"Started a fresh conversation{note}. What's on your mind?")


async def may_manage(update: Update, context: Context) -> bool:
    """True if the sender may /reset or change this chat; otherwise says why, in one line."""
    message = update.effective_message
    if message is None or update.effective_chat is None:
        return False
    try:
        if await is_manager(update, context):
            return True
    except TelegramError as exc:
        log.warning("chat=%s could not fetch the administrators: %s", message.chat_id, exc)
        await message.reply_text(
            "I couldn't check who the admins are right now. Please try again.",
            do_quote=_in_group(message),
        )
        return False
    user = update.effective_user
    log.info("chat=%s user %s refused: not an administrator", message.chat_id, user and user.id)
    await message.reply_text(NOT_ALLOWED, do_quote=_in_group(message))
    return False


async def is_manager(update: Update, context: Context) -> bool:
    """Whether the sender manages this chat (owner, private chat's user, group admin), without
    a word to the chat; raises TelegramError if the admin list cannot be fetched."""
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None:
        return False
    guard = context.services.guard
    private = chat.type == ChatType.PRIVATE
    as_the_chat = message.sender_chat is not None and message.sender_chat.id == chat.id
    user_id = None if message.sender_chat is not None or user is None else user.id
    if guard.policy.may_manage(
        private=private, user_id=user_id, is_admin=False, as_the_chat=as_the_chat
    ):
        return True
    if user_id is None:
        return False
    return await guard.admins.is_admin(chat.id, user_id, context_admins(context))


def context_admins(context: Context) -> Callable[[int], Awaitable[frozenset[int]]]:
    """The fetch function the admin cache calls: one getChatAdministrators request."""

    async def fetch(chat_id: int) -> frozenset[int]:
        members = await context.bot.get_chat_administrators(chat_id)
        return frozenset(member.user.id for member in members)

    return fetch


async def persona(update: Update, context: Context) -> None:
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    if message is None or chat is None or message.text is None:
        return
    services = context.services
    presets = services.guard.presets
    argument = command_argument(message.text)
    parts = argument.split(maxsplit=1)
    head = parts[0].lower() if parts else ""
    rest = parts[1].strip() if len(parts) > 1 else ""
    if not argument:
        text = await describe_persona(context, chat_key(update) or ChatKey(chat.id))
        await message.reply_text(text, do_quote=_in_group(message))
        return
    if head in ("list", "help") and not rest:
        text = list_presets(context) if head == "list" else PERSONA_USAGE
        await message.reply_text(text, do_quote=_in_group(message))
        return
    # Everything below changes the chat: check the right first, so nobody is asked to fix a
    # persona they may not set anyway.
    if not await may_manage(update, context):
        return
    if head == "use" and rest and len(rest.split()) == 1:
        preset = presets.get(rest.lower())
        if preset is None:
            names = ", ".join(sorted(presets)) or "none configured"
            await message.reply_text(
                f"There is no preset called “{rest}”. Presets: {names}.",
                do_quote=_in_group(message),
            )
            return
        new, label = preset.prompt, f"preset “{preset.name}”"
    elif head == "default" and not rest:
        new, label = None, "the default persona"
    else:
        new, label = argument, "a custom persona"
        limit = services.settings.max_persona_chars
        if len(argument) > limit:
            await message.reply_text(
                f"That persona is {len(argument):,} characters long; the limit is {limit:,}. "
                "Please shorten it.",
                do_quote=_in_group(message),
            )
            return
    by = user.id if user is not None and message.sender_chat is None else None
    await services.store.set_persona(chat.id, new, by)
    log.info(
        "chat=%s persona set to %s by %s (%d chars)",
        chat.id,
        label,
        by if by is not None else "an anonymous admin",
        len(new or services.settings.system_prompt),
    )
    await message.reply_text(
        f"Done: from your next message I use {label}.", do_quote=_in_group(message)
    )


async def describe_persona(context: Context, key: ChatKey) -> str:
    services = context.services
    persona = await services.engine.persona(key)
    text = persona.text
    if not persona.chosen:
        label = "the default"
    else:
        preset = preset_named(services.guard.presets, text)
        label = f"preset “{preset.name}”" if preset else "custom"
    if len(text) > SHOWN_CHARS:  # one Telegram message holds 4096 characters
        text = text[:SHOWN_CHARS].rstrip() + " …"
    return f"Persona ({label}):\n\n{text}\n\n{PERSONA_USAGE}"


def list_presets(context: Context) -> str:
    presets = context.services.guard.presets
    if not presets:
        return "No presets are configured (see PERSONAS_FILE)."
    lines = [
        f"• {p.name} — {p.description}" if p.description else f"• {p.name}"
        for p in presets.values()
    ]
    return "Presets (use one with /persona use <name>):\n" + "\n".join(lines)
