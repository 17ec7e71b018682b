"""Prefix reuse on a real llama.cpp server: the prompt tokens it evaluated, turn after turn.

Plays the memory benchmark's scripted conversation (`bench/memory.py`: filler with planted
facts, then questions about them) through the real engine (`Conversation`, SQLite, AsyncOpenAI,
streaming) against llama.cpp's C++ `llama-server` serving the tiny generated model (built by
`python -m tests.real.prepare`; one slot, `cache_prompt` on as by default). A small recording
proxy between the two reads the server's own `timings` from every answer: `prompt_n` (prompt
tokens it evaluated) and `cache_n` (tokens it reused from its cache), and times the first
streamed token. Summary calls are recorded apart.

    .venv/bin/python -m bench.prefix                  # 120 turns
    .venv/bin/python -m bench.prefix --turns 200 --json /tmp/after.json

It drives whichever `telegram_bot` is importable, so the same file run from a checkout of an
older commit measures that commit's prompt order (docs/benchmarks.md says how it was done).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.memory import ALICE, CHAT, FACTS, SUMMARY_MARK, Silent, script
from telegram_bot.config import Settings
from telegram_bot.engine.conversation import Conversation
from telegram_bot.engine.turns import Incoming
from telegram_bot.llm.client import LLM
from telegram_bot.storage import open_store
from tests.real import llama, servers
from tests.real.tinymodel import TinyModelSpec, ensure_model

N_CTX = 2048  # the tiny model's trained context


@dataclass
class Call:
    summary: bool
    prompt_n: int = 0
    cache_n: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0


class Recorder:
    """A reverse proxy to the server that keeps each answer's timings."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[Call] = []
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        messages = payload.get("messages") or [{}]
        first = str(messages[0].get("content", ""))
        call = Call(summary=first.startswith(SUMMARY_MARK))
        self.calls.append(call)
        started = time.perf_counter()
        assert self._session is not None
        async with self._session.post(
            self.upstream + "/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        ) as upstream:
            if not payload.get("stream"):
                data = await upstream.read()
                call.seconds = time.perf_counter() - started
                self._timings(call, data)
                return web.Response(
                    body=data, status=upstream.status, content_type="application/json"
                )
            response = web.StreamResponse(
                status=upstream.status, headers={"content-type": "text/event-stream"}
            )
            await response.prepare(request)
            async for line in upstream.content:
                text = line.decode(errors="replace").strip()
                if text.startswith("data: {"):
                    chunk = text[len("data: ") :]
                    if call.first_token_s is None and _has_content(chunk):
                        call.first_token_s = time.perf_counter() - started
                    self._timings(call, chunk.encode())
                await response.write(line)
            call.seconds = time.perf_counter() - started
            await response.write_eof()
            return response

    @staticmethod
    def _timings(call: Call, data: bytes) -> None:
        try:
            timings = json.loads(data).get("timings")
        except (ValueError, AttributeError):
            return
        if isinstance(timings, dict):
            call.prompt_n = int(timings.get("prompt_n", 0))
            call.cache_n = int(timings.get("cache_n", 0))

    async def __aenter__(self) -> str:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


def _has_content(chunk: str) -> bool:
    choices = json.loads(chunk).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def play(base_url: str, turns: int, facts: int, database: Path) -> None:
    settings = Settings(
        telegram_bot_token="1:benchmark-token-xxxxxxxx",
        openai_api_key="sk-bench",
        openai_base_url=base_url,
        openai_model=servers.MODEL_ALIAS,
        openai_max_retries=2,
        streaming=True,
        model_context_window=N_CTX,
        max_output_tokens=16,
        history_token_budget=1000,
        summary_token_budget=300,
        recall_token_budget=250,
        database_path=database,
    )
    store = open_store(settings)
    await store.open()
    llm = LLM(settings)
    engine = Conversation(store, llm, settings)
    try:
        lines = [text for text, _ in script(turns, facts, seed=7)]
        lines += [FACTS[i][1] for i in range(facts)]
        for text in lines:
            await engine.respond(Incoming(CHAT, text, ALICE), Silent())
            await asyncio.sleep(0.02)  # llama-server closes a connection after a stream
    finally:
        await llm.close()
        await store.close()


def report(calls: list[Call], turns: int) -> dict[str, Any]:
    chat = [c for c in calls if not c.summary]
    evaluated = [c.prompt_n for c in chat]
    total = [c.prompt_n + c.cache_n for c in chat]
    at = min(100, len(chat)) - 1
    ttft = [c.first_token_s for c in chat if c.first_token_s is not None]
    return {
        "turns": len(chat),
        "summary_calls": sum(1 for c in calls if c.summary),
        "prompt_tokens": sum(total),
        "evaluated": sum(evaluated),
        "reused_share": round(1 - sum(evaluated) / max(1, sum(total)), 4),
        "evaluated_median": statistics.median(evaluated) if evaluated else 0,
        "evaluated_per_turn": evaluated,
        f"turn_{at + 1}": {
            "prompt_tokens": total[at],
            "evaluated": evaluated[at],
            "first_token_ms": round(1000 * (chat[at].first_token_s or 0), 1),
        },
        "first_token_ms_median": round(1000 * statistics.median(ttft), 1) if ttft else None,
        "summary_evaluated": sum(c.prompt_n for c in calls if c.summary),
        "script_turns": turns,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = llama.cache_dir()
    binary = llama.ensure_llama_server(root)
    with llama.cache_lock(root, "model"):
        model = ensure_model(root / "models", TinyModelSpec())
    with tempfile.TemporaryDirectory() as tmp:
        port = servers.free_port()
        server = servers.start(
            "llama-server",
            servers.llama_server_argv(binary, model, port, N_CTX),
            port=port,
            n_ctx=N_CTX,
            log_path=Path(tmp) / "llama-server.log",
            ready_path="/health",
        )
        try:
            recorder = Recorder(server.origin)
            async with recorder as base_url:
                await play(base_url, args.turns, args.facts, Path(tmp) / "prefix.sqlite3")
        finally:
            servers.stop(server)
    return report(recorder.calls, args.turns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=120)
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "evaluated_per_turn"}, indent=1))


if __name__ == "__main__":
    main()
