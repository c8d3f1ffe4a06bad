"""The redaction rule for command lines (`process.command_args`).

An argument's value is replaced by `[REDACTED]` when:
1. it follows, or is attached with `=` to, a flag whose name contains a secret word: `pass` (so `password`,
   `passwd`), `pwd`, `token`, `secret`, `apikey`/`api-key`/`api_key`, `access-key`, `private-key`,
   `credential(s)`, `auth` (case-insensitive; `_` and `.` count as `-`)
   (e.g. `--password x`, `--db-password=x`, `-token x`);
2. it is a `NAME=VALUE` argument whose NAME (case-insensitive) ends in `_KEY`, `_TOKEN`, `_SECRET`,
   `_PASSWORD`, `_PASSWD`, `_PWD` or `_CREDENTIALS`, or contains `PASSWORD`/`SECRET`/`TOKEN`
   (e.g. `AWS_SECRET_ACCESS_KEY=...`);
3. it is a URL with a password (`scheme://user:secret@host`): the password part only.
"""

from __future__ import annotations

REDACTED = "[REDACTED]"

# Plain string tests, not regular expressions: `re` would cost `glia run`'s start-up several milliseconds.
_FLAG_WORDS = ("pass", "pwd", "token", "secret", "apikey", "api-key", "access-key", "private-key", "credential", "auth")
_NAME_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_PASSWD", "_PWD", "_CREDENTIALS")
_NAME_WORDS = ("PASSWORD", "SECRET", "TOKEN")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def is_secret_flag(flag: str) -> bool:
    """Whether a flag (`--db-password`, `-token`, `--API_KEY`) names a secret."""
    name = flag.lstrip("-").lower().replace("_", "-").replace(".", "-")
    return bool(name) and any(word in name for word in _FLAG_WORDS)


def is_secret_name(name: str) -> bool:
    """Whether the NAME of a `NAME=VALUE` argument names a secret (`AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`)."""
    if not name or not (name[0].isalpha() or name[0] == "_") or not set(name) <= _NAME_CHARS:
        return False
    upper = name.upper()
    return upper.endswith(_NAME_SUFFIXES) or any(word in upper for word in _NAME_WORDS)


def redact_url_password(arg: str) -> str:
    """`scheme://user:secret@host/...` -> `scheme://user:[REDACTED]@host/...`; other text unchanged."""
    start = arg.find("://")
    if start <= 0:
        return arg
    start += 3
    end = arg.find("/", start)
    authority = arg[start:] if end < 0 else arg[start:end]
    at = authority.rfind("@")
    colon = authority.find(":", 0, at) if at > 0 else -1
    if colon < 0 or colon == at - 1 or any(c.isspace() for c in authority[:at]):
        return arg
    return arg[: start + colon + 1] + REDACTED + arg[start + at :]


def redact_args(args: list[str]) -> list[str]:
    """Return a copy of `args` with secret values replaced by `[REDACTED]` (see the module docstring)."""
    out: list[str] = []
    redact_next = False
    for arg in args:
        if redact_next:
            out.append(REDACTED)
            redact_next = False
            continue
        if arg.startswith("-") and arg != "--":
            flag, eq, _ = arg.partition("=")
            if is_secret_flag(flag):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                else:
                    out.append(arg)
                    redact_next = True
                continue
        else:
            name, eq, _ = arg.partition("=")
            if eq and is_secret_name(name):
                out.append(f"{name}={REDACTED}")
                continue
        out.append(redact_url_password(arg))
    return out
