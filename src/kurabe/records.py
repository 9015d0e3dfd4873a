"""Typed records: everything that crosses a boundary between kurabe's parts.

One module, one style (plain dataclasses, ``to_dict``/``from_dict`` where a record is stored
as JSON). Backends hand out ``Endpoint`` and ``EngineInfo``; the client turns a
``ChatRequest`` into a ``StreamRecord`` of timestamped ``Chunk``s; ``kurabe.metrics`` turns a
record into ``SpeedMetrics``; the store takes and returns only the ``*Row`` types and the
run's ``Snapshot``; the analysis reads only the store and these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

JSON = dict[str, Any]

# Why a request failed (``StreamRecord.error_kind``; stored with every failed request, answer
# and grade). Retried automatically: connection before any response, http_429, http_503.
ERROR_KINDS: dict[str, str] = {
    "http_429": "the server answered 429 Too Many Requests",
    "http_503": "the server answered 503 Service Unavailable",
    "http_5xx": "the server answered another 5xx status",
    "http_4xx": "the server refused the request (4xx)",
    "timeout": "the request took longer than run.request_timeout_s",
    "stalled": "no byte arrived for run.stall_timeout_s",
    "connection": "the connection was refused, reset or dropped",
    "bad_stream": "the stream held an event that is not valid SSE or JSON",
    "truncated_stream": "the stream ended with neither a finish_reason nor [DONE]",
    "not_a_stream": "the server answered a streamed request with plain JSON",
    "server_error_event": "the stream carried an error object from the server",
    "engine_exited": "the model's engine exited (the request failed or was never sent)",
    "context_exceeded": "the prompt does not fit the model's context: found before sending "
                        "(a judge's prompts, never sent) or refused by the server for its "
                        "length; a judge's is not retried",
}


# -- talking to a server ---------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where requests go. The API key lives only in memory (never stored, never printed)."""

    base_url: str  # ends with /v1
    model_id: str | None = None  # the "model" field to send, when the server needs one
    api_key: str | None = field(default=None, repr=False)

    @property
    def server_root(self) -> str:
        return self.base_url.removesuffix("/").removesuffix("/v1")


@dataclass
class EngineInfo:
    """What the store and the report record about a backend's engine (never a secret)."""

    kind: str  # human-readable, e.g. "llama.cpp (xllamacpp wheel)"
    version: str
    command: list[str] | None
    base_url: str
    log_path: str | None = None
    pid: int | None = None


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = 0
    fixed_length: bool = False  # ignore EOS so every model generates max_tokens tokens
    extra_body: JSON = field(default_factory=dict)

    def to_dict(self) -> JSON:
        return asdict(self)


@dataclass
class Chunk:
    t_s: float  # seconds since the request was sent (monotonic clock)
    content: str = ""
    reasoning: str = ""
    # The server's running count of generated tokens when it sent this chunk (llama.cpp's
    # per-chunk timings.predicted_n), when it says: a chunk can carry several tokens.
    n_tokens: int | None = None


@dataclass
class StreamRecord:
    """One streamed request as it happened: every figure is computed from this."""

    sent_at_unix_s: float
    chunks: list[Chunk] = field(default_factory=list)
    t_done_s: float | None = None  # end of stream ([DONE] or connection close)
    # When the client began writing the request on its open connection (any connect done),
    # from the request's start; None when the transport does not say (the in-process backend).
    t_written_s: float | None = None
    finish_reason: str | None = None
    usage: JSON | None = None
    timings: JSON | None = None  # llama.cpp's own clock for this request
    http_status: int | None = None
    error: str | None = None
    error_kind: str | None = None  # one of ERROR_KINDS when ``error`` is set
    attempts: int = 1  # requests sent for this record (0: never sent, its engine had exited)
    # The attempts before the one recorded, each retried: {kind, http_status, waited_s, error}.
    retries: list[JSON] = field(default_factory=list)
    # What was repaired on the way in (e.g. lone surrogates replaced with U+FFFD).
    notes: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "".join(c.content for c in self.chunks)

    @property
    def reasoning(self) -> str:
        return "".join(c.reasoning for c in self.chunks)

    def timed_chunks(self) -> list[tuple[float, str, str]]:
        return [(c.t_s, c.content, c.reasoning) for c in self.chunks]

    def to_dict(self) -> JSON:
        # Built field by field: dataclasses.asdict's deep copy costs ~0.1 ms per record, on
        # the event loop of a load level holding hundreds of streams.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("usage", "timings"):
            if isinstance(data[key], dict):
                data[key] = dict(data[key])
        data["retries"] = [dict(r) for r in self.retries]
        data["notes"] = list(self.notes)
        data["chunks"] = [[c.t_s, c.content, c.reasoning]
                          + ([c.n_tokens] if c.n_tokens is not None else [])
                          for c in self.chunks]
        return data

    @classmethod
    def from_dict(cls, data: JSON) -> StreamRecord:
        data = dict(data)
        data["chunks"] = [Chunk(*c) for c in data.get("chunks") or []]  # [t, content, reasoning(, n)]
        return cls(**data)


