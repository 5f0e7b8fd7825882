"""Alert mail: one ``EmailMessage`` per recipient, sent by SMTP or by the local ``sendmail``.

Why one message per recipient: a refused address or a failed session then affects only
that recipient's queue in the state file, so a retry never mails the others twice.

Header safety: the ``email`` package (policy ``default``) refuses CR or LF in any header
value, the subject is made of fixed words and the validated ``--label``, and addresses
are validated when the command starts. Everything the verdict says (worker and queue
names, reasons) goes into the body only.

Every delivery is bounded: SMTP sockets get ``timeout`` and the whole session runs under
:func:`~celery_probe.net.bounded.call_within`; ``sendmail`` is run with an argument list
(never a shell) and a ``timeout``. The SMTP password comes from the environment and is
never printed: errors name the server and the SMTP reply only.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
import subprocess
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from celery_probe.alerting.channel import DeliveryError, Wording
from celery_probe.alerting.host import helo_name, mail_hostname
from celery_probe.alerting.state import Notification, parse_time
from celery_probe.alerting.template import render_body, severity_word
from celery_probe.net.bounded import BoundedCallError, call_within, describe
from celery_probe.config.urls import scrub

# Deliberately strict: what an operator types for an on-call address, nothing exotic.
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?$")


def address_problem(value: str) -> str | None:
    """Why ``value`` is not a plain ``user@domain`` address, or None."""
    if not value:
        return "is empty"
    if value.startswith("-"):
        return "starts with '-'"
    if len(value) > 254:
        return "is longer than 254 characters"
    if not _ADDRESS.match(value):
        return "is not a plain user@domain address"
    return None


@dataclass(frozen=True)
class MailTransport:
    """How mail leaves this machine: SMTP (``smtp_host``) or a sendmail program."""

    mail_from: str
    smtp_host: str | None = None
    smtp_port: int = 25
    starttls: bool = False
    implicit_tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sendmail: Path | None = None
    timeout: float = 10.0

    def describe(self) -> str:
        if self.sendmail is not None:
            return f"sendmail {self.sendmail}"
        return f"SMTP {self.smtp_host}:{self.smtp_port}"


def build_message(note: Notification, wording: Wording, *, mail_from: str, recipient: str) -> EmailMessage:
    """The mail for ``note``; its Message-ID is the same on every retry of this alert."""
    values = wording.values(note)
    message = EmailMessage()
    message["Subject"] = values["subject"]
    message["From"] = mail_from
    message["To"] = recipient
    moment = parse_time(note.created_at)
    if moment is not None:
        message["Date"] = format_datetime(moment)
    domain = mail_from.rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(f"{note.id}|{recipient}".encode()).hexdigest()[:24]
    message["Message-ID"] = f"<celery-probe.{digest}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
    message["X-Celery-Probe-Status"] = note.status
    message["X-Celery-Probe-Severity"] = severity_word(note)
    message.set_content(render_body(wording.templates, note, values))
    return message


def _smtp_send(message: EmailMessage, transport: MailTransport, recipient: str) -> None:
    context = ssl.create_default_context()
    local = mail_hostname()  # given, so smtplib does not call getfqdn() itself, unbounded
    smtp: smtplib.SMTP
    if transport.implicit_tls:
        smtp = smtplib.SMTP_SSL(transport.smtp_host or "", transport.smtp_port, local_hostname=local,
                                timeout=transport.timeout, context=context)
    else:
        smtp = smtplib.SMTP(transport.smtp_host or "", transport.smtp_port, local_hostname=local,
                            timeout=transport.timeout)
    with smtp:
        smtp.local_hostname = helo_name(str(smtp.sock.getsockname()[0]))
        smtp.ehlo()
        if transport.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if transport.user is not None:
            smtp.login(transport.user, transport.password or "")
        refused = smtp.send_message(message, from_addr=transport.mail_from, to_addrs=[recipient])
        if refused:
            code, reply = next(iter(refused.values()))
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})


def _sendmail_send(message: EmailMessage, transport: MailTransport, recipient: str) -> None:
    data = message.as_bytes(policy=message.policy.clone(linesep="\n"))
    command = [str(transport.sendmail), "-oi", "-f", transport.mail_from, "--", recipient]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=transport.timeout,
                              check=False, shell=False)
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"did not finish within {transport.timeout:g}s") from None
    except OSError as exc:
        raise DeliveryError(f"cannot run it ({exc.strerror or exc})") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout or b"").decode("utf-8", "replace").strip().splitlines()
        raise DeliveryError(f"exited {done.returncode}" + (f": {said[0][:200]}" if said else ""))


def _smtp_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (0, b""))
        return f"recipient refused ({code} {_reply(reply)})"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login refused ({exc.smtp_code} {_reply(exc.smtp_error)})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"server said {exc.smtp_code} {_reply(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"not supported by the server ({exc})"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "server closed the connection"
    return describe(exc)


def _reply(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:200]


@dataclass(frozen=True)
class EmailChannel:
    """One recipient, reached through ``transport``."""

    recipient: str
    transport: MailTransport
    wording: Wording
    secrets: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def id(self) -> str:
        return f"email:{self.recipient.lower()}"

    @property
    def display(self) -> str:
        return self.recipient

    def send(self, note: Notification) -> None:
        message = build_message(note, self.wording, mail_from=self.transport.mail_from, recipient=self.recipient)
        where = self.transport.describe()
        try:
            if self.transport.sendmail is not None:
                _sendmail_send(message, self.transport, self.recipient)
            else:
                # The socket timeout bounds each step; this bounds the whole session.
                call_within(lambda: _smtp_send(message, self.transport, self.recipient),
                            self.transport.timeout, "the SMTP session")
        except DeliveryError as exc:
            raise DeliveryError(scrub(f"{where}: {exc}", self.secrets)) from None
        except (smtplib.SMTPException, OSError, BoundedCallError, ValueError) as exc:
            raise DeliveryError(scrub(f"{where}: {_smtp_reason(exc)}", self.secrets)) from None
