"""``serve``'s credentials, read once at start-up from an environment variable or a file.

Never from the command line: a secret in argv is visible to every user of the host in
``ps`` and ``/proc/PID/cmdline``, and lands in shell histories and unit files. Each scheme
takes a variable name (``--auth-token-env``, ``--basic-auth-env``) or a file
(``--auth-token-file``, ``--basic-auth-file``, e.g. a Kubernetes or systemd credential), not
both. Surrounding whitespace (the newline an editor or ``echo`` leaves) is dropped.

A variable that is unset or empty, a file that cannot be read, is empty or holds something a
client could not send, is one line naming the option and the variable or file (never the
value), exit 64: ``serve`` does not start open when it was asked to be closed.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from celery_probe.errors import ProbeUsageError
from celery_probe.serve.auth import Credentials

MAX_SECRET_BYTES = 4096  # a token or USER:PASSWORD; more is the wrong file
# RFC 6750's b64token: what an `Authorization: Bearer` header can carry.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _read(what: str, env: str | None, path: Path | None, env_flag: str, file_flag: str) -> bytes | None:
    """The stripped secret from variable ``env`` or file ``path``; None when neither is given."""
    if env is not None and path is not None:
        raise ProbeUsageError(f"the {what} comes from {env_flag} or {file_flag}, not both")
    if env is not None:
        raw = os.environ.get(env)
        if raw is None:
            raise ProbeUsageError(f"cannot read the {what}: environment variable {env} is not set (from {env_flag})")
        try:
            value = raw.strip().encode("utf-8")
        except UnicodeError:
            raise ProbeUsageError(f"cannot read the {what}: environment variable {env} is not UTF-8 "
                                  f"(from {env_flag})") from None
        where = f"environment variable {env} (from {env_flag})"
    elif path is not None:
        value = _read_file(what, path, file_flag)
        where = f"{path} (from {file_flag})"
    else:
        return None
    if not value:
        raise ProbeUsageError(f"the {what} in {where} is empty")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProbeUsageError(f"the {what} in {where} is not UTF-8 text") from None
    return value


def _read_file(what: str, path: Path, flag: str) -> bytes:
    """At most :data:`MAX_SECRET_BYTES` of a regular file: a FIFO or a device never hangs the start."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ProbeUsageError(f"cannot read the {what} from {path}: not a regular file (from {flag})")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ProbeUsageError(f"cannot read the {what} from {path}: {exc.strerror or exc} (from {flag})") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ProbeUsageError(f"cannot read the {what} from {path}: over {MAX_SECRET_BYTES} bytes (from {flag})")
    return raw.strip()


def load_token(env: str | None, path: Path | None) -> bytes | None:
    token = _read("bearer token", env, path, "--auth-token-env", "--auth-token-file")
    if token is not None and not _TOKEN.fullmatch(token.decode()):
        where = f"environment variable {env}" if env is not None else str(path)
        raise ProbeUsageError(f"the bearer token in {where} has characters a Bearer header cannot carry "
                              "(letters, digits, -._~+/ and a trailing = only)")
    return token


def load_basic(env: str | None, path: Path | None) -> tuple[bytes, bytes] | None:
    raw = _read("basic credentials", env, path, "--basic-auth-env", "--basic-auth-file")
    if raw is None:
        return None
    user, colon, password = raw.partition(b":")
    if not colon or not user or not password:
        where = f"environment variable {env}" if env is not None else str(path)
        raise ProbeUsageError(f"the basic credentials in {where} must be USER:PASSWORD, both non-empty")
    if any(ch < 32 or ch == 127 for ch in raw):
        where = f"environment variable {env}" if env is not None else str(path)
        raise ProbeUsageError(f"the basic credentials in {where} contain a control character")
    return user, password


def load_credentials(*, token_env: str | None = None, token_file: Path | None = None,
                     basic_env: str | None = None, basic_file: Path | None = None) -> Credentials | None:
    """The credentials serve requires, or None when no option asks for any."""
    token = load_token(token_env, token_file)
    basic = load_basic(basic_env, basic_file)
    if token is None and basic is None:
        return None
    return Credentials.of(token=token, basic=basic)
