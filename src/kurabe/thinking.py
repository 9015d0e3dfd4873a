"""Reasoning vs answer: one module that splits every format kurabe meets, streamed or not.

Formats: reasoning split out by the server (llama.cpp ``reasoning_content``, vLLM
``reasoning``, Ollama ``message.thinking``); inline ``<think>…</think>``; output that starts
inside a ``<think>`` the chat template already opened; a thinking block that never closes;
Harmony channels (``<|channel|>analysis<|message|>…<|end|>…<|channel|>final<|message|>…``),
including the degraded form in which the special tokens were decoded as plain words
(``analysis…assistantfinal…``). Whatever is left of a marker in the answer is a leak.

Outcomes (``OUTCOMES``, each explained in ``OUTCOME_DOCS``): ``answered``;
``answered_without_thinking`` (the chat template opened a think block, the model never closed
it and stopped on its own: its text is its answer, graded); ``thinking_exhausted`` (reasoning
and no answer, stopped by the token limit or a reasoning budget: never a refusal, never
graded); ``stopped_in_thinking`` (reasoning and no answer, and the model stopped on its own,
or no stop reason was given: never graded); ``leaked`` (reasoning markers in the answer);
``empty`` (any other empty answer); ``error`` (the request failed; set by the caller).

Whether the template opened a think block decides some readings (a ``</think>`` with no
``<think>`` before it; a block that never closes). When that is unknown, ``read_response``
says so (``Reading.ambiguity``) and names the other reading.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
H_CHANNEL, H_MESSAGE, H_END, H_START, H_RETURN = (
    "<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>")
# Markers that must never reach an answer. "assistantfinal" is Harmony's
# "<|start|>assistant<|channel|>final" with the special tokens decoded as nothing.
LEAK_MARKERS = (THINK_OPEN, THINK_CLOSE, H_CHANNEL, H_MESSAGE, H_END, H_START, H_RETURN,
                "<|im_start|>", "<|im_end|>", "assistantfinal")

_HARMONY_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>[^<]*)?<\|message\|>")
_HARMONY_ANALYSIS = re.compile(r"<\|channel\|>\s*(?:analysis|commentary)[^<]*<\|message\|>")
_DEGRADED = re.compile(r"^\s*analysis(?=\S)")
_DEGRADED_FINAL = re.compile(r"assistant\s*final")

# Every outcome, in the order reports list them. ``outcome()`` returns all but ``error``,
# which the caller sets for a failed request. Stored runs hold these names: never rename one.
OUTCOMES = ("answered", "thinking_exhausted", "answered_without_thinking",
            "stopped_in_thinking", "leaked", "empty", "error")
OUTCOME_DOCS: dict[str, str] = {
    "answered": "the model gave an answer (after its reasoning, if it reasoned)",
    "thinking_exhausted": "the model was still reasoning when it reached max_tokens (or a "
                          "reasoning budget the server reported) and returned no answer; "
                          "never a refusal, never graded",
    "answered_without_thinking": "the chat template opened a think block, but the model "
                                 "never closed it and stopped on its own: its text is read "
                                 "as its answer, given without thinking, and graded",
    "stopped_in_thinking": "the model reasoned and stopped on its own (no token limit) "
                           "without giving an answer, or no stop reason was reported; "
                           "never a refusal, never graded",
    "leaked": "reasoning or chat markers (e.g. </think>, <|channel|>) were left in the "
              "answer; checked, not graded",
    "empty": "no answer and no reasoning left open: nothing, or reasoning that closed with "
             "nothing after it before the model stopped on its own; never graded",
    "error": "the request failed; left out of every figure",
}
# Outcomes whose answer the judge grades.
JUDGED_OUTCOMES = ("answered", "answered_without_thinking")
# Outcomes with no answer at all: never a refusal, never graded, no code to run.
NO_ANSWER_OUTCOMES = ("thinking_exhausted", "stopped_in_thinking", "empty", "error")
# Finish reasons that mean the output was stopped by the token limit, not by the model.
LIMIT_FINISH_REASONS = ("length",)


@dataclass
class Segment:
    """A span of the raw content stream, [start, end) in characters."""

    start: int
    end: int
    kind: str  # reasoning | answer | marker


@dataclass
class Split:
    reasoning: str
    answer: str
    format: str  # server | think | think-opened | harmony | harmony-degraded | none
    reasoning_closed: bool  # False: reasoning was still open when the output ended
    leaked_markers: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # over the content stream only
    # True: the answer is the text of a think block the chat template opened and the model
    # never closed before stopping on its own (it answered without thinking).
    answer_in_open_block: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("segments")
        return data


def _leaks(answer: str) -> list[str]:
    return [m for m in LEAK_MARKERS if m in answer]


def _trim(text: str) -> str:
    return text.strip()


def stopped_by_limit(finish_reason: str | None, budget_ended: bool = False) -> bool:
    """The output was cut by the token limit (or a reasoning budget the server reported)."""
    return budget_ended or finish_reason in LIMIT_FINISH_REASONS


def split_content(content: str, server_reasoning: str = "", *,
                  starts_in_reasoning: bool | None = None, finish_reason: str | None = None,
                  budget_ended: bool = False) -> Split:
    """Split one response. ``server_reasoning``: text the server already split out.

    ``starts_in_reasoning``: True when the chat template opened ``<think>`` itself, so the
    output begins inside reasoning; False when the template is known not to (a ``</think>``
    in the text is then a leaked marker); None when unknown, in which case a ``</think>``
    with no ``<think>`` before it is read as the end of a block the template opened (see
    ``template_opens_thinking``, and ``read_response`` for the other reading).

    ``finish_reason``: why the output ended, when known. A block the template opened and the
    model never closed is read as the model's answer (``answer_in_open_block``) when the model
    stopped on its own (a finish reason other than the token limit, and no ``budget_ended``);
    otherwise, or when the finish reason is unknown (None), it stays reasoning.
    """
    n = len(content)
    own_stop = finish_reason is not None and not stopped_by_limit(finish_reason, budget_ended)
    if server_reasoning:
        if starts_in_reasoning is True and own_stop and not content.strip():
            # The template opened the block and the server filed all the text under
            # reasoning: the model never closed it and stopped on its own.
            return Split("", _trim(server_reasoning), "server", False,
                         _leaks(server_reasoning), [Segment(0, n, "answer")] if n else [],
                         answer_in_open_block=True)
        # The server split it: content is the answer; anything marker-like in it leaked.
        answer = content
        return Split(_trim(server_reasoning), _trim(answer), "server", True, _leaks(answer),
                     [Segment(0, n, "answer")] if n else [])

    # Harmony with real special-token text.
    final = _HARMONY_FINAL.search(content)
    analysis = _HARMONY_ANALYSIS.search(content)
    if analysis or final:
        segs: list[Segment] = []
        reasoning_parts = []
        pos = 0
        closed = True
        if analysis and (not final or analysis.start() < final.start()):
            segs.append(Segment(0, analysis.end(), "marker"))
            r_end_match = re.compile(re.escape(H_END)).search(content, analysis.end())
            limit = final.start() if final else n
            r_end = r_end_match.start() if r_end_match and r_end_match.start() < limit else limit
            if not final and not r_end_match:
                closed = False
            reasoning_parts.append(content[analysis.end():r_end])
            segs.append(Segment(analysis.end(), r_end, "reasoning"))
            pos = r_end
        if final:
            segs.append(Segment(pos, final.end(), "marker"))
            end = n
            for stop in (H_RETURN, H_END):
                idx = content.find(stop, final.end())
                if idx != -1:
                    end = min(end, idx)
            answer = content[final.end():end]
            segs.append(Segment(final.end(), end, "answer"))
            if end < n:
                segs.append(Segment(end, n, "marker"))
        elif pos < n and content.startswith(H_END, pos) and H_CHANNEL not in content[pos:]:
            # llama.cpp's "none" format drops the final channel's header: "…R<|end|>A".
            a_start = pos + len(H_END)
            end = n
            for stop in (H_RETURN, H_END):
                idx = content.find(stop, a_start)
                if idx != -1:
                    end = min(end, idx)
            segs += [Segment(pos, a_start, "marker"), Segment(a_start, end, "answer")]
            if end < n:
                segs.append(Segment(end, n, "marker"))
            answer = content[a_start:end]
        else:
            answer = ""
            if pos < n:
                segs.append(Segment(pos, n, "marker"))
        return Split(_trim("".join(reasoning_parts)), _trim(answer), "harmony", closed,
                     _leaks(answer), segs)

    # Harmony whose special tokens were decoded as nothing: "analysis…assistantfinal…".
    head = _DEGRADED.match(content)
    if head:
        fin = _DEGRADED_FINAL.search(content, head.end())
        if fin:
            answer = content[fin.end():]
            return Split(_trim(content[head.end():fin.start()]), _trim(answer),
                         "harmony-degraded", True, _leaks(answer),
                         [Segment(0, head.end(), "marker"),
                          Segment(head.end(), fin.start(), "reasoning"),
                          Segment(fin.start(), fin.end(), "marker"),
                          Segment(fin.end(), n, "answer")])

    # <think> … </think>
    lead = len(content) - len(content.lstrip())
    opened_by_template = starts_in_reasoning is True or (
        starts_in_reasoning is None and THINK_CLOSE in content
        and THINK_OPEN not in content.split(THINK_CLOSE, 1)[0])
    if content.startswith(THINK_OPEN, lead) or opened_by_template:
        opened = content.startswith(THINK_OPEN, lead)
        r_start = lead + len(THINK_OPEN) if opened else 0
        close = content.find(THINK_CLOSE, r_start)
        segs = [Segment(0, r_start, "marker")] if r_start else []
        fmt = "think" if opened else "think-opened"
        if close == -1:
            if starts_in_reasoning is True and own_stop:
                # The template opened the block (llama.cpp's "none" format writes that
                # <think> into the content), the model never closed it and stopped on its
                # own: what it wrote is its answer.
                answer = content[r_start:]
                segs.append(Segment(r_start, n, "answer"))
                return Split("", _trim(answer), fmt, False, _leaks(answer), segs,
                             answer_in_open_block=True)
            segs.append(Segment(r_start, n, "reasoning"))
            return Split(_trim(content[r_start:]), "", fmt, False, [], segs)
        a_start = close + len(THINK_CLOSE)
        segs += [Segment(r_start, close, "reasoning"), Segment(close, a_start, "marker"),
                 Segment(a_start, n, "answer")]
        answer = content[a_start:]
        return Split(_trim(content[r_start:close]), _trim(answer), fmt, True, _leaks(answer),
                     segs)

    # No reasoning format recognised: it is all answer (and any marker in it leaked).
    return Split("", _trim(content), "none", True, _leaks(content),
                 [Segment(0, n, "answer")] if n else [])


def outcome(split: Split, finish_reason: str | None, *, budget_ended: bool = False) -> str:
    """The outcome of one split response (``OUTCOME_DOCS``); ``error`` is the caller's.

    ``thinking_exhausted`` only when the token limit (``finish_reason`` "length") or a
    reasoning budget the server reported (``budget_ended``) cut the output. A server that
    splits reasoning out does not show whether the block closed, so reasoning with no answer
    from it counts as unclosed.
    """
    if split.leaked_markers:
        return "leaked"
    if split.answer:
        return "answered_without_thinking" if split.answer_in_open_block else "answered"
    if split.reasoning:
        if stopped_by_limit(finish_reason, budget_ended):
            return "thinking_exhausted"
        if not split.reasoning_closed or split.format == "server":
            return "stopped_in_thinking"
    return "empty"


@dataclass
class Reading:
    """A response split and its outcome. ``ambiguity``: why the reading rests on a guess
    about the chat template (empty when it does not); ``alternative``: the other reading."""

    split: Split
    outcome: str
    ambiguity: str = ""
    alternative: Reading | None = None


def _describe(split: Split, result: str) -> str:
    return (f"{result} ({len(split.reasoning)} characters of reasoning, "
            f"{len(split.answer)} of answer)")


def _ambiguity_cause(content: str, server_reasoning: str) -> str:
    lead = content.lstrip()
    if THINK_CLOSE in content and THINK_OPEN not in content.split(THINK_CLOSE, 1)[0]:
        return (f"a {THINK_CLOSE} with no {THINK_OPEN} before it ends a think block the chat "
                "template opened, or is a marker leaked into a plain answer")
    if lead.startswith(THINK_OPEN):
        return (f"a {THINK_OPEN} block that never closes was opened by the model itself, or "
                f"by the chat template (llama-server's --reasoning-format none writes the "
                f"template's {THINK_OPEN} into the content)")
    return ("the server returned reasoning and no answer: reasoning the model stopped in, "
            "or an answer the server filed as reasoning because the chat template opened a "
            "think block the model never closed")


def read_response(content: str, server_reasoning: str = "", finish_reason: str | None = None,
                  *, starts_in_reasoning: bool | None = None,
                  budget_ended: bool = False) -> Reading:
    """Split one response and say its outcome. When ``starts_in_reasoning`` is None (the
    chat template is unknown) and reading the template as opening a think block or not
    would split the text differently, the reading is ambiguous: ``ambiguity`` says why and
    ``alternative`` holds the other reading."""
    def read(opened: bool | None) -> Reading:
        split = split_content(content, server_reasoning, starts_in_reasoning=opened,
                              finish_reason=finish_reason, budget_ended=budget_ended)
        return Reading(split, outcome(split, finish_reason, budget_ended=budget_ended))

    reading = read(starts_in_reasoning)
    if starts_in_reasoning is not None or not (
            THINK_OPEN in content or THINK_CLOSE in content or server_reasoning):
        # Known template, or nothing that points to a think block: text with no marker and
        # no server reasoning is read as it stands (a server with a template that opens a
        # block either writes that <think> into the content or splits the reasoning out).
        return reading
    opened, plain = read(True), read(False)
    texts = [(r.split.reasoning, r.split.answer) for r in (reading, opened, plain)]
    if texts[1] == texts[2]:
        return reading
    used_opened = texts[0] == texts[1]
    other = plain if used_opened else opened
    if used_opened:
        readings = (f"read here as a template that opens one: "
                    f"{_describe(reading.split, reading.outcome)}; if it opens none: "
                    f"{_describe(other.split, other.outcome)}")
    else:
        readings = (f"read here as a template that opens none: "
                    f"{_describe(reading.split, reading.outcome)}; if it opens one: "
                    f"{_describe(other.split, other.outcome)}")
    reading.ambiguity = (
        f"whether the chat template opens a think block is unknown, and it decides this "
        f"reading: {_ambiguity_cause(content, server_reasoning)}; {readings}")
    reading.alternative = other
    return reading


def template_opens_thinking(chat_template: str | None) -> bool:
    """True when the template's generation prompt itself opens <think> (output starts inside)."""
    if not chat_template:
        return False
    tail = chat_template[chat_template.rfind("add_generation_prompt"):] \
        if "add_generation_prompt" in chat_template else ""
    return THINK_OPEN in tail and THINK_CLOSE not in tail.split(THINK_OPEN, 1)[1][:40]


