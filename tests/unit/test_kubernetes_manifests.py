"""docs/deploy/kubernetes/: valid Kubernetes, real command lines, and probes that follow docs/kubernetes.md.

Offline: every resource is validated against the schemas of Kubernetes' own API that
kubernetes-validate ships (strict, so a misspelt field fails rather than being dropped by the API
server), and every command line is parsed by the click command it names: celery-probe's, or
Celery's ``worker`` with the options ``celery_probe.worker.install(app)`` adds. The integration
twin (tests/integration/test_kubernetes_manifests.py) runs the same command lines.
"""

from __future__ import annotations

import copy

import click
import pytest

from tests.support.kubernetes import (
    KUBELET_DEFAULT_TIMEOUT,
    MANIFESTS,
    URL_CREDENTIAL,
    command_lines,
    containers,
    documents,
    flags,
    manifest_files,
    option_value,
    resource,
    the_container,
)

WORKER = MANIFESTS / "worker-deployment.yaml"
SERVE = MANIFESTS / "serve-deployment.yaml"
# The oldest Kubernetes the manifests are written for (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is GA there) and the newest whose schemas the package ships.
OLDEST_KUBERNETES = "1.31"
# A fresh celery-probe process takes tens of ms when idle; the kubelet's clock also runs while
# the interpreter starts in a CPU-throttled container, so an exec probe gets at least this.
MIN_EXEC_TIMEOUT = 2
# Settings whose values are URLs or secrets: in a manifest they come only from a Secret.
SECRET_VARIABLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_PROBE_BROKER", "CELERY_PROBE_BACKEND")
SECRET_FLAGS = {"-b", "--broker", "--backend", "--result-backend"}


def kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import latest_version

    return sorted({OLDEST_KUBERNETES, latest_version()})


def test_the_manifests_are_there():
    assert {path.name for path in manifest_files()} == {"worker-deployment.yaml", "serve-deployment.yaml"}


# -- Kubernetes' schemas --------------------------------------------------------------------


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_resource_is_valid_kubernetes(path, version):
    from kubernetes_validate.utils import ValidationError, validate

    for doc in documents(path):
        try:
            validate(doc, version, strict=True)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} is not valid Kubernetes "
                        f"{version}: {where}: {exc.message}")


def test_the_validator_rejects_a_misspelt_field():
    """Strict mode is what catches a typo: the API server drops unknown fields with a warning,
    and non-strict validation lets them through."""
    from kubernetes_validate.utils import ValidationError, validate

    broken = copy.deepcopy(resource(WORKER, "Deployment"))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    validate(broken, OLDEST_KUBERNETES, strict=False)
    with pytest.raises(ValidationError, match="periodSecond"):
        validate(broken, OLDEST_KUBERNETES, strict=True)


def test_the_validator_rejects_a_wrong_type():
    from kubernetes_validate.utils import ValidationError, validate

    broken = copy.deepcopy(resource(WORKER, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] = "celery-probe worker-check"
    with pytest.raises(ValidationError):
        validate(broken, OLDEST_KUBERNETES, strict=True)


# -- the command lines against the CLIs they name -------------------------------------------


def all_command_lines() -> list[tuple[str, list[str]]]:
    return [line for path in manifest_files() for line in command_lines(path)]


def test_every_command_line_names_a_known_program():
    """Nothing is skipped by the two checks below because of its program name."""
    lines = all_command_lines()
    assert len(lines) >= 5
    for where, argv in lines:
        assert argv[0] in ("celery", "celery-probe"), f"{where}: {argv[0]} is checked by no test"


def known_options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
            if isinstance(param, click.Option)} | {"-h", "--help"}


def check_against(command: click.Command, argv: list[str], where: str) -> None:
    """Every option of ``argv`` is one of ``command``'s, and click parses the line (values as given)."""
    unknown = [flag for flag in flags(argv) if flag not in known_options(command)]
    assert not unknown, f"{where}: {command.name} has no option {', '.join(unknown)}"
    command.make_context(command.name, list(argv), resilient_parsing=True)


@pytest.mark.parametrize("where, argv", [line for line in all_command_lines() if line[1][0] == "celery-probe"],
                         ids=lambda value: value if isinstance(value, str) else None)
def test_celery_probe_command_lines_use_real_options(where, argv):
    from celery_probe.cli.main import all_commands

    commands = all_commands()
    name = argv[1]
    assert name in commands, f"{where}: celery-probe has no command {name!r} (it has {sorted(commands)})"
    check_against(commands[name], argv[2:], where)


