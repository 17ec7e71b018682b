"""The allowlist gate: runs for every update of every type (handler group -1), before any
handler that stores or answers (only `input.gate`, which drops edits, channel posts and other
bots' messages, runs earlier, so a bot is never sent a refusal).

An update from someone the bot may not serve stops here (`ApplicationHandlerStop`), so no
later handler (chat, commands, buttons, edits, whatever other features add) can reach the
model or the database for it. The decision itself is `access.Policy.decide`; this module only
reads the ids off the update and carries out the verdict:

- a refused user gets one short line with their user id, at most once per REFUSAL_INTERVAL
  (so strangers cannot turn the bot into a spam cannon); in a group, only when they addressed
  the bot; a button press gets the same line as a pop-up;
- a group the bot is not enabled for gets a short note with its chat id, and the bot leaves.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop

from ...engine.access import Verdict
from ..addressing import is_for_me
from ..migration import keep_allowed
from ..services import Context

log = logging.getLogger(__name__)

_GONE = frozenset({ChatMemberStatus.LEFT, ChatMemberStatus.BANNED})


def refusal_text(user_id: int | None, chat_id: int | None, private: bool) -> str:
    if private or chat_id is None:
        return (
            f"Sorry, this is a private bot. Your Telegram user id is {user_id}: send it to the "
            "bot's owner if you should have access."
        )
    who = f"Your user id is {user_id}" if user_id is not None else "You are posting anonymously"
    return (
        f"Sorry, I only answer people I know here. {who} and this chat's id is {chat_id}: "
        "send them to the bot's owner if you should have access."
    )


def leaving_text(chat_id: int) -> str:
    return (
        f"This bot is not enabled for this chat (id {chat_id}). Its owner can add that id to "
        "ALLOWED_CHAT_IDS. Goodbye!"
    )


async def gate(update: object, context: Context) -> None:
    if not isinstance(update, Update):
        return
    chat, user, message = update.effective_chat, update.effective_user, update.effective_message
    private = chat is None or chat.type == ChatType.PRIVATE
    # A message posted as a chat (anonymous admin, linked channel) has no person behind it.
    as_chat = message is not None and message.sender_chat is not None
    user_id = None if as_chat or user is None else user.id
    if chat is None and user is None:
        return  # polls and the like: nothing to check, and nothing acts on them
    guard = context.services.guard
    if message is not None and chat is not None:  # before the verdict: the new id is allowed
        if message.migrate_from_chat_id:
            keep_allowed(context.services, message.migrate_from_chat_id, chat.id)
        if message.migrate_to_chat_id:
            keep_allowed(context.services, chat.id, message.migrate_to_chat_id)
    verdict = guard.policy.decide(
        chat_id=chat.id if chat else None, private=private, user_id=user_id
    )
    if verdict is Verdict.ALLOW:
        return
    if verdict is Verdict.LEAVE_CHAT and chat is not None:
        await _leave(update, context, chat.id)
    else:
        await _refuse(update, context, user_id, chat.id if chat else None, private)
    raise ApplicationHandlerStop


async def _refuse(
    update: Update, context: Context, user_id: int | None, chat_id: int | None, private: bool
) -> None:
    guard = context.services.guard
    text = refusal_text(user_id, chat_id, private)
    query = update.callback_query
    if query is not None:
        log.info("Refused a button press by user %s in chat %s", user_id, chat_id)
        try:
            await query.answer(text, show_alert=True)
        except TelegramError as exc:
            log.debug("Could not answer a refused button press: %s", exc)
        return
    message = update.message  # never answer an edit: the original was answered (or not)
    if message is None or (not private and not is_for_me(message, context.bot)):
        return
    key = user_id if user_id is not None else chat_id or 0
    if not await guard.refusals.answer_now(key):
        log.debug("Refused user %s in chat %s again (not answering)", user_id, chat_id)
        return
    log.info("Refused user %s in chat %s (not in ALLOWED_USER_IDS)", user_id, chat_id)
    try:
        await message.reply_text(text, do_quote=not private)
    except TelegramError as exc:
        log.info("Could not tell user %s they are refused: %s", user_id, exc)


async def _leave(update: Update, context: Context, chat_id: int) -> None:
    services = context.services
    change = update.my_chat_member
    if change is not None and change.new_chat_member.status in _GONE:
        return  # already out of the chat
    log.warning("chat=%s is not in ALLOWED_CHAT_IDS; leaving it", chat_id)
    if await services.guard.refusals.answer_now(chat_id):
        try:
            await context.bot.send_message(chat_id, leaving_text(chat_id))
        except TelegramError as exc:
            log.info("chat=%s could not say goodbye: %s", chat_id, exc)
    try:
        await context.bot.leave_chat(chat_id)
    except TelegramError as exc:
        log.warning("chat=%s could not leave: %s", chat_id, exc)
    await services.store.set_chat_active(chat_id, False)
