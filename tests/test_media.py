"""Voice notes, photos and files from a phone, end to end: the real bot, the fake Bot API
serving real bytes through getFile, the fake OpenAI server transcribing and looking."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Error, FakeOpenAI, FakeTelegram
from tests.fakes import media_files as files
from tests.fakes._openai_media import (
    WHISPER_CPP_HEADERS,
    WHISPER_CPP_UNREADABLE,
    llama_cpp_python_refusal,
    llama_server_refusal,
)
from tests.harness import API_KEY, RunningBot, eventually, make_settings
from tests.test_private_chat import ALICE, final_messages

Query = Callable[..., list[tuple[Any, ...]]]

VOICE = files.ogg_opus(3.0)
SMALL, MEDIUM, LARGE = files.jpeg(8, 8, 40), files.jpeg(32, 24, 90), files.jpeg(48, 32, 160)
# Telegram's sizes of one photo: the bot takes the largest not above 2,048 px (1280 here).
PHOTO = [(SMALL, 90, 68), (MEDIUM, 1280, 960), (LARGE, 2560, 1920)]


def decoded(url: str) -> bytes:
    head, _, data = url.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64"), head
    return base64.b64decode(data)


async def texts_after(tg: FakeTelegram, count: int, chat: int = ALICE) -> list[str]:
    """Waits for the bot's `count`-th message in the chat; every text it sent there."""
    await tg.wait_for("sendMessage", lambda c: c.chat_id == chat and not c.failed, count=count)
    return [tg.visible_text(c) for c in final_messages(tg, chat)]


# -- voice ---------------------------------------------------------------------------------------


