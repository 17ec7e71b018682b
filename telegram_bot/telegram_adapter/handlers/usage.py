"""/usage: a user's own token usage today and this month; owners also see totals and top chats.

In a group, /usage shows only what belongs to that group (the asker's usage there, and the
group's), never the asker's private chats or other groups, nor an owner's totals and top chats
(which name other chats): those are for a private chat with the bot.
"""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from ...clock import today
from ...models import UsageTotals
from ..services import Context

TOP_CHATS = 5


def describe(totals: UsageTotals) -> str:
    if not totals.calls:
        return "nothing yet"
    answers = "answer" if totals.calls == 1 else "answers"
    # Prompt tokens the server reused from its prompt cache (cheaper, and faster to answer).
    cached = f", {totals.cached_tokens:,} of them cached" if totals.cached_tokens else ""
    out = f"{totals.completion_tokens:,} out"
    if totals.reasoning_tokens:  # a reasoning model's thought is billed as output
        out += f", of them {totals.reasoning_tokens:,} thinking"
    line = (
        f"{totals.total:,} tokens ({totals.prompt_tokens:,} in{cached}, {out}) "
        f"in {totals.calls:,} {answers}"
    )
    if totals.audio_seconds:  # transcription is billed by the second
        line += f", {totals.audio_seconds:,} s of speech transcribed"
    return line


async def usage(update: Update, context: Context) -> None:
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    if message.chat.type != ChatType.PRIVATE:
        await message.reply_text(await in_group(context, message.chat.id, user.id))
        return
    services = context.services
    store, settings = services.store, services.settings
    day = today()
    month = day.replace(day=1)
    mine_today = await store.usage_totals(day, day, user_id=user.id)
    mine_month = await store.usage_totals(month, day, user_id=user.id)
    lines = [
        "Your usage (days are UTC):",
        f"• today: {describe(mine_today)}",
        f"• this month: {describe(mine_month)}",
    ]
    if settings.daily_token_limit_user and user.id not in settings.owner_ids:
        left = max(settings.daily_token_limit_user - mine_today.total, 0)
        lines.append(f"• left today: {left:,} of {settings.daily_token_limit_user:,} tokens")
    if user.id in settings.owner_ids:
        all_today = await store.usage_totals(day, day)
        all_month = await store.usage_totals(month, day)
        lines += [
            "",
            "All chats:",
            f"• today: {describe(all_today)}",
            f"• this month: {describe(all_month)}",
        ]
        top = await store.top_chats(month, day, TOP_CHATS)
        if top:
            lines += ["", "Top chats this month:"]
            lines += [f"• {chat_id}: {totals.total:,} tokens" for chat_id, totals in top]
    await message.reply_text("\n".join(lines))


async def in_group(context: Context, chat_id: int, user_id: int) -> str:
    """/usage in a group: the asker's usage in this group, and the group's."""
    store, settings = context.services.store, context.services.settings
    day = today()
    month = day.replace(day=1)
    mine_today = await store.usage_totals(day, day, user_id=user_id, chat_id=chat_id)
    mine_month = await store.usage_totals(month, day, user_id=user_id, chat_id=chat_id)
    group_today = await store.usage_totals(day, day, chat_id=chat_id)
    group_month = await store.usage_totals(month, day, chat_id=chat_id)
    lines = [
        "Usage in this group (days are UTC):",
        f"• yours today: {describe(mine_today)}",
        f"• yours this month: {describe(mine_month)}",
        f"• everyone's today: {describe(group_today)}",
        f"• everyone's this month: {describe(group_month)}",
    ]
    if settings.daily_token_limit_chat:
        left = max(settings.daily_token_limit_chat - group_today.total, 0)
        lines.append(
            f"• left today for this group: {left:,} of {settings.daily_token_limit_chat:,} tokens"
        )
    lines += ["", "Send /usage to me in private for your totals across chats."]
    return "\n".join(lines)