def has_thinking_markers(chat_template: str | None) -> bool:
    if not chat_template:
        return False
    return (THINK_OPEN in chat_template or H_CHANNEL in chat_template
            or "reasoning_content" in chat_template or "enable_thinking" in chat_template)


@dataclass
class TimedSplit:
    split: Split
    t_first_reasoning_s: float | None
    t_first_answer_s: float | None
    t_last_reasoning_s: float | None
    reasoning_chunks: int
    answer_chunks: int


def split_stream(chunks: list[tuple[float, str, str]], *,
                 starts_in_reasoning: bool | None = None, finish_reason: str | None = None,
                 budget_ended: bool = False) -> TimedSplit:
    """Split a timestamped stream [(t, content, reasoning)] and time each side
    (``split_content`` explains the keywords).

    A chunk belongs to a side when it adds at least one non-space character to it; the
    server's own reasoning field counts as reasoning, unless the split read it as an answer
    given in a block the template opened and the model never closed.
    """
    content = "".join(c for _, c, _ in chunks)
    server_reasoning = "".join(r for _, _, r in chunks)
    split = split_content(content, server_reasoning, starts_in_reasoning=starts_in_reasoning,
                          finish_reason=finish_reason, budget_ended=budget_ended)
    server_answers = split.format == "server" and split.answer_in_open_block
    t_r = t_a = t_rl = None
    n_r = n_a = 0
    offset = 0
    for t, c, r in chunks:
        start, end = offset, offset + len(c)
        offset = end
        is_r = bool(r.strip()) and not server_answers
        is_a = bool(r.strip()) and server_answers
        for seg in split.segments:
            lo, hi = max(start, seg.start), min(end, seg.end)
            if lo < hi and content[lo:hi].strip():
                if seg.kind == "reasoning":
                    is_r = True
                elif seg.kind == "answer":
                    is_a = True
        if is_r:
            n_r += 1
            t_rl = t
            if t_r is None:
                t_r = t
        if is_a:
            n_a += 1
            if t_a is None:
                t_a = t
    return TimedSplit(split, t_r, t_a, t_rl, n_r, n_a)


