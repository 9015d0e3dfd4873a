"""kurabe never runs model output (or any other text it is handed) as Python or as a shell
command: generated web apps run only in the isolated browser context of the code checks.

A guard over kurabe's own source: no ``eval``/``exec``/``compile`` builtins, no
``os.system``/``os.popen``, no ``shell=True``, and every subprocess is started from an argument
list (never a string a shell would parse).
"""

from __future__ import annotations

import ast
from pathlib import Path

import kurabe

SOURCE = Path(kurabe.__file__).parent
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execvp"),
                   ("os", "execl"), ("os", "spawnl"), ("pty", "spawn")}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                    "getstatusoutput"}


def _calls():
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path.relative_to(SOURCE), node


def test_kurabe_source_was_found():
    assert len(list(SOURCE.rglob("*.py"))) > 40


def test_no_eval_exec_or_shell_anywhere():
    found = []
    for path, call in _calls():
        fn = call.func
        if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_BUILTINS:
            found.append(f"{path}:{call.lineno} {fn.id}()")
        if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) \
                and (fn.value.id, fn.attr) in FORBIDDEN_ATTRS:
            found.append(f"{path}:{call.lineno} {fn.value.id}.{fn.attr}()")
        for kw in call.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                          and kw.value.value is False):
                found.append(f"{path}:{call.lineno} shell=")
    assert found == []


def test_subprocesses_start_from_argument_lists():
    found = []
    for path, call in _calls():
        fn = call.func
        if not (isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name)
                and fn.value.id == "subprocess" and fn.attr in SUBPROCESS_CALLS):
            continue
        if fn.attr in ("getoutput", "getstatusoutput"):
            found.append(f"{path}:{call.lineno} subprocess.{fn.attr} runs a shell")
        elif call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr)):
            found.append(f"{path}:{call.lineno} subprocess.{fn.attr} given a string")
    assert found == []