@dataclass
class SpeedMetrics:
    """Per-request figures (definitions: docs/metrics.md, ``kurabe.metrics.METRIC_DOCS``)."""

    ttft_s: float | None
    first_answer_char_s: float | None
    e2e_s: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    output_tokens_source: str  # "server" (usage/timings) or "chunks" (estimate: one per chunk)
    prompt_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    itl_per_token_s: float | None
    itl_per_chunk_median_s: float | None
    n_chunks: int
    answer_chars: int
    answer_graphemes: int
    answer_bytes: int
    reasoning_chars: int
    reasoning_share: float | None
    chars_per_s: float | None
    bytes_per_s: float | None
    chars_per_token: float | None
    finish_reason: str | None
    length_capped: bool
    cached_prompt_tokens: int | None
    server_decode_tokens_per_s: float | None
    server_prompt_tokens_per_s: float | None
    # Reasoning (see kurabe.thinking): split, outcome and the two phases timed apart.
    outcome: str = "answered"
    reasoning_format: str = "none"
    leaked_markers: list[str] | None = None
    first_reasoning_s: float | None = None
    thinking_s: float | None = None
    reasoning_tokens: int | None = None
    answer_tokens: int | None = None
    reasoning_tokens_source: str | None = None  # server | tokenizer | estimate (chunks)
    reasoning_decode_tokens_per_s: float | None = None
    answer_decode_tokens_per_s: float | None = None
    # Clocks (docs/metrics.md): which clock decode_tokens_per_s is on, client / server.
    decode_clock: str | None = None  # client | server
    clock_agreement: float | None = None  # client decode rate / server's, same request
    token_attribution: str | None = None  # server (per-chunk counts) | assumed (1st chunk = 1)
    # The client's own time from starting the request to having written it (connect included).
    send_delay_s: float | None = None

    def to_dict(self) -> JSON:
        return asdict(self)


# -- what a run holds: one row type per table -----------------------------------------------


def _known(cls: type, data: JSON) -> JSON:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class RunRow:
    created_at: str
    kurabe_version: str
    command: str
    config_json: str
    machine: JSON
    # running | complete | incomplete (finished, but some work failed or was skipped: a resume
    # retries exactly that) | interrupted | failed
    status: str
    finished_at: str | None = None


@dataclass
class ModelRow:
    """A model as it was served: file facts, engine, card, predicted and observed memory."""

    name: str
    source: str
    kind: str  # builtin | file | endpoint | scripted
    settings: JSON  # the model's engine settings (config)
    file_path: str | None = None
    file_bytes: int | None = None
    file_sha256: str | None = None
    quant: str | None = None
    architecture: str | None = None
    engine_kind: str | None = None
    engine_version: str | None = None
    engine_command: list[str] | None = None
    engine_base_url: str | None = None
    engine_log: str | None = None  # relative to the run folder
    card: JSON | None = None
    plan: JSON | None = None  # the memory plan, or {"error": ...} when the planner could not
    observed: JSON | None = None  # buffers parsed from the engine's load log
    updated_at: str | None = None

    @classmethod
    def blank(cls, name: str, source: str, kind: str) -> ModelRow:
        """A configured model that was never started (no row stored)."""
        return cls(name=name, source=source, kind=kind, settings={})


@dataclass
class RequestRow:
    """One speed or sweep request, committed as it lands."""

    seq: int
    model: str
    prompt_id: str
    repeat: int
    phase: str  # warmup | measure | sweep
    status: str  # ok | error
    error: str | None
    sent_at_unix_s: float
    request: JSON
    record: JSON  # StreamRecord.to_dict()
    metrics: JSON  # SpeedMetrics.to_dict()
    setting: str = ""  # the reasoning setting of a sweep request
    error_kind: str | None = None  # ERROR_KINDS, when status is error