@dataclass
class SavedResponse:
    content: str
    reasoning: str
    finish_reason: str | None
    kind: str  # openai | openai-sse | ollama | ollama-ndjson | text


def _from_openai(obj: dict) -> SavedResponse | None:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    choice = choices[0]
    msg = choice.get("message") or choice.get("delta") or {}
    text = msg.get("content") if isinstance(msg, dict) else None
    if text is None:
        text = choice.get("text") or ""
    reasoning = (msg.get("reasoning_content") or msg.get("reasoning") or "") if isinstance(msg, dict) else ""
    return SavedResponse(text or "", reasoning, choice.get("finish_reason"), "openai")


def _from_ollama(obj: dict) -> SavedResponse | None:
    if "message" in obj and isinstance(obj["message"], dict):
        msg = obj["message"]
        return SavedResponse(msg.get("content") or "", msg.get("thinking") or "",
                             obj.get("done_reason"), "ollama")
    if "response" in obj:  # /api/generate
        return SavedResponse(obj.get("response") or "", obj.get("thinking") or "",
                             obj.get("done_reason"), "ollama")
    return None


def parse_saved_response(text: str) -> SavedResponse:
    """A saved response: chat-completion JSON, Ollama JSON/NDJSON, an SSE transcript, or text."""
    import json

    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            found = _from_openai(obj) or _from_ollama(obj)
            if found:
                return found
        # Ollama streams one JSON object per line.
        lines = [ln for ln in stripped.splitlines() if ln.strip()]
        try:
            objs = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            objs = []
        if objs and all(isinstance(o, dict) for o in objs):
            maybe = [_from_ollama(o) or _from_openai(o) for o in objs]
            parts = [p for p in maybe if p is not None]
            if len(parts) == len(maybe):
                finish = next((p.finish_reason for p in reversed(parts) if p.finish_reason), None)
                return SavedResponse("".join(p.content for p in parts),
                                     "".join(p.reasoning for p in parts), finish,
                                     "ollama-ndjson" if parts[0].kind == "ollama" else "openai")
    if re.search(r"^data:", stripped, flags=re.MULTILINE):
        content, reasoning, finish = [], [], None
        for line in stripped.splitlines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                obj = json.loads(payload)
            except json.JSONDecodeError:
                continue
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or choice.get("message") or {}
                content.append(delta.get("content") or "")
                reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
                finish = choice.get("finish_reason") or finish
        return SavedResponse("".join(content), "".join(reasoning), finish, "openai-sse")
    return SavedResponse(text, "", None, "text")
