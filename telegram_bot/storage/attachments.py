"""The `attachments` column's JSON, shared by both backends.

SQLite (m008) and PostgreSQL (p004) store a message's attachments as the same JSON text, so
`migrate-db` copies the column as it is and neither backend imports the other's modules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from ..models import Attachment, MessageKind


def attachments_to_json(attachments: Sequence[Attachment]) -> str | None:
    """Each attachment's fields, without empty ones; None for a message without any."""
    if not attachments:
        return None
    return json.dumps(
        [
            {k: v for k, v in dataclasses.asdict(item).items() if v is not None}
            for item in attachments
        ],
        separators=(",", ":"),
    )


def attachments_from_json(raw: str | None) -> tuple[Attachment, ...]:
    if not raw:
        return ()
    return tuple(
        Attachment(**{**item, "kind": MessageKind(item["kind"])}) for item in json.loads(raw)
    )
