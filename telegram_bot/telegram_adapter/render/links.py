"""Which link targets Telegram accepts in a ``text_link`` entity.

A rejected URL fails the whole message ("Wrong message entity"), and the model writes
relative links, ``localhost`` and the odd ``javascript:``. The check mirrors tdlib rather
than a URL parser, so it errs the same way Telegram does; the renderer prints what fails
next to the link text instead.
"""

from __future__ import annotations

import re

__all__ = ["telegram_url_ok"]


def telegram_url_ok(url: str) -> bool:
    """Would Telegram accept ``url`` in a text_link? (A rejected one fails the whole message.)

    Mirrors tdlib's ``parse_url``/``check_link``: http(s) only, a host containing a dot,
    a valid port. Anything else is printed next to the link text instead.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or any(c.isspace() for c in url):
        return False
    authority = _PATH_START.split(rest, maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]
    host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return "." in host and host != "." and _HOST_OK.fullmatch(host.lower()) is not None


_PATH_START = re.compile(r"[/?#]")
_HOST_OK = re.compile(r"(?:[a-z0-9._~!$,*'();&+=-]|%[0-9a-f]{2}|[^\x00-\x7f])+")
