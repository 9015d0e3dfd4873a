"""Chat templates from model files are untrusted code: render them only in a sandbox.

A chat template (a GGUF's ``tokenizer.chat_template``, a ``tokenizer_config.json``, a
``chat_template.jinja``, or a configured ``engine.chat_template_file``) is a Jinja program
written by whoever published the model. kurabe renders one only

* in Jinja2's ``ImmutableSandboxedEnvironment`` (no attribute escapes, no mutation of what
  it is given), extended the way Hugging Face renders chat templates (``raise_exception``,
  ``strftime_now``, a plain ``tojson``, ``{% break %}``/``{% continue %}``,
  ``{% generation %}``), with ``messages``, ``add_generation_prompt``, ``bos_token``,
  ``eos_token`` and ``tools`` provided;
* in a separate process (``kurabe.chat_template_worker``) that imports nothing of kurabe,
  gets an empty environment, may not open files or sockets or start processes, and is held to
  a memory limit, a CPU-time limit and a wall-time limit, with its output capped
  (``RenderLimits``).

A template that reaches for Python internals (``''.__class__``, ``cycler.__init__``), includes
or imports other templates, runs past the time limit, exhausts the memory limit or writes too
much is *refused*: ``ChatTemplateRefused``, one line naming the template's source and the
reason. A template that fails for an ordinary reason (a syntax Jinja2 does not know, an
undefined variable, its own ``raise_exception``) is ``ChatTemplateFailed``; callers may fall
back to reading its text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kurabe import KurabeError

if TYPE_CHECKING:
    from kurabe.config import ModelConfig
    from kurabe.modelfiles.resolve import ResolvedModel

WORKER = Path(__file__).with_name("chat_template_worker.py")


class ChatTemplateError(KurabeError):
    """A chat template could not be rendered (see the two subclasses). ``source`` names the
    template, ``reason`` says why."""

    verb = "could not be used"

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source} {self.verb}: {reason}")
        self.source, self.reason = source, reason


class ChatTemplateRefused(ChatTemplateError):
    """The template is unsafe or exceeded a limit: it must not be used."""

    verb = "was refused"


class ChatTemplateFailed(ChatTemplateError):
    """The template failed for an ordinary reason (syntax, undefined variable, its own
    ``raise_exception``)."""

    verb = "could not be rendered"


@dataclass(frozen=True)
class RenderLimits:
    # CPU time of the sandbox process: what a template that runs forever exhausts. (CPU
    # time, not wall time, so that a busy machine never gets a good template refused.)
    cpu_s: int = 5
    timeout_s: float = 30.0  # wall time for the whole sandbox process: a backstop
    memory_bytes: int = 1 << 30  # address space beyond what the process maps at start-up
    max_output_chars: int = 1 << 20  # per render


DEFAULT_LIMITS = RenderLimits()

# Conversations tried, in order, to find a template's generation prompt: some templates
# refuse a conversation without a system message, others one with.
SAMPLE_CONVERSATIONS: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Hello"}],
)


def _search_paths() -> list[str]:
    """Where the sandbox finds Jinja2 and MarkupSafe (it starts isolated from PYTHONPATH)."""
    import jinja2
    import markupsafe

    return sorted({str(Path(m.__file__).resolve().parent.parent)  # type: ignore[arg-type]
                   for m in (jinja2, markupsafe)})


def render_chat_template(template: str, renders: list[dict[str, Any]], *, source: str,
                         limits: RenderLimits = DEFAULT_LIMITS) -> list[str | ChatTemplateFailed]:
    """Render ``template`` once per entry of ``renders`` (each ``{"messages": [...],
    "add_generation_prompt": bool, "variables": {...}}``) in the sandbox.

    Returns each render's text, or a ``ChatTemplateFailed`` for a render that failed for an
    ordinary reason. Raises ``ChatTemplateRefused`` when the template is refused (see the
    module's docs); ``source`` names the template in every message (e.g. "model 'a': the
    chat template in a.gguf").
    """
    request = {"template": template, "renders": renders,
               "max_output_chars": limits.max_output_chars,
               "memory_bytes": limits.memory_bytes,
               "cpu_s": max(1, limits.cpu_s), "paths": _search_paths()}
    try:
        payload = json.dumps(request, ensure_ascii=True).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ChatTemplateError(source, f"its variables cannot be passed to the sandbox "
                                        f"({exc})") from None
    try:
        # An empty environment: nothing of the caller's (API keys included) is in reach.
        done = subprocess.run([sys.executable, "-I", str(WORKER)], input=payload,
                              capture_output=True, timeout=limits.timeout_s, check=False,
                              env={})
    except subprocess.TimeoutExpired:
        raise ChatTemplateRefused(
            source, f"it did not finish rendering within {limits.timeout_s:g} s") from None
    except OSError as exc:
        raise ChatTemplateError(source, f"the template sandbox ({sys.executable}) cannot "
                                        f"start: {exc.strerror or exc}") from None
    try:
        results = json.loads(done.stdout)["renders"]
        if not isinstance(results, list):
            raise TypeError(results)
    except (ValueError, TypeError, KeyError):
        raise ChatTemplateRefused(source, _death(done.returncode, done.stderr, limits)
                                  ) from None
    out: list[str | ChatTemplateFailed] = []
    for result in results:
        if result.get("ok"):
            out.append(str(result["text"]))
        elif result.get("kind") == "failed":
            out.append(ChatTemplateFailed(source, str(result.get("message"))))
        else:
            raise ChatTemplateRefused(source, str(result.get("message")))
    return out


def _death(returncode: int, stderr: bytes, limits: RenderLimits) -> str:
    """Why the sandbox process ended without a reply."""
    import signal

    if returncode < 0:
        sig = -returncode
        if sig == getattr(signal, "SIGXCPU", None) or sig == signal.SIGKILL:
            return f"it used more than {limits.cpu_s} s of CPU time (does it run forever?)"
        return f"the sandbox process was killed by signal {sig}"
    tail = " ".join(stderr.decode("utf-8", "replace").split())[-300:]
    if "MemoryError" in tail:
        return f"it needed more than {limits.memory_bytes >> 20} MiB of memory"
    return f"the sandbox process exited with code {returncode}" + (f": {tail}" if tail else "")


# -- the generation prompt -----------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, RenderLimits], str | ChatTemplateError] = OrderedDict()
_CACHE_SIZE = 64


def generation_prompt(template: str, *, source: str,
                      limits: RenderLimits = DEFAULT_LIMITS) -> str:
    """The text ``add_generation_prompt`` appends to a sample conversation: what the model's
    output continues from. Raises ``ChatTemplateRefused`` (unsafe) or ``ChatTemplateFailed``
    (no sample conversation renders). Results are remembered per template."""
    key = (template, limits)
    if key not in _CACHE:
        try:
            _CACHE[key] = _generation_prompt(template, source, limits)
        except ChatTemplateError as exc:
            _CACHE[key] = exc
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    found = _CACHE[key]
    if isinstance(found, ChatTemplateError):
        raise type(found)(source, found.reason)  # named as this caller names it
    return found


def _generation_prompt(template: str, source: str, limits: RenderLimits) -> str:
    renders = [{"messages": conv, "add_generation_prompt": flag}
               for conv in SAMPLE_CONVERSATIONS for flag in (True, False)]
    results = render_chat_template(template, renders, source=source, limits=limits)
    failure: ChatTemplateFailed | None = None
    for i in range(0, len(results), 2):
        with_prompt, without = results[i], results[i + 1] if i + 1 < len(results) else None
        if isinstance(with_prompt, ChatTemplateFailed):
            failure = failure or with_prompt
            continue
        if isinstance(without, str) and with_prompt.startswith(without):
            return with_prompt[len(without):]
        return with_prompt  # the conversation changed too: its whole text is the prompt
    assert failure is not None
    raise failure


# -- the template a model runs with --------------------------------------------------------


def model_chat_template(model: ModelConfig, resolved: ResolvedModel) -> tuple[str | None, str]:
    """The chat template the model's engine will use, and where it comes from (for messages):
    the configured ``engine.chat_template_file``, kurabe's own for a built-in model, else the
    one in the GGUF file."""
    prefix = f"model '{model.name}': the chat template"
    if resolved.chat_template:
        if model.engine.chat_template_file:
            return resolved.chat_template, f"{prefix} in {model.engine.chat_template_file}"
        return resolved.chat_template, f"{prefix} kurabe supplies for {model.source}"
    where = resolved.file_path or model.source
    return resolved.gguf_chat_template, f"{prefix} in {where} (tokenizer.chat_template)"


def model_opens_thinking(model: ModelConfig, resolved: ResolvedModel) -> bool | None:
    """Whether the model's chat template opens a think block in its generation prompt; None
    when the model has no template kurabe can see (an endpoint). Raises
    ``ChatTemplateRefused`` for an unsafe template."""
    from kurabe.thinking import template_opens_thinking

    template, source = model_chat_template(model, resolved)
    if not template:
        return None
    return template_opens_thinking(template, source=source)
