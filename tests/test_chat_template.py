"""Chat templates are rendered only in kurabe's sandbox: hostile ones are refused with one
clear line, real ones render as Hugging Face renders them, and a refused template in a model
file stops a run before its folder exists."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kurabe import KurabeError
from kurabe.chat_template import (
    WORKER,
    ChatTemplateFailed,
    ChatTemplateRefused,
    RenderLimits,
    generation_prompt,
    render_chat_template,
)
from kurabe.config import parse_config
from kurabe.orchestrator import Orchestrator
from kurabe.thinking import template_opens_thinking

from scripted_models import CHATML_TEMPLATE, HARMONY_TEMPLATE, QWEN3_OPEN_TEMPLATE

FAST = RenderLimits(cpu_s=2)

# Qwen3's template, reduced to what a chat without tools takes, with its constructs kept:
# namespace, reversed slices, tojson, `is string`, loop variables, the enable_thinking switch.
QWEN3_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
    {{- "# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}{%- set content = message.content %}
    {%- else %}{%- set content = '' %}{%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + content }}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

# DeepSeek-R1's template (the distilled models'): its generation prompt opens <think>.
DEEPSEEK_R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}"
    "{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}"
    "{% endif %}")

HOSTILE = {
    "class escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals through cycler": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "escape in an untaken branch": "{% if false %}{{ joiner.__init__.__globals__ }}{% endif %}hi",
    "escape by subscript": "{{ ''['__class__'] }}",
    "escape by computed name": "{% set n = '__cla' ~ 'ss__' %}{{ ''[n] }}",
    "mro by name": "{{ ''.__class__.mro() }}",
    "frame of a generator": "{% for g in [lipsum] %}{{ g.gi_frame }}{% endfor %}",
    "mutating what it is given": "{{ messages.append({'role': 'x'}) }}",
    "include a file": "{% include '/etc/passwd' %}",
    "import a template": "{% import 'os' as os %}{{ os }}",
    "extends": "{% extends 'base.html' %}",
    "range over the sandbox limit": "{% for i in range(10**7) %}{% endfor %}",
    "string that exhausts memory": "{{ 'x' * 10**10 }}",
    "output past the limit": "{% for i in range(3000) %}{{ 'y' * 1000 }}{% endfor %}",
    "recursion without end": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "runs forever": ("{% for i in range(99999) %}{% for j in range(99999) %}{% for k in "
                     "range(99999) %}{% endfor %}{% endfor %}{% endfor %}"),
}

REASON = {
    "range over the sandbox limit": "range longer than the sandbox allows",
    "string that exhausts memory": "memory",
    "output past the limit": "its output passed",
    "recursion without end": "recursed without end",
    "runs forever": "it used more than 1 s of CPU time (does it run forever?)",
    "include a file": "tries to include another template",
    "import a template": "tries to import another template",
    "extends": "tries to extend another template",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_templates_are_refused_with_one_clear_line(case):
    source = f"model 'm': the chat template in /models/{case.replace(' ', '-')}.gguf"
    started = time.perf_counter()
    limits = RenderLimits(cpu_s=1, max_output_chars=1_000_000)
    with pytest.raises(ChatTemplateRefused) as info:
        generation_prompt(HOSTILE[case] + "{{ 'unique: " + case + "' }}", source=source,
                          limits=limits)
    message = str(info.value)
    assert message.startswith(f"{source} was refused: ") and "\n" not in message, message
    assert REASON.get(case, "attribute") in message, message
    assert isinstance(info.value, KurabeError)
    assert time.perf_counter() - started < 4.0


def test_a_refused_template_is_refused_by_thinking_detection_too():
    with pytest.raises(ChatTemplateRefused, match=r"^the chat template was refused: .*__class__"):
        template_opens_thinking("{%- if add_generation_prompt %}<think>{{ ''.__class__ }}"
                                "{% endif %}")


def test_the_sandbox_process_can_open_no_file_or_socket():
    code = f"""
