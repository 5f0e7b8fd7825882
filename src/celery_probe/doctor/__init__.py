"""``celery-probe doctor``: a production-readiness review of an app, its workers and its broker.

The pitfalls operators usually learn about from an outage (Redis evicting queued tasks, a
visibility timeout shorter than a countdown, countdown tasks stalling quorum queues, tasks
without a time limit…), each found from evidence and reported with the setting that fixes it.

The room is split the way the rest of celery-probe is: :mod:`.facts` is the evidence as plain
data, :mod:`.gather` the only module that talks to the broker and the workers, :mod:`.rules`
the pure judgement from facts to checks, :mod:`.catalogue` what each check means and where it
is documented, and :mod:`.render` the text and JSON a person or a pipeline reads.
"""
