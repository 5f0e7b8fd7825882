"""This machine's name in alert mail: the fully qualified one, looked up within a bounded time.

Why the FQDN: a receiving server judges the EHLO name and the sender's domain, and a bare
``vm`` is no domain at all (RFC 5321 asks for a fully qualified name, or an address literal
when the host has none). Why bounded: :func:`socket.getfqdn` asks the resolver for a reverse
lookup, which can wait on an unreachable DNS server far longer than an alert may.
"""

from __future__ import annotations

import socket

from celery_probe.net.bounded import BoundedCallError, call_within

FQDN_WAIT = 2.0  # seconds for the resolver; past that the short name is used


def qualified(name: str | None) -> bool:
    """True for a dotted name that is not one of the ``localhost`` names."""
    if not name or "." not in name.strip("."):
        return False
    return not name.lower().startswith(("localhost", "ip6-localhost"))


def choose_hostname(short: str, fqdn: str | None) -> str:
    """``fqdn`` when it is qualified, else ``short`` if that is, else ``short`` as it is."""
    for name in (fqdn, short):
        if name is not None and qualified(name):
            return name.strip(".")
    return short or "localhost"


_found: list[str] = []  # the qualified name, once found: a long-lived serve asks only once


def mail_hostname() -> str:
    """The FQDN of this host, or its short name when no qualified one is known.

    A qualified answer is kept for the process; a failed or bare one is asked again at the
    next alert, so one slow resolver at start-up does not cost a long-running serve its name.
    """
    if _found:
        return _found[0]
    short = socket.gethostname() or "localhost"
    try:
        fqdn: str | None = call_within(lambda: socket.getfqdn(short), FQDN_WAIT, "the FQDN lookup")
    except (BoundedCallError, OSError):
        fqdn = None
    name = choose_hostname(short, fqdn)
    if qualified(name):
        _found.append(name)
    return name


def helo_name(local_address: str) -> str:
    """The EHLO name: the FQDN, or the address literal of ``local_address`` when there is none."""
    name = mail_hostname()
    if qualified(name):
        return name
    return f"[IPv6:{local_address}]" if ":" in local_address else f"[{local_address}]"
