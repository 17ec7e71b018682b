"""Memory benchmark: does a long conversation keep its facts, at a flat prompt cost?

Plays a scripted conversation (default: 300 turns with 30 planted facts among filler) through
the real engine (`Conversation`: SQLite store, AsyncOpenAI over HTTP) against the local fake
model server, then asks about every fact and checks whether the fact reached the prompt sent to
the model. The fake model acts as a *lossy* summariser: it keeps the newest lines of what it is
given that fit its token cap, as a real one keeps what it judges important and drops the rest,
so an old fact survives only if memory brings it back. The same script then runs with the
summary alone (no recall) and against a plain drop-oldest baseline (no summary, no recall) at
the same history budget.

    .venv/bin/python -m bench.memory            # or: --turns 300 --facts 30 --history-budget 2000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import random
import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from telegram_bot import tokens
from telegram_bot.config import Settings
from telegram_bot.engine.conversation import Conversation
from telegram_bot.engine.turns import Incoming
from telegram_bot.llm.client import LLM
from telegram_bot.models import Author, ChatKey, Status
from telegram_bot.storage import open_store
from tests.fakes._tokens import common_prefix, prompt_ids
from tests.fakes.openai import ChatRequest, FakeOpenAI

CHAT = ChatKey(4242)
ALICE = Author(4242, "Alice")

# (what the user says, what they ask at the end, what must be in the prompt to answer)
FACTS: tuple[tuple[str, str, str], ...] = (
    ("By the way, my sister's name is Ana.", "What is my sister's name?", "Ana."),
    ("The invoice number is 88231, keep it in mind.", "What was the invoice number?", "88231"),
    ("My dog is called Biscuit.", "What is my dog called?", "Biscuit"),
    ("I was born in Tromsø.", "Where was I born?", "Tromsø"),
    ("My flight to Lisbon leaves on 14 March.", "When does my flight to Lisbon leave?", "14 March"),
    ("The wifi password at the cabin is heron-42.", "What's the cabin wifi password?", "heron-42"),
    ("My favourite colour is teal.", "What is my favourite colour?", "teal"),
    ("I'm allergic to peanuts.", "What am I allergic to?", "peanuts"),
    ("My car is a 2014 Volvo V70.", "Which car do I have?", "Volvo"),
    ("My landlord's name is Mr. Okafor.", "What is my landlord's name?", "Okafor"),
    ("The meeting with the bank is on Thursday at 10:30.", "When is the bank meeting?", "10:30"),
    (
        "My daughter's school is Lindholm Primary.",
        "Which school does my daughter go to?",
        "Lindholm",
    ),
    ("My passport expires in August 2027.", "When does my passport expire?", "August 2027"),
    ("The plumber quoted 640 euros for the boiler.", "What did the plumber quote?", "640"),
    ("My bike lock code is 3917.", "What is my bike lock code?", "3917"),
    ("My brother lives in Winnipeg.", "Where does my brother live?", "Winnipeg"),
    ("I take my coffee with oat milk.", "How do I take my coffee?", "oat milk"),
    ("Our wedding anniversary is on 9 June.", "When is our anniversary?", "9 June"),
    ("My employee number is E-55102.", "What is my employee number?", "55102"),
    ("The cat's vet is Dr. Lindqvist.", "Who is the cat's vet?", "Lindqvist"),
    (
        "My gym membership costs 39 pounds a month.",
        "What does my gym membership cost?",
        "39 pounds",
    ),
    ("I promised to call grandma on Sunday.", "What did I promise to do on Sunday?", "grandma"),
    ("My shoe size is 43.", "What is my shoe size?", "43"),
    ("The parcel tracking number is ZX9981.", "What is the parcel tracking number?", "ZX9981"),
    ("My mother's birthday is 2 November.", "When is my mother's birthday?", "2 November"),
    ("I decided to learn Portuguese this year.", "Which language did I decide to learn?", "Portug"),
    ("My neighbour's name is Ingrid.", "What is my neighbour's name?", "Ingrid"),
    ("The spare key is under the blue flowerpot.", "Where is the spare key?", "flowerpot"),
    ("My blood type is O negative.", "What is my blood type?", "O negative"),
    ("The book club meets at Café Soma.", "Where does the book club meet?", "Soma"),
)

TOPICS = (
    "gardening",
    "sourdough bread",
    "football tactics",
    "old films",
    "the weather",
    "learning to program",
    "hiking routes",
    "jazz records",
    "houseplants",
    "chess openings",
    "board games",
    "running shoes",
)
TEMPLATES = (
    "Can you tell me something interesting about {topic}?",
    "I was thinking about {topic} again today. Any tips for a beginner?",
    "What is a good way to get started with {topic}?",
    "Do you have an opinion on {topic}? I keep going back and forth.",
    "Give me a short fun fact about {topic}, please.",
    "My friend said {topic} is overrated. What do you think?",
)
REPLY = (
    "Here are a few thoughts: start small, stay curious, and enjoy the process. Many people "
    "find that a little practice every day beats a big effort once a month. Want more detail?"
)
SUMMARY_MARK = "You maintain the running summary"


def is_summary(request: ChatRequest) -> bool:
    first = request.messages[0].get("content", "") if request.messages else ""
    return isinstance(first, str) and first.startswith(SUMMARY_MARK)


def lossy_summary(request: ChatRequest) -> str:
    """Keeps the newest lines of the previous summary and transcript that fit the cap."""
    data = str(request.messages[-1].get("content", ""))
    previous = re.search(r"<previous_summary>\n(.*?)\n</previous_summary>", data, re.S)
    transcript = re.search(r"<transcript>\n(.*?)\n</transcript>", data, re.S)
    lines = [
        line
        for line in (previous.group(1).splitlines() if previous else [])
        if line and line != "(none yet)"
    ]
    for line in transcript.group(1).splitlines() if transcript else []:
        said = re.sub(r"^\[[^\]]*\]\s*", "", line)
        if said.startswith("Alice: "):  # the assistant's filler answers carry nothing
            lines.append("- " + said)
    cap = int(request.body.get("max_tokens") or 600)
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = tokens.count_text(line + "\n")
        if used + cost > cap:
            break
        kept.append(line)
        used += cost
    return "\n".join(reversed(kept)) or "- (nothing notable)"


def respond(request: ChatRequest) -> str:
    return lossy_summary(request) if is_summary(request) else REPLY


def script(turns: int, facts: int, seed: int) -> list[tuple[str, int | None]]:
    """The user's messages in order, each with the index of the fact it plants (or None)."""
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(turns - 10), facts))  # the last few turns plant nothing
    planted = dict(zip(slots, range(facts), strict=True))
    lines: list[tuple[str, int | None]] = []
    for turn in range(turns):
        if turn in planted:
            lines.append((FACTS[planted[turn]][0], planted[turn]))
        else:
            template = rng.choice(TEMPLATES)
            lines.append((template.format(topic=rng.choice(TOPICS)), None))
    return lines


