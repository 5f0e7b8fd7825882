"""probe_test_app, but its workers take SLOW_STATS_SECONDS to answer ``inspect stats``.

The other remote-control answers (ping, active, active_queues...) come at once: a worker
that owes one slow answer, as a worker with a huge pool or a stuck stats call would.
"""

import os
import time

from celery.worker import control

from probe_test_app import app

_stats = control.Panel.data["stats"]


@control.inspect_command()
def stats(state, **kwargs):
    time.sleep(float(os.environ.get("SLOW_STATS_SECONDS", "3")))
    return _stats(state, **kwargs)


__all__ = ["app"]
