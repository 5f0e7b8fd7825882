"""Which process a pid is: its start time, so a reused pid is not taken for the process that died.

Imports nothing, because ``worker-check`` reads it on every probe.
"""


def process_start(pid: int | str = "self") -> int | None:
    """When process ``pid`` started, in clock ticks since boot, or None (no such process, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3, after "pid (comm)"
    except (OSError, IndexError, ValueError):
        return None