class Silent:
    def partial(self, text: str) -> None:
        """The benchmark shows nothing while a reply streams."""

    async def final(self, text: str, status: Status) -> int | None:
        return None

    async def send_notice(self, text: str) -> None:
        """Nor any notice."""

    def thinking(self, thought: str) -> None:
        """Nor a reasoning model's thought."""


@dataclass(frozen=True)
class Result:
    name: str
    recalled: int
    asked: int
    first: int
    median: int
    max: int
    late_median: int
    summary_calls: int
    reused: float  # prompt tokens equal to a prefix of the previous prompt, share of all
    fresh: int  # prompt tokens that are not (a server evaluates these), summed over turns


async def play(name: str, settings: Settings, ai: FakeOpenAI, turns: int, facts: int) -> Result:
    store = open_store(settings)
    await store.open()
    llm = LLM(settings)
    engine = Conversation(store, llm, settings)
    sink = Silent()
    ai.reset()
    prompt_tokens: list[int] = []
    previous: list[int] = []
    shared = total = 0

    async def say(text: str) -> ChatRequest:
        nonlocal previous, shared, total
        before = len(ai.requests)
        await engine.respond(Incoming(CHAT, text, ALICE), sink)
        [request] = [r for r in ai.requests[before:] if not is_summary(r)]
        prompt_tokens.append(request.prompt_tokens)
        ids = prompt_ids(request.messages)
        shared += common_prefix(previous, ids)
        total += len(ids)
        previous = ids
        return request

    try:
        for text, _fact in script(turns, facts, seed=7):
            await say(text)
        recalled = 0
        for index in range(facts):
            _statement, question, answer = FACTS[index]
            request = await say(question)
            # Everything the model sees but the question itself (recalled lines follow it in
            # the last user turn).
            context = "\n".join(str(m.get("content", "")) for m in request.messages)
            context = context.replace(question, "")
            recalled += answer in context
    finally:
        await llm.close()
        await store.close()
    late = prompt_tokens[turns // 2 : turns]
    return Result(
        name,
        recalled,
        facts,
        prompt_tokens[0],
        int(statistics.median(prompt_tokens)),
        max(prompt_tokens),
        int(statistics.median(late)),
        sum(1 for r in ai.requests if is_summary(r)),
        shared / max(1, total),
        total - shared,
    )


def table(results: list[Result], history_budget: int, turns: int) -> str:
    head = (
        f"| {turns} turns, history budget {history_budget} | facts in the prompt when asked "
        "| prompt tokens: first / median / max | median, 2nd half of the script | summary calls "
        "| prompt tokens reusable from the previous prompt (weighted) | tokens not reusable |"
    )
    rows = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        share = 100 * r.recalled / r.asked
        rows.append(
            f"| {r.name} | {r.recalled}/{r.asked} ({share:.0f}%) | "
            f"{r.first:,} / {r.median:,} / {r.max:,} | {r.late_median:,} | {r.summary_calls} "
            f"| {100 * r.reused:.1f}% | {r.fresh:,} |"
        )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> str:
    async with FakeOpenAI() as ai:
        ai.responder = respond
        with tempfile.TemporaryDirectory() as tmp:
            base = Settings(
                telegram_bot_token="1:benchmark-token-xxxxxxxx",
                openai_api_key="sk-bench",
                openai_base_url=ai.base_url,
                openai_model="gpt-4o-mini",
                openai_max_retries=0,
                streaming=False,
                history_token_budget=args.history_budget,
                summary_token_budget=args.summary_budget,
                recall_token_budget=args.recall_budget,
            )
            memory = dataclasses.replace(base, database_path=Path(tmp) / "memory.sqlite3")
            summary_only = dataclasses.replace(
                base, database_path=Path(tmp) / "summary.sqlite3", recall_token_budget=0
            )
            plain = dataclasses.replace(
                base,
                database_path=Path(tmp) / "baseline.sqlite3",
                summary_token_budget=0,
                recall_token_budget=0,
            )
            results = [
                await play("summary + recall", memory, ai, args.turns, args.facts),
                await play("summary only (no recall)", summary_only, ai, args.turns, args.facts),
                await play("drop oldest (baseline)", plain, ai, args.turns, args.facts),
            ]
    return table(results, args.history_budget, args.turns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--facts", type=int, default=len(FACTS), choices=range(1, len(FACTS) + 1))
    parser.add_argument("--history-budget", type=int, default=2000)
    parser.add_argument("--summary-budget", type=int, default=600)
    parser.add_argument("--recall-budget", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
