"""Writing an evidence file so that no reader ever sees half of one.

Temp file in the same folder, then ``os.replace``: a probe reads the old record or the new
one, never a torn one. No ``fsync``: the files say something about the running process
only, so after a crash or a reboot the old contents are as stale as none; and this runs on
the worker's event loop every few seconds, where an ``fsync`` on a busy disk could stall
the very loop it reports on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(folder: Path, name: str, record: dict[str, Any]) -> None:
    """Write ``record`` as ``folder/name`` atomically (the temp file is named after this pid)."""
    path = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

