"""Builders for the Bot API objects the fake hands out (users, chats, members).

They produce exactly the fields python-telegram-bot's `de_json` requires for each type, since a
missing required field there turns into a confusing TypeError deep inside the bot under test.
"""

from __future__ import annotations

from typing import Any

CHAT_TYPES = ("private", "group", "supergroup", "channel")

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

_ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_pin_messages",
)


def default_chat_type(chat_id: int) -> str:
    """Telegram's id conventions: users are positive, supergroups/channels start with -100."""
    if chat_id > 0:
        return "private"
    return "supergroup" if str(chat_id).startswith("-100") else "group"


def user(
    user_id: int,
    first_name: str = "Alice",
    *,
    username: str | None = None,
    is_bot: bool = False,
    language_code: str | None = "en",
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if username:
        data["username"] = username
    if language_code and not is_bot:
        data["language_code"] = language_code
    return data


def chat(
    chat_id: int,
    chat_type: str | None = None,
    *,
    title: str | None = None,
    first_name: str | None = None,
    username: str | None = None,
    is_forum: bool = False,
) -> dict[str, Any]:
    """A Chat with the fields Telegram sends for its type (private chats carry the user's name)."""
    chat_type = chat_type or default_chat_type(chat_id)
    if chat_type not in CHAT_TYPES:
        raise ValueError(f"unknown chat type {chat_type!r}")
    data: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type == "private":
        data["first_name"] = first_name or "Alice"
    else:
        data["title"] = title or f"{chat_type.title()} {chat_id}"
    if username:
        data["username"] = username
    if is_forum and chat_type == "supergroup":
        data["is_forum"] = True
    return data


def chat_full_info(chat_data: dict[str, Any]) -> dict[str, Any]:
    """getChat answers a ChatFullInfo, which has a few more mandatory fields than Chat."""
    no_gifts = dict.fromkeys(
        (
            "unlimited_gifts",
            "limited_gifts",
            "unique_gifts",
            "premium_subscription",
            "gifts_from_channels",
        ),
        False,
    )
    return {
        **chat_data,
        "accent_color_id": 0,
        "max_reaction_count": 11,
        "accepted_gift_types": no_gifts,
    }


def chat_member(member: dict[str, Any], status: str) -> dict[str, Any]:
    """ChatMember of the given status ("creator", "administrator" or "member")."""
    data: dict[str, Any] = {"status": status, "user": member}
    if status == "creator":
        data["is_anonymous"] = False
    elif status == "administrator":
        data.update(can_be_edited=False, is_anonymous=False)
        data.update(dict.fromkeys(_ADMIN_RIGHTS, True))
    return data


def bot_command_entity(text: str) -> dict[str, Any]:
    """The bot_command entity Telegram attaches to a message starting with "/command[@bot]"."""
    command = text.split(maxsplit=1)[0] if text.strip() else text
    return {"type": "bot_command", "offset": 0, "length": len(command.encode("utf-16-le")) // 2}
