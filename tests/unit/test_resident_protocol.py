"""The resident runner's wire format and exit-code mapping: pure functions, no process."""

from __future__ import annotations

import pytest

from celery_probe.run.forked import _exit_code
from celery_probe.run.resident import PRELOAD, decode, encode


class TestMessages:
    def test_a_message_is_one_line_and_reads_back_the_same(self):
        message = {"op": "run", "id": 7, "argv": ["run", "--format", "json"],
                   "env": {"CELERY_PROBE_BROKER": "redis://:p@ss\nword@127.0.0.1:1/0"}, "cwd": "/tmp", "timeout": 5.0}
        line = encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode(line) == message

    @pytest.mark.parametrize("line", [b"[1, 2]", b'"ready"', b"{not json"])
    def test_anything_but_a_json_object_is_refused(self, line):
        with pytest.raises(ValueError):
            decode(line)


class TestExitCodes:
    @pytest.mark.parametrize(("value", "code"), [(None, 0), (0, 0), (4, 4), (64, 64), (256 + 3, 3), ("bye", 1)])
    def test_sys_exit_values_map_as_the_interpreter_maps_them(self, value, code, capsys):
        assert _exit_code(value) == code
        assert capsys.readouterr().err == ("bye\n" if value == "bye" else "")


def test_the_server_preloads_no_operator_code_and_no_app_module():
    """Import only: celery_probe, pytest and the client libraries, never an app or the tests' apps."""
    roots = {name.split(".")[0] for name in PRELOAD}
    assert roots <= {"celery_probe", "pytest", "_pytest", "pytest_jsonreport", "pytest_timeout", "celery", "kombu",
                     "redis", "amqp", "pdb", "runpy",
                     "secrets", "hmac", "encodings", "stringprep"}  # the standard library's, imported lazily by those
