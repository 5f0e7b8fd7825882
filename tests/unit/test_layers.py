"""The source tree keeps to the rooms docs/overview.md draws: each room imports only what it may.

Every import is read, also those inside functions (the lazy ones are the easiest to let slip),
so a cycle or an I/O library in a pure room fails here before anyone notices it in a profile.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "celery_probe"

# room -> the celery_probe rooms (or top-level modules) it may import, besides itself.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "numbers": set(),
    "config": {"errors", "verdict.flower"},
    "verdict": {"errors", "numbers", "config.urls"},
    "storage": {"errors", "numbers", "config", "verdict"},
    "present": {"errors", "numbers", "config", "verdict", "storage", "__init__"},
    "probing": {"errors", "config", "verdict", "storage", "net"},
    "pytest_plugin": {"errors", "config", "probing", "verdict", "storage"},
    "alerting": {"errors", "numbers", "config", "verdict", "storage", "net"},
    "remediation": {"errors", "config", "storage", "alerting.statefile"},
    "run": {"errors", "config", "probing", "pytest_plugin", "verdict", "storage", "present", "alerting",
            "remediation", "__init__"},
    "serve": {"errors", "config", "run", "verdict", "storage", "present", "__init__"},
    "doctor": {"errors", "config", "probing", "present.text"},
    "testing": set(),
    "beat": {"probing.beat"},  # the stable public import of an operator's Celery app
    "net": {"errors", "config"},
    # the worker's own health files: written inside the worker, judged by a fresh process that
    # must not import Celery (the judge side may lean on the pure number and duration helpers only)
    "worker": {"numbers", "config.durations"},
    "cli": {"*"},
    "__init__": {"run"},
    "__main__": {"cli"},
}

# Modules that decide or render: no broker client, no network, no processes, no files of their own.
PURE = ("numbers", "verdict", "doctor.catalogue", "doctor.facts", "doctor.rules", "doctor.messages",
        "doctor.render", "alerting.state", "alerting.causes", "remediation.policy", "present.text",
        "present.charts", "present.ops_alerts", "present.status_page", "worker.judge", "worker.evidence")
IO_LIBRARIES = {"celery", "kombu", "redis", "requests", "socket", "subprocess", "http", "smtplib",
                "starlette", "uvicorn", "pytest", "urllib.request", "shutil", "tempfile"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "celery_probe":  # ``from celery_probe import __version__``: the package itself
                names.update(f"celery_probe.{alias.name}" for alias in node.names if alias.name != "__version__")
                names.discard("celery_probe")
    return names


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}



def _room(module: str) -> str:
    return module.split(".")[0]


def _allowed(room: str, target: str) -> bool:
    allowed = MAY_IMPORT[room]
    return "*" in allowed or _room(target) == room or any(
        target == rule or target.startswith(rule + ".") for rule in allowed)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_what_its_room_may(module: str) -> None:
    room = _room(module)
    assert room in MAY_IMPORT, f"{module} is in no room docs/overview.md names"
    crossing = sorted(
        name for name in MODULES[module]
        if name.startswith("celery_probe.") and not _allowed(room, name.removeprefix("celery_probe."))
    )
    assert not crossing, f"{module} imports {', '.join(crossing)}, which the {room} room may not"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(PURE)))
def test_pure_module_imports_no_io(module: str) -> None:
    io = sorted(name for name in MODULES[module]
                if name in IO_LIBRARIES or name.split(".")[0] in IO_LIBRARIES - {"urllib"})
    assert not io, f"{module} is pure but imports {', '.join(io)}"


def test_nothing_outside_cli_imports_cli() -> None:
    importers = sorted(module for module, names in MODULES.items()
                       if _room(module) not in ("cli", "__main__")
                       and any(name.startswith("celery_probe.cli") for name in names))
    assert not importers, f"{', '.join(importers)} import the command line"


def test_the_checker_sees_lazy_imports() -> None:
    """A function-level import counts: the rule must not be fooled by deferring an import."""
    assert "celery_probe.run.child" in MODULES["__init__"]
    assert "kombu" in MODULES["probing.workers"]
