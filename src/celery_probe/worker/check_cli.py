"""``celery-probe worker-check DIR --liveness|--readiness [--max-age S] [--max-busy S]``, fast.

A Kubernetes exec probe starts this as a fresh process every few seconds in every worker pod,
so it does the least that answers: the standard library, one small file read and the pure
:mod:`~celery_probe.worker.judge`. It imports neither Celery, kombu, click nor the app, and
never touches the broker. ``celery_probe.cli.entry`` sends ``worker-check`` here before
anything else is imported; ``celery-probe worker-check --help`` goes through click
(:mod:`celery_probe.cli.worker_check`), which documents the same options.
"""

from __future__ import annotations

import json
import os
import sys
import time

from celery_probe.worker.evidence import FILES, LIVENESS, READINESS
from celery_probe.worker.judge import EXIT_NO_EVIDENCE, EXIT_USAGE, Judgement, judge
from celery_probe.worker.proc import process_start

TYPE_CHECKING = False  # no typing, collections or dataclasses at run time (dataclasses imports inspect)
if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_EVIDENCE_BYTES = 1_000_000  # ours are a few hundred bytes; a larger file is not ours


class UsageError(ValueError):
    """A bad command line (its message is the one line to print)."""


class CheckArgs:
    """The parsed command line: one folder, one kind, the optional limits in seconds."""

    __slots__ = ("folder", "kind", "max_age", "max_busy")

    def __init__(self, folder: str, kind: str, max_age: float | None = None, max_busy: float | None = None) -> None:
        self.folder, self.kind, self.max_age, self.max_busy = folder, kind, max_age, max_busy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckArgs) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return f"CheckArgs({self.folder!r}, {self.kind!r}, {self.max_age!r}, {self.max_busy!r})"


def _duration(option: str, raw: str) -> float:
    """Seconds: a plain number at once, anything else through the one duration parser (it needs
    ``re``, which this probe otherwise never imports)."""
    try:
        seconds = float(raw)
    except ValueError:
        from celery_probe.config.durations import parse_duration

        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise UsageError(f"{option} {raw!r}: {exc}") from None
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{option} {raw!r}: must be a finite number of seconds above 0")
    return seconds


def parse_args(argv: Sequence[str]) -> CheckArgs:
    """The arguments after ``worker-check`` (pure; :class:`UsageError` says what is wrong)."""
    folder: str | None = None
    kinds: list[str] = []
    values: dict[str, float] = {}
    args = list(argv)
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if arg in ("--liveness", "--readiness"):
            kinds.append(arg[2:])
            continue
        option, equals, value = arg.partition("=")
        if option in ("--max-age", "--max-busy"):
            if not equals:
                if position >= len(args):
                    raise UsageError(f"{option} needs a value (seconds, or a duration like 90s or 5m)")
                value = args[position]
                position += 1
            values[option] = _duration(option, value)
            continue
        if arg == "--":
            rest = args[position:]
            position = len(args)
            arg = rest[0] if len(rest) == 1 else ""
            if len(rest) != 1:
                raise UsageError("give exactly one folder after --")
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"no such option: {arg}")
        if folder is not None:
            raise UsageError(f"got an extra argument {arg!r} (one folder only)")
        folder = arg
    if folder is None or not folder:
        raise UsageError("missing argument DIR (the worker's --probe-dir folder)")
    if len(set(kinds)) != 1:
        raise UsageError("give exactly one of --liveness or --readiness")
    return CheckArgs(folder, kinds[0], values.get("--max-age"), values.get("--max-busy"))


def read_record(folder: str, kind: str) -> tuple[object, Judgement | None]:
    """The parsed file of ``kind`` in ``folder``, or the judgement that there is none to judge."""
    path = os.path.join(folder, FILES[kind])
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_EVIDENCE_BYTES + 1)
    except FileNotFoundError:
        return None, Judgement(EXIT_NO_EVIDENCE, f"{kind}: no evidence yet: {path} does not exist "
                                                 "(worker not started, or started without --probe-dir)")
    except OSError as exc:
        return None, Judgement(EXIT_NO_EVIDENCE, f"{kind}: cannot read {path}: {exc.strerror or exc}")
    if len(data) > MAX_EVIDENCE_BYTES:
        return None, Judgement(EXIT_NO_EVIDENCE, f"{kind}: {path} is over {MAX_EVIDENCE_BYTES} bytes, "
                                                 "not an evidence file")
    try:
        return json.loads(data), None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both
        return None, Judgement(EXIT_NO_EVIDENCE, f"{kind}: {path} is not valid JSON ({exc})")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists here (signal 0 sends nothing; EPERM means it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def run_check(args: CheckArgs, now: float | None = None) -> Judgement:
    if not os.path.isdir(args.folder):
        return Judgement(EXIT_USAGE, f"{args.kind}: no such folder: {args.folder} "
                                     "(the worker's --probe-dir / CELERY_PROBE_WORKER_DIR)")
    record, problem = read_record(args.folder, args.kind)
    if problem is not None:
        return problem
    return judge(record, args.kind, now=time.time() if now is None else now,
                 max_age=args.max_age, max_busy=args.max_busy, pid_alive=pid_alive, started=process_start)


def main(argv: Sequence[str]) -> int:
    """Run one check and print its line (stdout when it holds, stderr when not); the exit code."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"celery-probe worker-check: error: {exc} (see 'celery-probe worker-check --help')",
              file=sys.stderr)
        return EXIT_USAGE
    result = run_check(args)
    print(result.line, file=sys.stdout if result.ok else sys.stderr)
    return result.code


__all__ = ["LIVENESS", "READINESS", "CheckArgs", "UsageError", "main", "parse_args", "run_check"]
