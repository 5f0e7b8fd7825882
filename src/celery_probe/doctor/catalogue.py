"""What each doctor check is: its stable code, why the problem hurts, the setting that fixes it
and the page that documents it. Pure data: the rules say *whether* and *what was seen*, this
module says *what it means*.
"""

from __future__ import annotations

from dataclasses import dataclass

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
SEVERITIES = (CRITICAL, WARNING, INFO)

CELERY_CONF = "https://docs.celeryq.dev/en/stable/userguide/configuration.html"
CELERY_REDIS = "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html"
CELERY_RABBITMQ = "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html"


@dataclass(frozen=True)
class Rule:
    """One check: ``broker`` names the only broker it applies to (None: any)."""

    code: str
    title: str
    why: str
    fix: str
    docs: str
    broker: str | None = None


RULES: tuple[Rule, ...] = (
    Rule("redis-eviction-policy", "Redis may evict queued tasks",
         "With any maxmemory-policy but noeviction, Redis deletes keys when it reaches maxmemory: a queue "
         "list, the unacked hash or a result is dropped silently, and its tasks never run.",
         "maxmemory-policy noeviction in the broker's redis.conf (CONFIG SET maxmemory-policy noeviction); "
         "use a separate Redis for caching",
         "https://redis.io/docs/latest/develop/reference/eviction/", broker="redis"),
    Rule("redis-visibility-timeout", "Countdown/ETA tasks outlive the visibility timeout",
         "On Redis a message a worker took but has not acknowledged is given to another worker after "
         "visibility_timeout seconds. A task waiting for an ETA further away than that is delivered again "
         "and runs twice (or more).",
         "broker_transport_options = {'visibility_timeout': SECONDS} longer than the longest countdown/ETA "
         "(on the app and the workers)",
         f"{CELERY_REDIS}#visibility-timeout", broker="redis"),
    Rule("redis-visibility-timeout-acks-late", "acks_late tasks may run longer than the visibility timeout",
         "With task_acks_late a task is acknowledged when it ends. One that runs longer than "
         "visibility_timeout is delivered to another worker while it still runs, and runs twice.",
         "broker_transport_options = {'visibility_timeout': SECONDS} above task_time_limit",
         f"{CELERY_REDIS}#visibility-timeout", broker="redis"),
    Rule("quorum-queue-eta", "Countdown/ETA tasks on quorum queues without native delayed delivery",
         "Quorum queues do not support global QoS, so the worker's prefetch is fixed: every countdown/ETA "
         "task it holds takes a prefetch slot until its time comes, and with enough of them the worker "
         "takes no other task at all (it stalls). Celery 5.5+ avoids this with native delayed delivery, "
         "which needs a topic (or fanout) exchange.",
         "task_default_exchange_type = 'topic' (or a topic exchange for each quorum queue in task_queues), "
         "Celery 5.5 or later on the app and the workers; or no countdown/ETA on quorum queues",
         f"{CELERY_RABBITMQ}#native-delayed-delivery", broker="amqp"),
    Rule("no-time-limit", "Tasks without a time limit",
         "A task that hangs (a socket without a timeout, a lock) holds its pool slot forever; enough of "
         "them and the worker runs nothing while it still answers ping.",
         "task_time_limit (and task_soft_time_limit) on the app, time_limit= on the task or in "
         "task_annotations, or --time-limit on the workers",
         f"{CELERY_CONF}#task-time-limit"),
    Rule("cancel-on-connection-loss", "Running tasks are not cancelled when the broker connection is lost",
         "When a worker loses its broker connection, the messages of the tasks it runs go back to the "
         "queue; with acks_late another worker runs them again while the first still does. Celery 6 "
         "will cancel them by default; until then it must be chosen.",
         "worker_cancel_long_running_tasks_on_connection_loss = True",
         f"{CELERY_CONF}#worker-cancel-long-running-tasks-on-connection-loss"),
    Rule("connection-retry-on-startup", "Whether workers retry the broker at start-up is not chosen",
         "Unset, broker_connection_retry_on_startup falls back to broker_connection_retry with a "
         "deprecation warning; Celery 6 will stop retrying, so a worker started while the broker is "
         "restarting exits instead of waiting for it.",
         "broker_connection_retry_on_startup = True",
         f"{CELERY_CONF}#broker-connection-retry-on-startup"),
    Rule("no-result-backend", "No result backend",
         "Without a result backend nothing can confirm that a task ran: no result, no state, and no "
         "round trip (celery-probe run cannot prove that work flows; round-trip SLAs cannot be measured).",
         "result_backend = 'redis://…' (or another backend) on the app and the workers",
         f"{CELERY_CONF}#result-backend"),
    Rule("task-events-off", "Task SLAs are configured but workers send no task events",
         "Runtime SLAs per task type are measured from task events; a worker started without -E "
         "(worker_send_task_events) sends none, so every SLA reads as met because nothing is measured.",
         "start the workers with -E (or worker_send_task_events = True)",
         f"{CELERY_CONF}#worker-send-task-events"),
    Rule("version-drift", "Workers run different Celery or kombu versions",
         "Workers and the publishing app on different Celery or kombu versions disagree on message "
         "protocol details and defaults (native delayed delivery, quorum detection, settings that "
         "changed meaning): problems that appear only on some workers, only for some tasks.",
         "deploy one Celery and kombu version to the app and every worker",
         "https://docs.celeryq.dev/en/stable/history/index.html"),
    Rule("queue-drift", "Workers consume queues the app does not know",
         "A worker consuming a queue that the app neither declares (task_queues) nor routes to "
         "(task_routes, task_default_queue) is either reading a stale queue or shows that the app's "
         "routing is not the one deployed: tasks go where no worker reads, or workers wait on a queue "
         "nothing fills.",
         "the same task_queues/task_routes on the app and the workers, and -Q naming only those queues",
         f"{CELERY_CONF}#task-routes"),
)

RULE_BY_CODE = {rule.code: rule for rule in RULES}
