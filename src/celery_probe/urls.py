"""Broker and backend URLs: validation and credential redaction.

A health checker must never become the thing that leaks the broker password, so every
string that leaves the process (report, verdict, log line, error message) can be passed
through :func:`scrub`, and every URL we print goes through :func:`redact_url` first.
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
    """The passwords carried by ``urls``, raw and percent-decoded, for :func:`scrub`."""
    found: set[str] = set()
    for value in urls:
        if not value:
            continue
        for url in split_urls(value):
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
    # A one-character "secret" would shred every message; the URL forms are still redacted.
    return {s for s in found if len(s) >= 2}


def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Return a copy of ``value`` (JSON-like) with URL passwords and known secrets masked."""
    ordered = sorted(set(secrets), key=len, reverse=True)

    def clean(obj: Any) -> Any:
        if isinstance(obj, str):
            text = redact_url(obj)
            for secret in ordered:
                if secret in text:
                    text = text.replace(secret, REDACTED)
            return text
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
