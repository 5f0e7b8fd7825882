"""Alerts on a change of Celery's health: mail (SMTP or sendmail) and webhooks.

One job per module:

* :mod:`~celery_probe.alerting.state`: pure decision logic and the state's data model;
* :mod:`~celery_probe.alerting.template`: subjects, mail bodies, chat texts;
* :mod:`~celery_probe.alerting.mail`: building and sending mail;
* :mod:`~celery_probe.alerting.webhook`: generic, Slack and Telegram webhooks;
* :mod:`~celery_probe.alerting.statefile`: the lock and the atomic state file;
* :mod:`~celery_probe.alerting.config`: validating the options;
* :mod:`~celery_probe.alerting.dispatch`: lock, decide, send, record;
* :mod:`~celery_probe.alerting.options`: the click options shared by ``check`` and ``run``.
"""
