"""Photos against real llama.cpp servers: without vision, and llama-server with `--mmproj`.

Without vision: the real bot, over real HTTP, against the fake Bot API and a real server serving
the tiny generated model (fixtures in `conftest.py`), both of which refuse an image with HTTP
500, not the 400 OpenAI sends: the C++ `llama-server` without `--mmproj` says "image input is
not supported - hint: ... mmproj"; llama-cpp-python's server without a clip model fails in its
chat template ('can only concatenate str (not "list") to str'). Either way the user gets the one
line, the model is remembered, and a second photo is not even downloaded, let alone sent.

With vision: llama-server with the generated tiny projector (`tinyvision.py`) decodes the
`data:` URLs the bot sends and puts 576 tokens per image in the prompt (LLaVA 1.5's count);
the user gets the answer, the next turn carries the placeholder, an album is one request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telegram_bot.llm import vision
from tests.fakes import FakeTelegram
from tests.fakes import media_files as files
from tests.harness import TOKEN, RunningBot, eventually, make_settings
from tests.real import client
from tests.real.recorder import Exchange, RecordingProxy
from tests.real.servers import MODEL_ALIAS, RunningServer
from tests.real.tinyvision import TinyProjectorSpec

pytestmark = pytest.mark.real_server

ALICE = 1001
# How each server's log shows a refused image request.
REFUSALS = {
    "llama-server": "image input is not supported",
    "llama-cpp-python": '"POST /v1/chat/completions HTTP/1.1" 500',
}


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


def refusals(server: RunningServer) -> int:
    """How many image requests the server has refused so far (it logs each one)."""
    return server.log_path.read_text(errors="replace").count(REFUSALS[server.name])


async def test_a_photo_to_a_model_without_vision_gets_one_line_and_is_remembered(
    real_server: RunningServer,
    telegram: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telegram_bot")
    settings = make_settings(
        telegram.base_url,
        real_server.base_url,
        tmp_path / "bot.sqlite3",
        openai_model=MODEL_ALIAS,
        openai_api_key="",
        openai_timeout=60.0,
        # llama-server says its 1,024-token window; half of it kept for the answer would leave
        # no room for a local model's 576-token image, and the bot would say the message is
        # too long before the server could refuse the image.
        max_output_tokens=128,
    )
    bot = await RunningBot(settings).start()
    try:
        before = refusals(real_server)
        photo = [(files.jpeg(32, 32, 180), 320, 320)]
        telegram.send_photo(ALICE, photo, "what is this?", user_id=ALICE)
        [line] = await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE)
        assert "can't look at pictures" in telegram.visible_text(line)
        # The server writes its log from a worker thread, so the line may land just after the reply.
        await eventually(lambda: refusals(real_server), lambda n: n == before + 1)
        assert any("VISION_MODEL" in r.getMessage() for r in caplog.records)

        telegram.send_photo(ALICE, photo, "and now?", user_id=ALICE)
        await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE, count=2)
        second = telegram.sent_texts(ALICE)[-1]
        assert "can't look at pictures" in second
        assert len(telegram.downloads) == 1, "the second photo was not even downloaded"
        assert refusals(real_server) == before + 1, "so no second image request was sent"
    finally:
        await bot.stop()


# -- a server that takes images ------------------------------------------------------------------
#
# The C++ llama-server started with `--mmproj` and the generated tiny projector
# (`tinyvision.py`): it decodes the data: URL, encodes the image and puts its tokens in the
# prompt. The bot talks to it through a recording proxy, so the test sees both what the bot
# sent and what the real server answered.

PROJECTOR = TinyProjectorSpec()
SHOT = files.jpeg(32, 32, 180)


@pytest.fixture
async def vision_bot(
    llama_server_vision: RunningServer, telegram: FakeTelegram, tmp_path: Path
) -> AsyncIterator[tuple[RunningBot, RecordingProxy]]:
    async with RecordingProxy(llama_server_vision.origin) as proxy:
        settings = make_settings(
            telegram.base_url,
            proxy.base_url,
            tmp_path / "bot.sqlite3",
            openai_model=MODEL_ALIAS,
            openai_api_key="",
            openai_timeout=60.0,
            max_output_tokens=24,
            model_context_window=llama_server_vision.n_ctx,
        )
        bot = await RunningBot(settings).start()
        try:
            yield bot, proxy
        finally:
            await bot.stop()


async def prompt_tokens_without_images(server: RunningServer, sent: Exchange) -> int:
    """What the real server counts for the bot's request with its image parts left out."""
    body = sent.json
    for message in body["messages"]:
        if isinstance(message["content"], list):
            message["content"] = [p for p in message["content"] if p["type"] == "text"]
    body.update(stream=False, max_tokens=1)
    body.pop("stream_options", None)
    reply = await client.request("POST", f"{server.base_url}/chat/completions", body)
    assert reply.status == 200, reply.text
    return int(reply.json["usage"]["prompt_tokens"])


