"""Why a round trip did not come back, the pure part: the explanations from what was measured."""

from __future__ import annotations

from celery_probe.probing.worker_config import (
    WorkerConfig,
    backend_from_report,
    config_from_answers,
    prefetch_full,
    relative_file,
    same_backend,
    shown,
)


class TestPureLogic:
    """Reading the workers' answers and judging them, without a broker."""

    def test_backend_from_report_reads_the_results_line(self):
        text = "settings -> transport:redis results:redis://:********@127.0.0.1:38015/1\n\nbroker_url: 'x'"
        assert backend_from_report(text) == "redis://:********@127.0.0.1:38015/1"
        assert backend_from_report("settings -> transport:amqp results:disabled") == "disabled"
        assert backend_from_report("no such line") is None

    def test_same_backend_ignores_the_masked_password_and_default_db(self):
        assert same_backend("redis://:********@127.0.0.1:6379/1", "redis://:secret@127.0.0.1:6379/1")
        assert same_backend("redis://localhost:6379/", "redis://127.0.0.1/0")
        assert not same_backend("redis://:********@127.0.0.1:6379/1", "redis://:secret@127.0.0.1:6379/2")
        assert not same_backend("disabled", "redis://127.0.0.1/0")
        assert same_backend("db+sqlite:///results.sqlite", "db+sqlite:///results.sqlite")

    def test_shown_masks_the_password_as_everywhere(self):
        assert shown("redis://:********@127.0.0.1:6379/1") == "redis://:***@127.0.0.1:6379/1"
        assert shown("disabled") == "no result backend"

    def test_relative_file_only_for_relative_sqlite_paths(self):
        assert relative_file("db+sqlite:///results.sqlite") == "results.sqlite"
        assert relative_file("db+sqlite:///sub/r.db?timeout=3") == "sub/r.db"
        assert relative_file("db+sqlite:////var/lib/results.sqlite") is None
        assert relative_file("redis://127.0.0.1/0") is None

    def test_quorum_config_is_static_prefetch(self):
        config = config_from_answers({"ok": "results:disabled"},
                                     {"task_default_queue_type": "quorum", "worker_prefetch_multiplier": 1})
        assert config.static_prefetch and config.prefetch_multiplier == 1 and config.backend == "disabled"

    def test_prefetch_full_by_countdown_tasks_on_static_prefetch(self):
        config = WorkerConfig(prefetch_multiplier=1, static_prefetch=True)
        why = prefetch_full("q1@h", config, reserved=0, scheduled=2, active=0, concurrency=2, reported=4)
        assert why and "2 scheduled (countdown/eta)" in why and "prefetch of 2" in why
        assert "quorum" in why

    def test_global_qos_grows_with_eta_tasks(self):
        config = WorkerConfig(prefetch_multiplier=1, static_prefetch=False)
        assert prefetch_full("w", config, reserved=0, scheduled=2, active=0, concurrency=2, reported=4) is None
        assert prefetch_full("w", config, reserved=2, scheduled=2, active=0, concurrency=2, reported=4)

    def test_no_limit_without_a_multiplier(self):
        config = WorkerConfig(prefetch_multiplier=0, static_prefetch=True)
        assert prefetch_full("w", config, reserved=9, scheduled=9, active=0, concurrency=1, reported=1) is None
