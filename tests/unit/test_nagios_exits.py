"""Under ``--format nagios`` every exit is a Nagios state (0-3), and the plugin line survives Nagios.

Nagios Core records any exit above 3 as CRITICAL and drops the output, and rewrites every
``;`` of plugin output as ``:``. The command's exits are driven here through ``main`` with
the command itself replaced by one that fails the way a real run can.
"""

from __future__ import annotations

import pytest

from celery_probe.cli import main as cli_main
from celery_probe.errors import EXIT_CANTCREAT, EXIT_INTERRUPTED, EXIT_USAGE, ProbeUsageError, ReportWriteError
from celery_probe.present.text import nagios_warn, render_nagios
from celery_probe.verdict.mapper import unknown_verdict


@pytest.fixture(autouse=True)
def no_pyproject(tmp_path, monkeypatch):
    """Each test in a folder of its own, with no format in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CELERY_PROBE_FORMAT", raising=False)


def exit_of(monkeypatch, capsys, failure: BaseException, *args: str) -> tuple[int, str, str]:
    def fail(**_kwargs):
        raise failure

    monkeypatch.setattr(cli_main.cli, "main", fail)
    with pytest.raises(SystemExit) as stopped:
        cli_main.main(["run", *args])
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


class TestRequestedFormat:
    """The format is known before the settings resolve: flag, then environment, then pyproject."""

    def test_flag_then_environment(self, tmp_path):
        assert cli_main.requested_format(["--format", "nagios"], {}) == "nagios"
        assert cli_main.requested_format(["--format=NAGIOS"], {}) == "nagios"
        assert cli_main.requested_format(["--format", "json"], {"CELERY_PROBE_FORMAT": "nagios"}) == "json"
        assert cli_main.requested_format([], {"CELERY_PROBE_FORMAT": "nagios"}) == "nagios"
        assert cli_main.requested_format([], {}) is None

    def test_pyproject(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text('[tool.celery-probe]\nformat = "nagios"\n')
        (tmp_path / "sub").mkdir()
        assert cli_main.requested_format([], {}, tmp_path / "sub") == "nagios"
        assert cli_main.requested_format(["--format", "text"], {}, tmp_path) == "text"

    def test_unreadable_pyproject_names_none(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text("[tool.celery-probe\n")
        assert cli_main.requested_format([], {}, tmp_path) is None


class TestEveryExitIsANagiosState:
    @pytest.mark.parametrize("failure, plain, line", [
        (ProbeUsageError("bad --deadline"), EXIT_USAGE, "CELERY UNKNOWN - usage error: bad --deadline"),
        (ReportWriteError("cannot write reports to /x"), EXIT_CANTCREAT,
         "CELERY UNKNOWN - report folder: cannot write reports to /x"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "CELERY UNKNOWN - interrupted: the run was stopped"),
    ])
    def test_errors_are_unknown_with_their_line(self, monkeypatch, capsys, failure, plain, line):
        code, out, err = exit_of(monkeypatch, capsys, failure, "--format", "nagios")
        assert (code, out.splitlines(), err.count("\n")) == (3, [line], 1)
        assert exit_of(monkeypatch, capsys, failure)[0] == plain

    def test_format_from_pyproject(self, monkeypatch, capsys, tmp_path):
        (tmp_path / "pyproject.toml").write_text('[tool.celery-probe]\nformat = "nagios"\n')
        code, out, _err = exit_of(monkeypatch, capsys, ProbeUsageError("x; y"))
        assert code == 3 and out == "CELERY UNKNOWN - usage error: x, y\n"

    def test_a_crash_is_unknown(self, monkeypatch, capsys):
        code, out, err = exit_of(monkeypatch, capsys, RuntimeError("boom"), "--format", "nagios")
        assert code == 3 and out == "CELERY UNKNOWN - internal error: crashed: RuntimeError: boom\n"
        assert "Traceback" in err  # a bug: its traceback is for the bug report
        monkeypatch.setattr(cli_main.cli, "main", lambda **_: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError):  # outside Nagios a crash stays Python's own
            cli_main.main(["run"])


class TestPluginOutput:
    def test_no_semicolon_for_nagios_to_rewrite(self):
        verdict = unknown_verdict("first; second | third")
        head, *rest = render_nagios(verdict).split("\n")
        text, perf = head.split(" | ")
        assert ";" not in text and "first, second / third" in text
        assert rest == []

    def test_each_further_problem_on_its_own_line(self):
        verdict = unknown_verdict("one")
        verdict["reasons"].append({**verdict["reasons"][0], "code": "celery_other", "message": "two;\nlines"})
        head, *rest = render_nagios(verdict).split("\n")
        assert "(also celery_other)" in head.split(" | ")[0]
        assert rest == ["celery_other: two, lines"]

    @pytest.mark.parametrize("threshold, high, not_high", [(100, 100, 99), (1, 1, 0)])
    def test_warning_range_matches_at_or_above_the_threshold(self, threshold, high, not_high):
        """Nagios range ``N`` alerts when the value is above N; the tool calls ``>= threshold`` high."""
        warn = int(nagios_warn(threshold))
        assert high > warn and not not_high > warn


class TestWhichCommandsAnswerNagios:
    def test_a_format_from_the_environment_is_not_serves(self, monkeypatch, capsys):
        monkeypatch.setenv("CELERY_PROBE_FORMAT", "nagios")
        real_main = cli_main.cli.main
        assert exit_of(monkeypatch, capsys, ProbeUsageError("bad --port"))[0] == 3  # run
        monkeypatch.setattr(cli_main.cli, "main", lambda **_: (_ for _ in ()).throw(ProbeUsageError("x")))
        with pytest.raises(SystemExit) as stopped:
            cli_main.main(["serve", "--port", "x"])
        assert stopped.value.code == EXIT_USAGE
        monkeypatch.setattr(cli_main.cli, "main", real_main)  # click's own "no such command"
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            cli_main.main(["rnu"])  # a mistyped command in a Nagios check
        assert stopped.value.code == 3
        assert capsys.readouterr().out.startswith("CELERY UNKNOWN - usage error: ")
