"""The SQL of a conversation's memory: rolling summaries, the backlog a prompt is built from, and
full-text recall. Each is one statement, so one round trip.

A summary belongs to the conversation of the messages it covers: once /reset has archived them
it is history, and the new conversation starts without one. Folded messages are only marked
`summarised`, never deleted, so recall can still find what a summary lost.

`BACKLOG` returns everything a prompt needs as ONE row: the current summary as a record, the
turns as an array of records, how many unsummarised turns there are, and the conversation's
oldest live id. Recall searches p002's `tsv` column, ANDing the conversation's own lexeme
with the words, which come as a `to_tsquery` text of quoted lexemes (`rows.tsquery`), never
query syntax.
"""

from __future__ import annotations

from . import rows

CURRENT_SUMMARY = f"""
    SELECT {rows.prefixed(rows.SUMMARY_COLUMNS, "s")}
    FROM summaries s JOIN messages m ON m.id = s.last_message_id
    WHERE s.chat_id = $1 AND s.thread_id = $2 AND NOT m.archived
    ORDER BY s.id DESC LIMIT 1
"""
_UNSUMMARISED = (
    "FROM messages WHERE chat_id = $1 AND thread_id = $2 AND NOT archived "
    "AND NOT summarised AND status <> 'failed'"
)
ALL_UNSUMMARISED = f"SELECT {rows.TURN_COLUMNS} {_UNSUMMARISED} ORDER BY id"
# The newest unsummarised turns whose tokens fit $3 (always the newest): a running sum from
# the newest backwards, in one indexed pass, without loading a long chat's whole history.
_NEWEST = f"""
    SELECT {rows.TURN_COLUMNS},
           sum(tokens) OVER newest_first AS running,
           row_number() OVER newest_first AS newest,
           count(*) OVER () AS total
    {_UNSUMMARISED}
    WINDOW newest_first AS (ORDER BY id DESC)
"""
NEWEST_UNSUMMARISED = f"""
    SELECT {rows.TURN_COLUMNS} FROM ({_NEWEST}) n WHERE running <= $3 OR newest = 1 ORDER BY id
"""
BACKLOG = f"""
    WITH summary AS ({CURRENT_SUMMARY}),
         unsummarised AS ({_NEWEST})
    SELECT (SELECT ROW({rows.SUMMARY_COLUMNS}) FROM summary),
           ARRAY(SELECT ROW({rows.TURN_COLUMNS}) FROM unsummarised
                 WHERE running <= $3 OR newest = 1 ORDER BY id),
           (SELECT COALESCE(max(total), 0) FROM unsummarised),
           (SELECT min(id) FROM messages
            WHERE chat_id = $1 AND thread_id = $2 AND NOT archived)
"""
# $1, $2 the conversation, $3 text, $4 tokens, $5 first and $6 last message id, $7 model, $8 and
# $9 usage. `previous` is the current summary (its first id and coverage carry on); `marked`
# the live messages the new one covers that the previous one did not.
SAVE_SUMMARY = f"""
    WITH previous AS ({CURRENT_SUMMARY}),
         marked AS (
             UPDATE messages SET summarised = true
             WHERE chat_id = $1 AND thread_id = $2 AND NOT archived AND NOT summarised
               AND id <= $6
             RETURNING 1)
    INSERT INTO summaries (chat_id, thread_id, text, tokens, first_message_id,
                           last_message_id, messages_covered, model, prompt_tokens,
                           completion_tokens, created_at)
    SELECT $1, $2, $3, $4, COALESCE((SELECT first_message_id FROM previous), $5), $6,
           COALESCE((SELECT messages_covered FROM previous), 0)
               + (SELECT count(*) FROM marked)::integer,
           $7, $8, $9, now()
    RETURNING {rows.SUMMARY_COLUMNS}
"""
# $1, $2 the conversation, $3 its lexeme's tsquery, $4 the words' to_tsquery text, $5 before
# this id, $6 how many. A conversation still inside its verbatim window (most of them) has
# nothing older to recall: the EXISTS, one index probe, answers that first.
SEARCH = f"""
    SELECT {rows.TURN_COLUMNS}
    FROM messages, to_tsquery('{rows.TEXT_SEARCH_CONFIG}', $4) AS words
    WHERE tsv @@ ($3::tsquery && words)
      AND chat_id = $1 AND thread_id = $2 AND NOT archived AND status <> 'failed' AND id < $5
      AND EXISTS (SELECT 1 FROM messages o WHERE o.chat_id = $1 AND o.thread_id = $2
                  AND NOT o.archived AND o.id < $5)
    ORDER BY ts_rank(tsv, words) DESC, id DESC
    LIMIT $6
"""
