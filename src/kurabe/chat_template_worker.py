"""Render chat templates inside a separate, limited process (started by ``kurabe.chat_template``).

Run as a script (``python -I chat_template_worker.py``): it reads one JSON request on standard
input, renders the template in Jinja2's ``ImmutableSandboxedEnvironment`` under resource limits
(address space, CPU time, no new files, no child processes), and writes one JSON reply on
standard output. It imports only the standard library and Jinja2, so nothing of kurabe (and
nothing of the parent's memory or environment) is within a template's reach.

Request: ``{"template": str, "renders": [{"messages": [...], "add_generation_prompt": bool,
"variables": {...}}], "max_output_chars": int, "memory_bytes": int, "cpu_s": int,
"paths": [str]}``.

Reply: ``{"renders": [{"ok": true, "text": str} | {"ok": false, "kind": KIND, "message": str}]}``
where KIND is ``unsafe`` (a sandbox violation, an include or import), ``limit`` (output size,
memory, a huge range, runaway recursion) or ``failed`` (anything else: a syntax error, an
undefined variable, ``raise_exception``). The first refusal (``unsafe`` or ``limit``) ends the
request.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

# Attribute names that lead from a value to Python's internals. Jinja2's sandbox already
# blocks every name starting with "_" and these at run time; the static scan refuses a
# template that names one anywhere, including branches a sample conversation never takes.
INTERNAL_NAMES = frozenset({
    "mro", "func_globals", "func_code", "func_closure", "im_func", "im_self", "im_class",
    "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "f_globals",
    "f_locals", "f_builtins", "f_back", "tb_frame", "tb_next", "co_code"})


def _address_space() -> int:
    """Bytes of address space this process already maps (0 where /proc is missing)."""
    try:
        import os

        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit(memory_bytes: int, cpu_s: int) -> None:
    """Cap what this process may use: ``memory_bytes`` more address space than it already
    maps, ``cpu_s`` of CPU time, no files written or opened, no child processes. Each limit
    is best effort: a platform without one (no ``resource`` module, or an unsupported limit)
    still has the parent's wall-time limit."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    memory = _address_space() + memory_bytes
    wanted = [("RLIMIT_AS", memory, memory), ("RLIMIT_CPU", cpu_s, cpu_s + 1),
              ("RLIMIT_FSIZE", 0, 0), ("RLIMIT_NPROC", 0, 0), ("RLIMIT_CORE", 0, 0),
              # fds 0-2 stay open; nothing new (no file, no socket) can be opened
              ("RLIMIT_NOFILE", 3, 3)]
    for name, soft, hard in wanted:
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            _old_soft, old_hard = resource.getrlimit(which)
            if old_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, old_hard), min(hard, old_hard)
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass


def _environment() -> Any:
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Sandbox(ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            # Refuse at once: the default returns an Undefined that only fails when printed,
            # so a template could probe internals silently.
            raise SecurityError(f"it reaches for the attribute {attribute!r} of a "
                                f"{type(obj).__name__} value")

    class Generation(Extension):
        """``{% generation %}…{% endgeneration %}`` (Hugging Face's assistant-mask marker):
        rendered as its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    from jinja2.exceptions import TemplateError

    def raise_exception(message: Any) -> None:
        raise TemplateError(str(message))

    def strftime_now(fmt: Any) -> str:
        return datetime.datetime.now().strftime(str(fmt))

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        # Hugging Face's tojson: plain JSON, not Jinja2's HTML-escaped one.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _static_refusal(env: Any, template: str) -> str | None:
    """Why the template is refused before it runs (None: nothing found). A template that
    does not parse is left to the render, which reports the syntax error."""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateSyntaxError

    try:
        tree = env.parse(template)
    except TemplateSyntaxError:
        return None
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        verb = {"Include": "include", "Extends": "extend"}.get(type(node).__name__, "import")
        return f"it tries to {verb} another template (line {node.lineno})"
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) else None)
        if isinstance(name, str) and (name.startswith("__") or name in INTERNAL_NAMES):
            return f"it reaches for the internal attribute {name!r} (line {node.lineno})"
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _render(env: Any, compiled: Any, job: dict, max_output: int) -> dict:
    from jinja2.sandbox import SecurityError

    context = {"bos_token": "", "eos_token": "", "tools": None, **(job.get("variables") or {}),
               "messages": job["messages"],
               "add_generation_prompt": bool(job.get("add_generation_prompt"))}
    pieces: list[str] = []
    size = 0
    try:
        for piece in compiled.generate(**context):
            size += len(piece)
            if size > max_output:
                return {"ok": False, "kind": "limit",
                        "message": f"its output passed {max_output:,} characters"}
            pieces.append(piece)
    except SecurityError as exc:
        return {"ok": False, "kind": "unsafe", "message": _one_line(str(exc))}
    except MemoryError:
        return {"ok": False, "kind": "limit", "message": "it ran out of its memory limit"}
    except RecursionError:
        return {"ok": False, "kind": "limit", "message": "it recursed without end"}
    except OverflowError as exc:
        if "MAX_RANGE" in str(exc):
            return {"ok": False, "kind": "limit",
                    "message": "it asks for a range longer than the sandbox allows"}
        return {"ok": False, "kind": "failed", "message": _one_line(f"OverflowError: {exc}")}
    except Exception as exc:  # a template's own failure: reported, never raised
        return {"ok": False, "kind": "failed",
                "message": _one_line(f"{type(exc).__name__}: {exc}")}
    return {"ok": True, "text": "".join(pieces)}


def _warm_up(env: Any) -> None:
    """Load what Jinja2 imports lazily (the compiler, traceback rewriting, filters), before
    the limits forbid opening the modules' files."""
    import pprint  # noqa: F401  (the pprint filter imports it lazily)

    import jinja2.constants  # noqa: F401  (lipsum's words)
    import jinja2.debug  # noqa: F401  (traceback rewriting)

    sample = env.from_string("{% for m in messages %}{{ m.content|tojson|trim }}{% endfor %}"
                             "{{ strftime_now('%Y') }}{{ lipsum(1) }}{{ missing.attribute }}")
    try:
        sample.render(messages=[{"content": "x"}])
    except Exception:  # the UndefinedError is the point: it loads the error path
        pass


def serve(request: dict, env: Any) -> dict:
    template = request["template"]
    refusal = _static_refusal(env, template)
    if refusal:
        return {"renders": [{"ok": False, "kind": "unsafe", "message": refusal}]}
    try:
        compiled = env.from_string(template)
    except MemoryError:
        return {"renders": [{"ok": False, "kind": "limit",
                             "message": "it ran out of its memory limit"}]}
    except Exception as exc:
        return {"renders": [{"ok": False, "kind": "failed",
                             "message": _one_line(f"{type(exc).__name__}: {exc}")}]}
    results = []
    for job in request["renders"]:
        result = _render(env, compiled, job, int(request["max_output_chars"]))
        results.append(result)
        if not result["ok"] and result["kind"] != "failed":
            break
    return {"renders": results}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    for path in request.get("paths") or []:
        if path not in sys.path:
            sys.path.append(path)
    # Everything a render may need is imported before the limits forbid opening files.
    env = _environment()
    _warm_up(env)
    _limit(int(request["memory_bytes"]), int(request["cpu_s"]))
    reply = serve(request, env)
    # ensure_ascii: a lone surrogate in a template's output still travels as valid JSON.
    sys.stdout.buffer.write(json.dumps(reply, ensure_ascii=True).encode("ascii"))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
