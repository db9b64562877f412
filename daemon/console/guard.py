"""The console's checks on what a browser sends: the Host it asked for, the token it gives,
and where a redirect may go.

- Host: a page of another site can make an operator's browser fetch the console under a name
  that resolves to it (DNS rebinding) and read the answers as its own origin's. The console
  answers only the names it is known by (`RLR_CONSOLE_HOSTS`; by default the loopback names,
  the address it binds and the machine's name), anything else gets 421 and one line saying
  which setting to change.
- Token: compared as bytes in constant time; a token with characters a header cannot carry is
  simply wrong (401), never an exception.
- Redirects: only to a path on this console (`/x`), never `//host`, a scheme, or backslashes
  that a browser reads as slashes.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def allowed_hosts(setting: str | None, bind_host: str) -> frozenset[str] | None:
    """The Host names the console answers (lowercase, no port); None when any is allowed
    (`RLR_CONSOLE_HOSTS=*`)."""
    if setting is not None and setting.strip():
        given = [n.strip().lower() for n in setting.split(",") if n.strip()]
        return None if "*" in given else frozenset(given)
    names = [*LOOPBACK, bind_host.lower()]
    with contextlib.suppress(OSError):  # no name configured: the others still work
        names.append(socket.gethostname().lower())
    return frozenset(n for n in names if n)


def host_name(header: str | None) -> str | None:
    """The name in a Host header, lowercase and without its port (`[::1]:8780` -> `::1`);
    None when there is none or it does not parse."""
    if not header:
        return None
    try:
        return urlsplit(f"//{header}").hostname
    except ValueError:
        return None


def host_refused(header: str | None, allowed: Iterable[str] | None) -> tuple[int, str] | None:
    """(status, message) when a request for Host `header` must be refused, else None."""
    if allowed is None:
        return None
    name = host_name(header)
    if name is None:
        return 400, "a request to this console needs a Host header"
    if name in allowed:
        return None
    return 421, (f"this console does not answer to the name {name!r}: open it as "
                 f"{sorted(allowed)[0]}, or add the name to RLR_CONSOLE_HOSTS")


def same_token(given: str | None, token: str | None) -> bool:
    """Whether `given` is the operator token: bytes compared in constant time (a str with
    characters outside ASCII is refused by `hmac.compare_digest`, bytes are not)."""
    if not given or not token:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               token.encode("utf-8", "surrogateescape"))


def local_path(path: str) -> str:
    """`path` when it is a path on this console, else "/": `//evil.example/x`, `/\\evil`,
    `http:...` would send the browser elsewhere."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or \
            any(ord(c) < 0x20 for c in path):
        return "/"
    parts = urlsplit(path)
    return path if not parts.scheme and not parts.netloc else "/"
