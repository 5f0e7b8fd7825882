"""Broker and backend URLs: validation and credential redaction.

A health checker must never become the thing that leaks the broker password, so every
string that leaves the process (report, verdict, log line, error message) can be passed
through :func:`scrub`, and every URL we print goes through :func:`redact_url` first.

Only the password is masked, never what sits next to it: an operator reading
``amqp://guest:***@127.0.0.1:5672/orders`` must still see which user, host, port and
virtual host were probed, even when the password is ``127``, ``guest`` or ``orders``.
So :func:`scrub` masks a password by its position in a URL, and elsewhere (an error that
quotes it, a URL a library re-formatted) only where it stands as a token of its own: never
inside a URL's ``user@host:port``, never inside a longer name (``127`` in ``127.0.0.1``,
``6379`` in ``host:6379``). A password that *equals* a part the output shows anyway (the
user in ``guest:guest``, the host, the port, the virtual host or database) is masked in its
URL position only: masking its other occurrences would hide the user or the vhost while
hiding nothing, since the shown part spells the same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

REDACTED = "***"

# scheme://user:password@host  ->  scheme://user:***@host  (password may be empty user part too)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:password|passwd|pass|secret|token)=)(?P<value>[^&\s]*)", re.I)


def split_urls(value: str) -> list[str]:
    """Split kombu's failover form ``url1;url2`` into its URLs."""
    return [part.strip() for part in value.split(";") if part.strip()]


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names are kept)."""
    if "=" not in url and ("@" not in url or "://" not in url):
        return url  # neither pattern can match: the common case, for every string of a report
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", url)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def redact_bad_url(value: str) -> str:
    """How a value that failed URL validation is shown in its error message.

    It may not parse, so :func:`redact_url`'s pattern can miss the password (a space in
    it, ``redis//`` or no scheme at all). In each ``;``-separated part, everything between
    the first ``:`` of what precedes the last ``@`` and that ``@`` is masked, and with no
    ``:`` everything before the ``@`` is: the host and what follows stay, to be recognised.
    For error messages only: in ordinary text (``worker@host``) this would mask too much.
    """
    shown = []
    for part in redact_url(value).split(";"):
        head, at, tail = part.rpartition("@")
        if at:
            scheme = _SCHEME.match(head)
            start = scheme.end() if scheme else 0
            user, colon, _password = head[start:].partition(":")
            head = head[:start] + (f"{user}:{REDACTED}" if colon else REDACTED)
            part = f"{head}@{tail}"
        shown.append(part)
    return ";".join(shown)


def secrets_in(urls: Iterable[str | None]) -> set[str]:
    """The passwords carried by ``urls``, raw and percent-decoded, for :func:`scrub`.

    Left out: one-character passwords (masking every ``a`` would shred every message; the
    URL forms are still redacted) and passwords equal to a part of these URLs that output
    shows (:func:`shown_parts`), which :func:`redact_url` still masks in their URL position.
    """
    found: set[str] = set()
    shown: set[str] = set()
    for value in urls:
        if not value:
            continue
        for url in split_urls(value):
            shown |= shown_parts(url)
            for match in _USERINFO.finditer(url):
                if match["pw"]:
                    found.update({match["pw"], unquote(match["pw"])})
            try:
                query = urlsplit(url).query
            except ValueError:
                query = ""
            for key, val in parse_qsl(query):
                if key.lower() in {"password", "passwd", "pass", "secret", "token"} and val:
                    found.add(val)
    return {s for s in found if len(s) >= 2 and s not in shown}


def shown_parts(url: str) -> set[str]:
    """What output shows of ``url`` once its password is masked: user, host, port, path parts.

    Raw and percent-decoded; the path gives the RabbitMQ virtual host or the Redis database.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return set()
    raw = [parts.username or "", parts.hostname or "", str(port) if port is not None else "",
           parts.path.lstrip("/"), *parts.path.split("/")]
    return {form for piece in raw if piece for form in (piece, unquote(piece))}