@dataclass
class AnswerRow:
    """One quality answer (all turns of a multi-turn item)."""

    model: str
    item_id: str
    suite: str
    category: str
    repeat: int
    status: str  # ok | error
    error: str | None
    outcome: str | None
    answer: str
    reasoning: str
    turns: list[JSON]  # [{question, answer, reasoning, record}]
    metrics: JSON
    stored_at: str | None = None
    error_kind: str | None = None  # ERROR_KINDS, when status is error

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.item_id, self.repeat)


@dataclass
class CheckRow:
    """One deterministic or browser check of one answer."""

    model: str
    item_id: str
    repeat: int
    name: str
    passed: bool | None = None
    value: float | None = None
    detail: str | None = None
    stored_at: str | None = None


@dataclass
class GradeRow:
    """One judge verdict: a single grade or one order of a pairwise comparison."""

    judge: str
    kind: str  # single | pairwise
    item_id: str
    repeat: int
    model: str
    status: str  # scored | unscored | skipped | error
    model_b: str | None = None
    position: str | None = None  # ab | ba (pairwise)
    score: float | None = None
    verdict: str | None = None  # A | B | tie (pairwise)
    explanation: str | None = None
    raw_output: str | None = None
    judge_reasoning: str | None = None
    detail: str | None = None
    stored_at: str | None = None
    error_kind: str | None = None  # ERROR_KINDS, when status is error

    @property
    def key(self) -> tuple[str, str, int, str, str, str]:
        return (self.kind, self.item_id, self.repeat, self.model, self.model_b or "",
                self.position or "")


@dataclass
class ProbeRow:
    """One answer of a judge to a diagnostic question (``kurabe.phases.judge_probes``): a
    grade without the grammar (``free``), a repeated grade at a higher temperature
    (``consistency``), a refusal yes/no (``refusal``) or the grade of a reasoning-sweep
    answer (``sweep``)."""

    judge: str
    probe: str  # free | consistency | refusal | sweep
    item_id: str  # the quality item, or the speed prompt of a sweep answer
    repeat: int  # the answer's repeat
    model: str
    status: str  # scored | unscored | skipped | error
    setting: str = ""  # sweep: the reasoning setting of the answer
    attempt: int = 0  # consistency: which re-grade (1, 2, ...)
    score: float | None = None
    verdict: str | None = None  # refusal: refused | not_refused
    explanation: str | None = None
    raw_output: str | None = None
    detail: str | None = None
    error_kind: str | None = None  # ERROR_KINDS, when status is error
    stored_at: str | None = None

    @property
    def key(self) -> tuple[str, str, int, str, str, int]:
        return (self.probe, self.item_id, self.repeat, self.model, self.setting, self.attempt)


@dataclass
class EventRow:
    at: str
    kind: str
    detail: str


@dataclass
class SuiteItem:
    """One quality item (``kurabe.evals.suites`` reads them; a run's snapshot keeps them)."""

    id: str
    category: str
    lang: str
    turns: list[str]
    suite: str
    reference: str | None = None  # for the whole conversation (per-turn ones are joined)
    rubric: str | None = None
    checks: JSON = field(default_factory=dict)
    meta: JSON = field(default_factory=dict)

    def to_dict(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSON) -> SuiteItem:
        return cls(**_known(cls, data))


@dataclass
class Snapshot:
    """Everything a run was given, resolved at creation: report, resume and judge read this,
    never the files it came from."""

    config: JSON  # the full resolved config (absolute paths)
    prompts: list[JSON]  # the speed prompts ({id, text, category, lang, system})
    suite_items: list[JSON] = field(default_factory=list)  # sampled quality items
    judge_prompts: JSON = field(default_factory=dict)  # the judge's instructions and schemas
    calibration_items: list[JSON] = field(default_factory=list)  # the judge's calibration set

    def to_dict(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSON) -> Snapshot:
        return cls(**_known(cls, data))


@dataclass
class MachineSample:
    """What the machine was doing over one sampling interval of a run (``kurabe.sampler``).

    CPU figures are CPU-seconds used over the ``interval_s`` seconds before ``t_unix_s``, on
    the cores kurabe may run on; ``other_cpu_s`` is everything that was neither an engine
    kurabe started (with its children) nor kurabe's own process."""

    t_unix_s: float  # end of the interval (wall clock, comparable with sent_at_unix_s)
    interval_s: float  # seconds since the previous sample
    usable_cores: int  # the cores the CPU figures are counted on
    cpu_busy_pct: float  # busy share of those cores, 0-100
    engine_cpu_s: float  # the engines kurabe started, their children included
    kurabe_cpu_s: float  # kurabe's own process (its client, its sampler)
    other_cpu_s: float  # everything else: busy - engines - kurabe (never below 0)
    load_1m: float | None = None  # the 1-minute load average, where the OS has one
    cpu_freq_mhz: float | None = None  # current frequency (mean over cores), if readable
    gpus: list[JSON] = field(default_factory=list)  # [{index, name, util_pct, mem_used_bytes,
    #                                                   mem_total_bytes}] via NVML, if present


