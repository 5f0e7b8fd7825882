"""The CI gate: `run --junitxml` and `--fail-on`, on real healthy, degraded, down and unknown deployments."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from celery_probe.present.junit import finalize_junit
from celery_probe.testing import CeleryWorker, RedisServer
from tests.support.environment import APPS, ROOT, app_env

pytestmark = pytest.mark.redis_only  # private redis-servers; nothing here depends on --broker

DEADLINE = "3"
SLOW = "2.5"  # a loaded test machine must not turn a healthy round trip into celery_roundtrip_slow


@pytest.fixture(scope="module")
def deployment(module_redis):
    env = app_env(module_redis.url(0), module_redis.url(1))
    with CeleryWorker("probe_test_app", name="ci@%h", env=env, pythonpath=[APPS]) as worker:
        yield env, worker


def gate(cli, env, *extra: str):
    return cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--roundtrip-slow", SLOW, "--format", "json",
               *extra, env=env)


def suite_of(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()  # raises on invalid XML
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def properties(suite: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in suite.iter("property")}


class TestJUnitXml:
    def test_one_testcase_per_probe_named_for_the_target(self, deployment, cli, tmp_path):
        env, _worker = deployment
        junit = tmp_path / "out" / "probes.xml"
        result = gate(cli, env, "--expect-workers", "1", "--junitxml", str(junit))
        assert result.code == 0, result.stderr
        suite = suite_of(junit)
        assert suite.get("name") == "celery-probe app probe_test_app"
        report = __import__("json").loads((tmp_path / "reports" / "latest.json").read_text())
        cases = {f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")}
        assert len(cases) == len(report["tests"]) == int(suite.get("tests"))
        assert {n.split("::")[-1] for n in cases} == {t["nodeid"].split("::")[-1] for t in report["tests"]}
        assert suite.get("failures") == "0" and suite.get("errors") == "0"
        assert properties(suite)["celery_probe.status"] == "healthy"
        assert sorted(p.name for p in junit.parent.iterdir()) == ["probes.xml"]  # no temp file left

    def test_failures_name_the_failed_probe(self, deployment, cli, tmp_path):
        env, _worker = deployment
        junit = tmp_path / "probes.xml"
        result = gate(cli, env, "--expect-workers", "2", "--junitxml", str(junit))
        assert result.code == 3
        suite = suite_of(junit)
        failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase") if c.find("failure") is not None}
        assert list(failed) == ["test_expected_workers_answer"]
        assert "1 of 2" in failed["test_expected_workers_answer"].get("message", "") or failed[
            "test_expected_workers_answer"].text
        assert properties(suite)["celery_probe.status"] == "degraded"

    def test_no_password_in_the_file(self, cli, tmp_path):
        secret = "junit-s3cret-pw"
        with RedisServer(password=secret) as redis:
            wrong = f"redis://:wrong-{secret}@127.0.0.1:{redis.port}/1"
            env = app_env(redis.url(0), wrong)
            junit = tmp_path / "probes.xml"
            result = cli("run", "-b", redis.url(0), "--backend", wrong, "--deadline", DEADLINE,
                         "--junitxml", str(junit), env=env)
        assert result.code == 2  # no worker, backend refuses the password
        text = junit.read_text()
        assert secret not in text
        suite_of(junit)

    def test_scrubs_escaped_secrets_and_writes_a_file_when_pytest_wrote_none(self, tmp_path):
        junit = tmp_path / "j.xml"
        junit.write_text('<testsuites><testsuite name="x" tests="1"><testcase classname="a" name="b">'
                         '<failure message="redis://:p%26w@h/0 failed">auth p&amp;w failed</failure>'
                         "</testcase></testsuite></testsuites>")
        finalize_junit(junit, {"status": "down", "target": "redis://:***@h/0"}, {"p&w", "p%26w"})
        text = junit.read_text()
        assert "p&amp;w" not in text and "p%26w" not in text and "***" in text
        missing = tmp_path / "none.xml"
        finalize_junit(missing, {"status": "unknown", "reasons": [
            {"code": "celery_probe_error", "severity": "error", "message": "the probe session ended"}]})
        suite = suite_of(missing)
        assert suite.get("errors") == "1" and "celery_probe_error" in suite.find("testcase/error").get("message")

    def test_unwritable_folder_is_73_before_probing(self, cli, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--junitxml", str(blocker / "j.xml"))
        assert result.code == 73 and "--junitxml" in result.stderr and result.stderr.count("\n") == 1
        assert not (tmp_path / "reports").exists()

    @pytest.mark.parametrize(("mistake", "code"), [
        (("--fail-on", "sometimes"), 64),  # click's own check
        (("--deadline", "soon"), 64),  # a setting's
        (("--fail-on", "sometimes", "--format", "nagios"), 3),  # Nagios's UNKNOWN, same file
    ])
    def test_usage_error_still_writes_the_file(self, cli, tmp_path, mistake, code):
        """A run that cannot start is a failed CI job with a message, not "no test results"."""
        junit = tmp_path / "j.xml"
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--junitxml", str(junit), *mistake)
        assert result.code == code and result.stderr.count("\n") == 1, result.stderr
        error_line = result.stderr.strip().removeprefix("celery-probe: error: ")
        suite = suite_of(junit)
        assert suite.get("tests") == "1" and suite.get("errors") == "1" and suite.get("failures") == "0"
        (case,) = suite.findall("testcase")
        message = case.find("error").get("message")
        assert message == f"the run could not start: {error_line}" and mistake[1] in message
        assert properties(suite) == {"celery_probe.status": "not started"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["j.xml"]  # no temp file, no reports

    def test_usage_error_leaves_an_unusable_path_alone(self, cli, tmp_path):
        folder = tmp_path / "a-folder"
        folder.mkdir()
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--fail-on", "sometimes", "--junitxml=" + str(folder))
        assert result.code == 64 and result.stderr.count("\n") == 1, result.stderr
        assert list(folder.iterdir()) == []
        blocker = tmp_path / "file"
        blocker.write_text("")
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--fail-on", "sometimes", "--junitxml", str(blocker / "j.xml"))
        assert result.code == 64 and result.stderr.count("\n") == 1, result.stderr
        assert blocker.read_text() == ""

    def test_usage_error_creates_the_folder_as_the_option_does(self, cli, tmp_path):
        junit = tmp_path / "new" / "j.xml"
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--fail-on", "sometimes", "--junitxml", str(junit))
        assert result.code == 64 and suite_of(junit).get("errors") == "1"


class TestFailOn:
    """Exit codes: healthy 0, degraded 3 (0 with --fail-on down), down 2, unknown 4, whatever the gate."""

    def test_healthy_passes_every_gate(self, deployment, cli):
        env, _worker = deployment
        for extra in ((), ("--fail-on", "degraded"), ("--fail-on", "down")):
            result = gate(cli, env, "--expect-workers", "1", *extra)
            assert result.code == 0 and result.verdict()["status"] == "healthy", extra

    def test_degraded(self, deployment, cli):
        env, _worker = deployment
        expect = ("--expect-workers", "2")  # one worker answers: celery_workers_missing, degraded
        assert gate(cli, env, *expect).code == 3
        assert gate(cli, env, *expect, "--fail-on", "degraded").code == 3
        passed = gate(cli, env, *expect, "--fail-on", "DOWN")
        assert passed.code == 0 and passed.verdict()["status"] == "degraded"
        nagios = cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, *expect, "--format", "nagios",
                     "--fail-on", "down", env=env)
        assert nagios.code == 0 and nagios.stdout.startswith("CELERY WARNING")

    def test_down_fails_every_gate(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))  # no worker at all
        for extra in ((), ("--fail-on", "degraded"), ("--fail-on", "down")):
            result = gate(cli, env, *extra)
            assert result.code == 2 and result.verdict()["status"] == "down", extra

    def test_unknown_fails_every_gate(self, deployment, cli, tmp_path):
        env, _worker = deployment
        broken = tmp_path / "probes" / "test_broken.py"
        broken.parent.mkdir()
        broken.write_text("import a_module_that_does_not_exist\n")
        junit = tmp_path / "j.xml"
        for extra in (("--fail-on", "degraded"), ("--fail-on", "down")):
            result = gate(cli, env, "--expect-workers", "1", "--probes", str(broken), "--junitxml", str(junit), *extra)
            assert result.code == 4 and result.verdict()["status"] == "unknown", extra
        assert int(suite_of(junit).get("errors")) >= 1

    def test_bad_value_is_one_line_and_64(self, cli):
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--fail-on", "sometimes")
        assert result.code == 64 and "--fail-on" in result.stderr and result.stderr.count("\n") == 1


class TestSeveralTargets:
    def test_targets_run_writes_labelled_outputs_and_gates_on_the_overall_status(self, deployment, cli, tmp_path):
        from tests.support.serving import textfile_samples

        env, _worker = deployment
        with RedisServer() as empty:  # no worker: this target is down
            targets = tmp_path / "targets.toml"
            targets.write_text(
                f'[defaults]\ndeadline = {DEADLINE}\nroundtrip-slow = {SLOW}\n'
                f'[targets.main]\nbroker = "{env["PROBE_TEST_BROKER"]}"\nbackend = "{env["PROBE_TEST_BACKEND"]}"\n'
                f'expect-workers = 1\n[targets.reports]\nbroker = "{empty.url(0)}"\nbackend = "{empty.url(1)}"\n')
            junit, prom = tmp_path / "j.xml", tmp_path / "celery.prom"
            result = cli("run", "--targets", str(targets), "--format", "json", "--fail-on", "down",
                         "--junitxml", str(junit), "--prom-file", str(prom), env=env)
        assert result.code == 2 and result.verdict()["status"] == "down"
        suite = suite_of(junit)
        assert suite.get("name") == "celery-probe targets main, reports"
        assert properties(suite)["celery_probe.status"] == "down"
        samples = textfile_samples(prom.read_text(), "celery")
        assert samples[("celery_probe_target_status", (("status", "healthy"), ("target", "main")))] == 1
        assert samples[("celery_probe_target_status", (("status", "down"), ("target", "reports")))] == 1
        assert samples[("celery_probe_queue_consumers", (("queue", "celery"), ("target", "main")))] == 1


class TestWorkflowExample:
    def test_github_actions_example_runs_the_gate(self):
        """The documented workflow keeps its essentials (no YAML parser among the dependencies)."""
        text = (ROOT / "docs" / "ci" / "github-actions.yml").read_text()
        assert "\t" not in text
        for needle in ("services:", "image: redis:", "celery-probe run", "--fail-on degraded",
                       "--junitxml", "actions/upload-artifact@", "if: always()"):
            assert needle in text, needle
