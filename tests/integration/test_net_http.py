"""Outgoing HTTP (celery_probe.net.http) against real servers, never mocks.

A real ``http.server`` in a thread, plain and TLS (a CA, a server and a client certificate made
with ``cryptography``), answers each case: a body or a status line dripped one byte every
half second, an oversized body, a redirect, a proxy that records what it is asked, a server
that wants a client certificate, one that wants an auth header and one that echoes it back.
The bound holds as a whole, proxies are used exactly when configured, trust and client
certificates are the operator's, and no error or printed line carries a credential.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.net.http import DIRECT, AnswerTooLarge, BoundedCallError, HttpOptions, request
from celery_probe.probing.endpoint import check_endpoint
from celery_probe.testing import free_port, wait_until
from tests.support.environment import run_cli

TOKEN = "Bearer s3cr3t-t0ken-9f2c"
TOKEN_VAR = "PROBE_TEST_HEALTH_TOKEN"
DRIP_EVERY = 0.5  # seconds between two bytes of a dripping answer: never trips a socket timeout
DRIP_BYTES = 16  # then the dripping server gives up (8 s), so no thread outlives the module
SLACK = 0.6  # seconds a bounded call may take past its bound (thread hand-over, a loaded host)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                   "all_proxy", "no_proxy")
TRUST_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


# ------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path
    client_encrypted_key: Path


def _pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def build(subject: str, key: Any, issuer: str, signer: Any, *extensions: tuple[Any, bool]) -> Any:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    def pem(cert: Any) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key: Any, password: bytes | None = None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(password) if password
                      else serialization.NoEncryption())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    ca_key, other_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca_constraints = (x509.BasicConstraints(ca=True, path_length=None), True)
    ca = build("celery-probe test CA", ca_key, "celery-probe test CA", ca_key, ca_constraints)
    other = build("another CA", other_key, "another CA", other_key, ca_constraints)
    server = build("127.0.0.1", server_key, "celery-probe test CA", ca_key,
                   (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                 x509.DNSName("localhost")]), False),
                   (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
    client = build("probe-client", client_key, "celery-probe test CA", ca_key,
                   (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    files = {
        "ca": pem(ca), "other_ca": pem(other), "server_cert": pem(server), "server_key": key_pem(server_key),
        "client_cert": pem(client), "client_key": key_pem(client_key),
        "client_combined": pem(client) + key_pem(client_key),
        "client_encrypted_key": key_pem(client_key, b"passphrase"),
    }
    paths = {}
    for field_name, content in files.items():
        paths[field_name] = folder / f"{field_name}.pem"
        paths[field_name].write_bytes(content)
    return Pki(**paths)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------------------------ servers


class Handler(BaseHTTPRequestHandler):
    """One route per case; every request is recorded as (method, path, headers)."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, *, reason: str | None = None, length: int | None = None,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code, reason)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data: bytes) -> None:
        try:
            for byte in data[:DRIP_BYTES]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_EVERY)
        except OSError:
            self.server.drip_cut_at = time.monotonic()
        self.close_connection = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        auth = self.headers.get("Authorization") or ""
        route = self.path.split("?")[0]
        if self.path.startswith("http://"):  # asked as a proxy: answer for the origin
            self._send(200, json.dumps({"status": "healthy", "via": "proxy"}).encode())
        elif route in ("/ok", "/healthy"):
            self._send(200, json.dumps({"status": "healthy"}).encode())
        elif route == "/needs-auth":
            if auth == TOKEN:
                self._send(200, json.dumps({"status": "healthy"}).encode())
            else:
                self._send(401, b"{}")
        elif route == "/echo-auth":  # a hostile server sends the header back everywhere it can
            self._send(200, json.dumps({"status": "degraded", "reasons": [
                {"code": "celery_x", "severity": "warning", "message": f"you sent {auth}"}]}).encode())
        elif route == "/echo-reason":
            self._send(418, b"{}", reason=f"you sent {auth}")
        elif route == "/big":
            self._send(200, b"x" * 2_000_000)
        elif route == "/big-undeclared":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(200):
                    self.wfile.write(b"x" * 10_000)
            except OSError:
                pass
        elif route == "/truncated":  # declares 100 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"status":')
            self.close_connection = True
        elif route == "/redirect":
            self._send(302, b"", headers={"Location": f"http://127.0.0.1:{self.server.server_port}/ok"})
        elif route == "/drip-body":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self._drip(b'{"status": "healthy"' + b" " * 80)
        elif route == "/drip-headers":
            self._drip(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        else:
            self._send(404, b"{}")


class Server:
    """A real HTTP(S) server on a free loopback port, serving :class:`Handler` in threads."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.httpd.drip_cut_at = None  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str = "/ok", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.httpd.server_port}{path}"

    @property
    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        return self.httpd.seen  # type: ignore[no-any-return]


def tls_context(pki: Pki, *, want_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if want_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[Server]:
    with Server(tls_context(pki)) as running:
        yield running


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[Server]:
    with Server(tls_context(pki, want_client_cert=True)) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or trust variable of the developer's shell decides a case."""
    for name in (*PROXY_VARIABLES, *TRUST_VARIABLES, TOKEN_VAR):
        monkeypatch.delenv(name, raising=False)


def get(url: str, options: HttpOptions = DIRECT, *, timeout: float = 5, max_body: int = 100_000,
        send_auth: bool = False):
    return request("GET", url, timeout=timeout, max_body=max_body, options=options, send_auth=send_auth)


def failure(url: str, options: HttpOptions = DIRECT, **kwargs: Any) -> str:
    with pytest.raises(BoundedCallError) as caught:
        get(url, options, **kwargs)
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# -------------------------------------------------------------------------------- cases


class TestTotalBound:
    """One wall-clock bound holds for the whole request, however the server spends it."""

    def test_a_body_dripping_a_byte_every_half_second_is_cut_at_the_bound(self, server):
        started = time.monotonic()
        assert failure(server.url("/drip-body"), timeout=2) == "timed out after 2s"
        assert time.monotonic() - started < 2 + SLACK
        # The abandoned exchange stops too: its next read meets the bound and closes the socket.
        wait_until(lambda: server.httpd.drip_cut_at, timeout=2 + DRIP_EVERY * 4, what="the drip cut off")

    def test_a_status_line_dripping_a_byte_every_half_second_is_cut_at_the_bound(self, server):
        started = time.monotonic()
        assert failure(server.url("/drip-headers"), timeout=2) == "timed out after 2s"
        assert time.monotonic() - started < 2 + SLACK

    def test_a_declared_oversized_body_is_refused_without_reading_it(self, server):
        with pytest.raises(AnswerTooLarge, match="answer larger than 1000 bytes"):
            get(server.url("/big"), max_body=1000)

    def test_an_undeclared_oversized_body_is_cut_while_streaming(self, server):
        started = time.monotonic()
        with pytest.raises(AnswerTooLarge, match="answer larger than 50000 bytes"):
            get(server.url("/big-undeclared"), max_body=50_000)
        assert time.monotonic() - started < 2

    def test_a_body_at_the_cap_is_read_whole(self, server):
        answer = get(server.url("/big"), max_body=2_000_000)
        assert answer.status == 200 and len(answer.body) == 2_000_000

    def test_a_body_cut_short_is_an_error_not_a_shorter_answer(self, server):
        assert failure(server.url("/truncated")).startswith("the answer broke off")

    def test_a_redirect_is_returned_not_followed(self, server):
        answer = get(server.url("/redirect"))
        assert answer.status == 302 and answer.headers["location"].endswith("/ok")
        assert [path for _m, path, _h in server.seen] == ["/redirect"]

    def test_errors_name_no_url_and_no_credentials(self):
        port = free_port()
        text = failure(f"http://ops:pa55-w0rd@127.0.0.1:{port}/health?token=t0k3n-in-query")
        assert text == "connection refused"
        assert failure("http://celery-probe-test.invalid/health").startswith("cannot resolve host")


class TestProxies:
    """Off unless said; ``env`` uses the proxy variables and NO_PROXY; loopback is always direct."""

    NOWHERE = "http://health.celery-probe-test.invalid/ok"  # resolvable only by a proxy

    def test_off_by_default_ignores_the_proxy_variables(self, monkeypatch):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        assert failure(self.NOWHERE).startswith("cannot resolve host")  # went direct

    def test_env_sends_through_an_unreachable_proxy_and_says_so(self, monkeypatch):
        monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:pr0xy-pw@127.0.0.1:{free_port()}")
        text = failure(self.NOWHERE, HttpOptions(proxies="env"))
        assert text == "proxy failed (connection refused)" and "pr0xy-pw" not in text

    def test_env_sends_through_a_real_proxy(self, monkeypatch, server):
        monkeypatch.setenv("HTTP_PROXY", server.url("", host="127.0.0.1"))
        answer = get(self.NOWHERE, HttpOptions(proxies="env"))
        assert json.loads(answer.body) == {"status": "healthy", "via": "proxy"}
        assert server.seen[-1][1] == self.NOWHERE  # the proxy was asked for the origin's URL

    def test_no_proxy_is_honoured(self, monkeypatch, server):
        monkeypatch.setenv("HTTP_PROXY", server.url("", host="127.0.0.1"))
        monkeypatch.setenv("NO_PROXY", ".celery-probe-test.invalid")
        assert failure(self.NOWHERE, HttpOptions(proxies="env")).startswith("cannot resolve host")
        assert server.seen == []

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
    def test_loopback_is_always_direct(self, monkeypatch, server, host):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{free_port()}")
        assert get(server.url("/ok", host=host), HttpOptions(proxies="env")).status == 200


class TestTrust:
    """The CA file setting, else REQUESTS_CA_BUNDLE, else the system's store; client certificates."""

    def test_an_unknown_ca_is_not_trusted(self, tls_server):
        assert failure(tls_server.url()).startswith("TLS certificate not trusted")

    def test_the_ca_file_setting(self, tls_server, pki):
        assert get(tls_server.url(), HttpOptions(ca_file=pki.ca)).status == 200

    def test_requests_ca_bundle(self, tls_server, pki, monkeypatch):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
        assert get(tls_server.url()).status == 200

    def test_the_setting_wins_over_requests_ca_bundle(self, tls_server, pki, monkeypatch):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
        assert failure(tls_server.url(), HttpOptions(ca_file=pki.other_ca)).startswith("TLS certificate not trusted")

    def test_the_system_store_as_before(self, tls_server, pki, monkeypatch):
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # what OpenSSL's default store reads
        assert get(tls_server.url()).status == 200

    def test_a_server_wanting_a_client_certificate_refuses_none(self, mtls_server, pki):
        text = failure(mtls_server.url(), HttpOptions(ca_file=pki.ca))
        assert text.startswith(("TLS error", "connection reset", "connection aborted")), text

    def test_client_certificate_and_key(self, mtls_server, pki):
        options = HttpOptions(ca_file=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key)
        assert get(mtls_server.url(), options).status == 200

    def test_client_certificate_with_its_key_inside(self, mtls_server, pki):
        assert get(mtls_server.url(), HttpOptions(ca_file=pki.ca, client_cert=pki.client_combined)).status == 200


class TestAuthHeader:
    """The header's value comes from the variable the settings name, and is never shown."""

    def test_sent_when_asked(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        assert get(server.url("/needs-auth"), HttpOptions(auth_env=TOKEN_VAR), send_auth=True).status == 200
        assert server.seen[-1][2]["Authorization"] == TOKEN

    def test_not_sent_unless_asked(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        assert get(server.url("/needs-auth"), HttpOptions(auth_env=TOKEN_VAR)).status == 401
        assert "Authorization" not in server.seen[-1][2]

    def test_credentials_in_the_url_win(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        get(server.url("/ok").replace("://", "://ops:pw@"), HttpOptions(auth_env=TOKEN_VAR), send_auth=True)
        assert server.seen[-1][2]["Authorization"].startswith("Basic ")

    def test_an_echo_in_the_reason_phrase_is_hidden(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        answer = get(server.url("/echo-reason"), HttpOptions(auth_env=TOKEN_VAR), send_auth=True)
        assert answer.status == 418 and answer.reason == "you sent ***"

    def test_absent_from_errors(self, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        text = failure(f"http://127.0.0.1:{free_port()}/", HttpOptions(auth_env=TOKEN_VAR), send_auth=True)
        assert text == "connection refused"

    def test_an_unset_variable_is_named_not_guessed(self, server):
        text = failure(server.url("/needs-auth"), HttpOptions(auth_env=TOKEN_VAR), send_auth=True)
        assert text == f"environment variable {TOKEN_VAR} (http-auth-env) is not set"
        assert server.seen == []  # nothing is sent without the header asked for

    def test_a_value_with_a_line_break_is_refused_unshown(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN + "\r\nX-Evil: 1")
        text = failure(server.url("/needs-auth"), HttpOptions(auth_env=TOKEN_VAR), send_auth=True)
        assert "line break" in text and TOKEN not in text and server.seen == []

    def test_the_endpoint_probe_sends_it(self, server, monkeypatch):
        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        result = check_endpoint(server.url("/needs-auth"), timeout=3, http=HttpOptions(auth_env=TOKEN_VAR))
        assert result.ok and result.status == "healthy", result


class TestSettings:
    """The five settings: their defaults, and a bad value refused in one line naming its source."""

    def resolve(self, env: dict[str, str]):
        return resolve_settings({}, environ=env, pyproject=False)

    def refused(self, env: dict[str, str]) -> str:
        with pytest.raises(ProbeUsageError) as caught:
            self.resolve(env)
        text = str(caught.value)
        assert "\n" not in text and TOKEN not in text
        return text

    def test_defaults_are_direct_and_plain(self):
        options = HttpOptions.from_settings(self.resolve({}))
        assert options == HttpOptions() == DIRECT and options.proxies == "off"

    @pytest.mark.parametrize("raw, mode", [("env", "env"), ("on", "env"), ("true", "env"), ("OFF", "off"),
                                            ("0", "off")])
    def test_proxies_on_or_off(self, raw, mode):
        assert self.resolve({"CELERY_PROBE_HTTP_PROXIES": raw}).http_proxies == mode

    def test_a_proxy_url_is_not_a_mode(self):
        text = self.refused({"CELERY_PROBE_HTTP_PROXIES": "http://proxy:3128"})
        assert "must be off or env" in text and "CELERY_PROBE_HTTP_PROXIES" in text

    def test_files_are_read_from_the_environment(self, pki):
        settings = self.resolve({"CELERY_PROBE_HTTP_CA_FILE": str(pki.ca),
                                 "CELERY_PROBE_HTTP_CLIENT_CERT": str(pki.client_cert),
                                 "CELERY_PROBE_HTTP_CLIENT_KEY": str(pki.client_key),
                                 "CELERY_PROBE_HTTP_AUTH_ENV": TOKEN_VAR, TOKEN_VAR: TOKEN})
        options = HttpOptions.from_settings(settings)
        assert options.ca_file == pki.ca and options.cert() == (str(pki.client_cert), str(pki.client_key))
        assert options.auth_env == TOKEN_VAR and TOKEN not in repr(settings)

    def test_a_missing_file(self, tmp_path):
        assert "is not a file" in self.refused({"CELERY_PROBE_HTTP_CA_FILE": str(tmp_path / "nope.pem")})

    def test_a_ca_file_without_a_certificate(self, tmp_path):
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        assert "holds no PEM certificate" in self.refused({"CELERY_PROBE_HTTP_CA_FILE": str(junk)})

    def test_a_key_without_its_certificate(self, pki):
        text = self.refused({"CELERY_PROBE_HTTP_CLIENT_KEY": str(pki.client_key)})
        assert "http-client-key needs http-client-cert" in text

    def test_an_encrypted_key_is_refused_instead_of_prompting(self, pki):
        text = self.refused({"CELERY_PROBE_HTTP_CLIENT_CERT": str(pki.client_cert),
                             "CELERY_PROBE_HTTP_CLIENT_KEY": str(pki.client_encrypted_key)})
        assert "an encrypted key is not supported" in text and "CELERY_PROBE_HTTP_CLIENT_KEY" in text

    def test_a_key_of_another_certificate(self, pki):
        text = self.refused({"CELERY_PROBE_HTTP_CLIENT_CERT": str(pki.server_cert),
                             "CELERY_PROBE_HTTP_CLIENT_KEY": str(pki.client_key)})
        assert "cannot be loaded with key" in text

    @pytest.mark.parametrize("name, words", [("NOT-A-NAME", "not an environment variable name"),
                                             ("CELERY_PROBE_TOKEN", "must not start with CELERY_PROBE_")])
    def test_a_bad_auth_variable_name(self, name, words):
        assert words in self.refused({"CELERY_PROBE_HTTP_AUTH_ENV": name, name: TOKEN})

class TestCommands:
    """check, ingest --post and alert webhooks, as cron runs them."""

    def test_check_trusts_the_ca_file_flag(self, tls_server, pki, tmp_path):
        untrusted = run_cli("check", tls_server.url("/healthy"), cwd=tmp_path)
        assert untrusted.code == 1 and "TLS certificate not trusted" in untrusted.stdout
        trusted = run_cli("check", tls_server.url("/healthy"), "--http-ca-file", str(pki.ca), cwd=tmp_path)
        assert trusted.code == 0, trusted.stdout + trusted.stderr

    def test_check_presents_a_client_certificate_from_the_environment(self, mtls_server, pki, tmp_path):
        env = {"CELERY_PROBE_HTTP_CA_FILE": str(pki.ca), "CELERY_PROBE_HTTP_CLIENT_CERT": str(pki.client_combined)}
        result = run_cli("check", mtls_server.url("/healthy"), env=env, cwd=tmp_path)
        assert result.code == 0, result.stdout + result.stderr

    def test_check_sends_the_auth_header_and_never_prints_it(self, server, tmp_path):
        env = {TOKEN_VAR: TOKEN}
        ok = run_cli("check", server.url("/needs-auth"), "--http-auth-env", TOKEN_VAR, env=env, cwd=tmp_path)
        assert ok.code == 0, ok.stdout + ok.stderr
        echoed = run_cli("check", server.url("/echo-auth"), "--http-auth-env", TOKEN_VAR, env=env, cwd=tmp_path)
        assert echoed.code == 3 and "you sent ***" in echoed.stdout
        assert TOKEN not in echoed.stdout + echoed.stderr and "s3cr3t" not in echoed.stdout

    def test_check_with_an_unset_auth_variable_says_which(self, server, tmp_path):
        result = run_cli("check", server.url("/needs-auth"), "--http-auth-env", TOKEN_VAR, cwd=tmp_path)
        assert result.code == 1 and f"environment variable {TOKEN_VAR} (http-auth-env) is not set" in result.stdout
        assert server.seen == []

    def test_webhooks_never_get_the_auth_header(self, server, tmp_path):
        hooks = Server()
        with hooks:
            result = run_cli("check", server.url("/echo-auth"), "--http-auth-env", TOKEN_VAR,
                             "--webhook", hooks.url("/hook"), env={TOKEN_VAR: TOKEN}, cwd=tmp_path)
            assert result.code == 3, result.stdout + result.stderr
            (method, path, headers) = hooks.seen[-1]
        assert (method, path) == ("POST", "/hook") and "Authorization" not in headers

    def test_webhooks_follow_the_proxy_setting(self, server, tmp_path):
        env = {"HTTP_PROXY": server.url("", host="127.0.0.1")}
        hook = "http://hooks.celery-probe-test.invalid/hook"
        direct = run_cli("check", server.url("/echo-auth"), "--webhook", hook, env=env, cwd=tmp_path)
        assert "cannot resolve host" in direct.stderr, direct.stderr
        proxied = run_cli("check", server.url("/echo-auth"), "--webhook", hook, "--http-proxies", "env",
                          env=env, cwd=tmp_path)
        assert "warning" not in proxied.stderr, proxied.stderr
        assert ("POST", hook) in [(m, p) for m, p, _h in server.seen]

    def test_the_endpoint_probe_of_a_run_sends_the_auth_header_direct(self, server, redis_server, tmp_path):
        """A real run: the endpoint on loopback is reached directly under --http-proxies env."""
        env = {TOKEN_VAR: TOKEN, "HTTP_PROXY": f"http://127.0.0.1:{free_port()}"}
        result = run_cli("run", "-b", redis_server.url(), "--deadline", "4", "--format", "json",
                         "--endpoint", server.url("/needs-auth"), "--http-auth-env", TOKEN_VAR,
                         "--http-proxies", "env", env=env, cwd=tmp_path)
        (endpoint,) = result.verdict()["endpoints"]
        assert endpoint["ok"] and endpoint["status"] == "healthy", endpoint
        assert server.seen[-1][2]["Authorization"] == TOKEN
        assert TOKEN not in result.stdout + result.stderr + (tmp_path / "reports" / "latest.json").read_text()

    def test_serve_passes_the_http_settings_to_its_probe_process(self, pki, monkeypatch):
        from celery_probe.serve.loop import check_round_trip, child_environment

        monkeypatch.setenv(TOKEN_VAR, TOKEN)
        settings = resolve_settings({"broker": "redis://127.0.0.1:1/0", "http_proxies": "env",
                                     "http_ca_file": str(pki.ca), "http_client_cert": str(pki.client_cert),
                                     "http_client_key": str(pki.client_key), "http_auth_env": TOKEN_VAR},
                                    pyproject=False)
        check_round_trip(settings)  # raises if any setting would arrive changed
        env = child_environment(settings)
        assert env["CELERY_PROBE_HTTP_AUTH_ENV"] == TOKEN_VAR and env[TOKEN_VAR] == TOKEN  # the name, inherited

    def test_ingest_posts_with_the_auth_header(self, server, tmp_path):
        report = tmp_path / "latest.json"
        report.write_text(json.dumps({"tests": []}))
        result = run_cli("ingest", str(report), "--post", server.url("/collect"), "--http-auth-env", TOKEN_VAR,
                         env={TOKEN_VAR: TOKEN}, cwd=tmp_path)
        assert "could not post" in result.stderr and "HTTP 404" in result.stderr  # delivered, then refused
        (method, path, headers) = server.seen[-1]
        assert (method, path, headers["Authorization"]) == ("POST", "/collect", TOKEN)
        assert TOKEN not in result.stdout + result.stderr
