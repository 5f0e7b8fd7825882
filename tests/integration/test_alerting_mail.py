"""Alert mail through a real SMTP server (aiosmtpd) and a real sendmail program."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
import sys

import pytest

from celery_probe.alerting.template import DEFAULT_PROBLEM, DEFAULT_RECOVERY
from tests.support.alert_servers import SmtpSink, cli_env, read_state
from tests.support.environment import ROOT, run_cli

OPS = "ops@example.com"
FROM = "probe@example.com"


def mail_args(smtp, *extra: str) -> list[str]:
    return ["--email", OPS, "--smtp", smtp.address, "--mail-from", FROM, *extra]


def alert_lines(stderr: str, kind: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"celery-probe: {kind}")]


class TestMailContent:
    def test_down_mail(self, health, smtp, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), *mail_args(smtp, "--service-name", "celery-worker"), cwd=tmp_path)
        assert result.code == 2, result.stderr  # the health exit code, alert or not
        assert alert_lines(result.stderr, "alert sent") == [
            f"celery-probe: alert sent: [celery-probe CRITICAL] Celery worker DOWN to {OPS}"]
        (mail,) = smtp.wait_for(1)
        assert mail.mail_from == FROM and mail.rcpt_tos == [OPS]
        message = mail.message
        assert message["Subject"] == "[celery-probe CRITICAL] Celery worker DOWN"
        assert message["From"] == FROM and message["To"] == OPS
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Message-ID"].endswith("@example.com>") and message["Date"]
        body = mail.body
        for expected in [
            "Celery worker is not responding. Background tasks are not being processed.",
            "Time:            2026-11-24 08:51:05 UTC",
            "Status:          DOWN (before: none)",
            "Worker alive:    no",
            "Target:          app proj on redis://:***@redis:6379/0",
            "- celery_worker_down [critical]: no worker answered ping (listened 347 ms)",
            "Impact:\n- Background tasks are not being processed",
            "1. Check the worker service: systemctl status celery-worker",
            "2. Check its logs: journalctl -u celery-worker -n 100",
            "3. Restart it if needed: systemctl restart celery-worker",
            "4. Check that it uses the same broker and virtual host or database as Target above",
        ]:
            assert expected in body, (expected, body)

    def test_degraded_is_a_warning(self, health, smtp, tmp_path):
        health.serve("degraded")
        assert run_cli("check", health.url(), *mail_args(smtp), cwd=tmp_path).code == 3
        (mail,) = smtp.wait_for(1)
        assert mail.subject == "[celery-probe WARNING] Celery queue HIGH"  # its root cause
        assert "A Celery queue is at or above its threshold" in mail.body and "celery_queue_high [degraded]" in mail.body

    def test_label_goes_into_the_subject(self, health, smtp, tmp_path):
        health.serve("down")
        run_cli("check", health.url(), *mail_args(smtp, "--label", "prod-eu"), cwd=tmp_path)
        assert smtp.wait_for(1)[0].subject == "[celery-probe CRITICAL] Celery worker DOWN (prod-eu)"

    def test_unreachable_endpoint_mails_unknown(self, smtp, tmp_path):
        result = run_cli("check", "http://127.0.0.1:9/health", *mail_args(smtp), cwd=tmp_path)
        assert result.code == 1
        (mail,) = smtp.wait_for(1)
        assert mail.subject == "[celery-probe UNKNOWN] Celery health UNKNOWN"
        assert "celery_probe_check_failed" in mail.body and "connection refused" in mail.body

    def test_one_message_per_recipient(self, health, smtp, tmp_path):
        health.serve("down")
        run_cli("check", health.url(), *mail_args(smtp, "--email", "dev@example.org"), cwd=tmp_path)
        mails = smtp.wait_for(2)
        assert sorted(tuple(m.rcpt_tos) for m in mails) == [("dev@example.org",), (OPS,)]


class TestHeaderInjection:
    EVIL = "w1\r\nBcc: x@y"

    def test_names_with_crlf_never_become_headers(self, health, smtp, tmp_path):
        health.serve(
            "down",
            workers={self.EVIL: {"latency_ms": 1}},
            queues={"q\r\nBcc: x@y": {"length": 1}},
            target="app\r\nBcc: x@y\r\n\r\nfake body",
            reasons=[{"code": "celery_worker_down\r\nBcc: x@y", "severity": "critical",
                      "message": f"worker {self.EVIL} is gone\nSubject: hijacked"}],
        )
        result = run_cli("check", health.url(), *mail_args(smtp, "--label", "prod"), cwd=tmp_path)
        assert result.code == 2, result.stderr
        (mail,) = smtp.wait_for(1)
        assert mail.rcpt_tos == [OPS]
        message = mail.message
        assert message.get_all("Bcc") is None
        # The code is not one the subject table knows once flattened: the status's fixed words.
        assert message.get_all("Subject") == ["[celery-probe CRITICAL] Celery DOWN (prod)"]
        assert set(message.keys()) == {"Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted",
                                       "X-Celery-Probe-Status", "X-Celery-Probe-Severity", "Content-Type",
                                       "Content-Transfer-Encoding", "MIME-Version"}
        header_block = mail.data.split(b"\r\n\r\n", 1)[0].decode()
        assert "x@y" not in header_block
        body = mail.body
        assert "worker w1 Bcc: x@y is gone Subject: hijacked" in body  # flattened onto its one line
        assert not any(line.startswith(("Bcc:", "Subject:")) for line in body.splitlines())

    def test_a_label_with_crlf_is_refused(self, health, smtp, tmp_path):
        result = run_cli("check", health.url(), *mail_args(smtp, "--label", "prod\r\nBcc: x@y"), cwd=tmp_path)
        assert result.code == 64 and len(result.stderr.strip().splitlines()) == 1
        assert "--label" in result.stderr

    @pytest.mark.parametrize("address", ["ops@example.com\r\nBcc: x@y", "-oQ/tmp@x", "a@b,c@d", "<ops@x>", "ops"])
    def test_addresses_are_validated(self, health, smtp, tmp_path, address):
        result = run_cli("check", health.url(), "--email", address, "--smtp", smtp.address, cwd=tmp_path)
        assert result.code == 64, result.stderr
        assert result.stderr.startswith("celery-probe: error: invalid --email")
        assert len(result.stderr.strip().splitlines()) == 1
        assert smtp.received == []


FAKE_SENDMAIL = """\
#!{python}
import json, os, sys
record = {{"argv": sys.argv[1:], "mail": sys.stdin.buffer.read().decode("utf-8")}}
with open(os.environ["FAKE_SENDMAIL_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(record) + "\\n")
code = int(os.environ.get("FAKE_SENDMAIL_EXIT", "0"))
if code:
    sys.stderr.write("sendmail: queue directory full\\n")
sys.exit(code)
"""


@pytest.fixture
def sendmail(tmp_path):
    """A real program with sendmail's interface that logs its arguments and its input."""
    program = tmp_path / "fake-sendmail"
    program.write_text(FAKE_SENDMAIL.format(python=sys.executable))
    program.chmod(0o755)
    return program


class TestSendmail:
    def test_mail_is_piped_with_an_argument_list(self, health, sendmail, tmp_path):
        log = tmp_path / "sendmail.log"
        health.serve("down")
        result = run_cli("check", health.url(), "--email", OPS, "--sendmail", str(sendmail), "--mail-from", FROM,
                         env={"FAKE_SENDMAIL_LOG": str(log)}, cwd=tmp_path)
        assert result.code == 2, result.stderr
        (record,) = [json.loads(line) for line in log.read_text().splitlines()]
        assert record["argv"] == ["-oi", "-f", FROM, "--", OPS]
        assert "\r\n" not in record["mail"]  # sendmail expects local line endings
        message = email.message_from_string(record["mail"], policy=email.policy.default)
        assert message["Subject"] == "[celery-probe CRITICAL] Celery worker DOWN" and message["To"] == OPS
        assert "systemctl status celery" in message.get_content()

    def test_sendmail_failure_is_one_warning_and_keeps_the_exit_code(self, health, sendmail, tmp_path):
        health.serve("down")
        state = tmp_path / "state.json"
        result = run_cli("check", health.url(), "--email", OPS, "--sendmail", str(sendmail), "--state-file", str(state),
                         env={"FAKE_SENDMAIL_LOG": str(tmp_path / "log"), "FAKE_SENDMAIL_EXIT": "75"}, cwd=tmp_path)
        assert result.code == 2
        (warning,) = alert_lines(result.stderr, "warning")
        assert f"{OPS} (sendmail {sendmail}: exited 75: sendmail: queue directory full)" in warning
        assert "1 alert(s) kept in" in warning
        assert [p["last_error"] for p in read_state(state)["pending"]] == [
            f"sendmail {sendmail}: exited 75: sendmail: queue directory full"]

    def test_sendmail_must_be_executable(self, health, tmp_path):
        script = tmp_path / "not-executable"
        script.write_text("")
        result = run_cli("check", health.url(), "--email", OPS, "--sendmail", str(script), cwd=tmp_path)
        assert result.code == 64 and "is not an executable file" in result.stderr


class TestTemplates:
    def test_custom_templates(self, health, smtp, tmp_path):
        problem = tmp_path / "problem.txt"
        problem.write_text("$status_upper at $target ($label) on $hostname, costs $$0\n$reasons\nrun: systemctl restart $service\n")
        recovery = tmp_path / "recovery.txt"
        recovery.write_text("Back after $duration: was $previous_status.\n")
        state = tmp_path / "state.json"
        args = [*mail_args(smtp, "--label", "eu", "--service-name", "worker@1"), "--mail-template", str(problem),
                "--recovery-template", str(recovery), "--state-file", str(state)]
        health.serve("down")
        run_cli("check", health.url(), *args, cwd=tmp_path)
        health.serve("healthy")
        run_cli("check", health.url(), *args, cwd=tmp_path)
        down, back = smtp.wait_for(2)
        assert down.body.startswith("DOWN at app proj on redis://:***@redis:6379/0 (eu) on ")
        assert "costs $0\n- celery_worker_down [critical]: no worker answered ping" in down.body
        assert "run: systemctl restart worker@1" in down.body
        assert back.subject == "[celery-probe RECOVERED] Celery healthy again (eu)"
        assert back.body.startswith("Back after ") and back.body.endswith("was down.\n")

    @pytest.mark.parametrize("text, words", [
        ("Hello $bogus\n", ["--mail-template", "unknown placeholder $bogus", "known: $subject"]),
        ("Costs $5\n", ["--mail-template", "Invalid placeholder", "$$"]),
    ])
    def test_bad_template_is_a_usage_error(self, health, smtp, tmp_path, text, words):
        template = tmp_path / "t.txt"
        template.write_text(text)
        result = run_cli("check", health.url(), *mail_args(smtp, "--mail-template", str(template)), cwd=tmp_path)
        assert result.code == 64, result.stderr
        (line,) = result.stderr.strip().splitlines()
        for word in words:
            assert word in line

    def test_missing_template(self, health, smtp, tmp_path):
        result = run_cli("check", health.url(), *mail_args(smtp, "--mail-template", "/no/such.txt"), cwd=tmp_path)
        assert result.code == 64 and "cannot read it" in result.stderr

    def test_shipped_copies_match_the_defaults(self):
        assert (ROOT / "docs/deploy/mail-problem.txt").read_text() == DEFAULT_PROBLEM
        assert (ROOT / "docs/deploy/mail-recovery.txt").read_text() == DEFAULT_RECOVERY


class TestSmtpLogin:
    PASSWORD = "pw-9f8e7d6c"

    @pytest.fixture
    def auth_smtp(self):
        sink = SmtpSink(login=("alerts", self.PASSWORD)).start()
        yield sink
        sink.stop()

    def test_login_with_the_password_from_the_environment(self, health, auth_smtp, tmp_path):
        health.serve("down")
        state = tmp_path / "state.json"
        result = run_cli("check", health.url(), *mail_args(auth_smtp, "--smtp-user", "alerts"),
                         "--state-file", str(state), env={"CELERY_PROBE_SMTP_PASSWORD": self.PASSWORD}, cwd=tmp_path)
        assert result.code == 2, result.stderr
        (mail,) = auth_smtp.wait_for(1)
        assert auth_smtp.logins == ["alerts"]
        everything = result.stdout + result.stderr + state.read_text() + mail.data.decode()
        assert self.PASSWORD not in everything

    def test_wrong_password_is_one_warning_without_it(self, health, auth_smtp, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), *mail_args(auth_smtp, "--smtp-user", "alerts"),
                         env={"CELERY_PROBE_SMTP_PASSWORD": "wrong-password-1"}, cwd=tmp_path)
        assert result.code == 2
        (warning,) = alert_lines(result.stderr, "warning")
        assert "login refused (535" in warning and "wrong-password-1" not in result.stderr
        assert auth_smtp.received == []

    def test_password_is_never_a_flag(self, health, smtp, tmp_path):
        result = run_cli("check", health.url(), *mail_args(smtp, "--smtp-user", "alerts"), cwd=tmp_path)
        assert result.code == 64 and "CELERY_PROBE_SMTP_PASSWORD" in result.stderr
        result = run_cli("check", health.url(), *mail_args(smtp), "--smtp-password", "x", cwd=tmp_path)
        assert result.code == 64 and "No such option" in result.stderr

    def test_no_password_over_plain_text_to_another_host(self, health, tmp_path):
        result = run_cli("check", health.url(), "--email", OPS, "--smtp", "mail.example.com:25",
                         "--smtp-user", "alerts", env={"CELERY_PROBE_SMTP_PASSWORD": self.PASSWORD}, cwd=tmp_path)
        assert result.code == 64 and "unencrypted" in result.stderr and self.PASSWORD not in result.stderr


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with the openssl program."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class TestStarttls:
    @pytest.fixture
    def tls_smtp(self, certificate):
        sink = SmtpSink(tls=certificate).start()
        yield sink
        sink.stop()

    def test_starttls_with_a_trusted_certificate(self, health, tls_smtp, certificate, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), *mail_args(tls_smtp, "--smtp-starttls"),
                         env={"SSL_CERT_FILE": str(certificate[0])}, cwd=tmp_path)
        assert result.code == 2, result.stderr
        assert tls_smtp.wait_for(1)[0].subject == "[celery-probe CRITICAL] Celery worker DOWN"

    def test_untrusted_certificate_is_refused_and_kept(self, health, tls_smtp, tmp_path):
        health.serve("down")
        state = tmp_path / "state.json"
        result = run_cli("check", health.url(), *mail_args(tls_smtp, "--smtp-starttls"), "--state-file", str(state),
                         env=cli_env(), cwd=tmp_path)
        (warning,) = alert_lines(result.stderr, "warning")
        assert "TLS certificate not trusted" in warning
        assert tls_smtp.received == [] and len(read_state(state)["pending"]) == 1

    def test_server_requiring_starttls_refuses_plain_mail(self, health, tls_smtp, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), *mail_args(tls_smtp), cwd=tmp_path)
        (warning,) = alert_lines(result.stderr, "warning")
        assert "530" in warning and tls_smtp.received == []