async def test_a_voice_note_is_transcribed_answered_and_remembered(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue_transcription("What's the capital of Peru?")
    ai.enqueue("Lima.", "You asked about Peru.")
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    heard, answer = await texts_after(tg, 2)
    assert heard == "🎤 “What's the capital of Peru?”", "the user sees what was heard, first"
    assert answer == "Lima."
    [upload] = ai.transcriptions
    assert upload.data == VOICE and upload.filename == "voice.ogg"
    assert upload.model == "whisper-1"
    assert ai.requests[0].messages[-1] == {"role": "user", "content": "What's the capital of Peru?"}
    # The transcript is the user's turn: stored with its kind and duration, seen next turn.
    tg.send_text(ALICE, "what did I ask?", user_id=ALICE)
    await texts_after(tg, 3)
    contents = [m["content"] for m in ai.requests[1].messages[1:]]
    assert contents[:2] == ["What's the capital of Peru?", "Lima."]
    rows = db("SELECT text, kind, duration FROM messages WHERE role = 'user' ORDER BY id")
    assert rows[0] == ("What's the capital of Peru?", "voice", 3)
    assert db("SELECT audio_seconds FROM usage") == [(3,)]


async def test_a_round_video_note_is_transcribed_too(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue_transcription("Look at my new bike")
    ai.enqueue("Nice bike!")
    tg.send_video_note(ALICE, b"\x00\x00\x00\x18ftypmp42 fake mp4 bytes", duration=5, user_id=ALICE)
    assert (await texts_after(tg, 2))[-1] == "Nice bike!"
    assert ai.transcriptions[0].filename == "video_note.mp4"
    assert db("SELECT kind FROM messages WHERE role = 'user'") == [("video_note",)]


async def test_a_speech_server_elsewhere_never_gets_the_chat_key(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path
) -> None:
    """TRANSCRIPTION_BASE_URL on another server, no TRANSCRIPTION_API_KEY: OPENAI_API_KEY is
    the chat provider's secret and is not sent there (it would be, to a third party)."""
    async with FakeOpenAI() as speech:
        speech.enqueue_transcription("Hello there")
        ai.enqueue("Hi!")
        settings = make_settings(
            tg.base_url,
            ai.base_url,
            tmp_path / "bot.sqlite3",
            transcription_base_url=speech.base_url,
        )
        bot = await RunningBot(settings).start()
        try:
            tg.send_voice(ALICE, VOICE, duration=2, user_id=ALICE)
            await texts_after(tg, 2)
        finally:
            await bot.stop()
        [upload] = speech.transcriptions
        assert API_KEY not in str(upload.headers), "the chat key went to another server"
        assert API_KEY in ai.requests[0].headers.get("authorization", "")


async def test_no_transcription_endpoint_gets_one_line_and_tells_the_owner(
    bot: RunningBot,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    db: Query,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    ai.transcriptions_supported = False  # Ollama has no /audio/transcriptions
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "no speech-to-text service is set up" in line
    assert any("TRANSCRIPTION_BASE_URL" in r.getMessage() for r in caplog.records)
    assert ai.requests == [] and db("SELECT * FROM messages") == []


async def test_a_failing_transcription_service_gets_one_line(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue_transcription(Error(500))
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "couldn't transcribe" in line
    assert ai.requests == [] and db("SELECT * FROM messages") == []


async def test_whisper_cpps_segment_lines_make_one_sentence_again(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    # whisper.cpp's server (README's recipe, timestamps on) cuts its text into segments of at
    # most 60 characters, each written as " text\n": a line break in mid-sentence.
    ai.enqueue_transcription(
        " Hello, I wanted to ask you about the weather tomorrow in\n Paris and also London.\n"
    )
    ai.enqueue("Sunny.")
    tg.send_voice(ALICE, VOICE, duration=6, user_id=ALICE)
    await texts_after(tg, 2)
    said = "Hello, I wanted to ask you about the weather tomorrow in Paris and also London."
    assert ai.requests[0].messages[-1] == {"role": "user", "content": said}
    assert db("SELECT text FROM messages WHERE role = 'user'") == [(said,)]


async def test_whisper_cpps_refusals_tell_the_owner_which_flag_is_missing(
    bot: RunningBot,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    # Started without --convert, whisper-server cannot read OGG/Opus and says only this.
    ai.enqueue_transcription(
        Error(400, raw_body=WHISPER_CPP_UNREADABLE, headers=WHISPER_CPP_HEADERS)
    )
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "couldn't transcribe" in line
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("HTTP 400" in m and "--convert" in m for m in logged), logged
    # Started without --inference-path, it serves only /inference.
    caplog.clear()
    missing = "File Not Found (/v1/audio/transcriptions)"
    ai.enqueue_transcription(Error(404, raw_body=missing, headers=WHISPER_CPP_HEADERS))
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    assert "no speech-to-text service is set up" in (await texts_after(tg, 2))[-1]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("--inference-path /v1/audio/transcriptions" in m for m in logged), logged
    assert ai.requests == []


async def test_silence_gets_one_line_and_no_model_call(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue_transcription("  ...  ")
    tg.send_voice(ALICE, VOICE, duration=2, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "couldn't hear any words" in line
    assert ai.requests == []


async def test_whisper_cpps_blank_audio_marker_is_silence_not_words(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    # whisper.cpp's server with its English models answers a silent recording with the
    # model's "[BLANK_AUDIO]", a space before each segment and a newline after it
    # (tests/real/test_whisper_voice.py has the real server say so).
    # (Whisper models also caption a pause "[ Silence ]" or "(silence)".)
    ai.enqueue_transcription(" [BLANK_AUDIO]\n [ Silence ]\n (silence)\n")
    tg.send_voice(ALICE, VOICE, duration=2, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "couldn't hear any words" in line
    assert ai.requests == [], "the marker never reaches the model as the user's words"
    # Speech, then a silent stretch: the words are kept, the marker is not.
    ai.enqueue_transcription(" Call me at noon.\n [BLANK_AUDIO]\n")
    ai.enqueue("Will do.")
    tg.send_voice(ALICE, VOICE, duration=9, user_id=ALICE)
    heard, answer = (await texts_after(tg, 3))[-2:]
    assert (heard, answer) == ("🎤 “Call me at noon.”", "Will do.")
    assert ai.requests[0].messages[-1] == {"role": "user", "content": "Call me at noon."}


async def test_a_voice_note_over_the_limit_is_refused_before_downloading(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(max_voice_seconds=60).start()
    try:
        tg.send_voice(ALICE, VOICE, duration=61, user_id=ALICE)
        [line] = await texts_after(tg, 1)
        assert "too long" in line and "limit: 1 min" in line
        tg.send_voice(ALICE, VOICE, duration=5, size=25 * 1024 * 1024, user_id=ALICE)
        assert "up to 20 MB" in (await texts_after(tg, 2))[-1]
        assert tg.calls_to("getFile") == [] and tg.downloads == []
        assert ai.transcriptions == []
    finally:
        await bot.stop()


async def test_a_failed_download_gets_one_line(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    tg.fail("getFile", status=500, description="Internal Server Error")
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "couldn't download" in line
    assert ai.transcriptions == [] and db("SELECT * FROM messages") == []


async def test_a_voice_note_over_the_rate_limit_is_not_downloaded(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(rate_limit_per_minute=1).start()
    try:
        tg.send_text(ALICE, "hello", user_id=ALICE)
        await texts_after(tg, 1)
        tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
        assert "faster than I may answer" in (await texts_after(tg, 2))[-1]
        assert tg.downloads == [] and ai.transcriptions == []
    finally:
        await bot.stop()


# -- photos --------------------------------------------------------------------------------------


async def test_a_photo_reaches_the_model_as_a_data_url_of_the_served_bytes(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    ai.enqueue("A flat grey square.", "It was grey.")
    tg.send_photo(ALICE, PHOTO, "what is this?", user_id=ALICE)
    assert (await texts_after(tg, 1)) == ["A flat grey square."]
    [request] = ai.requests
    [url] = request.images
    assert decoded(url) == MEDIUM, "the largest size not above 2,048 px, byte for byte"
    assert tg.downloads == [tg.files[tg.calls_to("getFile")[0].params["file_id"]].path]
    parts = request.messages[-1]["content"]
    assert parts[0] == {"type": "text", "text": "[photo: what is this?]"}
    # Later turns carry a placeholder, not the image.
    tg.send_text(ALICE, "and its colour?", user_id=ALICE)
    await texts_after(tg, 2)
    later = ai.requests[1]
    assert later.images == []
    assert later.messages[1] == {"role": "user", "content": "[photo: what is this?]"}
    [(kind, attachments)] = db("SELECT kind, attachments FROM messages WHERE kind = 'photo'")
    assert kind == "photo" and '"width":1280' in attachments and "/file/" not in attachments


async def test_a_photo_without_a_caption_asks_the_model_to_respond_to_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("A photo of grey.")
    tg.send_photo(ALICE, PHOTO[:1], user_id=ALICE)
    await texts_after(tg, 1)
    text = ai.requests[0].messages[-1]["content"][0]["text"]
    assert text.startswith("[photo]") and "respond to it" in text


async def test_an_album_is_one_question_with_every_image(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    shots = [files.jpeg(16, 16, shade) for shade in (30, 70, 110)]
    ai.enqueue("Three grey squares.")
    for index, shot in enumerate(shots):
        caption = "which is darkest?" if index == 0 else None
        tg.send_photo(ALICE, [(shot, 800, 600)], caption, media_group_id="album1", user_id=ALICE)
    assert (await texts_after(tg, 1)) == ["Three grey squares."]
    [request] = ai.requests
    assert [decoded(url) for url in request.images] == shots
    assert request.messages[-1]["content"][0]["text"] == "[3 photos: which is darkest?]"
    assert db("SELECT text FROM messages WHERE role = 'user'") == [
        ("[3 photos: which is darkest?]",)
    ]


@pytest.mark.parametrize("server", ["openai", "llama-server", "llama-cpp-python"])
async def test_a_model_without_vision_gets_one_line_and_no_second_image_call(
    bot: RunningBot,
    tg: FakeTelegram,
    ai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    server: str,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    ai.vision = False
    refusals = {"llama-server": llama_server_refusal, "llama-cpp-python": llama_cpp_python_refusal}
    ai.vision_error = refusals[server]() if server in refusals else None
    ai.vision_stream_dies = server == "llama-cpp-python"
    tg.send_photo(ALICE, PHOTO, "what is this?", user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "can't look at pictures" in line
    assert any("VISION_MODEL" in r.getMessage() for r in caplog.records)
    streamed = [r.stream for r in ai.requests]
    if ai.vision_stream_dies:  # asked again without streaming, to read the error (a 500, which
        # the SDK retries once on a fresh connection)
        assert streamed == [True, False, False]
    else:
        assert streamed == [True]
    tg.send_photo(ALICE, PHOTO, "and this?", user_id=ALICE)
    assert "can't look at pictures" in (await texts_after(tg, 2))[-1]
    assert all(r.images for r in ai.requests)
    assert len(ai.requests) == len(streamed), "remembered: no second image call"
    downloads = len(tg.downloads)
    ai.enqueue("Text still works.")
    tg.send_text(ALICE, "hello", user_id=ALICE)
    assert (await texts_after(tg, 3))[-1] == "Text still works."
    assert len(tg.downloads) == downloads == 1, "the second photo was not even downloaded"


async def test_vision_model_is_used_for_turns_with_images(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    bot = await bot_factory(vision_model="gpt-4o").start()
    try:
        ai.enqueue("Grey.", "Hi.")
        tg.send_photo(ALICE, PHOTO, "colour?", user_id=ALICE)
        await texts_after(tg, 1)
        tg.send_text(ALICE, "thanks", user_id=ALICE)
        await texts_after(tg, 2)
        assert [r.model for r in ai.requests] == ["gpt-4o", "gpt-4o-mini"]
    finally:
        await bot.stop()


async def test_retry_of_a_photo_question_sends_the_image_again(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("First look.", "Second look.")
    tg.send_photo(ALICE, PHOTO, "what is this?", user_id=ALICE)
    await texts_after(tg, 1)
    tg.send_command(ALICE, "/retry", user_id=ALICE)
    assert (await texts_after(tg, 2))[-1] == "Second look."
    assert [decoded(u) for u in ai.requests[1].images] == [MEDIUM]


# -- files ---------------------------------------------------------------------------------------


async def test_a_text_file_reaches_the_model_framed_and_follow_ups_see_it(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    notes = "# Trip\n\n- flight LH 404 at 07:15\n- hotel: Casa Azul\n"
    ai.enqueue("It's a trip plan.", "At 07:15.")
    tg.send_document(
        ALICE, notes.encode(), "trip.md", "text/markdown", "what is this?", user_id=ALICE
    )
    await texts_after(tg, 1)
    sent = ai.requests[0].messages[-1]["content"]
    assert sent.startswith("[Attached file: trip.md]\n# Trip")
    assert "[End of file: trip.md]" in sent and sent.endswith("what is this?")
    tg.send_text(ALICE, "when is the flight?", user_id=ALICE)
    await texts_after(tg, 2)
    assert any("LH 404" in str(m["content"]) for m in ai.requests[1].messages[:-1])


async def test_a_pdf_reaches_the_model_as_its_text(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    document = files.pdf(["Invoice 88231", "Total: 42 EUR"])
    ai.enqueue("The total is 42 EUR.")
    tg.send_document(ALICE, document, "invoice.pdf", "application/pdf", "total?", user_id=ALICE)
    assert (await texts_after(tg, 1)) == ["The total is 42 EUR."]
    sent = ai.requests[0].messages[-1]["content"]
    assert "Invoice 88231" in sent and "Total: 42 EUR" in sent and "invoice.pdf" in sent


async def test_files_too_long_or_of_another_kind_get_one_line(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(max_document_chars=1000).start()
    try:
        tg.send_document(ALICE, b"x" * 1001, "long.txt", "text/plain", user_id=ALICE)
        assert "limit: 1,000 characters" in (await texts_after(tg, 1))[-1]
        tg.send_document(ALICE, b"PK\x03\x04zip", "archive.zip", "application/zip", user_id=ALICE)
        line = (await texts_after(tg, 2))[-1]
        assert "can't read that kind of file" in line and "PDF" in line
        tg.send_document(ALICE, b"x" * 5000, "huge.txt", "text/plain", user_id=ALICE)
        assert "limit: 1,000 characters" in (await texts_after(tg, 3))[-1]
        assert len(tg.downloads) == 1, "neither the zip nor the oversized text was downloaded"
        assert ai.requests == [] and db("SELECT * FROM messages") == []
    finally:
        await bot.stop()


async def test_a_file_too_long_for_the_models_window_is_refused_before_it_is_stored(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    bot = await bot_factory(model_context_window=2048, max_output_tokens=256).start()
    try:
        text = " ".join(f"word{n}" for n in range(3000))  # ~6,000 tokens, 26,000 characters
        tg.send_document(ALICE, text.encode(), "long.txt", "text/plain", "summary?", user_id=ALICE)
        [line] = await texts_after(tg, 1)
        assert "too long for this model's context window" in line
        assert ai.requests == [] and db("SELECT * FROM messages") == []
    finally:
        await bot.stop()


async def test_a_small_photo_is_budgeted_at_what_a_local_vision_server_counts(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    """A local vision model counts any image at 576 tokens (LLaVA 1.5 on llama-server, measured:
    tests/real/test_llama_vision.py), a 32-px one too; the bot budgets for that and leaves out
    old history, instead of first sending a prompt the server's window cannot hold."""
    ai.context_window = 1024
    bot = await bot_factory(
        openai_model="llava", model_context_window=1024, max_output_tokens=64
    ).start()
    try:
        words = " ".join(f"w{n}" for n in range(120))
        for turn in range(1, 4):
            ai.enqueue("Noted.")
            tg.send_text(ALICE, words, user_id=ALICE)
            await texts_after(tg, turn)
        ai.enqueue("A grey square.")
        tg.send_photo(ALICE, [(files.jpeg(32, 32, 90), 320, 320)], "and this?", user_id=ALICE)
        assert (await texts_after(tg, 4))[-1] == "A grey square."
        # One request for the photo, and it fitted: no overflow for the server to refuse first.
        [photo_request] = [r for r in ai.requests if r.images]
        assert photo_request.prompt_tokens + 64 <= 1024
    finally:
        await bot.stop()


async def test_an_image_sent_as_a_file_is_looked_at(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("A screenshot.")
    tg.send_document(ALICE, LARGE, "screen.jpg", "image/jpeg", "the error?", user_id=ALICE)
    await texts_after(tg, 1)
    [url] = ai.requests[0].images
    assert decoded(url) == LARGE
    assert ai.requests[0].messages[-1]["content"][0]["text"] == "[image screen.jpg: the error?]"


async def test_stickers_still_get_the_line_saying_what_the_bot_reads(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    sticker = {"file_id": "S1", "file_unique_id": "s1", "type": "regular", "width": 512}
    sticker |= {"height": 512, "is_animated": False, "is_video": False}
    tg.send_media(ALICE, {"sticker": sticker}, user_id=ALICE)
    [line] = await texts_after(tg, 1)
    assert "voice note, a photo or a text file" in line
    assert ai.requests == []


async def test_usage_shows_the_seconds_transcribed(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    tg.send_voice(ALICE, VOICE, duration=7, user_id=ALICE)
    await texts_after(tg, 2)
    tg.send_command(ALICE, "/usage", user_id=ALICE)
    report = (await texts_after(tg, 3))[-1]
    assert "7 s of speech transcribed" in report


async def test_the_stored_turn_keeps_its_kind_across_a_restart(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    ai.enqueue("Lima.")
    ai.enqueue_transcription("Capital of Peru?")
    tg.send_voice(ALICE, VOICE, duration=3, user_id=ALICE)
    await texts_after(tg, 2)
    await bot.restart()
    ai.enqueue("Peru, still.")
    tg.send_text(ALICE, "again?", user_id=ALICE)
    await eventually(lambda: len(ai.requests), lambda n: n == 2)
    assert ai.requests[1].messages[1]["content"] == "Capital of Peru?"


# -- groups --------------------------------------------------------------------------------------


async def test_in_a_group_a_voice_reply_to_the_bot_is_answered_and_chatter_is_not_heard(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI, db: Query
) -> None:
    from tests.test_groups import ALICE as G_ALICE
    from tests.test_groups import BOB, GROUP, replied_to, replies, say

    ai.enqueue("Hello group.", "Tuesday works.")
    say(tg, G_ALICE, "@test_bot hello")
    [greeting] = await replies(tg, 1)
    # Bob's voice note to the group, not to the bot: not transcribed, not stored, no answer.
    tg.send_voice(GROUP, VOICE, duration=4, user_id=BOB, first_name="Bob")
    ai.enqueue_transcription("Does Tuesday work for everyone?")
    update = tg.send_voice(
        GROUP,
        VOICE,
        duration=4,
        user_id=BOB,
        first_name="Bob",
        reply_to_message_id=greeting.result["message_id"],
    )
    heard, answer = (await replies(tg, 3))[1:]
    assert tg.visible_text(heard) == "🎤 “Does Tuesday work for everyone?”"
    assert replied_to(answer) == update["message"]["message_id"]
    assert tg.visible_text(answer) == "Tuesday works."
    assert len(ai.transcriptions) == 1, "the overheard voice note was never transcribed"
    assert ai.requests[-1].messages[-1]["content"] == "Bob: Does Tuesday work for everyone?"
    assert db("SELECT COUNT(*) FROM messages WHERE kind = 'voice'") == [(1,)]


async def test_in_a_group_a_question_about_someones_photo_shows_the_model_the_photo(
    bot: RunningBot, tg: FakeTelegram, ai: FakeOpenAI
) -> None:
    from tests.test_groups import ALICE as G_ALICE
    from tests.test_groups import CAROL, GROUP, mention, replies, say

    shot = files.jpeg(16, 16, 220)
    photo = tg.send_photo(
        GROUP, [(shot, 640, 480)], "our new office", user_id=CAROL, first_name="Carol"
    )
    photo_id = photo["message"]["message_id"]
    ai.enqueue("Bright and empty.")
    say(tg, G_ALICE, "@test_bot what do you think of it?", reply_to_message_id=photo_id)
    await replies(tg, 1)
    [request] = ai.requests
    assert [decoded(url) for url in request.images] == [shot]
    contents = [str(m["content"]) for m in request.messages[1:]]
    assert contents[0] == "Carol: [photo: our new office]", "the overheard photo, as context"
    # A photo whose caption mentions the bot is answered too.
    caption = "@test_bot and this one?"
    ai.enqueue("Also bright.")
    tg.send_photo(
        GROUP, [(shot, 640, 480)], caption, caption_entities=mention(caption), user_id=CAROL
    )
    await replies(tg, 2)
    assert ai.requests[1].images and "and this one?" in str(ai.requests[1].messages[-1])
