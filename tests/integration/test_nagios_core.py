"""``celery-probe run --format nagios`` scheduled by a real Nagios Core 4, read back from status.dat.

Nagios is started in the foreground on a minimal nagios.cfg whose every path (status file,
log, command file, check results, lock, temp) lies in the test's own folder. Each service's
check command is a small script that runs the probe and keeps a copy of what it printed, so
the test can compare what Nagios recorded (state, plugin output, long output, perfdata)
with what the plugin said: a state above 3 would be recorded as CRITICAL with its output
dropped, and every ``;`` of plugin output is recorded as ``:``.

Cases: a healthy deployment (OK with perfdata), a typo in the command (UNKNOWN with its
message), a report folder that cannot be written (UNKNOWN), and a broker that refuses
(CRITICAL, with each reason intact).

Where Nagios is missing the test skips, except under CI, where it fails
(``scripts/install-test-deps`` installs Debian's nagios4-core).
"""

from __future__ import annotations

import getpass
import grp
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, GroupProcess, RedisServer, free_port, wait_until
from tests.support.environment import APPS, ROOT, app_env, missing_system_program

pytestmark = pytest.mark.redis_only  # a private redis-server

NAGIOS = Path("/usr/sbin/nagios4")
CHECKED_WITHIN = 90.0  # seconds for every service's first check (each probe run has a 3 s deadline)
DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def main_config(folder: Path) -> str:
    """nagios.cfg: every path under ``folder``, checks every 2 s, no notifications."""
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    return "\n".join([
        f"cfg_file={folder}/objects.cfg", f"status_file={folder}/status.dat", "status_update_interval=1",
        f"log_file={folder}/nagios.log", f"command_file={folder}/nagios.cmd",
        f"check_result_path={folder}/results", f"lock_file={folder}/nagios.lock",
        f"temp_file={folder}/nagios.tmp", f"temp_path={folder}",
        f"state_retention_file={folder}/retention.dat", "retain_state_information=0",
        f"nagios_user={user}", f"nagios_group={group}",  # root too: Debian's build allows it
        "check_external_commands=0", "enable_notifications=0", "interval_length=1",
        "check_result_reaper_frequency=1", "service_inter_check_delay_method=n",
        "max_service_check_spread=1", "service_check_timeout=60",
        "illegal_macro_output_chars=`~$&|'\"<>",  # Debian's default
    ]) + "\n"


def objects_config(folder: Path, services: dict[str, Path]) -> str:
    """One host, one service per check script, a contact that is never notified."""
    period = "\n".join(f" {day} 00:00-24:00" for day in DAYS)
    parts = [
        f"define timeperiod {{\n timeperiod_name always\n alias always\n{period}\n}}",
        "define command {\n command_name nothing\n command_line /bin/true\n}",
        "define contact {\n contact_name nobody\n host_notifications_enabled 0\n"
        " service_notifications_enabled 0\n host_notification_period always\n"
        " service_notification_period always\n host_notification_options n\n"
        " service_notification_options n\n host_notification_commands nothing\n"
        " service_notification_commands nothing\n}",
        "define host {\n host_name celery\n address 127.0.0.1\n check_command nothing\n"
        " max_check_attempts 1\n check_period always\n active_checks_enabled 0\n contacts nobody\n}",
    ]
    for name, script in services.items():
        # A script, not the command line itself: `;` starts a comment in Nagios object files.
        parts.append(f"define command {{\n command_name {name}\n command_line {script}\n}}")
        parts.append(f"define service {{\n host_name celery\n service_description {name}\n"
                     f" check_command {name}\n max_check_attempts 1\n check_interval 2\n"
                     f" retry_interval 2\n check_period always\n notification_period always\n"
                     f" notifications_enabled 0\n contacts nobody\n}}")
    return "\n".join(parts) + "\n"


def check_script(folder: Path, name: str, args: list[str], env: dict[str, str]) -> Path:
    """A check command running ``celery-probe ARGS`` in ``folder``, its stdout kept in NAME.out."""
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "celery_probe", *args])
    script = folder / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(folder))}\n{exports}"
        f"export PYTHONPATH={shlex.quote(os.pathsep.join([str(ROOT / 'src'), str(APPS)]))}\n"
        f"{command} > {name}.out 2> {name}.err\nrc=$?\ncat {name}.out\nexit $rc\n")
    script.chmod(0o755)
    return script


def service_status(status_file: Path) -> dict[str, dict[str, str]]:
    """Each service's fields in status.dat (long output keeps its escaped ``\\n``)."""
    found: dict[str, dict[str, str]] = {}
    block: dict[str, str] | None = None
    for line in status_file.read_text(errors="replace").splitlines():
        line = line.strip()
        if line == "servicestatus {":
            block = {}
        elif line == "}" and block is not None:
            found[block.get("service_description", "")] = block
            block = None
        elif block is not None and "=" in line:
            key, _, value = line.partition("=")
            block[key] = value
    return found


