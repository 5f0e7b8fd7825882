"""A probe reaches RabbitMQ queues as they are and never changes the broker's topology.

Publishing with kombu's default declare against a quorum queue or one with
``x-max-priority`` fails with PRECONDITION_FAILED (a false down), and for a queue bound
with a routing key other than its name it declared a new exchange and binding. Each test
runs in a RabbitMQ vhost of its own, deleted afterwards, with a real worker of
tests/apps/topology_app.py, which declares the queues the way their owner would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from celery_probe.testing import CeleryWorker
from tests.support.environment import APPS, app_env
from tests.support.rabbitmq import rabbitmqctl

pytestmark = pytest.mark.rabbitmq_only



def topology(url: str) -> tuple[set[str], set[str]]:
    """The vhost's exchanges and its bindings between named entities (not the default exchange)."""
    vhost = url.rsplit("/", 1)[1]
    exchanges = set(rabbitmqctl("list_exchanges", "-p", vhost, "name", "type", "-q").splitlines())
    bindings = {line for line in rabbitmqctl("list_bindings", "-p", vhost, "source_name", "destination_name",
                                             "routing_key", "-q").splitlines()
                if line and not line.startswith("\t")}  # lines without a source: the default exchange
    return exchanges, bindings


@pytest.fixture
def topology_worker(vhost_url: str) -> Iterator[CeleryWorker]:
    worker = CeleryWorker("topology_app", name="topo@%h", queues=("quorum", "prio", "keyed"),
                          env=app_env(vhost_url, "rpc://"), pythonpath=[APPS])
    try:
        yield worker.start(timeout=40)
    finally:
        worker.close()


def test_quorum_priority_and_keyed_queues_round_trip_without_declaring(vhost_url, topology_worker, cli):
    from celery import Celery

    # Celery's remote-control reply exchange appears with the first `inspect` anybody makes;
    # one ping first, so what is compared below is the task queues' topology.
    client = Celery(broker=vhost_url, set_as_current=False)
    assert client.control.ping(timeout=2.0, limit=1)
    client.close()
    before = topology(vhost_url)
    assert "keyed-exchange\tkeyed\tkeyed-key" in before[1]
    result = cli("run", "-b", vhost_url, "--backend", "rpc://", "-Q", "quorum,prio,keyed",
                 "--deadline", "4", "--format", "json")
    verdict = result.verdict()
    exchanges, bindings = topology(vhost_url)
    assert (exchanges - before[0], bindings - before[1]) == (set(), set())  # no exchange "keyed", no binding
    assert (exchanges, bindings) == before
    assert "PRECONDITION_FAILED" not in result.stdout
    assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
    for queue in ("quorum", "prio", "keyed"):
        assert verdict["queues"][queue]["roundtrip_ms"] is not None, queue
