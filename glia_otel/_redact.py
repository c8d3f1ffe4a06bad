"""The redaction rule for command lines (`process.command_args`).

An argument's value is replaced by `[REDACTED]` when:
1. it follows, or is attached with `=` to, a flag whose name contains a secret word: `password`, `passwd`,
   `pwd`, `token`, `secret`, `apikey`/`api-key`/`api_key`, `access-key`, `private-key`,
   `credential(s)`, `auth`
   (e.g. `--password x`, `--db-password=x`, `-token x`);
2. it is a `NAME=VALUE` assignment whose NAME (case-insensitive) ends in `_KEY`, `_TOKEN`, `_SECRET`,
   `_PASSWORD`, `_PASSWD`, `_PWD` or `_CREDENTIALS`, or contains `PASSWORD`/`SECRET`/`TOKEN`
   (e.g. `AWS_SECRET_ACCESS_KEY=...`);
3. it is a URL with a password (`scheme://user:secret@host`): the password part only.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_SECRET_FLAG = re.compile(
    r"^--?[A-Za-z0-9_.-]*(pass(word|wd)?|pwd|token|secret|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credentials?|auth)[A-Za-z0-9_.-]*$",
    re.IGNORECASE,
)
_SECRET_ASSIGNMENT = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_.-]*(_key|_token|_secret|_password|_passwd|_pwd|_credentials"
    r"|password|secret|token)[A-Za-z0-9_]*$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)(?P<pw>[^/@\s]+)(?P<tail>@)")


def _is_secret_flag(flag: str) -> bool:
    return bool(_SECRET_FLAG.match(flag))


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
            if _is_secret_flag(flag):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                else:
                    out.append(arg)
                    redact_next = True
                continue
        else:
            name, eq, _ = arg.partition("=")
            if eq and _SECRET_ASSIGNMENT.match(name):
                out.append(f"{name}={REDACTED}")
                continue
        out.append(_URL_PASSWORD.sub(lambda m: m["head"] + REDACTED + m["tail"], arg))
    return out
