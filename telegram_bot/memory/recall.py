"""Which words of a new message are worth searching the archive for (pure).

Recall looks up the conversation's older messages that share content words with the new one.
Function words ("what", "was", "my") match everything and would drown the signal, so they are
dropped; a message made only of them ("ok, thanks!") recalls nothing. The list covers English
plus the most common function words of a few other languages our users write in; numbers are
always kept (invoice numbers, dates, codes are exactly what people ask about again).

Recall brings back what fell out of the model's view, so a word the prompt already shows (in
the verbatim turns or the summary) is not searched for (`unseen`): the model has that topic
in front of it, and lines recalled for it would only repeat it. Every recalled line is new to
the prompt on every turn it is sent (a model server evaluates it afresh, no prefix cache
helps), so recalling only what adds something keeps prompts both useful and cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_WORDS = 16
_WORD = re.compile(r"\w+", re.UNICODE)

_STOPWORD_TEXT = """
    a about above after again against all am an and any are aren as at be because been before
    being below between both but by can cannot could couldn did didn do does doesn doing don
    down during each few for from further had hadn has hasn have haven having he her here hers
    herself him himself his how i if in into is isn it its itself just let ll me more most my
    myself no nor not now of off on once only or other ought our ours ourselves out over own re
    same shan she should shouldn so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was wasn we were weren what
    when where which while who whom why will with won would wouldn you your yours yourself
    yourselves also yes yeah ok okay please thanks thank hi hello hey tell know remember said
    say told again really well like get got one thing things something anything tell us ve d m s
    t de la le les des un une et est pas que qui pour dans du au en il elle je tu nous vous ils
    der die das und ist nicht ein eine ich du wir sie mit zu von den dem es el los las y es no
    que un una por con para lo se mi и в не на что я с он как а то это по но из у за мы вы ты
    она они мой моя
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def query_words(text: str, limit: int = MAX_WORDS) -> list[str]:
    """The distinct content words of `text`, lower-cased, in order of appearance."""
    words: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text.lower()):
        word = match.group().strip("_")
        if not word or word in seen or word in STOPWORDS:
            continue
        if len(word) < 3 and not word.isdigit():
            continue
        seen.add(word)
        words.append(word)
        if len(words) >= limit:
            break
    return words


def unseen(words: list[str], shown: Iterable[str]) -> list[str]:
    """The `words` that no text in `shown` (what the prompt already holds) contains."""
    visible: set[str] = set()
    for text in shown:
        visible.update(m.group().strip("_") for m in _WORD.finditer(text.lower()))
    return [w for w in words if w not in visible]