def test_the_option_check_rejects_an_option_the_command_lacks():
    from celery_probe.cli.main import all_commands

    serve = all_commands()["serve"]
    check_against(serve, ["-A", "proj", "--expect-workers", "4"], "a good line")
    with pytest.raises(AssertionError, match="has no option --expect-worker\n"):
        check_against(serve, ["-A", "proj", "--expect-worker", "4"], "a typo")


def worker_command_with_user_options() -> click.Command:
    """Celery's ``worker`` command with the options an app that calls
    ``celery_probe.worker.install(app)`` adds (``celery`` extends the real one the same way)."""
    from celery import Celery
    from celery.bin.worker import worker

    from celery_probe.worker import install

    app = Celery("proj", set_as_current=False)
    install(app)
    added = list(app.user_options["worker"])
    return click.Command("worker", params=[*worker.params, *added])


@pytest.mark.parametrize("where, argv", [line for line in all_command_lines() if line[1][0] == "celery"],
                         ids=lambda value: value if isinstance(value, str) else None)
def test_celery_worker_command_lines_use_real_options(where, argv):
    from celery.bin.celery import celery

    assert "worker" in argv, f"{where}: only celery worker command lines are expected"
    split = argv.index("worker")
    global_flags = [flag for flag in flags(argv[1:split]) if flag not in known_options(celery)]
    assert not global_flags, f"{where}: celery has no option {', '.join(global_flags)}"
    check_against(worker_command_with_user_options(), argv[split + 1:], where)


# -- probes ---------------------------------------------------------------------------------


def all_probes():
    for path in manifest_files():
        for container in containers(path):
            for kind, probe in container.probes().items():
                yield f"{container.where} {kind}", kind, probe


def test_exec_probes_are_argument_arrays_without_a_shell():
    """An exec array runs the program itself: no shell to mangle quoting or keep a timeout's signal."""
    seen = 0
    for where, _kind, probe in all_probes():
        if "exec" in probe:
            seen += 1
            argv = probe["exec"]["command"]
            assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv), where
            assert argv[0] not in ("sh", "bash", "/bin/sh", "/bin/bash"), f"{where} runs a shell"
    assert seen >= 3


def test_exec_probes_allow_more_than_kubernetes_default_timeout():
    """Kubernetes enforces timeoutSeconds (1 s by default) on exec probes; a probe that is slower
    fails. Each exec probe sets its own, above the default, and below its period (no overlap)."""
    for where, _kind, probe in all_probes():
        if "exec" not in probe:
            continue
        timeout = probe.get("timeoutSeconds", KUBELET_DEFAULT_TIMEOUT)
        assert timeout >= MIN_EXEC_TIMEOUT > KUBELET_DEFAULT_TIMEOUT, f"{where}: timeoutSeconds {timeout}"
        assert timeout < probe.get("periodSeconds", 10), f"{where}: timeoutSeconds not below periodSeconds"
        argv = probe["exec"]["command"]
        if argv[:2] in (["celery-probe", "run"], ["celery-probe", "check"]):  # a probe run: its whole deadline
            deadline = float(option_value(argv, "--deadline")) if "--deadline" in flags(argv) else 5.0
            assert timeout >= deadline + 2, f"{where}: timeoutSeconds below the run's deadline + 2 s"


def test_no_liveness_probe_depends_on_the_broker():
    """A broker outage must restart nothing: liveness (and startup, which gates it) read only the
    worker's own liveness file, and nothing probes /healthz (down when the broker is)."""
    for where, kind, probe in all_probes():
        assert probe.get("httpGet", {}).get("path") != "/healthz", f"{where} uses /healthz"
        argv = probe.get("exec", {}).get("command", [])
        assert "inspect" not in argv and "ping" not in argv, f"{where} asks the workers over the broker"
        if argv and kind in ("livenessProbe", "startupProbe"):
            assert argv[:2] == ["celery-probe", "worker-check"] and "--liveness" in argv, where


