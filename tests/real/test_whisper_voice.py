"""Voice notes and audio files against a real speech-to-text server: whisper.cpp's.

The real bot, over real HTTP, with the fake Bot API serving the recording and the fake OpenAI
server answering the chat, sends its multipart upload to a real `whisper-server` (built once
per machine, `whisper.py`) started as README's recipe starts it (its OpenAI-compatible path,
timestamps on). The server decodes the audio (through ffmpeg with `--convert` for Telegram's
OGG/Opus; WAV without), runs the encoder and the decoder of a generated model that spells a
chosen transcript whatever it hears (`whispermodel.py`), and answers in its own shape: a space
before each segment, a newline after it. So these tests prove the transport, the response shape
and what the bot makes of it, not recognition.

What the real server taught the bot and the fakes (docs/media.md):
- it writes one line per segment, and cuts segments at 60 characters, even mid-sentence;
- silence comes back as whisper.cpp's English models write it, `[BLANK_AUDIO]`, not as "";
- without `--convert` an OGG/Opus upload gets HTTP 400 with the text/plain body "Invalid
  request" (its error handler replaces the JSON error it logs), so the bot's log names the flag;
- started without `--inference-path`, it answers the bot's path 404 "File Not Found (<path>)";
- every answer says `Server: whisper.cpp`, which is how the bot knows whose flags to name.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telegram_bot.config import Settings
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.fakes import media_files as files
from tests.harness import TOKEN, RunningBot, make_settings
from tests.real.conftest import WhisperServers
from tests.real.servers import RunningServer
from tests.real.whispermodel import WhisperModelSpec

pytestmark = pytest.mark.real_server

ALICE = 1001
SPEAKS = WhisperModelSpec(words=(" hello", " world"))
# What whisper.cpp's ggml English models say for a silent recording, token by token (cl100k).
BLANK_AUDIO = WhisperModelSpec(words=(" [", "BL", "ANK", "_", "A", "UDIO", "]"))
# More than 60 characters: whisper.cpp writes it as two segments, one line each.
LONG = WhisperModelSpec(
    words=(
        *(" Hello", ",", " I", " wanted", " to", " ask", " you", " about", " the"),
        *(" weather", " tomorrow", " in", " Paris", " and", " also", " London", "."),
    )
)
VOICE = files.ogg_opus(3.0)  # whisper.cpp skips a window shorter than a second


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


@pytest.fixture
async def chat_model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def settings_for(
    telegram: FakeTelegram, chat_model: FakeOpenAI, whisper: RunningServer, tmp_path: Path
) -> Settings:
    """The bot's chat on the fake, its speech to text on the real server (no key: local)."""
    return make_settings(
        telegram.base_url,
        chat_model.base_url,
        tmp_path / "bot.sqlite3",
        transcription_base_url=whisper.base_url,
        openai_timeout=60.0,
    )


async def texts_after(telegram: FakeTelegram, count: int) -> list[str]:
    """Waits for the bot's `count`-th message to Alice; every text it sent her."""
    await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=count, timeout=60)
    return telegram.sent_texts(ALICE)


def uploads(server: RunningServer) -> list[tuple[str, float]]:
    """Each file the server transcribed, in order, with the seconds of audio it decoded (from
    its stderr, which is not buffered: "processing 'voice.ogg' (48000 samples, 3.0 sec)")."""
    log = server.log_path.read_text(errors="replace")
    found = re.findall(r"processing '([^']*)' \(\d+ samples, ([\d.]+) sec\)", log)
    return [(name, float(seconds)) for name, seconds in found]


async def test_a_voice_note_is_transcribed_by_whisper_cpp_and_answered(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
) -> None:
    whisper = whisper_servers.start(SPEAKS, convert=True)
    before = len(uploads(whisper))
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        chat_model.enqueue("Hello to you too.")
        telegram.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
        heard, answer = await texts_after(telegram, 2)
        # The server's " hello world\n" (its segment shape), quoted without the whitespace.
        assert heard == "🎤 “hello world”"
        assert answer == "Hello to you too."
        # The bot's upload reached the server, and ffmpeg decoded all of its 3 seconds.
        assert uploads(whisper)[before:] == [("voice.ogg", 3.0)]
        assert chat_model.requests[0].messages[-1] == {"role": "user", "content": "hello world"}
        with sqlite3.connect(bot.settings.database_path) as db:
            turns = db.execute("SELECT text, kind, duration FROM messages WHERE role = 'user'")
            assert turns.fetchall() == [("hello world", "voice", 3)]
    finally:
        await bot.stop()


