"""Shootout configuration: one TOML file, validated with errors that name the file and key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kurabe import KurabeError

CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]

# A reasoning setting: one of these words, or a token budget (an integer). Each backend
# turns it into its own request fields (``Backend.reasoning_fields``).
REASONING_EFFORTS = ("low", "medium", "high")
REASONING_SETTINGS = ("off", *REASONING_EFFORTS, "unlimited")


def parse_reasoning_setting(value: str | int) -> str | int:
    if isinstance(value, bool):
        raise KurabeError(f"reasoning setting {value!r}: use one of "
                          f"{', '.join(REASONING_SETTINGS)} or a token budget")
    if isinstance(value, int):
        if value < 0:
            raise KurabeError(f"reasoning budget {value}: must be ≥ 0 tokens")
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text)
    if text not in REASONING_SETTINGS:
        raise KurabeError(f"reasoning setting {value!r}: use one of "
                          f"{', '.join(REASONING_SETTINGS)} or a token budget")
    return text


def source_kind(source: str) -> str:
    """The one grammar of a model source: ``builtin:NAME``, ``scripted:NAME``, an http(s)
    base URL (``endpoint``), else a path to a file (``file``)."""
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("scripted:"):
        return "scripted"
    if source.startswith(("http://", "https://")):
        return "endpoint"
    return "file"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored


class EngineConfig(_Strict):
    """How a model is served. ``server`` picks the llama.cpp program for local files."""

    # The backend by name (kurabe.backends): default llama.cpp for files, detected for URLs.
    backend: str | None = None
    # "xllamacpp" (installed with kurabe), "llama-server" on PATH, or a path
    server: str = "xllamacpp"
    ctx: Annotated[int, Field(ge=256)] = 4096
    cache_type_k: CacheType | None = None
    cache_type_v: CacheType | None = None
    flash_attn: Literal["on", "off", "auto"] | None = None
    threads: Annotated[int, Field(ge=1)] | None = None
    parallel: Annotated[int, Field(ge=1)] = 1
    ngl: int | None = None
    extra_args: list[str] = []
    api_key_env: str | None = None  # external endpoints: the variable holding the key
    model_id: str | None = None  # external endpoints: the "model" field to send
    chat_template_file: str | None = None
    reasoning_format: Literal["none", "auto", "deepseek", "deepseek-legacy"] | None = None
    reasoning_budget: int | None = None  # llama-server --reasoning-budget (server-wide)
    startup_timeout_s: Annotated[float, Field(gt=0)] = 300.0


class ModelConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    # builtin:NAME, a .gguf path, an http(s):// OpenAI-compatible base URL, or scripted:NAME
    source: str
    engine: EngineConfig = EngineConfig()
    reasoning: str | int | None = None  # off | low | medium | high | unlimited | token budget
    extra_body: dict = {}  # sent with every request, e.g. {"top_k": 20}

    @field_validator("reasoning")
    @classmethod
    def _reasoning(cls, value):
        return None if value is None else _check_setting(value)

    @property
    def kind(self) -> str:
        return source_kind(self.source)


def _check_setting(value):
    try:
        return parse_reasoning_setting(value)
    except KurabeError as exc:
        raise ValueError(str(exc)) from None


class ReasoningSweepConfig(_Strict):
    """Run the prompts again at several reasoning settings and compare per category."""

    settings: Annotated[list[str | int], Field(min_length=1)] = ["off", "low", "high", "unlimited"]
    repeats: Annotated[int, Field(ge=1)] = 1
    max_tokens: Annotated[int, Field(ge=1)] | None = None  # default: run.max_tokens
    models: list[str] | None = None  # default: every model
    prompts: list[str] | None = None  # prompt ids; default: every prompt

    @field_validator("settings")
    @classmethod
    def _settings(cls, values):
        return [_check_setting(v) for v in values]


class QualityConfig(_Strict):
    """The quality round: suites answered by every model, checked, and graded by a judge."""

    suites: Annotated[list[str], Field(min_length=1)] = ["builtin:ja_core"]
    per_category: Annotated[int, Field(ge=1)] | None = None  # sample this many per category
    repeats: Annotated[int, Field(ge=1)] = 1
    max_tokens: Annotated[int, Field(ge=1)] = 512
    models: list[str] | None = None  # default: every model
    judge: str | None = None  # a model name from [[models]] or [[judges]]; None: no judging
    judge_max_tokens: Annotated[int, Field(ge=1)] = 512
    judge_reasoning: str | int | None = "off"  # the judge's own thinking
    pairwise: bool = True
    code_checks: bool = True
    seed: int = 0

    @field_validator("judge_reasoning")
    @classmethod
    def _judge_reasoning(cls, value):
        return None if value is None else _check_setting(value)


class PromptConfig(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    text: str
    category: str = "general"
    lang: str = "ja"
    system: str | None = None


class RunConfig(_Strict):
    name: str = "shootout"
    repeats: Annotated[int, Field(ge=1)] = 3
    warmup: Annotated[int, Field(ge=0)] = 1
    max_tokens: Annotated[int, Field(ge=1)] = 128
    fixed_length: bool = False  # ignore EOS so every model generates max_tokens tokens
    temperature: float = 0.0
    seed: int = 0
    prompt_set: str | None = "builtin:speed"  # used when no [[prompts]] are given
    request_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    memory_budget: str | None = None


class ShootoutConfig(_Strict):
    run: RunConfig = RunConfig()
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    prompts: list[PromptConfig] = []
    reasoning_sweep: ReasoningSweepConfig | None = None
    quality: QualityConfig | None = None
    judges: list[ModelConfig] = []  # models that only judge (not compared)

    @model_validator(mode="after")
    def _judge_known(self):
        if self.quality and self.quality.judge:
            names = {m.name for m in [*self.models, *self.judges]}
            if self.quality.judge not in names:
                raise ValueError(f"quality.judge '{self.quality.judge}' is not a model in "
                                 "[[models]] or [[judges]]")
        return self

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return models

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ShootoutConfig:
        return cls.model_validate(json.loads(text))


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> ShootoutConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KurabeError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KurabeError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), base_dir=path.parent)


def parse_config(data: dict, origin: str, base_dir: Path | None = None) -> ShootoutConfig:
    try:
        config = ShootoutConfig.model_validate(data)
    except ValidationError as exc:
        raise KurabeError(format_validation_error(exc, origin)) from None
    if base_dir is not None:  # relative paths are relative to the config file
        config.run.prompt_set = _relative_to(config.run.prompt_set, base_dir)
        if config.quality is not None:
            config.quality.suites = [_relative_to(s, base_dir) or s
                                     for s in config.quality.suites]
        for model in [*config.models, *config.judges]:
            if model.kind == "file" and not Path(model.source).expanduser().is_absolute():
                model.source = str((base_dir / model.source).resolve())
            tpl = model.engine.chat_template_file
            if tpl and not Path(tpl).expanduser().is_absolute():
                model.engine.chat_template_file = str((base_dir / tpl).resolve())
    return config


def _relative_to(spec: str | None, base_dir: Path) -> str | None:
    """A file spec (``[FORMAT:]PATH``) made absolute against ``base_dir``; built-in names stay."""
    if spec is None or spec.startswith("builtin:"):
        return spec
    head, sep, rest = spec.partition(":")
    prefix, path = (f"{head}:", rest) if sep and head.isalpha() and len(head) > 1 else ("", spec)
    p = Path(path).expanduser()
    return prefix + str(p if p.is_absolute() else (base_dir / p).resolve())
