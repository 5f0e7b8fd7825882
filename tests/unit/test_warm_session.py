"""The warm session's pure parts: which runs share one, and when its files say it is stale."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest

from celery_probe.run import metadata_memo, warm
from celery_probe.run.resident import WarmSession, room_for, warm_key


class TestWarmKey:
    def test_runs_with_the_same_command_line_environment_and_folder_share_a_session(self):
        run = {"op": "run", "id": 1, "argv": ["run"], "env": {"A": "1", "B": "2"}, "cwd": "/srv", "timeout": 5}
        again = {**run, "id": 2, "env": {"B": "2", "A": "1"}, "timeout": 9}
        assert warm_key(run) == warm_key(again)

    @pytest.mark.parametrize("change", [{"argv": ["run", "-v"]}, {"env": {"A": "1"}}, {"cwd": "/other"}])
    def test_any_other_difference_is_another_session(self, change):
        run = {"argv": ["run"], "env": {"A": "1", "B": "2"}, "cwd": "/srv"}
        assert warm_key(run) != warm_key({**run, **change})


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """An app module imported after the fork, its file written well before the preparation."""
    module_file = tmp_path / "warm_app.py"
    module_file.write_text("X = 1\n")
    old = time.time() - 60
    os.utime(module_file, (old, old))
    os.utime(tmp_path, (old, old))
    module = types.ModuleType("warm_app")
    module.__file__ = str(module_file)
    monkeypatch.setitem(sys.modules, "warm_app", module)
    monkeypatch.setattr(warm, "modules_before", frozenset(name for name in sys.modules if name != "warm_app"))
    monkeypatch.setattr(warm, "prepared_since", time.time_ns())
    monkeypatch.chdir(tmp_path)
    return module_file


class TestWatched:
    def test_unchanged_files_keep_the_session(self, prepared):
        watched = warm.Watched.now([])
        assert str(prepared) in watched.files
        assert watched.changed() is None

    def test_an_edited_module_ends_it(self, prepared):
        watched = warm.Watched.now([])
        prepared.write_text("X = 22\n")
        assert watched.changed() == f"{prepared} changed"

    def test_a_new_pyproject_here_ends_it(self, prepared, tmp_path):
        watched = warm.Watched.now([])
        (tmp_path / "pyproject.toml").write_text("[tool.celery-probe]\n")
        assert watched.changed() == f"{tmp_path / 'pyproject.toml'} changed"

    def test_a_new_probe_file_ends_it(self, prepared, tmp_path):
        probes = tmp_path / "probes"
        probes.mkdir()
        old = time.time() - 60
        os.utime(probes, (old, old))
        watched = warm.Watched.now([str(probes)])
        (probes / "probe_new.py").write_text("def probe_new(): pass\n")
        assert watched.changed() == f"{probes} changed"

    def test_a_file_written_during_the_preparation_makes_it_stale_at_once(self, prepared):
        os.utime(prepared, None)  # now: it may have been read before this write
        watched = warm.Watched.now([])
        assert watched.changed() == f"{prepared} changed while the session was prepared"

    def test_it_ends_after_its_max_age(self, prepared, monkeypatch):
        watched = warm.Watched.now([])
        monkeypatch.setattr(warm.time, "monotonic", lambda: watched.born + warm.MAX_AGE + 1)
        assert watched.changed() == f"prepared over {warm.MAX_AGE:g}s ago"


class TestMetadataMemo:
    def test_answers_are_kept_and_the_modules_holding_the_function_see_the_memo(self, monkeypatch):
        import importlib.metadata

        calls: list[str] = []

        def version(name: str) -> str:
            calls.append(name)
            return "1.2.3"

        def entry_points(**params: str) -> tuple[str, ...]:
            calls.append(f"eps {params}")
            return ("ep",)

        holder = types.ModuleType("holds_entry_points")
        holder.entry_points = entry_points  # as ``from importlib.metadata import entry_points`` leaves it
        monkeypatch.setitem(sys.modules, "holds_entry_points", holder)
        monkeypatch.setattr(importlib.metadata, "version", version)
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        metadata_memo.install()
        metadata_memo.install()  # idempotent
        assert importlib.metadata.version("redis") == importlib.metadata.version("redis") == "1.2.3"
        assert holder.entry_points(group="g") == importlib.metadata.entry_points(group="g") == ("ep",)
        importlib.metadata.entry_points()
        importlib.metadata.entry_points()  # no selection: a mutable answer, asked each time
        assert calls == ["redis", "eps {'group': 'g'}", "eps {}", "eps {}"]

    def test_an_error_is_not_kept(self, monkeypatch):
        import importlib.metadata

        answers = iter([importlib.metadata.PackageNotFoundError("x"), "2.0"])

        def version(name: str) -> str:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        monkeypatch.setattr(importlib.metadata, "version", version)
        metadata_memo.install()
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version("x")
        assert importlib.metadata.version("x") == "2.0"


class TestRoomForAnotherTarget:
    """Which warm session gives up its room when the resident runner is full (``room_for``)."""

    @staticmethod
    def session(key: str, *, asked_at: float, gap: float | None, busy: bool = False) -> WarmSession:
        session = WarmSession(key=key, pid=0, control=None, drains=[], asked_at=asked_at, gap=gap)  # type: ignore[arg-type]
        session.run = object() if busy else None  # type: ignore[assignment]
        return session

    def test_targets_on_their_schedule_keep_their_sessions(self):
        # Every 15 s each target asks; the least recently asked is 14 s ago, within two gaps.
        sessions = [self.session(f"t{n}", asked_at=100.0 - n, gap=15.0) for n in range(15)]
        assert room_for(sessions, now=100.0) is None

    def test_a_target_unasked_for_two_of_its_gaps_gives_up_its_room(self):
        kept = self.session("kept", asked_at=95.0, gap=15.0)
        left = self.session("left", asked_at=60.0, gap=15.0)  # 40 s > 2 x 15 s: left the targets file
        assert room_for([kept, left], now=100.0) is left

    def test_the_one_asked_for_longest_ago_goes_first(self):
        older = self.session("older", asked_at=10.0, gap=5.0)
        newer = self.session("newer", asked_at=50.0, gap=5.0)
        assert room_for([newer, older], now=100.0) is older

    def test_each_target_is_judged_by_its_own_gap(self):
        hourly = self.session("hourly", asked_at=100.0 - 3000, gap=3600.0)  # 50 min: its next run not due yet
        assert room_for([hourly], now=100.0) is None
        assert room_for([hourly], now=100.0 + 4300) is hourly

    def test_a_session_making_a_run_or_asked_once_only_is_kept(self):
        busy = self.session("busy", asked_at=0.0, gap=1.0, busy=True)
        once = self.session("once", asked_at=0.0, gap=None)  # no gap seen: the idle limit ends it
        assert room_for([busy, once], now=1000.0) is None
