"""The command line as a new user meets it: -h everywhere, plain metavars, tables that keep
names whole on an 80-column terminal and are not padded when piped, "did you mean" for
misspelt config keys, resume that says what it will do (and leaves a complete run alone),
and one clear line with exit code 2 for every kind of bad input."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kurabe import KurabeError, api
from kurabe.backends.scripted import ScriptedReply
from kurabe.cli import app
from kurabe.config import load_config, parse_config
from kurabe.orchestrator import Orchestrator

from conftest import run_kurabe

COMMANDS = [[], ["demo"], ["run"], ["bench"], ["report"], ["models"], ["judge"], ["compare"],
            ["inspect"], ["plan"], ["thinking"], ["thinking", "split"]]
# What Python-ish type names look like in help: <list[str]>, <int range>, <path>, TEXT ...
PY_TYPES = re.compile(r"<(?:str|int|float|bool|path|file|text|list\[[^\]]*\]|"
                      r"(?:int|float) range)>|\b(?:TEXT|INTEGER|FLOAT|BOOLEAN)\b")
PROMPTS = [{"id": "p1", "text": "一つ目の質問", "category": "knowledge"},
           {"id": "p2", "text": "二つ目の質問", "category": "creative"}]


def invoke(*args: str, **kwargs):
    return CliRunner().invoke(app, list(args), prog_name="kurabe", **kwargs)


def config(models, **run):
    return parse_config({"run": {"name": "t", "repeats": 2, "warmup": 0, "max_tokens": 16,
                                 **run},
                         "models": [{"name": n, "source": s} for n, s in models],
                         "prompts": PROMPTS}, "test")


def one_clear_error(result, *needles: str) -> str:
    """Exit code 2, one line on stderr that names what is wrong, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def command_params(path: list[str]):
    """The click command behind ``kurabe PATH``, and its parameters."""
    import typer.main

    command = typer.main.get_command(app)
    ctx = command.make_context("kurabe", ["-h"], resilient_parsing=True)
    for name in path:
        command = command.get_command(ctx, name)
        ctx = command.make_context(name, ["-h"], parent=ctx, resilient_parsing=True)
    return command.get_params(ctx)


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "kurabe")
def test_dash_h_is_help_with_plain_metavars_and_whole_option_names(path):
    short = invoke(*path, "-h", terminal_width=80)
    long = invoke(*path, "--help", terminal_width=80)
    assert short.exit_code == 0 and long.exit_code == 0, short.output
    assert short.stdout == long.stdout
    text = short.stdout
    assert text.startswith("Usage: ")
    assert not PY_TYPES.search(text), PY_TYPES.search(text)
    # every option a user types is shown whole; nothing is padded to the terminal width
    for param in command_params(path):
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), opt
    assert all(not line.endswith(" ") for line in text.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 80


def test_options_that_take_a_value_name_it_plainly():
    help_text = invoke("bench", "-h").stdout
    for shown in ("-m, --model NAME=SPEC", "--repeats N", "--out PATH", "--prompts SET",
                  "--server SERVER"):
        assert shown in help_text
    assert "--fixed-length  " in help_text  # a flag: no value
    plan_help = invoke("plan", "-h").stdout
    for shown in ("--budget SIZE", "--cache-type-k TYPE", "--flash-attn on|off|auto",
                  "Usage: kurabe plan [OPTIONS] {MODEL}"):
        assert shown in plan_help
    assert "--resume RUN_DIR" in invoke("run", "-h").stdout


# -- tables: whole names on a terminal, natural width when piped ---------------------------


def on_terminal(*args: str, columns: int = 80) -> str:
    """kurabe's stdout on a pseudo-terminal of ``columns`` columns."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "kurabe", *args], stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    text = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_model_names_are_whole_on_an_80_column_terminal(tmp_path):
    long_name = "qwen3-30b-a3b-instruct-2507-q4-k-m-imatrix"
    long_path = tmp_path / ("models/" + "deep/" * 6 + "Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf")
    (tmp_path / "s.toml").write_text(
        f'[[models]]\nname = "{long_name}"\nsource = "{long_path}"\n', encoding="utf-8")
    text = on_terminal("models", str(tmp_path / "s.toml"))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in ("builtin:smollm2-135m", "builtin:gemma3-270m", long_name):
        assert any(name in line for line in lines), (name, text)
    assert "…" not in text
    # the long path is folded, not cut: every character is still there
    assert str(long_path) in "".join(line.split("│")[2].strip() for line in lines
                                     if line.count("│") >= 4)


def test_piped_tables_are_printed_at_their_natural_width_and_not_padded():
    env = {**os.environ, "COLUMNS": "80"}
    models = run_kurabe("models", env=env, check=True).stdout
    rows = [line for line in models.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # one line per model: nothing wrapped at 80 columns
    assert any("Gemma turn template supplied), Q4_K_M" in row for row in rows)
    widths = {len(line) for line in models.splitlines()}
    assert len(widths) == 1 and widths.pop() > 80  # the table's own width, on every line
    explain = run_kurabe("bench", "--explain", env=env, check=True).stdout
    for text in (models, explain):
        assert all(not line.endswith(" ") for line in text.splitlines())
    # one line per metric, however long
    assert all(re.match(r"^[a-z0-9_]+: ", line) for line in explain.splitlines()[:-1])


# -- the metrics reference -----------------------------------------------------------------


def test_explain_points_at_the_installed_metrics_reference(pytestconfig):
    done = run_kurabe("bench", "--explain", check=True)
    shown = re.search(r"Full text: (\S+)$", done.stdout.strip())
    assert shown, done.stdout[-300:]
    path = Path(shown.group(1))
    assert path.is_absolute() and path.is_file()
    assert path == api.metrics_reference()
    docs = pytestconfig.rootpath / "docs" / "metrics.md"
    assert path.read_text(encoding="utf-8") == docs.read_text(encoding="utf-8"), (
        "src/kurabe/data/metrics.md must be a copy of docs/metrics.md: "
        "cp docs/metrics.md src/kurabe/data/metrics.md")


# -- did you mean --------------------------------------------------------------------------


@pytest.mark.parametrize("body, line", [
    ('[run]\nrepets = 3\n', "run.repets: unknown key; did you mean 'repeats'?"),
    ('[runn]\nrepeats = 3\n', "runn: unknown key; did you mean 'run'?"),
    ('[models.engine]\nctxx = 5\n', "models.0.engine.ctxx: unknown key; did you mean 'ctx'?"),
    ('[models.engine]\nservr = "llama-server"\n',
     "models.0.engine.servr: unknown key; did you mean 'server'?"),
    ('[quality]\nsuits = ["builtin:ja_core"]\n',
     "quality.suits: unknown key; did you mean 'suites'?"),
    ('[reasoning_sweep]\nsetting = ["off"]\n',
     "reasoning_sweep.setting: unknown key; did you mean 'settings'?"),
    ('[run]\nzzz = 1\n', "run.zzz: unknown key (known: name, repeats,"),
])
def test_unknown_config_keys_suggest_the_nearest_known_one(tmp_path, body, line):
    path = tmp_path / "s.toml"
    models, sep, rest = body.partition("[models.engine]")
    text = ('[[models]]\nname = "a"\nsource = "builtin:smollm2-135m"\n' + sep + rest
            if sep else body + '\n[[models]]\nname = "a"\nsource = "builtin:smollm2-135m"\n')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KurabeError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {line}")
    assert "\n" not in str(info.value)
    one_clear_error(invoke("run", str(path)), str(path), line)


def test_several_config_problems_give_one_line_each_naming_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[run]\nrepets = 3\nwarmup = -1\n[[models]]\nname = "a"\n'
                    'source = "x.gguf"\n', encoding="utf-8")
    with pytest.raises(KurabeError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert sorted(lines) == [f"{path}: run.repets: unknown key; did you mean 'repeats'?",
                             f"{path}: run.warmup: Input should be greater than or equal to 0"]


def test_a_prompt_set_file_suggests_its_keys_too(tmp_path):
    (tmp_path / "mine.toml").write_text('[[prompts]]\nid = "p"\ntxt = "質問"\n',
                                        encoding="utf-8")
    (tmp_path / "s.toml").write_text('[run]\nprompt_set = "mine.toml"\n[[models]]\nname = "a"\n'
                                     'source = "scripted:none"\n', encoding="utf-8")
    result = invoke("run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    mine = tmp_path / "mine.toml"
    assert sorted(result.stderr.strip().removeprefix("error: ").splitlines()) == [
        f"{mine}: text: Field required", f"{mine}: txt: unknown key; did you mean 'text'?"]
    assert not (tmp_path / "r").exists()


# -- resume --------------------------------------------------------------------------------


def run_row(run_dir: Path) -> tuple[str, str | None]:
    con = sqlite3.connect(run_dir / "results.sqlite")
    try:
        return con.execute("SELECT status, finished_at FROM run").fetchone()
    finally:
        con.close()


def test_resume_of_a_complete_run_does_nothing_and_rewrites_nothing(tmp_path, script):
    calls: list = []

    def answer(body):
        calls.append(body)
        return ScriptedReply(content="はい、答えます。")

    run_dir = tmp_path / "run"
    api.run_shootout(config([("a", script(answer))]), run_dir)
    status, finished = run_row(run_dir)
    assert status == "complete" and finished
    outputs = {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
               for p in run_dir.iterdir() if p.name.startswith(("report", "results."))
               and p.suffix != ".sqlite"}
    assert set(outputs) == {"report.md", "report.html", "results.jsonl", "results.csv"}
    calls.clear()
    result = invoke("run", "--resume", str(run_dir))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"run {run_dir} is already complete; nothing to do"
    assert calls == []
    assert run_row(run_dir) == (status, finished)
    for name, (content, mtime) in outputs.items():
        path = run_dir / name
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime), name
    # a missing report file is written again; the run itself is still left alone
    (run_dir / "report.html").unlink()
    assert invoke("run", "--resume", str(run_dir)).exit_code == 0
    assert (run_dir / "report.html").read_bytes() == outputs["report.html"][0]
    assert run_row(run_dir) == (status, finished) and calls == []
    # the Python API behaves the same
    analysis = api.resume_shootout(run_dir)
    assert analysis.run.finished_at == finished and calls == []


def test_resume_says_what_it_will_do_before_doing_it(tmp_path, script):
    n = iter(range(1000))

    def flaky(body):
        return (ScriptedReply(http_status=400, error_body="bad request")
                if next(n) in (1, 3) else ScriptedReply(content="はい"))

    run_dir = tmp_path / "run"
    api.run_shootout(config([("a", script(ScriptedReply(content="ok"))), ("b", script(flaky))]),
                     run_dir)
    assert api.pending_work(run_dir) == {
        "status": "incomplete", "finished": False,
        "phases": [{"phase": "speed", "pending": 2, "total": 8, "unit": "requests"}],
        "leftover_engines": []}
    result = invoke("run", "--resume", str(run_dir))
    assert result.stderr.splitlines()[0] == \
        f"resuming {run_dir} (incomplete): speed 2 of 8 requests"
    assert run_row(run_dir)[0] == "complete"
    assert api.pending_work(run_dir)["finished"] is True


def test_pending_work_counts_every_phase_of_an_unstarted_run(tmp_path, script):
    cfg = parse_config({"run": {"name": "q", "repeats": 1, "warmup": 1, "max_tokens": 8},
                        "models": [{"name": "a", "source": script(ScriptedReply(content="x"))}],
                        "prompts": PROMPTS,
                        "quality": {"suites": ["builtin:ja_core"], "per_category": 1}}, "test")
    run = Orchestrator.create(cfg, tmp_path / "run")
    expected_answers = run.pending()["quality generation"]
    run.store.close()
    work = api.pending_work(tmp_path / "run")
    assert work["status"] == "running" and not work["finished"]
    assert work["phases"] == [
        {"phase": "speed", "pending": 3, "total": 3, "unit": "requests"},
        {"phase": "quality generation", "pending": expected_answers, "total": None,
         "unit": "answers"}]
    assert expected_answers > 0


def test_resume_usage_errors_keep_the_metavar_and_name_real_paths(tmp_path):
    (tmp_path / "s.toml").write_text("", encoding="utf-8")
    one_clear_error(invoke("run", str(tmp_path / "s.toml"), "--resume", str(tmp_path)),
                    "give either CONFIG or --resume RUN_DIR, not both")
    one_clear_error(invoke("run"), "missing CONFIG (a shootout TOML file) or --resume RUN_DIR")
    one_clear_error(invoke("run", "--resume", str(tmp_path), "--out", str(tmp_path / "o")),
                    f"--out does not apply to --resume: the run stays in {tmp_path}")
    one_clear_error(invoke("run", "--resume", str(tmp_path / "s.toml")),
                    f"{tmp_path / 's.toml'}: no kurabe run here")


# -- bad input: one clear line, exit 2 -----------------------------------------------------


def test_config_that_is_a_folder(tmp_path):
    one_clear_error(invoke("run", str(tmp_path)), f"{tmp_path}: a folder, not a shootout config")
    one_clear_error(invoke("models", str(tmp_path)), str(tmp_path))


def test_config_that_is_missing(tmp_path):
    one_clear_error(invoke("run", str(tmp_path / "nope.toml")),
                    f"{tmp_path / 'nope.toml'}: cannot read config: No such file or directory")


def test_config_that_cannot_be_read(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text("[run]\n", encoding="utf-8")
    real = Path.read_bytes

    def refuse(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    one_clear_error(invoke("run", str(path)), f"{path}: cannot read config: Permission denied")


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xff\xfe[\x00r\x00u\x00n\x00]\x00")
    one_clear_error(invoke("run", str(path)),
                    f"{path}: not a shootout config: not UTF-8 text (byte 0xff at offset 0)")


def test_config_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes("\ufeff[[models]]\nname = \"a\"\nsource = \"builtin:smollm2-135m\"\n"
                     .encode("utf-8"))
    assert load_config(path).models[0].name == "a"


def test_config_that_is_a_model_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(32))
    one_clear_error(invoke("run", str(path)), f"{path}: a GGUF model file, not a shootout config",
                    f"kurabe bench -m NAME={path}")


def test_config_that_is_json(tmp_path):
    path = tmp_path / "shootout.json"
    path.write_text(json.dumps({"run": {"repeats": 1}}), encoding="utf-8")
    one_clear_error(invoke("run", str(path)), f"{path}: not valid TOML")


def test_out_that_is_an_existing_file(tmp_path, script):
    out = tmp_path / "taken"
    out.write_text("keep me", encoding="utf-8")
    src = script(ScriptedReply(content="x"))
    one_clear_error(invoke("bench", "-m", f"a={src}", "--out", str(out)),
                    f"--out {out}: exists and is not a folder")
    assert out.read_text(encoding="utf-8") == "keep me"
    (tmp_path / "s.toml").write_text(f'[[models]]\nname = "a"\nsource = "{src}"\n',
                                     encoding="utf-8")
    one_clear_error(invoke("run", str(tmp_path / "s.toml"), "--out", str(out / "run")),
                    f"--out {out / 'run'}: {out} is a file, not a folder")
    with pytest.raises(KurabeError, match="exists and is not a folder"):
        api.run_shootout(config([("a", src)]), out)


def test_prompt_set_that_is_not_utf8_or_has_no_prompts(tmp_path, script):
    src = script(ScriptedReply(content="x"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    one_clear_error(invoke("bench", "-m", f"a={src}", "--prompts", str(tmp_path / "bin.toml"),
                           "--out", str(tmp_path / "r1")),
                    f"{tmp_path / 'bin.toml'}: not a prompt set: not UTF-8 text")
    (tmp_path / "empty.toml").write_text("", encoding="utf-8")
    # brackets in a message are shown as they are, not taken for console markup
    one_clear_error(invoke("bench", "-m", f"a={src}", "--prompts", str(tmp_path / "empty.toml"),
                           "--out", str(tmp_path / "r2")),
                    f"{tmp_path / 'empty.toml'}: no [[prompts]] found")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("args, needle", [
    (["bench", "-m", "a=builtin:smollm2-135m", "--repeats", "0"], "'--repeats'"),
    (["bench", "-m", "a=builtin:smollm2-135m", "--ctx", "-1"], "'--ctx'"),
    (["demo", "--per-category", "0"], "'--per-category'"),
    (["plan", "builtin:smollm2-135m", "--ngl", "-5"], "'--ngl'"),
    (["plan", "builtin:smollm2-135m", "--ubatch", "0"], "'--ubatch'"),
])
def test_zero_and_negative_numbers_are_refused_naming_the_flag(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["plan", "builtin:smollm2-135m", "--budget", "0"], "--budget 0: must be more than 0"),
    (["plan", "builtin:smollm2-135m", "--budget", "-5GiB"], "--budget '-5GiB'"),
    (["plan", "builtin:smollm2-135m", "--quants", ",", "--budget", "1GiB"],
     "--quants ',': no quant types"),
])
def test_sizes_and_lists_that_mean_nothing_are_refused(args, needle):
    one_clear_error(invoke(*args), needle)


def test_a_model_name_users_cannot_type_is_explained(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[models]]\nname = "my model"\nsource = "builtin:smollm2-135m"\n',
                    encoding="utf-8")
    one_clear_error(invoke("run", str(path)),
                    f"{path}: models.0.name: 'my model': use letters, digits")
    one_clear_error(invoke("bench", "-m", "my model=builtin:smollm2-135m"),
                    "command line: models.0.name: 'my model': use letters, digits")


def test_an_empty_config_and_a_bench_without_models_say_what_is_missing(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("", encoding="utf-8")
    one_clear_error(invoke("run", str(path)), f"{path}: models: no [[models]]")
    one_clear_error(invoke("bench"), "no models: give at least one with -m NAME=SPEC")


def test_an_error_before_any_progress_is_the_only_line(tmp_path, script):
    run_dir = tmp_path / "run"
    api.run_shootout(config([("a", script(ScriptedReply(content="x")))], repeats=1), run_dir)
    result = invoke("judge", str(run_dir), "--judge", "j=builtin:smollm2-135m")
    assert result.stderr == f"error: {run_dir}: this run has no quality round to judge\n"
    assert result.exit_code == 2


def test_outside_text_is_printed_as_it_is_not_as_console_markup(tmp_path):
    (tmp_path / "s.toml").write_text('[[models]]\nname = "a"\nsource = "m/[red]x[/red].gguf"\n',
                                     encoding="utf-8")
    result = invoke("models", str(tmp_path / "s.toml"))
    assert result.exit_code == 0
    assert f"{tmp_path}/m/[red]x[/red].gguf" in result.stdout
    one_clear_error(invoke("run", str(tmp_path / "[bold]missing[/bold].toml")),
                    "[bold]missing[/bold].toml: cannot read config")


def test_a_server_program_that_is_not_there_stops_the_run_before_its_folder_exists(
        tmp_path, smollm2_path):
    config = tmp_path / "shootout.toml"
    config.write_text(f'[[models]]\nname = "a"\nsource = "{smollm2_path}"\n'
                      'engine = { server = "./no-such-llama-server" }\n'
                      '[[prompts]]\nid = "p1"\ntext = "hi"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        "error: model 'a': engine.server: ./no-such-llama-server is not an executable file")
    assert not (tmp_path / "run").exists()
