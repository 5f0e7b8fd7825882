"""An --on-down command that hangs: it ignores SIGTERM and leaves a child in its process group.

    python hang_command.py CHILD_PIDFILE

Both give up by themselves after 30 s, so a broken kill in the code under test cannot leave
them behind for long.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    Path(sys.argv[1]).write_text(str(child.pid))
    print("hanging", flush=True)
    time.sleep(30)
