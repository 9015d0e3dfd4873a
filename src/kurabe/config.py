"""Shootout configuration: one TOML file, validated with errors that name the file and key."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal, get_args

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
    # More base URLs serving the same model (the replicas of a cluster), for an http(s)
    # source: the load phase spreads its requests over the source and these.
    replicas: list[str] = []

    @field_validator("source")
    @classmethod
    def _source(cls, value: str):
        if source_kind(value) == "endpoint":
            from urllib.parse import urlsplit

            parts = urlsplit(value)
            if parts.username or parts.password:
                # Sources are stored in the run and shown in its report.
                raise ValueError("a URL with a user name or password would be stored in the "
                                 "run and its report; put the key in an environment variable "
                                 "and name it with engine.api_key_env")
        return value

    @field_validator("reasoning")
    @classmethod
    def _reasoning(cls, value):
        return None if value is None else _check_setting(value)

    @model_validator(mode="after")
    def _replicas(self):
        if self.replicas and self.kind != "endpoint":
            raise ValueError("replicas: only a model served at an http(s) URL can have "
                             "replicas (more base URLs of the same model)")
        bad = [r for r in self.replicas if source_kind(r) != "endpoint"]
        if bad:
            raise ValueError(f"replicas: not an http(s) base URL: {', '.join(bad)}")
        return self

    @property
    def kind(self) -> str:
        return source_kind(self.source)

    @property
    def endpoints(self) -> list[str]:
        """Every base URL of an http(s) model: its source, then its replicas."""
        return [self.source, *self.replicas] if self.kind == "endpoint" else []


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
    # The judge that grades each sweep answer: a name from [[models]] or [[judges]];
    # default: [quality] judge, when there is one (docs/judge.md).
    judge: str | None = None

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
    # The judge's calibration before it grades (docs/judge.md, "Calibrating the judge"):
    # items with a known-good and a known-bad answer; a judge whose pairwise accuracy on them
    # is below the threshold gets a warning beside every grade it gave.
    calibrate: bool = True
    calibration_set: str = "builtin:calibration"  # or a JSONL file of calibration items
    calibration_threshold: Annotated[float, Field(ge=0, le=1)] = 0.75
    calibration_per_flaw: Annotated[int, Field(ge=1)] | None = None  # sample per flaw kind
    # The judge's diagnostics after the round (docs/judge.md, "Diagnostics"): this many
    # scored single grades are graded again without the grammar and at a higher
    # temperature; 0 turns the probes off.
    probe_sample: Annotated[int, Field(ge=0)] = 8
    consistency_repeats: Annotated[int, Field(ge=0)] = 2
    consistency_temperature: Annotated[float, Field(gt=0, le=2)] = 0.7
    refusal_judge: bool = False  # the judge confirms each pattern-detected refusal

    @field_validator("judge_reasoning")
    @classmethod
    def _judge_reasoning(cls, value):
        return None if value is None else _check_setting(value)


class SLOConfig(_Strict):
    """Service-level objectives: a request meets them when each figure given is at most its
    bound (goodput counts such requests)."""

    ttft_s: Annotated[float, Field(gt=0)] | None = None
    itl_s: Annotated[float, Field(gt=0)] | None = None
    e2e_s: Annotated[float, Field(gt=0)] | None = None


class LoadConfig(_Strict):
    """The load phase (kurabe.load): requests sent concurrently, level after level.

    One profile: ``concurrency`` (closed loop: that many streams, each sending back to
    back), ``rate`` (open loop: requests per second at even intervals), ``poisson`` (open
    loop: Poisson arrivals at that mean rate, reproducible with ``seed``) or ``sweep``
    (concurrency doubling from 1 until throughput stops rising by ``knee_gain`` or an SLO
    breaks, at most ``max_concurrency``). Each level lasts ``duration_s`` or sends
    ``requests`` requests (after warm-up)."""

    concurrency: list[Annotated[int, Field(ge=1)]] | None = None
    rate: list[Annotated[float, Field(gt=0)]] | None = None
    poisson: list[Annotated[float, Field(gt=0)]] | None = None
    sweep: bool = False
    max_concurrency: Annotated[int, Field(ge=1)] = 64
    knee_gain: Annotated[float, Field(ge=0)] = 0.05  # a rise below this share is the knee
    duration_s: Annotated[float, Field(gt=0)] | None = None
    requests: Annotated[int, Field(ge=1)] | None = None
    warmup_s: Annotated[float, Field(ge=0)] = 0.0
    warmup_requests: Annotated[int, Field(ge=0)] = 0
    max_tokens: Annotated[int, Field(ge=1)] = 128
    fixed_length: bool = False  # ignore EOS so every request generates max_tokens tokens
    # builtin:speed, a TOML prompt set, or None with prompt_tokens: synthetic prompts
    prompts: str | None = "builtin:speed"
    prompt_tokens: Annotated[int, Field(ge=1)] | None = None  # synthetic prompts of N tokens
    slo: SLOConfig = SLOConfig()
    workers: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # "auto": one worker process per this many streams (at 256 streams on 2 cores, two workers
    # halved the TTFT error against a server whose timing is known: benchmarks/load_vs_peers.py)
    streams_per_worker: Annotated[int, Field(ge=1)] = 128
    models: list[str] | None = None  # default: every model
    seed: int = 0
    # How long requests still in flight at a level's end may run on before they are
    # cancelled (None: cancelled at once; fixed-count levels wait for all of them).
    drain_s: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("concurrency", "rate", "poisson", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) \
            else value

    @model_validator(mode="after")
    def _one_profile(self):
        given = [k for k in ("concurrency", "rate", "poisson")
                 if getattr(self, k) is not None] + (["sweep"] if self.sweep else [])
        if len(given) > 1:
            raise ValueError(f"give one profile, not {' and '.join(given)}")
        if not given:
            self.concurrency = [1]
        if self.duration_s is None and self.requests is None:
            self.duration_s = 30.0
        if self.duration_s is not None and self.requests is not None:
            raise ValueError("give duration_s or requests, not both")
        return self

    @property
    def profile(self) -> str:
        if self.sweep:
            return "sweep"
        if self.rate is not None:
            return "rate"
        if self.poisson is not None:
            return "poisson"
        return "concurrency"


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
    # The longest a whole request may take, and the longest the server may stay silent.
    request_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    stall_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # Retries of a request that failed before anything was generated (connection refused or
    # dropped before a response, 429, 503): backoff doubles from retry_backoff_s, and every
    # wait (a server's Retry-After included) is capped at retry_max_wait_s.
    max_retries: Annotated[int, Field(ge=0)] = 2
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    retry_max_wait_s: Annotated[float, Field(ge=0)] = 60.0
    memory_budget: str | None = None
    speed: bool = True  # the speed phase (false: a run of other phases only, e.g. [load])
    # Where the results go: None keeps them in the run folder's SQLite file; a
    # postgresql:// URL sends them to a shared PostgreSQL database (same schema).
    store: str | None = None


class AblationConfig(_Strict):
    """Models that go from one to another one change at a time (kurabe.analysis.ablation)."""

    chain: Annotated[list[str], Field(min_length=2)]
    metric: Literal["decode_tokens_per_s", "prompt_tokens_per_s", "chars_per_s",
                    "ttft_s"] = "decode_tokens_per_s"


class ShootoutConfig(_Strict):
    run: RunConfig = RunConfig()
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    prompts: list[PromptConfig] = []
    reasoning_sweep: ReasoningSweepConfig | None = None
    quality: QualityConfig | None = None
    judges: list[ModelConfig] = []  # models that only judge (not compared)
    ablation: AblationConfig | None = None
    load: LoadConfig | None = None

    @model_validator(mode="after")
    def _load_models_known(self):
        if self.load and self.load.models:
            names = [m.name for m in self.models]
            unknown = [n for n in self.load.models if n not in names]
            if unknown:
                raise ValueError(f"load.models: {', '.join(unknown)} not in [[models]]")
        return self

    @model_validator(mode="after")
    def _ablation_known(self):
        if self.ablation:
            names = [m.name for m in self.models]
            unknown = [n for n in self.ablation.chain if n not in names]
            if unknown:
                raise ValueError(f"ablation.chain: {', '.join(unknown)} not in [[models]]")
            if len(set(self.ablation.chain)) != len(self.ablation.chain):
                raise ValueError("ablation.chain: a model appears twice")
        return self

    @model_validator(mode="after")
    def _judge_known(self):
        names = {m.name for m in [*self.models, *self.judges]}
        if self.quality and self.quality.judge:
            if self.quality.judge not in names:
                raise ValueError(f"quality.judge '{self.quality.judge}' is not a model in "
                                 "[[models]] or [[judges]]")
        sweep_judge = self.reasoning_sweep.judge if self.reasoning_sweep else None
        if sweep_judge and sweep_judge not in names:
            raise ValueError(f"reasoning_sweep.judge '{sweep_judge}' is not a model in "
                             "[[models]] or [[judges]]")
        return self

    @property
    def sweep_judge(self) -> str | None:
        """The judge of the reasoning sweep's answers: its own, else the quality judge."""
        if self.reasoning_sweep is None:
            return None
        return self.reasoning_sweep.judge or (self.quality.judge if self.quality else None)

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


