"""Targets files: several deployments probed in one run (``celery-probe run --targets FILE``).

A targets file has ``[targets.NAME]`` tables (and an optional ``[defaults]`` table) with the
keys of ``[tool.celery-probe]``; each named target resolves to its own
:class:`~celery_probe.config.settings.Settings` with the usual precedence beneath its table.
What a target is while it is probed (its app, deadline and measurements) is the probe
session's: :class:`celery_probe.pytest_plugin.session_state.TargetState`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from celery_probe.config.settings import (
    REMEDIATION,
    RUN_WIDE,
    Settings,
    normalize_table,
    require_target,
    resolve_settings,
)
from celery_probe.errors import ProbeUsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SERVE_KEYS = ("interval",)
"""Keys of a targets file that belong to ``serve --targets``, not to the probes; ``run`` ignores them,
so one file serves both."""

TARGET_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def load_targets(
    path: Path,
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    pyproject: Path | None | bool = True,
) -> dict[str, Settings]:
    """The named targets of a targets file, each resolved to its own :class:`Settings`.

    The file has ``[targets.NAME]`` tables (and an optional ``[defaults]`` table) with the
    same keys as ``[tool.celery-probe]``. For each target, its own table wins, then
    ``[defaults]``, then flags, environment and ``pyproject.toml`` as for a single target.
    """
    tables = load_target_tables(path, cli, environ=environ, pyproject=pyproject, extra_keys=SERVE_KEYS)
    return {name: settings for name, (settings, _serve_only) in tables.items()}


def load_target_tables(
    path: Path,
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    pyproject: Path | None | bool = True,
    extra_keys: Collection[str] = (),
) -> dict[str, tuple[Settings, dict[str, tuple[Any, str]]]]:
    """:func:`load_targets`, plus each target's ``extra_keys`` that are not probe settings.

    ``serve --targets`` reads ``interval`` this way: it is serve's own, so it is taken out
    of the tables before the settings are resolved. Each extra value comes with where it
    was found (``[targets.NAME] in FILE`` or ``[defaults] in FILE``), for error messages.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbeUsageError(f"cannot read targets file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProbeUsageError(f"cannot read targets file {path}: {exc}") from None
    unknown = sorted(set(data) - {"defaults", "targets"})
    if unknown:
        raise ProbeUsageError(f"unknown table {unknown[0]!r} in targets file {path} (expected [targets.NAME])")
    raw_defaults = data.get("defaults", {})
    if not isinstance(raw_defaults, dict):
        raise ProbeUsageError(f"[defaults] in {path} must be a table")
    default_extra, raw_defaults = _split(raw_defaults, extra_keys)
    defaults = normalize_table(raw_defaults, f"[defaults] in {path}")
    tables = data.get("targets")
    if not isinstance(tables, dict) or not tables:
        raise ProbeUsageError(f"targets file {path} has no [targets.NAME] table")
    resolved: dict[str, tuple[Settings, dict[str, tuple[Any, str]]]] = {}
    for name, table in tables.items():
        label = f"[targets.{name}] in {path}"
        if not set(name) <= TARGET_NAME_CHARS:
            raise ProbeUsageError(f"invalid target name {name!r} in {path}: use letters, digits, '_', '-' and '.'")
        if not isinstance(table, dict):
            raise ProbeUsageError(f"{label} must be a table")
        own_extra, table = _split(table, extra_keys)
        own = normalize_table(table, label)
        for key in (*RUN_WIDE, *REMEDIATION):
            if key in own or key in defaults:
                raise ProbeUsageError(f"{key.replace('_', '-')} is a run-wide setting, not one of a target ({label})")
        merged = {**defaults, **own}
        labels = {key: (label if key in own else f"[defaults] in {path}") for key in merged}
        settings = resolve_settings({**(cli or {}), **merged}, environ=environ, pyproject=pyproject,
                                    cli_labels=labels)
        require_target(settings, where=label)
        extra = {key: (value, f"[defaults] in {path}") for key, value in default_extra.items()}
        extra.update({key: (value, label) for key, value in own_extra.items()})
        resolved[name] = (settings, extra)
    return resolved


def _split(table: Mapping[str, Any], keys: Collection[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``table``'s ``keys`` (dashes or underscores) apart from the rest."""
    wanted = {key.replace("-", "_") for key in keys}
    extra = {k.replace("-", "_"): v for k, v in table.items() if k.replace("-", "_") in wanted}
    rest = {k: v for k, v in table.items() if k.replace("-", "_") not in wanted}
    return extra, rest