def assert_user_got_the_answer(telegram: FakeTelegram, sent: Exchange) -> None:
    """The user's first reply is the server's (gibberish) answer, not one of the bot's lines.

    The reply is rendered from Markdown, so it is compared by the answer's first word."""
    [first_word, *_] = re.findall(r"[A-Za-z]{4,}", sent.streamed_text())
    assert first_word in telegram.sent_texts(ALICE)[0]


def assert_no_secret_sent(proxy: RecordingProxy) -> None:
    for exchange in proxy.exchanges:
        wire = exchange.path + json.dumps(exchange.headers) + exchange.body.decode(errors="replace")
        assert TOKEN not in wire and "/file/bot" not in wire


async def test_a_photo_reaches_a_real_vision_server_and_the_next_turn_carries_its_placeholder(
    llama_server_vision: RunningServer,
    vision_bot: tuple[RunningBot, RecordingProxy],
    telegram: FakeTelegram,
) -> None:
    _, proxy = vision_bot
    telegram.send_photo(ALICE, [(SHOT, 320, 320)], "what is this?", user_id=ALICE)
    await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE)
    [sent] = proxy.chat_requests()
    assert sent.status == 200, sent.answer[:300]
    assert sent.images() == [SHOT], "the served bytes, as a data: URL"
    assert_user_got_the_answer(telegram, sent)

    # The server decoded the image: its prompt holds exactly the projector's tokens more than
    # the same request without the image.
    usage = sent.usage()
    assert usage is not None, "llama-server reports usage when asked (include_usage)"
    text_only = await prompt_tokens_without_images(llama_server_vision, sent)
    assert usage["prompt_tokens"] - text_only == PROJECTOR.image_tokens
    # The bot's budget never counts an image as cheaper than the server does.
    assert vision.image_tokens(MODEL_ALIAS, 32, 32) >= PROJECTOR.image_tokens

    # (The tiny model never stops by itself, so the first answer also got the /continue notice:
    # the second request is waited for at the proxy, not by counting messages.)
    telegram.send_text(ALICE, "and its colour?", user_id=ALICE)
    both = await eventually(proxy.chat_requests, lambda r: len(r) == 2 and r[1].status != 0)
    later = both[1]
    assert later.status == 200 and later.images() == []
    assert "[photo: what is this?]" in later.body.decode()
    assert_no_secret_sent(proxy)


async def test_an_album_is_one_request_with_every_image_and_the_server_takes_them(
    llama_server_vision: RunningServer,
    vision_bot: tuple[RunningBot, RecordingProxy],
    telegram: FakeTelegram,
) -> None:
    _, proxy = vision_bot
    shots = [files.jpeg(32, 32, shade) for shade in (30, 110, 190)]
    for index, shot in enumerate(shots):
        caption = "which is darkest?" if index == 0 else None
        telegram.send_photo(
            ALICE, [(shot, 320, 320)], caption, media_group_id="album1", user_id=ALICE
        )
    await telegram.wait_for("sendMessage", lambda c: c.chat_id == ALICE)
    [sent] = proxy.chat_requests()
    assert sent.status == 200, sent.answer[:300]
    assert sent.images() == shots
    usage = sent.usage()
    assert usage is not None
    text_only = await prompt_tokens_without_images(llama_server_vision, sent)
    assert usage["prompt_tokens"] - text_only == len(shots) * PROJECTOR.image_tokens
    assert_user_got_the_answer(telegram, sent)
    assert_no_secret_sent(proxy)
