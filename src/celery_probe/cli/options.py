"""The commands' options for the settings, generated from their declarations, in help sections.

Every setting is declared once, as a :class:`~celery_probe.config.settings.Settings` field
(:func:`~celery_probe.config.settings.setting`); :func:`setting_options` turns the settings
of some help sections into click options that store the raw text under the setting's click
keyword (:attr:`~celery_probe.config.settings.SettingSpec.param`), for
:func:`~celery_probe.config.settings.resolve_settings` to parse and validate together with
the environment and ``pyproject.toml`` below.

``celery-probe run`` has about 65 options, so :class:`SectionedCommand` shows them under
headings (target, probes, output, alerts, remediation…) with cloup's option groups. cloup
is imported only when a help text is rendered: it adds about 30 ms of imports (it asks
``importlib.metadata`` for click's version), which cron's every-minute ``run`` should not pay
for a page nobody reads. Parsing stays plain click.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from celery_probe.config.settings import (
    HTTP,
    OUTPUT,
    PROBES,
    REMEDIATION_SECTION,
    SPECS,
    TARGET,
    SettingSpec,
)
from celery_probe.errors import ProbeUsageError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

SEVERAL_TARGETS = "Several targets"
ALERTS = "Alerts"
SERVER = "Server"  # serve's own options
SERVER_AUTH = "Authentication"  # serve's credentials: only names of variables and files, never a secret


def targets_file_option() -> Decorator:
    """``--targets FILE``, the same option for ``run`` and ``serve`` (the file is the same)."""
    return click.option("--targets", "targets_file", type=click.Path(path_type=Path), metavar="FILE",
                        help="Probe every [targets.NAME] of this TOML file (see docs/cli.md).")
# Headings of the help sections, with the line each shows under its title.
SECTION_HELP: dict[str, str] = {
    TARGET: "What to probe and what it should have.",
    PROBES: "How the probes measure, and when a measurement counts as bad.",
    OUTPUT: "What the run prints and writes.",
    SEVERAL_TARGETS: "One run over the targets of a TOML file.",
    ALERTS: "Mail and webhooks on status changes (docs/alerting.md).",
    REMEDIATION_SECTION: "A command run when down has lasted (docs/remediation.md).",
    HTTP: "Proxies, trust, client certificate and auth header of every HTTP request (docs/configuration.md).",
    SERVER: "Where serve listens and how often it probes.",
    SERVER_AUTH: "Credentials every route but the health routes needs, read from a variable or a file, "
                 "never from the command line (docs/serve-auth.md).",
}
_SECTION = "celery_probe_section"  # the attribute of a click option naming its help section



def _refuse_empty(spec: SettingSpec) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """``--on-down ""`` is a mistake, not "unset": say so instead of falling back to pyproject."""

    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and not str(value).strip():
            raise ProbeUsageError(f"invalid {spec.key} {value!r}: is empty (from {spec.flags[-1]})")
        return value

    return check


def setting_option(spec: SettingSpec) -> Decorator:
    """The click option of one setting: raw text, parsed later with its other sources."""
    attrs: dict[str, Any] = {"help": spec.help_text}
    if spec.metavar:
        attrs["metavar"] = spec.metavar
    if spec.multiple:
        attrs["multiple"] = True
    if spec.is_flag:
        attrs.update(is_flag=True, default=None)  # None: not given, so lower layers still count
    if spec.refuse_empty:
        attrs["callback"] = _refuse_empty(spec)
    return click.option(*spec.flags, spec.param, **attrs)


def in_section(title: str, *decorators: Decorator) -> Decorator:
    """Apply option ``decorators`` and file the options they add under the help heading ``title``."""

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            before = {id(param) for param in getattr(func, "__click_params__", [])}
            func = decorator(func)
            for param in getattr(func, "__click_params__", []):
                if id(param) not in before:
                    setattr(param, _SECTION, title)
        return func

    return apply


def setting_options(*sections: str) -> Decorator:
    """The options of every setting in ``sections``, each section under its heading."""
    decorators = [in_section(title, *(setting_option(spec) for spec in SPECS if spec.section == title))
                  for title in sections]

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def remediation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``run``'s auto-remediation: the ``--on-down*`` settings and the one-run switch ``--no-on-down``."""
    no_on_down = click.option("--no-on-down", "no_on_down", is_flag=True,
                              help="No remediation this run, whatever the environment or pyproject.toml say.")
    func = in_section(REMEDIATION_SECTION, no_on_down)(func)
    return setting_options(REMEDIATION_SECTION)(func)


class SectionedCommand(click.Command):
    """A click command whose help shows its options under section headings (cloup).

    Only :meth:`get_help` differs from click: it renders the help of a cloup twin of this
    command built over the same parameters, each option in the group its section names.
    """

    def get_help(self, ctx: click.Context) -> str:
        import cloup

        groups: dict[str, cloup.OptionGroup] = {}
        for param in self.params:
            title = getattr(param, _SECTION, None)
            if title is not None:
                param.group = groups.setdefault(title, cloup.OptionGroup(title, help=SECTION_HELP.get(title)))  # type: ignore[attr-defined]
        twin = cloup.Command(
            self.name, params=self.params, help=self.help, epilog=self.epilog, short_help=self.short_help,
            options_metavar=self.options_metavar, add_help_option=self.add_help_option,
            hidden=self.hidden, deprecated=self.deprecated, align_option_groups=False,
        )
        formatter = cloup.HelpFormatter(width=ctx.terminal_width, max_width=ctx.max_content_width)
        twin.format_help(ctx, formatter)
        return formatter.getvalue().rstrip("\n")