def _strict_models() -> dict[str, type[BaseModel]]:
    """Every config section by class name (a ValidationError's ``title``)."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [_Strict]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def _section_model(annotation: object) -> type[BaseModel] | None:
    """The config section a field holds: itself, or inside list[...], X | None, Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _unknown_key(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """'unknown key' with the nearest known key of that section, or the known keys."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue  # a list index: the same section
        field = model.model_fields.get(part)
        model = _section_model(field.annotation) if field is not None else None
    if model is None:
        return "unknown key"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key (known: {', '.join(known)})"


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One line per problem, each naming ``origin`` and the key: ``FILE: run.repets: unknown
    key; did you mean 'repeats'?``."""
    root = _strict_models().get(exc.title, ShootoutConfig)
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(root, tuple(err["loc"]))
        elif err["type"] == "string_pattern_mismatch" and err["loc"][-1] in ("name", "id"):
            msg = (f"{err['input']!r}: use letters, digits, '_', '.' and '-', starting with "
                   "a letter or digit")
        elif err["type"] == "missing" and tuple(err["loc"]) == ("models",):
            msg = "no [[models]]: a shootout needs at least one model"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}: {loc}: {msg}")
    return "\n".join(dict.fromkeys(lines))


def load_config(path: str | Path) -> ShootoutConfig:
    path = Path(path)
    if path.is_dir():
        raise KurabeError(f"{path}: a folder, not a shootout config (a TOML file)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KurabeError(f"{path}: cannot read config: {exc.strerror}") from None
    if raw.startswith(b"GGUF"):
        raise KurabeError(f"{path}: a GGUF model file, not a shootout config (a TOML file)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KurabeError(f"{path}: not a shootout config: not UTF-8 text (byte "
                          f"0x{raw[exc.start]:02x} at offset {exc.start}); a config is a "
                          "TOML file") from None
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise KurabeError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path), base_dir=path.parent)


def parse_config(data: dict, origin: str, base_dir: Path | None = None) -> ShootoutConfig:
    try:
        config = ShootoutConfig.model_validate(data)
    except ValidationError as exc:
        raise KurabeError(format_validation_error(exc, origin)) from None
    if base_dir is not None:  # relative paths are relative to the config file
        config.run.prompt_set = _relative_to(config.run.prompt_set, base_dir)
        if config.load is not None:
            config.load.prompts = _relative_to(config.load.prompts, base_dir)
        if config.quality is not None:
            config.quality.suites = [_relative_to(s, base_dir) or s
                                     for s in config.quality.suites]
            config.quality.calibration_set = (_relative_to(config.quality.calibration_set,
                                                           base_dir)
                                              or config.quality.calibration_set)
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