import errno, importlib.util, json, socket
spec = importlib.util.spec_from_file_location("worker", {str(WORKER)!r})
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
worker._limit(1 << 30, 5)
seen = {{}}
for name, attempt in (("file", lambda: open("/etc/hosts")), ("socket", socket.socket),
                      ("write", lambda: open("/tmp/kurabe-sandbox-probe", "w"))):
    try:
        attempt()
        seen[name] = "allowed"
    except OSError as exc:
        seen[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    assert json.loads(done.stdout) == {"file": "EMFILE", "socket": "EMFILE", "write": "EMFILE"}


def test_templates_see_only_the_documented_variables(monkeypatch):
    monkeypatch.setenv("KURABE_TEST_SECRET", "sk-do-not-leak")
    # Nothing reachable names the environment or the file system; globals are just these.
    [text] = render_chat_template(
        "{{ (messages|length) ~ '|' ~ (bos_token == '') ~ '|' ~ (tools is none) ~ '|' ~ "
        "(add_generation_prompt) ~ '|' ~ strftime_now('%Y')|length }}",
        [{"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": True}],
        source="t", limits=FAST)
    assert text == "1|True|True|True|4"
    [missing] = render_chat_template("{{ environ['KURABE_TEST_SECRET'] }}{{ open('/etc/hosts') }}",
                                     [{"messages": []}], source="t", limits=FAST)
    assert isinstance(missing, ChatTemplateFailed) and "undefined" in str(missing)


@pytest.mark.parametrize(("template", "prompt", "opens"), [
    (QWEN3_TEMPLATE, "<|im_start|>assistant\n", False),
    (DEEPSEEK_R1_TEMPLATE, "<｜Assistant｜><think>\n", True),
    (CHATML_TEMPLATE, "<|im_start|>assistant\n", False),
    (QWEN3_OPEN_TEMPLATE, "<|im_start|>assistant\n<think>\n", True),
    (HARMONY_TEMPLATE, "<|start|>assistant", False),
])
def test_real_templates_render_their_generation_prompt(template, prompt, opens):
    assert generation_prompt(template, source="t", limits=FAST) == prompt
    assert template_opens_thinking(template) is opens


def test_qwen3_renders_as_hugging_face_renders_it_with_tools_and_thinking_off():
    tools = [{"type": "function", "function": {"name": "時刻", "parameters": {}}}]
    conversation = [{"role": "system", "content": "sys"}, {"role": "user", "content": "こんにちは"}]
    [text] = render_chat_template(QWEN3_TEMPLATE, [{
        "messages": conversation, "add_generation_prompt": True,
        "variables": {"tools": tools, "enable_thinking": False}}], source="t", limits=FAST)
    assert text == ('<|im_start|>system\nsys\n\n# Tools\n\n<tools>\n'
                    '{"type": "function", "function": {"name": "時刻", "parameters": {}}}\n'
                    '</tools><|im_end|>\n<|im_start|>user\nこんにちは<|im_end|>\n'
                    '<|im_start|>assistant\n<think>\n\n</think>\n\n')


def test_a_template_that_demands_a_system_message_is_tried_with_one():
    template = ("{% if messages[0].role != 'system' %}{{ raise_exception('System first') }}"
                "{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
                "{% if add_generation_prompt %}[assistant]<think>\n{% endif %}")
    assert generation_prompt(template, source="t", limits=FAST) == "[assistant]<think>\n"
    assert template_opens_thinking(template)


def test_an_ordinary_failure_falls_back_to_reading_the_text():
    # A function only the engine provides: not rendered, so the text is read instead.
    template = ("{{ engine_only_helper() }}{%- if add_generation_prompt %}"
                "{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}")
    with pytest.raises(ChatTemplateFailed, match=r"^t could not be rendered: UndefinedError"):
        generation_prompt(template, source="t", limits=FAST)
    assert template_opens_thinking(template)
    broken = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif"  # syntax error
    with pytest.raises(ChatTemplateFailed, match="TemplateSyntaxError"):
        generation_prompt(broken, source="t", limits=FAST)
    assert not template_opens_thinking(broken)


def test_a_lone_surrogate_in_a_template_travels_and_renders():
    assert generation_prompt("{% if add_generation_prompt %}\ud800<think>{% endif %}",
                             source="t", limits=FAST) == "\ud800<think>"


# -- a run ---------------------------------------------------------------------------------


def _gguf(path: Path, chat_template: str | None) -> Path:
    """A GGUF holding only a header: general.architecture and, if given, the chat template."""
    def s(text: str) -> bytes:
        raw = text.encode("utf-8", "surrogatepass")
        return struct.pack("<Q", len(raw)) + raw

    kvs = [("general.architecture", "llama")]
    if chat_template is not None:
        kvs.append(("tokenizer.chat_template", chat_template))
    body = b"".join(s(k) + struct.pack("<I", 8) + s(v) for k, v in kvs)
    path.write_bytes(b"GGUF" + struct.pack("<Iqq", 3, 0, len(kvs)) + body)
    return path


def _config(source: str, **engine) -> dict:
    return {"run": {"name": "t", "repeats": 1, "warmup": 0},
            "models": [{"name": "evil", "source": source, "engine": engine}],
            "prompts": [{"id": "p1", "text": "hi"}]}


def test_an_unsafe_template_in_a_model_file_stops_the_run_before_its_folder_exists(tmp_path):
    model = _gguf(tmp_path / "evil.gguf", "{{ cycler.__init__.__globals__.os.system('id') }}")
    run_dir = tmp_path / "run"
    with pytest.raises(ChatTemplateRefused) as info:
        Orchestrator.create(parse_config(_config(str(model)), "test"), run_dir)
    assert str(info.value) == (
        f"model 'evil': the chat template in {model} (tokenizer.chat_template) was refused: "
        "it reaches for the internal attribute '__globals__' (line 1)")
    assert not run_dir.exists()


def test_an_unsafe_configured_template_file_is_named(tmp_path):
    model = _gguf(tmp_path / "ok.gguf", CHATML_TEMPLATE)
    template = tmp_path / "custom.jinja"
    template.write_text("{% include 'secrets.txt' %}", encoding="utf-8")
    run_dir = tmp_path / "run"
    config = parse_config(_config(str(model), chat_template_file=str(template)), "test")
    with pytest.raises(ChatTemplateRefused, match=(
            rf"^model 'evil': the chat template in {template} was refused: it tries to "
            r"include another template \(line 1\)$")):
        Orchestrator.create(config, run_dir)
    assert not run_dir.exists()


def test_the_command_line_names_the_model_and_file_and_creates_nothing(tmp_path):
    from conftest import run_kurabe

    model = _gguf(tmp_path / "evil.gguf", "{% for i in range(10**8) %}{% endfor %}")
    config = tmp_path / "shootout.toml"
    config.write_text(f'[[models]]\nname = "evil"\nsource = "{model}"\n'
                      '[[prompts]]\nid = "p1"\ntext = "hi"\n', encoding="utf-8")
    done = run_kurabe("run", str(config), "--out", str(tmp_path / "run"), timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        f"error: model 'evil': the chat template in {model} (tokenizer.chat_template) was "
        "refused: it asks for a range longer than the sandbox allows")
    assert not (tmp_path / "run").exists()


def test_a_new_judge_with_an_unsafe_template_leaves_the_run_unchanged(tmp_path, script):
    from kurabe import api
    from kurabe.backends.scripted import ScriptedReply
    from kurabe.store import Store

    config = parse_config({
        "run": {"name": "t", "repeats": 1, "warmup": 0},
        "models": [{"name": "a", "source": script(ScriptedReply(content="答えです。"))}],
        "prompts": [{"id": "p1", "text": "hi"}],
        "quality": {"suites": ["builtin:ja_core"], "per_category": 1}}, "test")
    run_dir = tmp_path / "run"
    api.run_shootout(config, run_dir)
    with Store.open(run_dir) as store:
        before = store.run().config_json
    judge = _gguf(tmp_path / "judge.gguf", "{{ ''.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateRefused, match=f"model 'j': the chat template in {judge}"):
        api.rejudge(run_dir, f"j={judge}")
    with Store.open(run_dir) as store:
        assert store.run().config_json == before
        assert [e for e in store.events() if e.kind == "config_changed"] == []