# The user@host:port of a URL, where only redact_url masks (by position, not by text).
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<authority>[^/?#\s]*)")
# Characters that join two parts of one name: 127.0.0.1, my-host, worker@host.
_JOINERS = ".-@"


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _joined(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is part of a longer name rather than a token of its own.

    A neighbouring letter or digit joins; so does a joiner followed by one (``127`` in
    ``127.0.0.1``), and a ``:`` between a host and a port (``6379`` in ``host:6379``,
    ``localhost`` in ``localhost:6379``), but not ``password:secret``.
    """
    first, last = text[start], text[end - 1]
    if start > 0 and (_is_name_char(first) or first in _JOINERS):
        before = text[start - 1]
        if _is_name_char(before) or (before in _JOINERS and start > 1 and _is_name_char(text[start - 2])):
            return True
        if before == ":" and first.isdigit() and start > 1 and _is_name_char(text[start - 2]):
            return True
    if end < len(text) and (_is_name_char(last) or last in _JOINERS):
        after = text[end]
        following = text[end + 1] if end + 1 < len(text) else ""
        if _is_name_char(after) or (after in _JOINERS and _is_name_char(following)):
            return True
        if after == ":" and following.isdigit():
            return True
    return False


def _mask_tokens(text: str, ordered: list[str]) -> str:
    """``text`` with each stand-alone occurrence of a secret masked (longest secrets first)."""
    protected = [m.span("authority") for m in _AUTHORITY.finditer(text)]
    chosen: list[tuple[int, int]] = []
    for secret in ordered:
        start = text.find(secret)
        while start >= 0:
            end = start + len(secret)
            inside = any(lo <= start and end <= hi for lo, hi in protected)
            overlaps = any(start < hi and lo < end for lo, hi in chosen)
            if not inside and not overlaps and not _joined(text, start, end):
                chosen.append((start, end))
            start = text.find(secret, start + 1)
    if not chosen:
        return text
    out, cursor = [], 0
    for lo, hi in sorted(chosen):
        out += [text[cursor:lo], REDACTED]
        cursor = hi
    out.append(text[cursor:])
    return "".join(out)


def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Return a copy of ``value`` (JSON-like) with URL passwords and known secrets masked.

    URLs are redacted by component (:func:`redact_url`); a secret found elsewhere is masked
    only as a token of its own, never inside a URL's ``user@host:port`` or a longer name
    (see the module's docstring for why).
    """
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def clean(obj: Any) -> Any:
        if isinstance(obj, str):
            text = redact_url(obj)
            return _mask_tokens(text, ordered) if ordered and any(s in text for s in ordered) else text
        if isinstance(obj, dict):
            return {clean(k) if isinstance(k, str) else k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    return clean(value)


def url_problem(url: str, known_schemes: Iterable[str]) -> str | None:
    """Why ``url`` cannot be a broker/backend URL, or None when it looks usable.

    Checks only what can be checked without connecting: a scheme we know, a parsable
    host and a numeric port. Reachability is the probes' job.
    """
    schemes = {s.lower() for s in known_schemes}
    parts = split_urls(url)
    if not parts:
        return "is empty"
    for part in parts:
        if "://" not in part:
            return "has no scheme (expected something like redis://host:6379/0)"
        scheme = part.split("://", 1)[0].lower()
        base = scheme.split("+", 1)[0]
        if scheme not in schemes and base not in schemes:
            return f"has an unknown scheme {scheme!r}"
        if any(ch.isspace() for ch in part):
            return "contains white space"
        problem = _parse_problem(part)
        if problem:
            return problem
    return None


def _parse_problem(url: str) -> str | None:
    """Why ``urlsplit`` cannot take ``url`` apart (a bad port included), or None."""
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    return None


def http_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an http(s) address to call (a host, a numeric port), or None.

    Shared by the webhooks and Flower, whose URLs may carry credentials: callers show a
    failing value only through :func:`redact_bad_url` or their own display.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains white space or a control character"
    problem = _parse_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):  # urlsplit lowercases the scheme
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    return None
