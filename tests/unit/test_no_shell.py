"""No shell is ever involved: every process celery-probe starts gets an argument list.

A shell would turn a queue, worker, unit or file name into a command. This scans the
source (the package and the shipped probes) with the ``ast`` module, so comments and
strings that merely mention these names do not count, and fails on:

* any ``shell=`` argument other than the literal ``False``;
* ``os.system``, ``os.popen``, ``subprocess.getoutput``, ``subprocess.getstatusoutput``
  and ``asyncio.create_subprocess_shell``, which always use a shell;
* a ``subprocess`` call whose command is a string (a literal, an f-string, a
  concatenation or a ``.format``/``%`` result) rather than a list.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "probes").rglob("*.py")])
ALWAYS_A_SHELL = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                  ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell")}
SPAWNING = {"run", "Popen", "call", "check_call", "check_output"}


def dotted(node: ast.AST) -> tuple[str, ...]:
    """``asyncio.subprocess.foo`` -> ("asyncio", "subprocess", "foo"); () for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


def is_string(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, bytes))
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return is_string(node.left) or is_string(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return node.func.attr == "format" or isinstance(node.func.value, ast.Constant)
    return False


def shell_uses(source: str, filename: str) -> tuple[list[str], int]:
    """Offending calls in ``source`` (``file:line: why``) and how many process starts it has."""
    found, starts = [], 0
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        where = f"{filename}:{node.lineno}"
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"{where}: shell={ast.unparse(keyword.value)}")
        if name[-2:] in ALWAYS_A_SHELL or (len(name) == 1 and name[0] in ("system", "popen")):
            found.append(f"{where}: {'.'.join(name)}() always runs a shell")
        spawns = (name[-1:] and name[-1] in SPAWNING and "subprocess" in name) or name[-1:] == ("create_subprocess_exec",)
        if spawns:
            starts += 1
            command = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if is_string(command):
                found.append(f"{where}: {'.'.join(name)}() with a string command")
    return found, starts


def test_no_shell_anywhere():
    offences, starts = [], 0
    for path in SOURCES:
        found, count = shell_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        offences += found
        starts += count
    assert offences == []
    assert starts >= 6  # demo, mail, api, testing (3) and probe_loop start processes: the scan sees them


def test_the_scan_catches_each_form():
    """The scan itself, on code that does each forbidden thing once (never executed)."""
    bad = '''
import os, subprocess, asyncio
subprocess.run("ls -l", shell=True)
subprocess.Popen(["ls"], shell=flag)
subprocess.check_output(f"sendmail {address}")
subprocess.call("mail " + address)
subprocess.run("x {}".format(y))
os.system("ls")
os.popen("ls")
subprocess.getoutput("ls")
asyncio.create_subprocess_shell("ls")
subprocess.run(args="ls")
'''
    good = 'import subprocess\nsubprocess.run(["sendmail", "-oi", "--", address], shell=False)\n'
    found, starts = shell_uses(bad, "bad.py")
    assert starts == 6  # run, Popen, check_output, call, run, run
    assert len(found) == 11, found
    assert shell_uses(good, "good.py") == ([], 1)
