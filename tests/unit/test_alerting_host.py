"""Which name alert mail gives this host: the FQDN, never a ``localhost`` one."""

from __future__ import annotations

import pytest

from celery_probe.alerting.host import choose_hostname


@pytest.mark.parametrize(("short", "fqdn", "chosen"), [
    ("vm", "vm.example.com", "vm.example.com"),
    ("vm", "vm", "vm"),  # no domain known: the short name
    ("vm", "localhost", "vm"),  # what getfqdn() says when the name maps to 127.0.0.1 only
    ("vm", "localhost.localdomain", "vm"),
    ("vm.example.com", "localhost", "vm.example.com"),  # the hostname itself is qualified
    ("vm", None, "vm"),  # the lookup timed out
    ("vm", "vm.example.com.", "vm.example.com"),
    ("", None, "localhost"),
])
def test_choose_hostname(short, fqdn, chosen):
    assert choose_hostname(short, fqdn) == chosen