@pytest.fixture(scope="module")
def nagios_run(tmp_path_factory) -> Iterator[tuple[Path, dict[str, dict[str, str]]]]:
    """Run Nagios over the four cases until each has been checked once: its folder, their states."""
    if not NAGIOS.exists():
        missing_system_program("Nagios Core 4 (/usr/sbin/nagios4, Debian's nagios4-core)")
    folder = tmp_path_factory.mktemp("nagios")
    (folder / "results").mkdir()
    blocker = folder / "a-file"
    blocker.write_text("")
    with RedisServer() as redis:
        env = app_env(redis.url(0), redis.url(1))
        run = ["run", "--deadline", "3", "--format", "nagios"]
        services = {
            "healthy": check_script(folder, "healthy", [*run, "-A", "probe_test_app"], env),
            "typo": check_script(folder, "typo", [*run, "-A", "probe_test_app", "--expect-wrokers", "1"], env),
            "unwritable": check_script(folder, "unwritable", [*run, "-A", "probe_test_app",
                                                              "--report-dir", str(blocker / "sub")], env),
            "down": check_script(folder, "down", [*run, "-b", f"redis://127.0.0.1:{free_port()}/0"], {}),
        }
        (folder / "nagios.cfg").write_text(main_config(folder))
        (folder / "objects.cfg").write_text(objects_config(folder, services))
        verified = subprocess.run([str(NAGIOS), "-v", str(folder / "nagios.cfg")], capture_output=True,
                                  text=True, timeout=60)
        assert verified.returncode == 0, verified.stdout
        with CeleryWorker("probe_test_app", env=env, pythonpath=[APPS]):
            nagios = GroupProcess()  # its own session: the checks it forks go with it
            nagios.proc = subprocess.Popen([str(NAGIOS), str(folder / "nagios.cfg")], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                def all_checked() -> dict[str, dict[str, str]] | None:
                    states = service_status(folder / "status.dat")
                    done = set(services) <= set(states) and all(
                        states[name].get("has_been_checked") == "1" for name in services)
                    return states if done else None

                yield folder, wait_until(all_checked, timeout=CHECKED_WITHIN, interval=0.5,
                                 what="Nagios to check every service once")
            finally:
                nagios.stop(timeout=20)


def plugin_said(folder: Path, name: str) -> tuple[str, str, str]:
    """What the check printed, split as Nagios splits it: output, long output, perfdata."""
    lines = (folder / f"{name}.out").read_text().rstrip("\n").split("\n")
    output, _, perf = lines[0].partition(" | ")
    return output, "\\n".join(lines[1:]), perf


@pytest.fixture(scope="module")
def nagios_states(nagios_run) -> dict[str, dict[str, str]]:
    return nagios_run[1]


class TestUnderNagiosCore:
    """The state Nagios records is the one the probe meant, with its words intact."""

    def test_healthy_is_ok_with_perfdata(self, nagios_states):
        healthy = nagios_states["healthy"]
        assert healthy["current_state"] == "0", healthy
        assert healthy["plugin_output"].startswith("CELERY OK - healthy: 1 worker(s)")
        perf = healthy["performance_data"]
        assert "workers=1;;;0" in perf and "queue_length=0;;;0" in perf
        assert "'queue celery'=0;99;;0" in perf, perf  # high from 100 on: above 99

    def test_typo_in_the_command_is_unknown_with_its_message(self, nagios_states):
        typo = nagios_states["typo"]
        assert typo["current_state"] == "3", typo
        assert typo["plugin_output"].startswith("CELERY UNKNOWN - usage error: No such option '--expect-wrokers'")

    def test_unwritable_report_folder_is_unknown(self, nagios_states):
        unwritable = nagios_states["unwritable"]
        assert unwritable["current_state"] == "3", unwritable
        assert unwritable["plugin_output"].startswith("CELERY UNKNOWN - report folder: cannot write reports to")

    def test_down_is_critical_with_every_reason_intact(self, nagios_run):
        folder, states = nagios_run
        down = states["down"]
        assert down["current_state"] == "2", down
        assert down["plugin_output"].startswith("CELERY CRITICAL - down: celery_broker_unreachable: ")
        output, long_output, _perf = plugin_said(folder, "down")
        assert down["plugin_output"] == output  # nothing rewritten: no `;` for Nagios to turn into `:`
        assert down.get("long_plugin_output", "") == long_output
        assert "not attempted because of the above: " in down["long_plugin_output"]
