"""Plain Redis commands over a kombu channel's own connection pool, and which broker is Redis.

kombu's Redis client rewrites the key of some commands with ``global_keyprefix`` (``LLEN``,
``SET``…) and not of others (``LRANGE``, ``GET``…). Commands sent through a plain client on
the same pool (same address, password, TLS, socket timeouts) are never rewritten, so the
key a probe names is exactly the key it reads, and kombu's prefix is added explicitly where
the key is kombu's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu import Connection


def transport_name(broker: Connection | str) -> str:
    """The kind of broker a connection (or a broker URL) talks to: kombu's ``driver_type``.

    ``redis`` for ``redis://``, ``rediss://``, ``redis+socket://`` and ``sentinel://``;
    ``amqp`` for RabbitMQ; and so on. When kombu cannot load the transport (a client library
    missing), the transport the URL names, so a message still says what the broker is; a
    URL kombu does not know at all is ``unknown``. Nothing is connected to find out.
    """
    try:
        if isinstance(broker, str):
            from kombu import Connection

            broker = Connection(broker)
        return str(broker.transport.driver_type)
    except Exception:
        return str(getattr(broker, "transport_cls", None) or "unknown")


def plain_client(channel: Any) -> Any:
    """A ``redis.Redis`` on the pool of kombu's channel client, without key rewriting."""
    import redis

    pool = channel.client.connection_pool
    kwargs: dict[str, Any] = {"connection_pool": pool}
    provider = getattr(pool, "connection_kwargs", {}).get("credential_provider")
    if provider is not None:
        kwargs["credential_provider"] = provider
    return redis.Redis(**kwargs)


def key_prefix(channel: Any) -> str:
    """kombu's ``global_keyprefix`` transport option ('' when unset)."""
    return str(getattr(channel, "global_keyprefix", "") or "")


def server_time(answer: Any) -> float:
    """Seconds since the epoch from a Redis ``TIME`` answer (``[seconds, microseconds]``)."""
    seconds, micros = answer
    return int(seconds) + int(micros) / 1_000_000