@dataclass
class CalibrationItem:
    """One item of a judge's calibration set (``kurabe.evals.calibration``): a question with a
    known-good and a known-bad answer, and the kind of flaw the bad one has."""

    id: str
    lang: str
    category: str
    flaw: str  # kurabe.evals.calibration.FLAWS
    question: str
    good: str
    bad: str
    rubric: str | None = None
    reference: str | None = None
    note: str | None = None  # what is wrong with the bad answer, for a person reading it
    source: str = ""  # the set it came from (builtin:calibration or a path)

    def to_dict(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSON) -> CalibrationItem:
        return cls(**_known(cls, data))


@dataclass
class CalibrationGradeRow:
    """One judge verdict on a calibration item: a single grade of its good or its bad answer,
    or one order of the pairwise comparison of the two."""

    judge: str
    item_id: str
    kind: str  # single | pairwise
    # single: good | bad (the answer graded); pairwise: good_first (A = the good answer) |
    # bad_first (A = the bad answer)
    position: str
    status: str  # scored | unscored | error
    score: float | None = None
    verdict: str | None = None  # A | B | tie (pairwise)
    explanation: str | None = None
    raw_output: str | None = None
    judge_reasoning: str | None = None
    detail: str | None = None
    error_kind: str | None = None  # ERROR_KINDS, when status is error
    stored_at: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.item_id, self.kind, self.position)


@dataclass
class LineageRow:
    """Whether two of a run's models, local files of the same tensor shapes, share weights
    (``kurabe.lineage``): computed with a small sample when the run is created."""

    model_a: str
    model_b: str
    verdict: str  # derived | independent | inconclusive
    reason: str  # one sentence
    score: float | None  # median layer score: 0 chance, 1 identical (None: none compared)
    result: JSON = field(default_factory=dict)  # the whole comparison (LineageResult.to_dict)
    stored_at: str | None = None


@dataclass
class LoadRequestRow:
    """One request of a load level (``kurabe.load``), stored in batches as they land.

    Times ``scheduled_s`` and ``sent_s`` are seconds from the level's start on the monotonic
    clock that every worker process shares; ``record`` holds the stream as for a speed
    request (chunk times from the request's own send)."""

    model: str
    level: int  # index of the level in the run's load plan
    status: str  # ok | error | cancelled (still in flight when the level ended)
    endpoint: str  # the base URL it was sent to (one of the model's replicas)
    prompt_id: str
    sent_s: float  # when it was sent, from the level's start
    sent_at_unix_s: float
    warmup: bool = False  # sent in the level's warm-up: kept, left out of its statistics
    scheduled_s: float | None = None  # when the arrival profile meant to send it (open loop)
    worker: int = 0  # the worker process that sent it
    error: str | None = None
    error_kind: str | None = None  # ERROR_KINDS, or "cancelled"
    request: JSON = field(default_factory=dict)
    record: JSON = field(default_factory=dict)  # StreamRecord.to_dict()
    metrics: JSON = field(default_factory=dict)  # SpeedMetrics.to_dict()
    id: int | None = None


@dataclass
class LoadLevelRow:
    """One level of a load run: a concurrency or an arrival rate held for a while, with what
    the client saw of itself and what the server's metrics endpoint said before and after."""

    model: str
    level: int
    profile: str  # concurrency | rate | poisson | sweep
    status: str  # running | complete | interrupted
    started_at_unix_s: float
    concurrency: int | None = None  # streams held open (fixed concurrency, sweep)
    rate_per_s: float | None = None  # requests per second (constant or Poisson arrivals)
    warmup_s: float = 0.0  # the first seconds of the level, left out of its statistics
    wall_s: float | None = None  # the measured window: from warm-up end to the level's end
    client: JSON = field(default_factory=dict)  # CPU time, event-loop lag, workers
    server_before: JSON | None = None  # the metrics endpoint scraped before the level
    server_after: JSON | None = None  # ... and after it
    spec: JSON = field(default_factory=dict)  # the level as planned (prompt source, SLOs...)
