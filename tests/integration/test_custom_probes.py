"""Operators' own probes: same markers and fixtures, same deadline, their own codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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


def write_probe(folder, name, body):
    path = folder / name
    path.write_text("import time, pytest\n" + body)
    return path


SLEEPS = (
    "@pytest.mark.probe(severity='degraded', code='myapp_slow_check')\n"
    "{marker}"
    "def test_sleeps():\n"
    "    time.sleep(10)\n"
)


class TestPerProbeTimeouts:
    """pytest-timeout's marker, --timeout and ini value bound one probe, never past the deadline."""

    def reason(self, result, probe="test_sleeps"):
        return next(r for r in result.verdict()["reasons"] if r["probe"].endswith(probe))

    def test_marker_cuts_the_probe_with_its_own_code(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_slow.py", SLEEPS.format(marker="@pytest.mark.timeout(1)\n") + (
            "@pytest.mark.probe(severity='critical', code='myapp_body_slow')\n"
            "@pytest.mark.timeout(1, func_only=True)\n"
            "def test_body_sleeps():\n"
            "    time.sleep(10)\n"
        ))
        result = run(cli, env, probe, deadline="8")
        verdict = result.verdict()
        # Two probes of 1 s each and the process start-up, far from the 8 s deadline.
        assert result.elapsed < 2 + 2.5, result.elapsed
        assert result.code == 2 and verdict["status"] == "down", verdict["reasons"]
        assert self.reason(result) == {
            "code": "celery_probe_timeout", "severity": "degraded",
            "probe": "test_slow.py::test_sleeps",
            "message": "probe exceeded its 1 s timeout (from its timeout marker)",
        }
        body = self.reason(result, "test_body_sleeps")
        assert body["code"] == "celery_probe_timeout" and body["severity"] == "critical"
        assert verdict["probes"]["passed"] >= 3  # the built-in probes ran as usual

    def test_marker_beyond_the_deadline_is_cut_by_the_deadline(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_slow.py", SLEEPS.format(marker="@pytest.mark.timeout(30)\n"))
        result = run(cli, env, probe, deadline="2")
        reason = self.reason(result)
        assert result.code == 3, result.verdict()["reasons"]
        assert reason["code"] == "myapp_slow_check" and reason["message"].startswith("timed out: deadline reached")
        assert result.elapsed < 2 + 1 + 0.6, result.elapsed

    def test_run_wide_timeout_and_its_source(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_slow.py", SLEEPS.format(marker=""))
        flag = cli("run", "-A", "probe_test_app", "--deadline", "8", "--format", "json", "--probes", str(probe),
                   "--timeout", "1", env=env)
        assert flag.elapsed < 1 + 2.5, flag.elapsed
        assert self.reason(flag)["message"] == "probe exceeded its 1 s timeout (from --timeout)"
        assert self.reason(flag)["code"] == "celery_probe_timeout"
        assert flag.verdict()["probes"]["failed"] == 1  # the built-in probes are well within 1 s
        variable = run(cli, env, probe, deadline="8", extra_env={"CELERY_PROBE_TIMEOUT": "0.5"})
        assert self.reason(variable)["message"] == (
            "probe exceeded its 0.5 s timeout (from environment variable CELERY_PROBE_TIMEOUT)")

    def test_marker_wins_over_the_run_wide_timeout(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_slow.py", SLEEPS.format(marker="@pytest.mark.timeout(0.5)\n"))
        result = run(cli, env, probe, deadline="8", extra_env={"CELERY_PROBE_TIMEOUT": "30"})
        assert self.reason(result)["message"] == "probe exceeded its 0.5 s timeout (from its timeout marker)"

    def test_operators_pytest_timeout_variable_does_not_leak(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_quick.py", (
            "@pytest.mark.probe(severity='degraded', code='myapp_quick')\n"
            "def test_quick():\n"
            "    time.sleep(0.3)\n"
        ))
        result = run(cli, env, probe, deadline="5", extra_env={"PYTEST_TIMEOUT": "0.1"})
        assert result.code == 0, result.verdict()["reasons"]

    def test_ini_value_in_a_pytest_session(self, worker, env, tmp_path):
        probe = write_probe(tmp_path, "test_slow.py", SLEEPS.format(marker=""))
        (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 1\n")
        reports = tmp_path / "r"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", str(probe), "--celery-app", "probe_test_app", "--probe-deadline", "8",
             "--probe-report-dir", str(reports), "-p", "no:cacheprovider", "-q"],
            cwd=tmp_path, env={**os.environ, **env, "PYTHONPATH": str(APPS)}, capture_output=True, text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
        assert "celery-probe verdict: degraded" in proc.stdout, proc.stdout + proc.stderr
        reason = json.loads((reports / "verdict.json").read_text())["reasons"][0]
        assert reason["code"] == "celery_probe_timeout"
        assert reason["message"] == "probe exceeded its 1 s timeout (from the timeout ini value)"
        assert elapsed < 8, elapsed

    def test_invalid_timeout_marker_fails_that_probe_alone(self, worker, env, cli, tmp_path):
        probe = write_probe(tmp_path, "test_bad_timeout.py", (
            "@pytest.mark.probe(severity='critical', code='myapp_thing')\n"
            "@pytest.mark.timeout('soon')\n"
            "def test_thing():\n"
            "    pass\n"
        ))
        result = run(cli, env, probe)
        verdict = result.verdict()
        assert result.code == 4 and verdict["status"] == "unknown", verdict["reasons"]
        assert verdict["reasons"] == [{
            "code": "celery_probe_error", "severity": "error", "probe": "test_bad_timeout.py::test_thing",
            "message": "setup: invalid timeout marker: timeout must be a number of seconds, not 'soon'",
        }]
        assert verdict["probes"]["passed"] >= 3  # the session went on
