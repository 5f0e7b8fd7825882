"""Whether files read earlier are still the files on disk: their stamps (mtime, size) then and now.

A process that keeps what it imported (the resident runner, a warm session) is only as good
as the files it read: once one is replaced (an upgrade, an edited app or probe), what it
holds is no longer what a fresh process would run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

Stamp = tuple[int, int] | None  # (st_mtime_ns, st_size), None when the file is absent


def stamp(path: str) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def stamps(paths: Iterable[str]) -> dict[str, Stamp]:
    return {path: stamp(path) for path in paths}


def first_change(seen: Mapping[str, Stamp]) -> str | None:
    """The first of ``seen`` whose stamp is not what it was, as ``PATH changed``; None if none is."""
    for path, before in seen.items():
        if stamp(path) != before:
            return f"{path} changed"
    return None


def module_files(skip: Iterable[str] = ()) -> set[str]:
    """The files of every module imported so far, except those named in ``skip``."""
    skipped = set(skip)
    return {path for name, module in list(sys.modules.items())
            if name not in skipped and (path := getattr(module, "__file__", None))}
