"""Every setting reaches its field by every way it is offered, all generated from one declaration.

For each setting of :data:`celery_probe.config.settings.SPECS`: the ``run`` flag (and ``serve``'s,
for settings serve reads), the pytest option, the environment variable and the ``pyproject.toml``
key each turn a sample into the same field value; the child process's environment carries it
unchanged; docs/configuration.md lists it. A setting without a sample fails the suite, so a new
setting comes with its test.
"""

from __future__ import annotations

import re
import subprocess
import sys

from celery_probe.cli.main import all_commands, cli

pytest_plugins = ["pytester"]


class TestSectionedHelp:
    """``run --help`` shows its options under headings; parsing is plain click."""

    def test_run_help_has_its_sections_and_every_option_once(self):
        from click.testing import CliRunner

        result = CliRunner(env={"NO_COLOR": "1"}).invoke(cli, ["run", "--help"], terminal_width=100)
        assert result.exit_code == 0, result.output
        headings = re.findall(r"^(\w[\w ]*):$", result.output, flags=re.MULTILINE)
        assert headings == ["Target", "Probes", "Output", "Outgoing HTTP", "Several targets", "Alerts", "Remediation",
                            "Other options"]
        assert "\x1b[" not in result.output
        for param in all_commands()["run"].params:
            for opt in param.opts:
                assert len(re.findall(rf"(?<![\w-]){re.escape(opt)}[ ,\n]", result.output)) >= 1, opt

    def test_the_cli_does_not_import_cloup_to_run(self):
        """cloup costs about 30 ms of imports; only a help text needs it."""
        code = ("import sys; from celery_probe.cli.main import cli; "
                "assert 'cloup' not in sys.modules, 'cloup imported'")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
