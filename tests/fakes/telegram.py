"""A fake Telegram Bot API server for running the real bot against on 127.0.0.1.

It speaks the subset of the Bot API the bot uses, with Telegram's real error formats and text
validation, so tests exercise the bot's actual python-telegram-bot code paths (long polling,
retries on 429, chat migration, "message is not modified", ...) without any network.

Usage::

    async with FakeTelegram(token="123:ABC") as tg:
        bot = telegram.Bot("123:ABC", base_url=tg.base_url)
        tg.send_text(42, "hello")
        [call] = await tg.wait_for("sendMessage")

Standalone (for benchmarks driving it from another process)::

    python -m tests.fakes.telegram --port 0     # prints "READY http://127.0.0.1:PORT/bot"
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from . import _telegram_objects as objects
from ._server import (
    FakeServer,
    Journal,
    close_without_answer,
    json_response,
    serve_until_signalled,
    standalone_parser,
)
from ._telegram_files import TelegramFiles
from ._telegram_text import MAX_TEXT_UTF16, Rendered, TextRejected, render, trim, utf16_len
from ._telegram_text import visible_text as _visible_text

log = logging.getLogger(__name__)

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
ONLY_PRIVATE = "Bad Request: method is available only in private chats"
CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"

# The user who speaks in group chats when a test does not say who.
DEFAULT_GROUP_USER_ID = 1001

_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: injected failure",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
}

# Form fields that are free text: never reinterpret them as JSON/int even if they look like it.
_TEXT_FIELDS = frozenset(
    {
        "text",
        "caption",
        "title",
        "description",
        "short_description",
        "name",
        "question",
        "explanation",
        "custom_title",
        "query",
        "url",
        "emoji",
        "parse_mode",
        "action",
        "callback_query_id",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
        "language_code",
        "secret_token",
        "file_id",
    }
)
_INT = re.compile(r"-?[0-9]{1,19}")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_UPDATE_MESSAGE_KEYS = ("message", "channel_post", "business_message")


@dataclass
class UploadedFile:
    """A multipart file part, read eagerly so no temporary file is left open."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One Bot API request as received, with form fields decoded back to JSON types.

    python-telegram-bot sends every parameter as a form field, JSON-encoding non-strings, so
    `params` undoes that: `params["chat_id"]` is an int, `params["entities"]` a list. The
    undecoded form is kept in `raw` for tests about the wire format itself.
    """

    method: str
    params: dict[str, Any]
    at: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    failed: bool = False
    error: str | None = None
    result: Any = field(default=None, repr=False)

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        return self.params.get("text")


class ApiError(Exception):
    """An error answer in the Bot API's format (`ok: false`, `error_code`, `description`)."""

    def __init__(
        self,
        status: int,
        description: str,
        parameters: dict[str, Any] | None = None,
        raw_body: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters or {}
        self.raw_body = raw_body

    def response(self) -> web.Response:
        if self.raw_body is not None:
            return web.Response(status=self.status, text=self.raw_body, content_type="text/html")
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return json_response(body, status=self.status)


@dataclass
class Fault:
    """A scripted failure for the next `times` calls of `method` ("*" = any) matching `when`."""

    method: str
    error: ApiError
    times: int = 1
    when: Callable[[dict[str, Any]], bool] | None = None

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.times <= 0 or self.method not in ("*", method.lower()):
            return False
        return self.when is None or bool(self.when(params))


MethodHandler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class _Method:
    name: str
    handler: MethodHandler


def decode_field(name: str, value: str) -> Any:
    """Undo python-telegram-bot's form encoding of one field (JSON for non-strings)."""
    if name in _TEXT_FIELDS:
        return value
    if value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if _INT.fullmatch(value):
        return int(value)
    if value in ("true", "false"):
        return value == "true"
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


async def read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw, decoded) parameters from the query string plus a JSON, urlencoded or multipart body."""
    raw: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.read()
        data = _parse_json_body(body) if body else {}
        decoded = {k: decode_field(k, v) for k, v in raw.items()}
        return {**raw, **data}, {**decoded, **{k: v for k, v in data.items() if v is not None}}
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            raw[key] = _read_file(value) if isinstance(value, FileField) else value
    decoded = {k: decode_field(k, v) if isinstance(v, str) else v for k, v in raw.items()}
    return raw, decoded


def _parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "Bad Request: can't parse JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Bad Request: JSON object expected")
    return data


def _read_file(part: FileField) -> UploadedFile:
    with part.file:
        return UploadedFile(part.filename, part.content_type, part.file.read())


def _as_chat_id(value: Any) -> int:
    if value is None or value == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    raise ApiError(400, "Bad Request: chat not found")


def _as_message_id(value: Any) -> int:
    if value is None or value == "":
        raise ApiError(400, "Bad Request: message identifier is not specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: wrong message identifier specified") from None


def _inline_markup(markup: Any) -> dict[str, Any] | None:
    """Only inline keyboards become part of a sent message; reply keyboards don't."""
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        return markup
    return None


