"""Operator mistakes: one line on stderr, the documented exit code, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.support.environment import run_cli


def assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("celery-probe: error: ")
    for word in words:
        assert word in lines[0], lines[0]


class TestUsageErrors:
    """Usage and configuration errors exit 64 (EX_USAGE), never 2 (down)."""

    @pytest.mark.parametrize("args, words", [
        (["-A", "no_such_module_xyz"], ["no_such_module_xyz", "-A/--app", "ModuleNotFoundError"]),
        (["-A", "probe_test_app:nothing_here"], ["nothing_here", "-A/--app"]),
        (["-A", "probe_test_app.nothing_here"], ["'probe_test_app' has no attribute or submodule 'nothing_here'"]),
        (["-A", "no_such_package_xyz.celery:app"], ["no module named 'no_such_package_xyz'"]),
        (["-A", "proj celery"], ["is not a MODULE[:ATTRIBUTE] path"]),
        (["-A", "json:loads"], ["not a Celery app"]),
        (["-b", "redis://localhost:notaport/0"], ["--broker", "cannot be parsed"]),
        (["-b", "bogus://x"], ["unknown scheme 'bogus'"]),
        (["-b", "redis://localhost/0", "--deadline", "abc"], ["--deadline", "'abc'", "not a number"]),
        (["-b", "redis://localhost/0", "--expect-workers", "-1"], ["--expect-workers"]),
        (["-b", "redis://localhost/0", "--timeout", "soon"], ["invalid timeout 'soon'", "not a number", "--timeout"]),
        (["-b", "redis://localhost/0", "--timeout", "-1"], ["invalid timeout '-1'", "between 0 and 86400", "--timeout"]),
        (["-b", "redis://localhost/0", "--format", "yaml"], ["--format", "yaml"]),
        (["-b", "redis://localhost/0", "--probes", "/no/such/probes.py"], ["--probes", "does not exist"]),
        (["--no-such-option"], ["No such option"]),
        ([], ["no target"]),
    ])
    def test_run(self, args, words, tmp_path):
        assert_one_line_error(run_cli("run", *args, cwd=tmp_path), 64, *words)

    def test_env_source_is_named(self, tmp_path):
        result = run_cli("run", "-b", "redis://localhost/0", env={"CELERY_PROBE_DEADLINE": "later"}, cwd=tmp_path)
        assert_one_line_error(result, 64, "environment variable CELERY_PROBE_DEADLINE")

    def test_timeout_from_the_environment_is_named(self, tmp_path):
        result = run_cli("run", "-b", "redis://localhost/0", env={"CELERY_PROBE_TIMEOUT": "inf"}, cwd=tmp_path)
        assert_one_line_error(result, 64, "invalid timeout 'inf'", "environment variable CELERY_PROBE_TIMEOUT")

    def test_pyproject_source_is_named(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text('[tool.celery-probe]\nbroker = "redis://x/0"\nping-window = "x"\n')
        assert_one_line_error(run_cli("run", cwd=tmp_path), 64, "pyproject.toml", "ping-window")

    def test_unwritable_report_dir_exits_73(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        result = run_cli("run", "-b", "redis://localhost/0", "--report-dir", str(blocker / "sub"), cwd=tmp_path)
        assert_one_line_error(result, 73, "cannot write reports to", str(blocker / "sub"))


class TestVerdictCommand:
    """`celery-probe verdict` on a missing, empty, truncated or foreign report: unknown, exit 4."""

    @pytest.mark.parametrize("content, words", [
        (None, "cannot read report"),
        ("", "is empty"),
        ('{"created": 1, "tests": [', "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ('{"hello": "world"}', "no list of tests"),
        ('{"tests": []}', "no probe ran"),
        ("\x00\xff garbage", "not valid JSON"),
    ])
    def test_unusable_report(self, tmp_path, content, words):
        path = tmp_path / "report.json"
        if content is not None:
            path.write_text(content, errors="surrogateescape")
        result = run_cli("verdict", str(path), "--format", "json", cwd=tmp_path)
        assert result.code == 4, result.stderr
        verdict = json.loads(result.stdout)
        assert verdict["status"] == "unknown"
        assert any(words in r["message"] for r in verdict["reasons"]), verdict["reasons"]
        assert "Traceback" not in result.stderr

    def test_nagios_unknown_is_3(self, tmp_path):
        result = run_cli("verdict", str(tmp_path / "missing.json"), "--format", "nagios", cwd=tmp_path)
        assert result.code == 3 and result.stdout.startswith("CELERY UNKNOWN - unknown:")


class TestNagiosExits:
    """Under --format nagios (flag, environment or pyproject.toml) every exit is 0-3."""

    def test_unwritable_report_dir_is_unknown_with_its_line(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        result = run_cli("run", "-b", "redis://localhost/0", "--report-dir", str(blocker / "sub"),
                         "--format", "nagios", cwd=tmp_path)
        assert_one_line_error(result, 3, "cannot write reports to")
        assert result.stdout == f"CELERY UNKNOWN - report folder: cannot write reports to {blocker / 'sub'}: Not a directory\n"

    def test_usage_error_with_the_format_from_pyproject(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text('[tool.celery-probe]\nformat = "nagios"\nping-window = "x"\n')
        result = run_cli("run", "-b", "redis://localhost/0", cwd=tmp_path)
        assert_one_line_error(result, 3, "ping-window")
        assert result.stdout.startswith("CELERY UNKNOWN - usage error: ") and result.stdout.count("\n") == 1

    def test_bad_option_with_the_format_from_the_environment(self, tmp_path):
        result = run_cli("run", "--no-such-option", env={"CELERY_PROBE_FORMAT": "nagios"}, cwd=tmp_path)
        assert_one_line_error(result, 3, "No such option")
        assert result.stdout.startswith("CELERY UNKNOWN - usage error: No such option")

    def test_report_write_failing_after_the_probes_is_the_status_line(self, tmp_path):
        """A report that cannot be replaced is found only after probing: UNKNOWN comes first."""
        (tmp_path / "reports" / "latest.json").mkdir(parents=True)
        result = run_cli("run", "-b", "redis://127.0.0.1:1/0", "--deadline", "3", "--format", "nagios",
                         "--report-dir", str(tmp_path / "reports"), cwd=tmp_path)
        assert result.code == 3, (result.stdout, result.stderr)
        first, *rest = result.stdout.splitlines()
        assert first.startswith("CELERY UNKNOWN - report folder: cannot write reports to ") and "Is a directory" in first
        assert rest[0].startswith("CELERY CRITICAL - down: ") and not any("UNKNOWN" in line for line in rest)
