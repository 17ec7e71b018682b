"""A group that becomes a supergroup (its chat id changes) takes its history, summaries,
settings and place on the allowlist along; what a reply could not deliver to the old chat is
delivered to the new one.

Telegram says so in two ways: service messages in both chats (`migrate_to_chat_id`,
`migrate_from_chat_id`), and a reply that fails with ChatMigrated. Either way the move is one
store transaction, and idempotent.
"""

from __future__ import annotations

import logging

from ..models import ChatKey
from .sender import Undelivered
from .services import Context, Services
from .sinks import reply_sink

log = logging.getLogger(__name__)


def keep_allowed(services: Services, old_chat_id: int, new_chat_id: int) -> None:
    """Keeps an allowed group allowed under its new id (until the next restart)."""
    if services.guard.follow_migration(old_chat_id, new_chat_id):
        log.warning(
            "Allowed group %s is now supergroup %s: add %s to ALLOWED_CHAT_IDS "
            "(it is allowed until the next restart)",
            old_chat_id,
            new_chat_id,
            new_chat_id,
        )


async def follow_migration(services: Services, old_chat_id: int, new_chat_id: int) -> None:
    """Moves the chat's history, summaries and settings to its new id (idempotent)."""
    keep_allowed(services, old_chat_id, new_chat_id)
    moved = await services.store.move_chat(old_chat_id, new_chat_id)
    services.guard.admins.forget(old_chat_id)
    if moved:
        log.info("chat=%s became supergroup %s: %d messages moved", old_chat_id, new_chat_id, moved)


async def redeliver_after_migration(
    context: Context, old: ChatKey, new_chat_id: int, lost: Undelivered | None = None
) -> None:
    """A reply failed because the group had just become a supergroup: move the chat, then
    deliver what the old chat did not receive (`lost`: the answer, already stored, or an error
    line) to the new one, so the question is still answered. Never the newest stored turn: the
    supergroup may have been answered in between."""
    await follow_migration(context.services, old.chat_id, new_chat_id)
    if lost is None:
        return
    sink = reply_sink(context, ChatKey(new_chat_id, old.thread_id))
    if lost.status is None:
        await sink.send_notice(lost.text)
    else:
        await sink.final(lost.text, lost.status)