# A real `check` process in its own UTS namespace, so it can be given a hostname of the test's
# choosing without touching this machine's: the sender and the EHLO must use the FQDN.
RENAMED_CLI = ("import socket, sys; socket.sethostname(sys.argv[1]); "
               "from celery_probe.cli.main import main; main(sys.argv[2:])")


def run_cli_named(hostname: str, *args: str, cwd) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--uts", "true"], capture_output=True,
                                         timeout=10, check=False).returncode != 0:
        pytest.skip("unshare --uts is not permitted here (needs CAP_SYS_ADMIN): the hostname cannot be set")
    return subprocess.run([unshare, "--uts", sys.executable, "-c", RENAMED_CLI, hostname, *args],
                          cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


class TestSenderName:
    def test_sender_and_ehlo_use_the_fqdn(self, health, smtp, tmp_path):
        health.serve("down")
        name = "probe-host.example.test"
        result = run_cli_named(name, "check", health.url(), "--email", OPS, "--smtp", smtp.address, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        (mail,) = smtp.wait_for(1)
        assert mail.helo == name
        assert mail.mail_from == f"celery-probe@{name}" and mail.message["From"] == f"celery-probe@{name}"

    def test_a_host_without_a_domain_says_hello_with_its_address(self, health, smtp, tmp_path):
        """No FQDN to be had: EHLO gives the address literal (RFC 5321), the sender the short name."""
        health.serve("down")
        result = run_cli_named("probehost", "check", health.url(), "--email", OPS, "--smtp", smtp.address,
                               cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        (mail,) = smtp.wait_for(1)
        assert mail.helo == "[127.0.0.1]"
        assert mail.mail_from == "celery-probe@probehost" and mail.message["From"] == "celery-probe@probehost"
