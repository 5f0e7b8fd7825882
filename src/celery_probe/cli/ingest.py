"""``celery-probe ingest``: turn a report file into the ops-alerts document, and deliver it.

For a service that ingests reports (a CI job uploading ``latest.json``, a collector reading
a shared folder): map the report to its verdict, merge its alerts with alerts the service
already has (``sync_health`` and friends, kept untouched), print the document and, with
``--post``, send it as JSON. Exit codes follow the verdict as for ``celery-probe verdict``;
a delivery that fails exits 1, as ``check`` does for an endpoint that cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from celery_probe.cli.options import setting_options
from celery_probe.config.settings import HTTP
from celery_probe.errors import ProbeUsageError

if TYPE_CHECKING:
    from celery_probe.net.http import HttpOptions

EXIT_DELIVERY_FAILED = 1
POST_TIMEOUT = 10.0
MAX_ANSWER = 64_000


def read_existing_alerts(path: Path) -> list[dict[str, Any]]:
    """Alerts from ``--alerts FILE``: a list, or an ops-alerts document with an ``alerts`` list."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbeUsageError(f"cannot read alerts file {path}: {exc.strerror or exc} (from --alerts)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProbeUsageError(f"alerts file {path} is not JSON: {exc} (from --alerts)") from None
    except RecursionError:
        raise ProbeUsageError(f"alerts file {path} is nested too deeply (from --alerts)") from None
    alerts = document.get("alerts") if isinstance(document, dict) else document
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise ProbeUsageError(f"alerts file {path} holds no list of alert objects (from --alerts)")
    return alerts


def ops_document(report_path: Path, existing: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The ops-alerts document for a report file, and the verdict's status."""
    from celery_probe.present.ops_alerts import get_ops_alerts
    from celery_probe.storage.reports import load_report
    from celery_probe.verdict.mapper import unknown_verdict, verdict_from_report, verdicts_by_target
    from celery_probe.verdict.model import AnyVerdict, is_targets_verdict

    report, problem = load_report(report_path)
    verdict: AnyVerdict
    if problem is not None:
        verdict = unknown_verdict(problem)
    elif isinstance(report, dict) and isinstance(report.get("celery_probe"), dict) and \
            "targets" in report["celery_probe"]:
        verdict = verdicts_by_target(report)
    else:
        verdict = verdict_from_report(report)
    document: dict[str, Any]
    if is_targets_verdict(verdict):
        document = {"alerts": list(existing), "celery_health": {}}
        for name, target in verdict["targets"].items():
            part = get_ops_alerts(target)
            document["alerts"] += [{**alert, "target": name} for alert in part["alerts"]]
            document["celery_health"][name] = part["celery_health"]
        document["status"] = verdict["status"]
    else:
        document = dict(get_ops_alerts(verdict, alerts=existing))
    return document, str(verdict.get("status", "unknown"))


def post_document(url: str, document: dict[str, Any], http: HttpOptions) -> str | None:
    """POST ``document`` as JSON; None when delivered (2xx), else a one-line reason."""
    from celery_probe.net.http import BoundedCallError, request

    body = json.dumps(document).encode("utf-8")
    try:
        answer = request("POST", url, timeout=POST_TIMEOUT, max_body=MAX_ANSWER, body=body, options=http,
                         send_auth=True, headers={"Content-Type": "application/json"})
    except BoundedCallError as exc:
        return str(exc)
    if not 200 <= answer.status < 300:
        return f"HTTP {answer.status} {answer.reason}".strip()
    return None


@click.command()
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--alerts", "alerts_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Alerts the service already has (a JSON list, or a document with an 'alerts' list); kept untouched.")
@click.option("--post", "post_url", metavar="URL", help="POST the document as JSON to this URL (10 s bound).")
@setting_options(HTTP)
def ingest(report: Path, alerts_file: Path | None, post_url: str | None, **http_raw: Any) -> int:
    """Map a pytest-json-report REPORT to the ops-alerts document, print it, optionally POST it."""
    from celery_probe.alerting.webhook import error_display, safe_display, url_problem
    from celery_probe.errors import exit_code

    http: HttpOptions | None = None
    if post_url is not None:
        problem = url_problem(post_url)
        if problem:
            raise ProbeUsageError(f"invalid URL {error_display(post_url)}: {problem} (from --post)")
        from celery_probe.config.settings import as_cli_overrides, resolve_http_client
        from celery_probe.net.http import HttpOptions

        http = HttpOptions.from_settings(resolve_http_client(as_cli_overrides(**http_raw)))
    existing = read_existing_alerts(alerts_file) if alerts_file is not None else []
    document, status = ops_document(report, existing)
    click.echo(json.dumps(document, indent=2, default=str))
    if post_url is not None and http is not None:
        failure = post_document(post_url, document, http)
        if failure is not None:
            click.echo(f"celery-probe: could not post to {safe_display(post_url)}: {failure}", err=True)
            return EXIT_DELIVERY_FAILED
    return exit_code(status)
