"""Operators' own probes: same markers and fixtures, same deadline, their own codes."""

from __future__ import annotations

import pytest

from celery_probe.testing import CeleryWorker
from tests.support.environment import APPS, ROOT

EXAMPLE = ROOT / "docs" / "examples" / "test_task_registered.py"


@pytest.fixture(scope="module")
def env(module_target):
    return module_target.env()


@pytest.fixture(scope="module")
def worker(env):
    with CeleryWorker("probe_test_app", name="custom@%h", env=env, pythonpath=[APPS],
                      queues=[env["PROBE_TEST_DEFAULT_QUEUE"]]) as w:
        yield w


def run(cli, env, *probes, deadline="2", extra_env=None):
    args = ["run", "-A", "probe_test_app", "--deadline", deadline, "--format", "json"]
    for path in probes:
        args += ["--probes", str(path)]
    return cli(*args, env={**env, **(extra_env or {})})


class TestDocumentedExample:
    """The example in docs/examples passes, and fails with its own code when it should."""

    def test_passes_for_a_registered_task(self, worker, env, cli):
        result = run(cli, env, EXAMPLE, extra_env={"PROBE_REQUIRED_TASK": "probe_test.sleep"})
        assert result.code == 0, result.stdout
        assert result.verdict()["probes"]["passed"] >= 1

    def test_degraded_with_its_own_code(self, worker, env, cli):
        result = run(cli, env, EXAMPLE, extra_env={"PROBE_REQUIRED_TASK": "myapp.sync_chats"})
        assert result.code == 3
        reason = result.verdict()["reasons"][0]
        assert reason["code"] == "myapp_task_not_registered" and reason["severity"] == "degraded"
        assert reason["message"] == "myapp.sync_chats is not registered on custom@" + reason["message"].split("@")[-1]
        assert reason["probe"] == "test_task_registered.py::test_required_task_registered"


class TestMisbehavingProbes:
    """A broken or hanging custom probe cannot break the run or its deadline."""

    def test_probe_file_that_does_not_import_is_unknown(self, worker, env, cli, tmp_path):
        broken = tmp_path / "test_broken.py"
        broken.write_text("import no_such_module_anywhere\n")
        result = run(cli, env, broken)
        verdict = result.verdict()
        assert result.code == 4 and verdict["status"] == "unknown"
        assert verdict["reasons"][0]["code"] == "celery_probe_error"
        assert "no_such_module_anywhere" in verdict["reasons"][0]["message"]

    def test_hanging_probe_is_cut_at_the_deadline(self, worker, env, cli, tmp_path):
        hanging = tmp_path / "test_hangs.py"
        hanging.write_text(
            "import time, pytest\n"
            "@pytest.mark.probe(severity='degraded', code='myapp_slow_check')\n"
            "def test_sleeps():\n"
            "    time.sleep(60)\n"
        )
        result = run(cli, env, hanging)
        verdict = result.verdict()
        assert result.code == 3, verdict["reasons"]
        assert verdict["reasons"][0]["code"] == "myapp_slow_check"
        assert verdict["reasons"][0]["message"].startswith("timed out")
        assert result.elapsed < 2 + 1 + 0.6

    def test_bad_marker_is_a_usage_error(self, worker, env, cli, tmp_path):
        bad = tmp_path / "test_bad_marker.py"
        bad.write_text("import pytest\n@pytest.mark.probe(severity='urgent')\ndef test_x():\n    pass\n")
        result = run(cli, env, bad)
        assert result.code == 4
        assert "severity must be one of" in result.verdict()["reasons"][0]["message"]

    def test_probe_folder_with_its_own_conftest(self, worker, env, cli, tmp_path):
        folder = tmp_path / "ops_probes"
        folder.mkdir()
        (folder / "conftest.py").write_text(
            "import pytest\n@pytest.fixture\ndef threshold():\n    return 0\n"
        )
        (folder / "test_mine.py").write_text(
            "import pytest\n"
            "@pytest.mark.probe(severity='critical', code='myapp_thing_down')\n"
            "def test_thing(threshold, record):\n"
            "    record['thing'] = threshold\n"
            "    assert threshold > 0, 'the thing is off'\n"
        )
        result = run(cli, env, folder)
        assert result.code == 2
        assert result.verdict()["reasons"][0]["code"] == "myapp_thing_down"
