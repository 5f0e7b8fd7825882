"""What the tests read from docs/deploy/kubernetes/: the manifests, their containers, probes and commands.

Pure: YAML in, plain data out. The unit tests check the manifests against Kubernetes' schemas and
celery-probe's and Celery's command lines; the integration tests run the same command lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.environment import ROOT

MANIFESTS = ROOT / "docs" / "deploy" / "kubernetes"
PROBE_KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
KUBELET_DEFAULT_TIMEOUT = 1  # seconds; enforced for exec probes since Kubernetes 1.20
# A URL's user information (``scheme://user:password@host``): a credential, wherever it appears.
URL_CREDENTIAL = re.compile(r"\w+://[^/\s@]*@")


def manifest_files() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    """Every resource of a (possibly multi-document) manifest file."""
    import yaml

    found = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert found, f"{path.name} holds no resource"
    return found


def resource(path: Path, kind: str) -> dict[str, Any]:
    """The one resource of ``kind`` in ``path``."""
    matching = [doc for doc in documents(path) if doc["kind"] == kind]
    assert len(matching) == 1, f"{path.name}: {len(matching)} resources of kind {kind}"
    return matching[0]


@dataclass(frozen=True)
class Container:
    """One container of a workload, with where it comes from (for messages)."""

    where: str
    spec: dict[str, Any]

    @property
    def argv(self) -> list[str]:
        return [*self.spec.get("command", []), *self.spec.get("args", [])]

    def probes(self) -> dict[str, dict[str, Any]]:
        return {kind: self.spec[kind] for kind in PROBE_KINDS if kind in self.spec}

    def env(self) -> dict[str, dict[str, Any]]:
        return {item["name"]: item for item in self.spec.get("env", [])}

    def probe_argv(self, kind: str) -> list[str]:
        return list(self.spec[kind]["exec"]["command"])


def containers(path: Path) -> Iterator[Container]:
    """Every container (init containers too) of every workload in ``path``."""
    for doc in documents(path):
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        for field in ("initContainers", "containers"):
            for spec in pod.get(field, []):
                yield Container(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} {spec['name']}", spec)


def command_lines(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Every command line of ``path``: each container's, and each exec probe's."""
    for container in containers(path):
        if container.argv:
            yield container.where, container.argv
        for kind, probe in container.probes().items():
            if "exec" in probe:
                yield f"{container.where} {kind}", list(probe["exec"]["command"])


def the_container(path: Path) -> Container:
    found = list(containers(path))
    assert len(found) == 1, f"{path.name}: {len(found)} containers"
    return found[0]


def flags(argv: list[str]) -> list[str]:
    """The options an argument list names (``--name=value`` as ``--name``), in order."""
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("-") and arg != "-"]


def option_value(argv: list[str], *names: str) -> str:
    """The value of the last of ``names`` in ``argv`` (``--name value`` or ``--name=value``)."""
    found = None
    for position, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key in names:
            found = value if eq else argv[position + 1]
    assert found is not None, f"{argv} sets none of {names}"
    return found