async def test_a_long_voice_note_reaches_the_model_as_one_sentence(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
) -> None:
    whisper = whisper_servers.start(LONG, convert=False)
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        chat_model.enqueue("Sunny in both.")
        telegram.send_audio(ALICE, files.wav(6.0), 6, "question.wav", "audio/wav", user_id=ALICE)
        heard, _answer = await texts_after(telegram, 2)
        # The server's " Hello, ... tomorrow in\n Paris and also London.\n", rejoined.
        said = "Hello, I wanted to ask you about the weather tomorrow in Paris and also London."
        assert heard == f"🎤 “{said}”"
        assert chat_model.requests[0].messages[-1] == {"role": "user", "content": said}
    finally:
        await bot.stop()


def round_video(seconds: int, path: Path) -> bytes:
    """A square H.264 + AAC MP4 with a tone, like a Telegram video note, made by ffmpeg (into
    a file: the index goes first, which needs a seekable output)."""
    lavfi = ["-f", "lavfi", "-i"]
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    argv += [*lavfi, f"color=c=black:s=240x240:d={seconds}"]
    argv += [*lavfi, f"sine=frequency=440:duration={seconds}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"]
    argv += ["-movflags", "+faststart", "-y", str(path)]
    subprocess.run(argv, capture_output=True, check=True)
    return path.read_bytes()


async def test_a_round_video_note_is_transcribed_through_ffmpeg(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
) -> None:
    whisper = whisper_servers.start(SPEAKS, convert=True)  # skips without ffmpeg
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        chat_model.enqueue("Nice video.")
        telegram.send_video_note(
            ALICE, round_video(3, tmp_path / "note.mp4"), duration=3, user_id=ALICE
        )
        heard, answer = await texts_after(telegram, 2)
        assert (heard, answer) == ("🎤 “hello world”", "Nice video.")
        assert uploads(whisper)[-1] == ("video_note.mp4", 3.0)
    finally:
        await bot.stop()


async def test_silence_from_whisper_cpp_gets_one_line_and_no_model_call(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
) -> None:
    whisper = whisper_servers.start(BLANK_AUDIO, convert=True)
    before = len(uploads(whisper))
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        telegram.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
        [line] = await texts_after(telegram, 1)
        assert "couldn't hear any words" in line
        assert len(uploads(whisper)) == before + 1
        assert chat_model.requests == [], "[BLANK_AUDIO] never reaches the chat model"
    finally:
        await bot.stop()


async def test_an_audio_file_in_wav_is_transcribed_without_ffmpeg(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
) -> None:
    whisper = whisper_servers.start(SPEAKS, convert=False)
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        chat_model.enqueue("Noted.")
        telegram.send_audio(ALICE, files.wav(2.0), 2, "memo.wav", "audio/wav", user_id=ALICE)
        heard, answer = await texts_after(telegram, 2)
        assert (heard, answer) == ("🎤 “hello world”", "Noted.")
        assert uploads(whisper)[-1] == ("memo.wav", 2.0)
    finally:
        await bot.stop()


async def test_a_voice_note_to_a_server_without_convert_gets_one_line_and_a_hint(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    whisper = whisper_servers.start(SPEAKS, convert=False)
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        telegram.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
        [line] = await texts_after(telegram, 1)
        assert "couldn't transcribe that recording" in line
        assert chat_model.requests == []
        assert "failed to read audio data" in whisper.log_path.read_text(errors="replace")
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("HTTP 400: Invalid request" in m and "--convert" in m for m in logged)
    finally:
        await bot.stop()


async def test_a_server_on_its_default_path_tells_the_owner_to_set_inference_path(
    whisper_servers: WhisperServers,
    telegram: FakeTelegram,
    chat_model: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    whisper = whisper_servers.start(SPEAKS, convert=False, path="/inference")
    bot = await RunningBot(settings_for(telegram, chat_model, whisper, tmp_path)).start()
    try:
        telegram.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
        [line] = await texts_after(telegram, 1)
        assert "no speech-to-text service is set up" in line
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("--inference-path /v1/audio/transcriptions" in m for m in logged), logged
        assert chat_model.requests == []
    finally:
        await bot.stop()
