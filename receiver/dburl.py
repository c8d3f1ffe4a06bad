"""Database URLs as glia shows them: the password masked, a malformed URL refused with a message that leaves it out.

Passwords reach banners, logs and error messages through the URL (in the compose stack those are container logs), so
every place that prints a database URL or an error about one goes through `masked` or `redact`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
SCHEMES = ("postgresql", "postgres")
# libpq and asyncpg also take these in the query string
_SECRET_PARAM = re.compile(r"([?&](?:ssl)?password=)([^&#]*)", re.IGNORECASE)


def _split(url: str) -> tuple[str, str | None, str]:
    """`scheme://`, the user info (everything up to the last '@', or None), and the rest.

    The last '@' rather than RFC 3986's first '/' ends the user info, so an unencoded '/', '?' or '#' in a password
    counts as part of it and is masked with it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return scheme + sep, None, rest
    return scheme + sep, userinfo, hostpart


def masked(url: str) -> str:
    """`url` with its password, and any password in the query string, replaced by `***`."""
    prefix, userinfo, rest = _split(url)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{MASK}" if colon else user
        url = f"{prefix}{userinfo}@{rest}"
    return _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, url)


def secrets_of(url: str) -> list[str]:
    """The secrets in `url` as they may appear in an error message: as typed, decoded, and split where parsers split."""
    _, userinfo, rest = _split(url)
    found: list[str] = [m.group(2) for m in _SECRET_PARAM.finditer(rest if userinfo is not None else url)]
    if userinfo is not None and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    pieces: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret)):
            pieces.append(form)
            # a parser that stops at a reserved character reports the pieces on either side of it
            pieces.extend(p for p in re.split(r"[/?#@:]", form) if len(p) >= 4)
    return sorted({p for p in pieces if p}, key=len, reverse=True)


def redact(text: str, url: str | None) -> str:
    """`text` (an error message, a log line) with every secret of `url` in it replaced by `***`."""
    if not url:
        return text
    if url in text:
        text = text.replace(url, masked(url))
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def check(url: str) -> None:
    """Raise ValueError, naming the fault but never the password, unless `url` is a PostgreSQL URL glia can use."""
    prefix, userinfo, rest = _split(url)
    scheme = prefix.removesuffix("://")
    if scheme not in SCHEMES:
        raise ValueError(f"the database URL must start with postgresql:// (got {masked(url)!r})")
    if userinfo is not None and re.search(r"[/?#]", userinfo):
        raise ValueError(
            "the user name or password in the database URL has a '/', '?' or '#', which must be percent-encoded "
            f"(%2F, %3F, %23; '@' as %40): {masked(url)}"
        )
    hosts = re.split(r"[/?#]", rest, maxsplit=1)[0]
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, digits = port.rpartition(":")
        if not colon or digits == "":
            continue
        if not digits.isdigit():
            raise ValueError(f"the database URL's port {digits!r} is not a number: {masked(url)}")
        if not 1 <= int(digits) <= 65535:
            raise ValueError(f"the database URL's port {digits} is out of range (1-65535): {masked(url)}")