def _set_or_drop(message: dict[str, Any], key: str, value: Any) -> None:
    if value:
        message[key] = value
    else:
        message.pop(key, None)


def _make_fault_error(
    status: int,
    description: str | None,
    retry_after: int | None,
    migrate_to_chat_id: int | None,
    raw_body: str | None,
) -> ApiError:
    if status == 429 and retry_after is None:
        retry_after = 1  # Telegram never sends a 429 without it
    parameters: dict[str, Any] = {}
    if retry_after is not None:
        parameters["retry_after"] = retry_after
    if migrate_to_chat_id is not None:
        parameters["migrate_to_chat_id"] = migrate_to_chat_id
    if description is None:
        if retry_after is not None:
            description = f"Too Many Requests: retry after {retry_after}"
        elif migrate_to_chat_id is not None:
            description = MIGRATED
        else:
            description = _DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")
    return ApiError(status, description, parameters, raw_body)


class FakeTelegram(TelegramFiles, FakeServer):
    """The fake Bot API server. See the module docstring for usage.

    Public state tests may read or tweak directly: `calls`, `bot_messages`, `drafts`,
    `chat_admins`, `chat_creators`, `bot_username`, `privacy_off`, `drafts_supported`,
    `draft_error_status`, `draft_error_description`, `check_reply_targets`.
    """

    def __init__(
        self,
        token: str = "123:ABC",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_username: str = "test_bot",
        bot_first_name: str = "TestBot",
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.privacy_off = False
        self.drafts_supported = True
        self.draft_error_status = 400
        self.draft_error_description = ONLY_PRIVATE
        # Telegram refuses to reply to a message it does not know unless told to go ahead.
        self.check_reply_targets = True
        self.chat_admins: dict[int, set[int]] = {}
        self.chat_creators: dict[int, int] = {}
        self.bot_messages: dict[int, dict[int, dict[str, Any]]] = {}
        self.drafts: dict[int, dict[int, str]] = {}
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._journal: Journal[Call] = Journal()
        self._messages: dict[int, dict[int, dict[str, Any]]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._next_message_id: dict[int, int] = {}
        self._next_update_id = 1
        self._next_callback_id = 1
        self._pending: list[dict[str, Any]] = []
        self._updates_changed = asyncio.Event()
        self._poll_ticket = 0
        self._faults: list[Fault] = []
        self._delays: dict[str, float] = {}
        self._drops: dict[str, int] = {}
        self._methods = self._method_table()
        self._init_files()

    # ----------------------------------------------------------------- server plumbing

    @property
    def base_url(self) -> str:
        """What python-telegram-bot calls base_url: it appends the token and then /method."""
        return f"{self.origin}/bot"

    def make_app(self) -> web.Application:
        from ._telegram_control import control_routes  # the control API needs this class

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        app.router.add_routes(control_routes(self))
        return app

    def on_closing(self) -> None:
        self._notify_updates()  # parked long polls return at once

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Record the call on arrival, then answer it (after any scripted delay or fault).

        Recording first lets a test see a call that is still in flight (delayed, or a parked
        long poll); `call.result` / `call.failed` are filled in once it is answered.
        """
        entry = self._methods.get(request.match_info["method"].lower())
        method = entry.name if entry else request.match_info["method"]
        arrived = time.monotonic()
        try:
            raw, params = await read_params(request)
        except ApiError as exc:
            return exc.response()
        call = Call(method, params, arrived, raw)
        self._journal.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            await self.sleep(self._delays.get(method.lower(), self._delays.get("*", 0.0)))
            if self._take_drop(method):
                call.failed, call.error = True, "connection dropped"
                return close_without_answer(request)
            call.result = await self._dispatch(entry, method, params)
        except ApiError as exc:
            call.failed, call.error = True, exc.description
            return exc.response()
        return json_response({"ok": True, "result": call.result})

    async def _dispatch(self, entry: _Method | None, method: str, params: dict[str, Any]) -> Any:
        fault = self._take_fault(method, params)
        if fault is not None:
            raise fault.error
        if entry is None:
            raise ApiError(404, "Not Found: method not found")
        result = entry.handler(params)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _take_drop(self, method: str) -> bool:
        key = method.lower()
        if self._drops.get(key, 0) <= 0:
            return False
        self._drops[key] -= 1
        return True

    def _take_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, params):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------- recorded calls

    @property
    def calls(self) -> list[Call]:
        return self._journal.items

    def calls_to(self, method: str) -> list[Call]:
        """Calls of `method` (case-insensitive, like Telegram), failed ones included."""
        key = method.lower()
        return [call for call in self.calls if call.method.lower() == key]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - the familiar name for a test helper
        *,
        since: int = 0,
    ) -> list[Call]:
        """Wait until `count` calls of `method` matching `predicate` have been recorded.

        Counts calls already recorded too; pass `since=len(tg.calls)` to only count new ones.
        """
        key = method.lower()

        def match(call: Call) -> bool:
            return call.method.lower() == key and (predicate is None or predicate(call))

        try:
            return await self._journal.wait_for(match, count, timeout, since)
        except TimeoutError:
            seen = sum(1 for call in self.calls[since:] if match(call))
            summary = dict(Counter(call.method for call in self.calls))
            raise TimeoutError(
                f"waited {timeout}s for {count} matching {method} call(s), saw {seen}; "
                f"recorded calls: {summary}"
            ) from None

    def visible_text(self, call: Call) -> str:
        """The text a user would see for a sendMessage/editMessageText/draft call."""
        text = call.params.get("text")
        if not isinstance(text, str):
            return ""
        return _visible_text(text, call.params.get("parse_mode"), call.params.get("entities"))

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        """Visible texts of successful sendMessage calls, optionally for one chat."""
        return [
            self.visible_text(call)
            for call in self.calls_to("sendMessage")
            if not call.failed and (chat_id is None or call.chat_id == chat_id)
        ]

    # ----------------------------------------------------------------- fault injection

    def fail(
        self,
        method: str,
        *,
        status: int = 400,
        description: str | None = None,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
        times: int = 1,
        when: Callable[[dict[str, Any]], bool] | None = None,
        raw_body: str | None = None,
    ) -> Fault:
        """Answer the next `times` matching calls with an error in Telegram's exact format.

        `method` is case-insensitive, "*" matches any method; `when` filters on decoded params.
        `raw_body` replaces the JSON body (e.g. an nginx HTML page for a 502).
        """
        error = _make_fault_error(status, description, retry_after, migrate_to_chat_id, raw_body)
        fault = Fault(method.lower(), error, times, when)
        self._faults.append(fault)
        return fault

    def delay(self, method: str, seconds: float) -> None:
        """Add latency to every call of `method` ("*" = all methods); 0 removes it."""
        self._delays[method.lower()] = seconds

    def drop_connection(self, method: str, times: int = 1) -> None:
        """Close the connection without answering for the next `times` calls of `method`."""
        key = method.lower()
        self._drops[key] = self._drops.get(key, 0) + times

    def register_method(self, name: str, handler: MethodHandler) -> None:
        """Add or override a Bot API method; `handler(params)` returns the result or raises
        ApiError, and may be async."""
        self._methods[name.lower()] = _Method(name, handler)

    def reset(self) -> None:
        """Forget calls, pending updates, messages and scripted faults.

        Update ids keep increasing so a bot that is still polling keeps a valid offset.
        """
        self._journal.clear()
        self._pending.clear()
        for store in (self.bot_messages, self._messages, self.drafts, self.commands):
            store.clear()
        self._faults.clear()
        self._delays.clear()
        self._drops.clear()
        self._notify_updates()

    # ----------------------------------------------------------------- incoming updates

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._pending)

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Enqueue any raw update; an `update_id` is assigned when missing."""
        update = dict(update)
        update.setdefault("update_id", self._next_update_id)
        self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
        self._remember_update(update)
        self._pending.append(update)
        self._notify_updates()
        return update

    def make_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = None,
        chat_type: str | None = None,
        chat_title: str | None = None,
        reply_to_message_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        message_thread_id: int | None = None,
        is_bot: bool = False,
        forward_origin: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user's text Message as Telegram would deliver it (ids and chat remembered).

        `chat_type` defaults from the id (positive: private, -100…: supergroup, else group);
        in a private chat the sender is the chat itself unless `user_id` says otherwise.
        """
        chat_type = chat_type or self._chats.get(chat_id, {}).get("type")
        chat_type = chat_type or objects.default_chat_type(chat_id)
        chat = self._chat_for_message(
            chat_id, chat_type, chat_title, first_name, username, message_thread_id
        )
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
        }
        if chat_type == "channel":
            message["sender_chat"] = chat
        else:
            sender_id = user_id if user_id is not None else self._default_sender(chat_id, chat)
            message["from"] = objects.user(sender_id, first_name, username=username, is_bot=is_bot)
        if message_thread_id is not None:
            message.update(message_thread_id=message_thread_id, is_topic_message=True)
        if reply_to_message_id is not None:
            message["reply_to_message"] = self._quoted(chat_id, reply_to_message_id)
            self._join_reply_thread(message, message["reply_to_message"])
        if forward_origin is not None:
            message["forward_origin"] = forward_origin
        message["text"] = text
        if entities:
            message["entities"] = entities
        return message

    def send_text(self, chat_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        """Deliver a user's text message (see make_message for the options); returns the Update."""
        message = self.make_message(chat_id, text, **kwargs)
        kind = "channel_post" if message["chat"]["type"] == "channel" else "message"
        return self.push_update({kind: message})

    def send_command(self, chat_id: int, command: str, **kwargs: Any) -> dict[str, Any]:
        """Deliver "/command [args]" with the bot_command entity Telegram attaches."""
        text = command if command.startswith("/") else f"/{command}"
        entities = [objects.bot_command_entity(text), *(kwargs.pop("entities", None) or [])]
        return self.send_text(chat_id, text, entities=entities, **kwargs)

    def send_edit(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        """The user edits an earlier message: an `edited_message` update."""
        original = self._messages.get(chat_id, {}).get(message_id)
        if original is None:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        edited = {**original, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        self._messages[chat_id][message_id] = edited
        kind = "edited_channel_post" if edited["chat"]["type"] == "channel" else "edited_message"
        return self.push_update({kind: edited})

    def send_migration(
        self, old_chat_id: int, new_chat_id: int, *, user_id: int = DEFAULT_GROUP_USER_ID
    ) -> None:
        """A group becomes a supergroup: Telegram posts a service message in each chat."""
        for chat_id, chat_type, key, other in (
            (old_chat_id, "group", "migrate_to_chat_id", new_chat_id),
            (new_chat_id, "supergroup", "migrate_from_chat_id", old_chat_id),
        ):
            message = {
                "message_id": self._new_message_id(chat_id),
                "date": int(time.time()),
                "chat": objects.chat(chat_id, chat_type),
                "from": self._user(user_id),
                key: other,
            }
            self.push_update({"message": message})

    def send_callback(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = None,
    ) -> dict[str, Any]:
        """The user presses an inline button with callback `data` under message `message_id`."""
        chat = self._chats.get(chat_id) or objects.chat(chat_id)
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:  # Telegram's "inaccessible message" shape
            message = {"message_id": message_id, "date": 0, "chat": chat}
        sender_id = user_id if user_id is not None else self._default_sender(chat_id, chat)
        query = {
            "id": str(self._next_callback_id),
            "from": objects.user(sender_id, first_name, username=username),
            "chat_instance": str(chat_id),
            "message": message,
            "data": data,
        }
        self._next_callback_id += 1
        return self.push_update({"callback_query": query})

    def _notify_updates(self) -> None:
        changed, self._updates_changed = self._updates_changed, asyncio.Event()
        changed.set()

    def _remember_update(self, update: dict[str, Any]) -> None:
        for key in _UPDATE_MESSAGE_KEYS:
            message = update.get(key)
            if isinstance(message, dict):
                self._remember_message(message)

    def _remember_message(self, message: dict[str, Any]) -> None:
        chat = message.get("chat") or {}
        if "id" not in chat or "message_id" not in message:
            return
        chat_id, message_id = int(chat["id"]), int(message["message_id"])
        self._chats.setdefault(chat_id, chat)
        self._messages.setdefault(chat_id, {})[message_id] = message
        next_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = max(next_id, message_id + 1)
        sender = message.get("from")
        if isinstance(sender, dict) and "id" in sender:
            self._users[int(sender["id"])] = sender

    def _new_message_id(self, chat_id: int) -> int:
        """Message ids are per chat and shared by the user's and the bot's messages."""
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _chat_for_message(
        self,
        chat_id: int,
        chat_type: str,
        title: str | None,
        first_name: str,
        username: str | None,
        thread_id: int | None,
    ) -> dict[str, Any]:
        known = self._chats.get(chat_id, {})
        if chat_type == "private":
            chat = objects.chat(chat_id, chat_type, first_name=first_name, username=username)
        else:
            title = title or known.get("title")
            is_forum = thread_id is not None or bool(known.get("is_forum"))
            chat = objects.chat(chat_id, chat_type, title=title, is_forum=is_forum)
        self._chats[chat_id] = chat
        return chat

    @staticmethod
    def _join_reply_thread(message: dict[str, Any], replied: dict[str, Any]) -> None:
        """In a supergroup without topics a reply belongs to its reply chain's thread: Telegram
        sets `message_thread_id` to the chain's first message, without `is_topic_message`."""
        chat = message["chat"]
        if (
            chat.get("type") != "supergroup"
            or chat.get("is_forum")
            or "message_thread_id" in message
        ):
            return
        message["message_thread_id"] = replied.get("message_thread_id", replied["message_id"])

    @staticmethod
    def _default_sender(chat_id: int, chat: dict[str, Any]) -> int:
        return chat_id if chat["type"] == "private" else DEFAULT_GROUP_USER_ID

    def _quoted(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """reply_to_message as Telegram nests it: the full message, minus its own reply."""
        original = self._messages.get(chat_id, {}).get(message_id)
        if original is None:
            chat = self._chats.get(chat_id) or objects.chat(chat_id)
            return {"message_id": message_id, "date": int(time.time()), "chat": chat}
        return {k: v for k, v in original.items() if k != "reply_to_message"}

    def _chat(self, chat_id: int) -> dict[str, Any]:
        return self._chats.setdefault(chat_id, objects.chat(chat_id))

    def _user(self, user_id: int) -> dict[str, Any]:
        if user_id == self.bot_id:
            return self._bot_user()
        return self._users.get(user_id) or objects.user(user_id, f"User{user_id}")

    def _bot_user(self) -> dict[str, Any]:
        return objects.user(
            self.bot_id, self.bot_first_name, username=self.bot_username, is_bot=True
        )

    # ----------------------------------------------------------------- Bot API methods

    def _method_table(self) -> dict[str, _Method]:
        handlers: dict[str, MethodHandler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "sendMessageDraft": self._send_message_draft,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
            "getFile": self._get_file,
            "answerCallbackQuery": self._answer_callback_query,
            "setMessageReaction": _true,
            "leaveChat": _true,
            "close": _true,
            "logOut": _true,
        }
        return {name.lower(): _Method(name, handler) for name, handler in handlers.items()}

    def _get_me(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": self.privacy_off,
            "supports_inline_queries": False,
        }

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long polling: confirm by offset, then wait up to `timeout` s for something to return.

        A newer getUpdates terminates a parked older one with 409 Conflict, as Telegram does
        when two bot instances poll the same token.
        """
        self._confirm(params.get("offset"))
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = float(params.get("timeout") or 0)
        self._poll_ticket += 1
        ticket = self._poll_ticket
        self._notify_updates()
        if not self._pending and timeout > 0:
            await self._wait_for_updates(timeout, ticket)
        if ticket != self._poll_ticket:
            raise ApiError(409, CONFLICT)
        return self._pending[:limit]

    def _confirm(self, offset: Any) -> None:
        if offset is None:
            return
        offset = int(offset)
        if offset < 0:
            del self._pending[: max(len(self._pending) + offset, 0)]
        else:
            self._pending[:] = [u for u in self._pending if u["update_id"] >= offset]

    async def _wait_for_updates(self, seconds: float, ticket: int) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._pending and ticket == self._poll_ticket:
                    if self.closing.is_set():
                        return
                    await self._updates_changed.wait()

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    def _get_webhook_info(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}

    def _render_text(self, params: dict[str, Any], *, allow_empty: bool) -> Rendered:
        """Validate a text the way Telegram does and return what it would store."""
        text = params.get("text")
        text = "" if text is None else str(text)
        try:
            rendered = trim(render(text, params.get("parse_mode"), params.get("entities")))
        except TextRejected as exc:
            raise ApiError(400, exc.description) from None
        if not rendered.text and not allow_empty:
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(rendered.text) > MAX_TEXT_UTF16:
            raise ApiError(400, "Bad Request: message is too long")
        return rendered

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _as_chat_id(params.get("chat_id"))
        rendered = self._render_text(params, allow_empty=False)
        reply_to = self._reply_target(chat_id, params)
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id),
            "from": self._bot_user(),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        thread_id = params.get("message_thread_id")
        if thread_id is not None:
            message.update(message_thread_id=thread_id, is_topic_message=True)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
            self._join_reply_thread(message, reply_to)
        message["text"] = rendered.text
        _set_or_drop(message, "entities", rendered.entities)
        _set_or_drop(message, "reply_markup", _inline_markup(params.get("reply_markup")))
        self._store_bot_message(chat_id, message)
        return message

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
        reply = params.get("reply_parameters")
        reply = reply if isinstance(reply, dict) else {}
        message_id = reply.get("message_id", params.get("reply_to_message_id"))
        if message_id is None:
            return None
        original = self._messages.get(chat_id, {}).get(int(message_id))
        if original is not None:
            return {k: v for k, v in original.items() if k != "reply_to_message"}
        allowed = reply.get("allow_sending_without_reply")
        if allowed is None:
            allowed = params.get("allow_sending_without_reply", False)
        if self.check_reply_targets and not allowed:
            raise ApiError(400, "Bad Request: message to be replied not found")
        return None

    def _store_bot_message(self, chat_id: int, message: dict[str, Any]) -> None:
        message_id = message["message_id"]
        self.bot_messages.setdefault(chat_id, {})[message_id] = message
        self._messages.setdefault(chat_id, {})[message_id] = message

    def _editable(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = _as_chat_id(params.get("chat_id"))
        message_id = _as_message_id(params.get("message_id"))
        message = self.bot_messages.get(chat_id, {}).get(message_id)
        if message is not None:
            return chat_id, message
        if message_id in self._messages.get(chat_id, {}):
            raise ApiError(400, "Bad Request: message can't be edited")
        raise ApiError(400, "Bad Request: message to edit not found")

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            self._render_text(params, allow_empty=False)
            return True
        chat_id, message = self._editable(params)
        rendered = self._render_text(params, allow_empty=False)
        markup = _inline_markup(params.get("reply_markup"))
        unchanged = (
            rendered.text == message.get("text")
            and rendered.entities == message.get("entities", [])
            and markup == message.get("reply_markup")
        )
        if unchanged:
            raise ApiError(400, NOT_MODIFIED)
        edited = {**message, "text": rendered.text, "edit_date": int(time.time())}
        _set_or_drop(edited, "entities", rendered.entities)
        _set_or_drop(edited, "reply_markup", markup)  # omitting it removes the keyboard
        self._store_bot_message(chat_id, edited)
        return edited

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        chat_id, message = self._editable(params)
        markup = _inline_markup(params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise ApiError(400, NOT_MODIFIED)
        edited = {**message, "edit_date": int(time.time())}
        _set_or_drop(edited, "reply_markup", markup)
        self._store_bot_message(chat_id, edited)
        return edited

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = _as_chat_id(params.get("chat_id"))
        message_id = _as_message_id(params.get("message_id"))
        if self._messages.get(chat_id, {}).pop(message_id, None) is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        self.bot_messages.get(chat_id, {}).pop(message_id, None)
        return True

    def _delete_messages(self, params: dict[str, Any]) -> bool:
        chat_id = _as_chat_id(params.get("chat_id"))
        for message_id in params.get("message_ids") or []:
            self._messages.get(chat_id, {}).pop(int(message_id), None)
            self.bot_messages.get(chat_id, {}).pop(int(message_id), None)
        return True

    def _send_message_draft(self, params: dict[str, Any]) -> bool:
        """Drafts only exist in private chats and never become messages."""
        chat_id = _as_chat_id(params.get("chat_id"))
        if chat_id <= 0:
            raise ApiError(400, ONLY_PRIVATE)
        if not self.drafts_supported:
            raise ApiError(self.draft_error_status, self.draft_error_description)
        draft_id = params.get("draft_id")
        if not draft_id:
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        rendered = self._render_text(params, allow_empty=True)
        self.drafts.setdefault(chat_id, {})[int(draft_id)] = rendered.text
        return True

    def _send_chat_action(self, params: dict[str, Any]) -> bool:
        _as_chat_id(params.get("chat_id"))
        if params.get("action") not in objects.CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    def my_commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """The command list the bot registered for `scope` (default scope if None)."""
        key = self._commands_key({"scope": scope, "language_code": language_code})
        return self.commands.get(key, [])

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, 'Bad Request: parameter "commands" is required')
        if len(commands) > 100:
            raise ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.fullmatch(
                str(command.get("command", ""))
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = commands
        return True

    def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands.get(self._commands_key(params), [])

    def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        return objects.chat_full_info(self._chat(_as_chat_id(params.get("chat_id"))))

    def member_status(self, chat_id: int, user_id: int) -> str:
        """ "creator", "administrator" or "member", from chat_creators / chat_admins."""
        if self.chat_creators.get(chat_id) == user_id:
            return "creator"
        if user_id in self.chat_admins.get(chat_id, ()):
            return "administrator"
        return "member"

    def _get_chat_member(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _as_chat_id(params.get("chat_id"))
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise ApiError(400, "Bad Request: invalid user_id specified")
        return objects.chat_member(self._user(user_id), self.member_status(chat_id, user_id))

    def _get_chat_administrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        chat_id = _as_chat_id(params.get("chat_id"))
        if chat_id > 0:
            raise ApiError(400, "Bad Request: there are no administrators in the private chat")
        creator = self.chat_creators.get(chat_id)
        user_ids = ([creator] if creator is not None else []) + sorted(
            self.chat_admins.get(chat_id, set()) - {creator}
        )
        return [
            objects.chat_member(self._user(uid), self.member_status(chat_id, uid))
            for uid in user_ids
        ]

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: QUERY_ID_INVALID")
        return True


def _true(_params: dict[str, Any]) -> bool:
    return True


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m tests.fakes.telegram`."""
    parser = standalone_parser("Fake Telegram Bot API server (prints READY <base_url>).")
    parser.add_argument("--token", default="123:ABC")
    parser.add_argument("--bot-username", default="test_bot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    fake = FakeTelegram(args.token, host=args.host, port=args.port, bot_username=args.bot_username)
    asyncio.run(serve_until_signalled(fake))


if __name__ == "__main__":
    main()