def test_worker_probes_read_the_folder_the_worker_writes():
    worker = the_container(WORKER)
    folder = option_value(worker.argv, "--probe-dir")
    kinds = {"startupProbe": "--liveness", "livenessProbe": "--liveness", "readinessProbe": "--readiness"}
    assert set(worker.probes()) == set(kinds)
    for kind, evidence in kinds.items():
        argv = worker.probe_argv(kind)
        assert argv[:3] == ["celery-probe", "worker-check", folder] and evidence in argv, kind
    mounts = {mount["name"]: mount["mountPath"] for mount in worker.spec["volumeMounts"]}
    pod = resource(WORKER, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if mounts.get(v["name"]) == folder)
    assert "emptyDir" in volume, "the probe folder is the pod's own, gone with it"


def test_liveness_is_more_patient_than_readiness():
    """A wrong restart loses work; a wrong 'not ready' only holds a rollout or a drain."""
    worker = the_container(WORKER)
    live, ready = worker.spec["livenessProbe"], worker.spec["readinessProbe"]

    def patience(probe: dict) -> float:
        return float(option_value(probe["exec"]["command"], "--max-age")) + probe["periodSeconds"] * probe["failureThreshold"]

    assert patience(live) > patience(ready)
    startup = worker.spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for a slow app import"


# -- the rest of the worker Deployment ------------------------------------------------------


def test_rollouts_and_drains_wait_for_ready_workers():
    deployment = resource(WORKER, "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = resource(WORKER, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", "an outage must not block drains"


def test_the_grace_period_leaves_room_for_a_warm_shutdown():
    pod = resource(WORKER, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 30, "Kubernetes' default of 30 s cuts running tasks off"
    assert the_container(WORKER).spec["command"][0] == "celery", "celery itself is PID 1 and gets SIGTERM"


# -- credentials ----------------------------------------------------------------------------


def test_no_credential_on_a_command_line():
    """Command lines are visible to anyone who can read the pod spec or the node's process list."""
    for where, argv in all_command_lines():
        assert not SECRET_FLAGS & set(flags(argv)), f"{where}: broker or backend on the command line"
        for arg in argv:
            assert not URL_CREDENTIAL.search(arg), f"{where}: a URL with a user or password"
            assert "password" not in arg.lower(), where


def test_urls_and_secrets_come_from_a_secret():
    for path in manifest_files():
        for container in containers(path):
            env = container.env()
            assert {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"} <= set(env), container.where
            for name in SECRET_VARIABLES:
                if name in env:
                    assert "value" not in env[name], f"{container.where}: {name} written in the manifest"
                    assert env[name]["valueFrom"]["secretKeyRef"]["name"], container.where
            for item in env.values():
                assert not URL_CREDENTIAL.search(str(item.get("value", ""))), f"{container.where}: {item['name']}"


# -- serve ----------------------------------------------------------------------------------


def test_serve_probes_the_workers_the_worker_deployment_runs():
    serve, worker = the_container(SERVE), the_container(WORKER)
    replicas = resource(WORKER, "Deployment")["spec"]["replicas"]
    assert int(option_value(serve.argv, "--expect-workers")) == replicas
    assert option_value(serve.argv, "-A", "--app") == option_value(worker.argv, "-A", "--app")
    assert serve.env() == worker.env(), "both read the same broker and backend"


def test_serve_listens_where_its_probes_and_service_look():
    serve = the_container(SERVE)
    assert option_value(serve.argv, "--host") == "0.0.0.0", "the kubelet probes the pod's address"
    port = int(option_value(serve.argv, "--port"))
    ports = {item["name"]: item["containerPort"] for item in serve.spec["ports"]}
    assert ports == {"http": port}
    assert serve.spec["livenessProbe"]["httpGet"] == {"path": "/openapi.json", "port": "http"}
    assert serve.spec["readinessProbe"]["tcpSocket"] == {"port": "http"}
    service = resource(SERVE, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    labels = resource(SERVE, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    annotations = resource(SERVE, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


# -- the page -------------------------------------------------------------------------------


def test_the_page_shows_the_manifests_as_they_are():
    import sys

    sys.path.insert(0, str(MANIFESTS.parents[1]))
    import capture_examples  # docs/ is not a package; the marker format lives there

    bodies = capture_examples.example_bodies((MANIFESTS.parents[1] / "kubernetes.md").read_text())
    for name, block in capture_examples.shipped_files().items():
        assert name in bodies, f"docs/kubernetes.md does not show {name}"
        assert bodies[name] == block.rstrip() + "\n", (
            f"docs/kubernetes.md shows an old {name}: run docs/capture_examples.py --only cli")
