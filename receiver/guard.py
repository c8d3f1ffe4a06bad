"""The browser-facing guards every response passes: the Host check and the security headers (pure ASGI middleware).

Host check: with no API keys (the default) anyone who can reach the receiver can read runs, and "anyone" includes a
web page the user visits, by DNS rebinding: the page's own name is made to resolve to 127.0.0.1, so the browser
sends the receiver requests with the page's name in `Host` and lets the page read the answers. A receiver bound to
a loopback address therefore answers only to loopback names (`localhost`, 127.0.0.0/8, `[::1]`), its bound
address and the names in GLIA_ALLOWED_HOSTS. Bound elsewhere (compose reaches it as `receiver:4318`, a load
balancer or a scraper by other names) it answers to any Host unless GLIA_ALLOWED_HOSTS lists them. An IP literal
or a loopback name is never a rebinding, so those always pass.

Security headers: a strict Content-Security-Policy (scripts, styles, images and requests from this origin only; no
inline script, no eval, no framing), `nosniff`, `no-referrer`. A response that sets its own policy (the docs page,
with a nonce for Swagger UI's one inline script) keeps it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import HostNotAllowed, RequestError
from .ratelog import RateLimitedLog

log = logging.getLogger("glia.guard")

# The page's later charts must live within this too: SVG or canvas drawn by /page scripts, styles from the
# stylesheet or set through the CSSOM (`node.style.x = ...`), never a `style` attribute or an inline <script>.
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def content_security_policy(script_nonce: str | None = None) -> str:
    """The policy; with `script_nonce`, inline scripts carrying that nonce may run too."""
    directives = dict(POLICY)
    if script_nonce is not None:
        directives["script-src"] += f" 'nonce-{script_nonce}'"
    return "; ".join(f"{name} {sources}" for name, sources in directives.items())


class SecurityHeaders:
    """Adds the policy and the other headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        headers = {"content-security-policy": content_security_policy(), **HEADERS}
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [header for header in self.headers if header[0] not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- Host -----------------------------------------------------------------------------------------------------------


def host_name(header: str) -> str | None:
    """The name in a Host header, lower case, without port, brackets or a trailing dot; None when malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        return value[1:end]
    name, colon, port = value.rpartition(":")
    if not colon:
        name = value
    elif port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(name: str) -> bool:
    """`localhost` or an address in 127.0.0.0/8 or ::1."""
    if name == "localhost":
        return True
    address = _ip(name)
    return address is not None and address.is_loopback


# How many Host header values a rule remembers its verdict on (every request asks; a client sends one value).
_VERDICTS = 256


@dataclass(frozen=True)
class HostRule:
    """Which Host headers a receiver bound to `bound` answers, with `listed` (GLIA_ALLOWED_HOSTS) added."""

    bound: str
    listed: tuple[str, ...] = ()
    # worked out once: every request reads them
    loopback: bool = field(init=False, compare=False)
    open: bool = field(init=False, compare=False)  # every Host is accepted
    _verdicts: dict[str, bool] = field(init=False, compare=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        loopback = is_loopback(self.bound)
        # bound elsewhere than loopback with no list, or a `*` in the list
        object.__setattr__(self, "loopback", loopback)
        object.__setattr__(self, "open", "*" in self.listed or (not loopback and not self.listed))

    @classmethod
    def make(cls, bound: str, listed: Iterable[str]) -> HostRule:
        """The rule for a bind address and the configured names (`*.example.org` matches any name under it)."""
        names = tuple(dict.fromkeys(n.strip().lower().rstrip(".") for n in listed if n.strip()))
        return cls(bound.strip("[]").lower(), names)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: none, or more than one) is answered."""
        if self.open:
            return True
        if header is None:
            return False
        verdict = self._verdicts.get(header)
        if verdict is None:
            if len(self._verdicts) >= _VERDICTS:  # bounded: a client cycling through names cannot grow it
                self._verdicts.clear()
            verdict = self._verdicts[header] = self._allows(header)
        return verdict

    def _allows(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if is_loopback(name) or name == self.bound:
            return True
        return any(name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in self.listed)

    def refusal(self, header: str | None) -> str:
        """Why a Host is refused, and what to do about it."""
        shown = "a request without exactly one Host header" if header is None else f"Host {header[:100]!r}"
        accepted = f"this receiver listens on {self.bound} and answers only to loopback names"
        accepted += " (localhost, 127.0.0.1, [::1])"
        if not self.loopback:
            accepted += ", its own address"
        if self.listed:
            accepted += f" and to {', '.join(self.listed)} (GLIA_ALLOWED_HOSTS)"
        return (
            f"{shown} is not accepted: {accepted}, so that no web page can read it through DNS rebinding; "
            "add the name to GLIA_ALLOWED_HOSTS (comma-separated) if it is yours"
        )


Refuse = Callable[[Request, RequestError], Response]


class HostCheck:
    """Answers 403 (through `refuse`: http_errors.render, which gives OTLP paths their google.rpc.Status) to a Host
    `rule` refuses."""

    def __init__(self, app: ASGIApp, rule: HostRule, refuse: Refuse, log_seconds: float) -> None:
        self.app = app
        self.rule = rule
        self.refuse = refuse
        self.log = RateLimitedLog(log, log_seconds, "refused Host headers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rule.open:
            await self.app(scope, receive, send)
            return
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        header = hosts[0].decode("latin-1") if len(hosts) == 1 else None
        if self.rule.allows(header):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = request.client.host if request.client else "unknown"
        message = self.rule.refusal(header)
        self.log.warning(client, "refused %s %s from %s: %s", scope["method"], scope["path"], client, message)
        await self.refuse(request, HostNotAllowed(message))(scope, receive, send)
