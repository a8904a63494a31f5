"""Who may talk to the viewer: requests for its own address, from its own pages, and (when a
token is set) from browsers that showed the token once.

Why: the viewer is a web server on the operator's machine, and any page the operator's
browser opens can send requests to it. Binding to 127.0.0.1 does not stop that: a site whose
name is re-pointed at 127.0.0.1 after the page has loaded (DNS rebinding) is, to the browser,
the same origin as its own page, so it could read the viewer's pages, open its websocket and
start training. The name it uses stays its own, though, and arrives in the ``Host`` header:
:class:`AccessGuard` answers only to the names the server serves (the loopback names, the
``--host`` address, the names given with ``--allow-host``), and on a wildcard bind to any IP
address (an address literal cannot be re-pointed). Websocket upgrades and state-changing
requests must also come from a page of that same origin (``Origin`` equal to ``Host``).

The ``Host`` port is not compared with the port the server listens on: the browser writes the
port it connected to, which differs from the server's behind ``ssh -L`` or ``docker -p``, and
no page can choose it; a page of another port is refused by the ``Origin`` check.

On a shared bind an access token is required as well (:func:`new_token`, printed by
``hmil view`` as Jupyter does): the first visit with ``?token=…`` sets an HttpOnly,
SameSite=Strict cookie (one per token, so two viewers on one machine keep theirs apart), and
requests with neither get a one-line 401. Health checks stay open so supervisors can probe.

Every rule is declared once below as data; :meth:`AccessPolicy.verdict` is pure (an ASGI scope
in, a :class:`Verdict` out) and :class:`AccessGuard` only applies it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

#: names that always reach this machine itself; a loopback bind answers to these only
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: ``--host`` values that bind every interface
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
#: methods that change nothing (Streamlit's uploads are PUT, its websocket an upgrade)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: answered without the token (still only for allowed hosts): liveness probes of supervisors
OPEN_PATHS = frozenset({"/_stcore/health", "/_stcore/script-health-check"})
TOKEN_PARAM = "token"
COOKIE_PREFIX = "hmil_view_"
#: URL-safe, so the printed address works as typed; long enough not to be guessed
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{12,256}$")
#: a DNS name as ``--allow-host`` takes it (IP addresses are checked with :mod:`ipaddress`)
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$"
)
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


@dataclass(frozen=True)
class Refusal:
    """An HTTP status and the one line of text that says why."""

    status: int
    text: str


REFUSALS = {
    "host": Refusal(
        403,
        "refused: this viewer answers only to its own address "
        "(the operator can add a name with `hmil view --allow-host NAME`)",
    ),
    "origin": Refusal(403, "refused: a page of another site cannot talk to this viewer"),
    "token": Refusal(
        401,
        "this viewer needs its access token: open the address that `hmil view` printed "
        "(it ends in ?token=...)",
    ),
}
REFUSAL_HEADERS = (
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)


@dataclass(frozen=True)
class Verdict:
    """What the guard does with one request: refuse it, or pass it on (and, when the token
    came in the query, set the cookie on the answer)."""

    refusal: Refusal | None = None
    set_cookie: bool = False


def is_wildcard(bind: str) -> bool:
    return bind.strip("[]") in WILDCARD_BINDS


def is_loopback(bind: str) -> bool:
    """Whether ``bind`` (a ``--host`` value) serves this machine only."""
    name = normal_name(bind)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normal_name(name: str) -> str:
    """A host name as compared here: lower case, no IPv6 brackets, no final dot."""
    return name.strip().strip("[]").lower().removesuffix(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def valid_host_name(name: str) -> bool:
    """Whether ``name`` can be an ``--allow-host`` value: a DNS name or an IP address (no
    port, no wildcard)."""
    normal = normal_name(name)
    return bool(normal) and (is_ip(normal) or HOST_NAME.match(normal) is not None)


def valid_token(token: str) -> bool:
    return TOKEN_PATTERN.match(token) is not None


def new_token() -> str:
    """A fresh random access token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header (or an origin's network location), or None
    when it is not one (user info, a path, a bad port)."""
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment or any(c.isspace() for c in value):
        return None
    return normal_name(name), port


@dataclass(frozen=True)
class AccessPolicy:
    """The names a viewer answers to, and its access token ("" = none).

    Attributes:
        names: allowed ``Host`` names (:func:`normal_name` form).
        any_ip: also allow any IP address as ``Host`` (a wildcard bind is reached by the
            machine's addresses, and an address cannot be re-pointed by a foreign site).
        token: required on every request but :data:`OPEN_PATHS` when not empty.
    """

    names: frozenset[str]
    any_ip: bool = False
    token: str = field(default="", repr=False)

    @classmethod
    def for_bind(cls, bind: str, allow_hosts: Iterable[str] = (), token: str = "") -> AccessPolicy:
        """The policy of a server bound to ``bind`` (``--host``), the operator's extra
        ``allow_hosts`` and ``token``."""
        names = set(LOOPBACK_NAMES) | {normal_name(h) for h in allow_hosts if h.strip()}
        if not is_wildcard(bind):
            names.add(normal_name(bind))
        return cls(frozenset(names), any_ip=is_wildcard(bind), token=token)

    @property
    def cookie_name(self) -> str:
        return COOKIE_PREFIX + self._digest()[:12]

    @property
    def cookie_value(self) -> str:
        """What the cookie holds: a digest of the token, not the token itself."""
        return self._digest()

    def _digest(self) -> str:
        return hashlib.sha256(b"hmil-view-token\0" + self.token.encode()).hexdigest()

    def host_allowed(self, host: str | None) -> bool:
        parsed = split_host(host) if host is not None else None
        if parsed is None:
            return False
        name = parsed[0]
        return name in self.names or (self.any_ip and is_ip(name))

    @staticmethod
    def same_origin(origin: str, host: str) -> bool:
        """Whether ``origin`` (``scheme://name[:port]``) is the origin of ``host``."""
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        default = DEFAULT_PORTS.get(parts.scheme)
        here, there = split_host(host), split_host(parts.netloc)
        if default is None or here is None or there is None or parts.path not in ("", "/"):
            return False
        return (here[0], here[1] or default) == (there[0], there[1] or default)

    def token_shown(self, cookie_header: str, query: str) -> tuple[bool, bool]:
        """``(allowed, from_query)``: whether the cookie or the ``token`` query parameter
        holds this policy's token, and whether it was the query."""
        expected = self.cookie_value.encode()
        for pair in cookie_header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == self.cookie_name and hmac.compare_digest(value.encode(), expected):
                return True, False
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == TOKEN_PARAM and hmac.compare_digest(
                value.encode("utf-8", "replace"), self.token.encode()
            ):
                return True, True
        return False, False

    def verdict(self, scope: Scope) -> Verdict:
        """The guard's decision on one ``http`` or ``websocket`` request."""
        headers = _headers(scope)
        hosts = headers.get("host", [])
        host = hosts[0] if len(hosts) == 1 else None
        if host is None or not self.host_allowed(host):
            return Verdict(REFUSALS["host"])
        changes = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        origins = headers.get("origin", [])
        if changes and origins and (len(origins) > 1 or not self.same_origin(origins[0], host)):
            return Verdict(REFUSALS["origin"])
        if not self.token or scope.get("path", "") in OPEN_PATHS:
            return Verdict()
        query = scope.get("query_string", b"").decode("latin-1")
        allowed, from_query = self.token_shown("; ".join(headers.get("cookie", [])), query)
        if not allowed:
            return Verdict(REFUSALS["token"])
        return Verdict(set_cookie=from_query)

    def set_cookie_header(self, scope: Scope) -> tuple[bytes, bytes]:
        secure = "; Secure" if scope.get("scheme") in ("https", "wss") else ""
        value = f"{self.cookie_name}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"
        return b"set-cookie", (value + secure).encode()


def _headers(scope: Scope) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in scope.get("headers", []):
        out.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


class AccessGuard:
    """ASGI middleware that applies an :class:`AccessPolicy` to every request, in front of the
    Streamlit pages, its websocket and the tile routes alike (pass it to ``st.App`` as
    ``middleware=[Middleware(AccessGuard, policy=...)]``)."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        verdict = self.policy.verdict(scope)
        if verdict.refusal is not None:
            await _refuse(scope, receive, send, verdict.refusal)
            return
        if verdict.set_cookie and scope["type"] == "http":
            cookie = self.policy.set_cookie_header(scope)

            async def send_with_cookie(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), cookie]}
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """Answer ``refusal`` as plain text; a websocket gets it as the handshake's HTTP answer
    where the server supports that (uvicorn does), else a policy-violation close."""
    body = refusal.text.encode() + b"\n"
    headers = [*REFUSAL_HEADERS, (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Token realm="hmil view"'))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # the websocket.connect message
    if "websocket.http.response" in scope.get("extensions", {}):
        start = {"type": "websocket.http.response.start", "status": refusal.status}
        await send({**start, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
