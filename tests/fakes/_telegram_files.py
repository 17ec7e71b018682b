"""Files in the fake Bot API: `getFile`, the download endpoint, and users sending media.

Telegram hands a bot a `file_id`; `getFile` turns it into a `file_path`, and the bytes are
served at `<origin>/file/bot<token>/<file_path>` (the token is in the URL: that is why the bot
must never pass such a URL on). Files over 20 MB exist but cannot be fetched: getFile answers
"Bad Request: file is too big", as the real Bot API does. Tests register real bytes with
`add_file` (or let `send_voice`/`send_photo`/`send_document` do it) and read `downloads` to see
what the bot fetched.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .telegram import FakeTelegram

DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    path: str
    data: bytes
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "file_unique_id": self.unique_id, "file_size": self.size}


class TelegramFiles:
    """What the fake knows about files; mixed into FakeTelegram."""

    def _init_files(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[str] = []  # file paths the bot downloaded, in order
        self._file_ids = itertools.count(1)

    def add_file(
        self,
        data: bytes,
        *,
        suffix: str = "bin",
        folder: str = "documents",
        size: int | None = None,
    ) -> StoredFile:
        """Registers bytes under a new file_id; `size` overrides the size Telegram reports."""
        number = next(self._file_ids)
        stored = StoredFile(
            file_id=f"FILE{number:04d}-id",
            unique_id=f"u{number:04d}",
            path=f"{folder}/file_{number}.{suffix}",
            data=data,
            size=len(data) if size is None else size,
        )
        self.files[stored.file_id] = stored
        return stored

    def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        from .telegram import ApiError

        stored = self.files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.size > DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        return {**stored.as_json(), "file_path": stored.path}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        fake: FakeTelegram = self  # type: ignore[assignment]
        if request.match_info["token"] != fake.token:
            return web.Response(status=404, text="Not Found")
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.path == path), None)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        self.downloads.append(path)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # -- a user sends media ----------------------------------------------------------------

    def send_media(self, chat_id: int, fields: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """A user's message carrying `fields` (voice, photo, document...) instead of text;
        `caption` and `caption_entities` may be among them. Options as `make_message`."""
        fake: FakeTelegram = self  # type: ignore[assignment]
        message = fake.make_message(chat_id, "", **kwargs)
        del message["text"]
        message.update(fields)
        return fake.push_update({"message": message})

    def send_voice(
        self, chat_id: int, data: bytes, duration: int, *, size: int | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        stored = self.add_file(data, suffix="oga", folder="voice", size=size)
        voice = {**stored.as_json(), "duration": duration, "mime_type": "audio/ogg"}
        return self.send_media(chat_id, {"voice": voice}, **kwargs)

    def send_audio(
        self,
        chat_id: int,
        data: bytes,
        duration: int,
        file_name: str,
        mime_type: str,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """An audio file (Telegram's `audio`: music, a recording shared from another app)."""
        suffix = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        stored = self.add_file(data, suffix=suffix, folder="music")
        audio = {**stored.as_json(), "duration": duration}
        audio.update(file_name=file_name, mime_type=mime_type)
        return self.send_media(chat_id, {"audio": audio}, **kwargs)

    def send_video_note(
        self, chat_id: int, data: bytes, duration: int, **kwargs: Any
    ) -> dict[str, Any]:
        stored = self.add_file(data, suffix="mp4", folder="video_notes")
        note = {**stored.as_json(), "duration": duration, "length": 240}
        return self.send_media(chat_id, {"video_note": note}, **kwargs)

    def photo_sizes(self, sizes: list[tuple[bytes, int, int]]) -> list[dict[str, Any]]:
        """PhotoSize objects for (bytes, width, height) triples, smallest first."""
        found = []
        for data, width, height in sizes:
            stored = self.add_file(data, suffix="jpg", folder="photos")
            found.append({**stored.as_json(), "width": width, "height": height})
        return found

    def send_photo(
        self,
        chat_id: int,
        sizes: list[tuple[bytes, int, int]],
        caption: str | None = None,
        *,
        media_group_id: str | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"photo": self.photo_sizes(sizes)}
        if caption is not None:
            fields["caption"] = caption
        if caption_entities:
            fields["caption_entities"] = caption_entities
        if media_group_id is not None:
            fields["media_group_id"] = media_group_id
        return self.send_media(chat_id, fields, **kwargs)

    def send_document(
        self,
        chat_id: int,
        data: bytes,
        file_name: str,
        mime_type: str | None,
        caption: str | None = None,
        *,
        size: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        suffix = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        stored = self.add_file(data, suffix=suffix, folder="documents", size=size)
        document: dict[str, Any] = {**stored.as_json(), "file_name": file_name}
        if mime_type:
            document["mime_type"] = mime_type
        fields: dict[str, Any] = {"document": document}
        if caption is not None:
            fields["caption"] = caption
        return self.send_media(chat_id, fields, **kwargs)
