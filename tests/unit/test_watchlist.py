"""Without -Q, which queues are watched: every form task_routes takes, read without a broker."""

from __future__ import annotations

import re

from kombu import Queue

from celery_probe.probing.watchlist import configured_watch_list, routed_queues


class TestRouteForms:
    """Every form of task_routes Celery accepts gives up its queue names (a pure function)."""

    def test_forms(self):
        routes = (
            {"a.add": {"queue": "math"}, "b.*": "glob", re.compile(r"c\..*"): {"queue": Queue("regex")}},
            [("d.*", {"queue": "pairs"}), (re.compile("e"), "pair-name")],
            {"f.x": {"exchange": "fx", "routing_key": "k"}},
            "proj.routers.route_task",
            lambda name, *a, **k: None,
        )
        names, unlisted = routed_queues(routes)
        assert names == ["math", "glob", "regex", "pairs", "pair-name"]
        assert len(unlisted) == 3
        assert "'f.x'" in unlisted[0] and "exchange" in unlisted[0]
        assert unlisted[1] == "router 'proj.routers.route_task'"
        assert "<lambda>" in unlisted[2]

    def test_single_dict_and_none(self):
        assert routed_queues({"x": "q"}) == (["q"], [])
        assert routed_queues(None) == ([], [])

    def test_default_queue_is_required_only_without_task_queues(self):
        from celery import Celery

        app = Celery(set_as_current=False)
        assert configured_watch_list(app.conf).required == {"celery"}
        app.conf.task_queues = [Queue("a"), Queue("b", routing_key="y")]
        watch = configured_watch_list(app.conf)
        assert watch.names == ["a", "b", "celery"] and watch.required == {"a", "b"}
        assert configured_watch_list(app.conf, ["x"]).names == ["x"]

    def test_guessed_default_is_dropped_only_when_workers_consume_others(self):
        from celery import Celery

        conf = Celery(set_as_current=False).conf
        watch = configured_watch_list(conf, guess_default=True)
        assert watch.guessed == "celery" and watch.required == {"celery"}
        watch.settle_guess([])  # no worker answered: the guess stands
        assert watch.required == {"celery"}
        watch.settle_guess(["celery", "math"])
        assert watch.required == {"celery"}
        watch.settle_guess(["math"])
        assert watch.required == set()
        assert configured_watch_list(conf).guessed is None  # an app's own default is no guess
        assert configured_watch_list(conf, ["celery"], guess_default=True).guessed is None  # -Q
