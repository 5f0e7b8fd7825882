"""``celery_probe.testing.RedisServer`` answers for itself, not for whoever holds its port.

A port found free can be taken before redis-server binds it. Then our redis-server exits and a
PING on the port reaches the other server, which may go away in the middle of a test: every
client of "our" broker would see its connection closed by a server that was never ours.
"""

from __future__ import annotations

import pytest

from celery_probe.testing import RedisServer, StartFailed

pytestmark = pytest.mark.redis_only


def test_a_port_taken_before_the_bind_is_chosen_again(redis_server: RedisServer):
    server = RedisServer()
    server.port = redis_server.port  # what the race leaves: our free port is someone else's now
    with server:
        assert server.port != redis_server.port
        with server.client() as client:
            assert int(client.info("server")["process_id"]) == server.pid
        with redis_server.client() as other:
            assert int(other.info("server")["process_id"]) == redis_server.pid  # left alone


def test_a_port_given_and_taken_is_a_clear_error(redis_server: RedisServer):
    server = RedisServer(port=redis_server.port)
    try:
        with pytest.raises(StartFailed, match=rf"could not listen on 127.0.0.1:{redis_server.port}"):
            server.start(timeout=10)
        assert not server.alive()
    finally:
        server.close()
    assert redis_server.ping()


def test_a_restart_keeps_its_port(redis_server: RedisServer):
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port and redis_server.ping()
