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

import json
import re
from dataclasses import asdict, dataclass, field

from kurabe import KurabeError

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


def prompt_opens_thinking(generation_prompt: str) -> bool:
    """True when a generation prompt leaves a ``<think>`` open (the output starts inside)."""
    i = generation_prompt.rfind(THINK_OPEN)
    return i != -1 and THINK_CLOSE not in generation_prompt[i:]


def template_text_opens_thinking(chat_template: str) -> bool:
    """A reading of the template's text alone, never run: a ``<think>`` written after its
    last ``add_generation_prompt`` and not closed right after."""
    tail = chat_template[chat_template.rfind("add_generation_prompt"):] \
        if "add_generation_prompt" in chat_template else ""
    return THINK_OPEN in tail and THINK_CLOSE not in tail.split(THINK_OPEN, 1)[1][:40]


def template_opens_thinking(chat_template: str | None, *,
                            source: str = "the chat template") -> bool:
    """True when the template's generation prompt itself opens <think> (output starts inside).

    Decided by rendering the template (in kurabe's sandbox, ``kurabe.chat_template``) for a
    sample conversation with ``add_generation_prompt`` and reading the prompt it appends.
    A template the sandbox refuses raises ``ChatTemplateRefused`` (``source`` names it); one
    that renders no sample conversation for an ordinary reason (a syntax Jinja2 does not
    know, a variable only the engine provides) is read by its text instead
    (``template_text_opens_thinking``).
    """
    if not chat_template:
        return False
    from kurabe.chat_template import ChatTemplateFailed, generation_prompt

    try:
        return prompt_opens_thinking(generation_prompt(chat_template, source=source))
    except ChatTemplateFailed:
        return template_text_opens_thinking(chat_template)


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


class SavedResponseError(KurabeError):
    """A saved response that cannot be read truthfully (the message says why; the caller
    names the file)."""


@dataclass
class SavedResponse:
    content: str
    reasoning: str
    finish_reason: str | None
    kind: str  # openai | openai-sse | ollama | ollama-ndjson | text
    notes: list[str] = field(default_factory=list)  # what the reading had to assume or repair


_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Part types of an OpenAI content list that hold the answer's text.
_TEXT_PARTS = {"text": "text", "output_text": "text", "refusal": "refusal"}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(text: str, limit: int = 120) -> str:
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text(value: object, where: str) -> str:
    """The text of a content field: a string, null (nothing), or a list of text parts
    (``[{"type": "text", "text": …}]``, joined)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if isinstance(part, str):
                parts.append(part)
                continue
            if not isinstance(part, dict):
                raise SavedResponseError(f"{where}[{i}] is {_kind(part)}, not a text part")
            ptype = part.get("type", "text")
            field_name = _TEXT_PARTS.get(ptype) if isinstance(ptype, str) else None
            if field_name is None:
                raise SavedResponseError(
                    f"{where}[{i}] is a part of type {_short(str(ptype), 40)!r}, not text")
            piece = part.get(field_name)
            if not isinstance(piece, str):
                raise SavedResponseError(f"{where}[{i}].{field_name} is {_kind(piece)}, not text")
            parts.append(piece)
        return "".join(parts)
    raise SavedResponseError(f"{where} is {_kind(value)}, not text")


def _finish(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise SavedResponseError(f"{where} is {_kind(value)}, not a stop reason")


def _error_of(obj: dict, where: str) -> SavedResponseError | None:
    """A saved error answer (``{"error": …}`` with no answer beside it)."""
    if "error" not in obj or obj.get("error") is None or any(
            k in obj for k in ("choices", "message", "response")):
        return None
    error = obj["error"]
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error = error["message"]
    text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
    return SavedResponseError(f"{where}the saved response is an error, not an answer: "
                              f"{_short(text, 300)}")


def _from_openai(obj: dict, where: str = "", *, chunk: bool = False) -> SavedResponse | None:
    """A chat completion (or, ``chunk``, one streamed chunk); None: not OpenAI-shaped."""
    if "choices" not in obj:
        return None
    choices = obj["choices"]
    if not isinstance(choices, list):
        raise SavedResponseError(f"{where}choices is {_kind(choices)}, not a list")
    if not choices:
        if chunk:  # a stream's usage-only chunk
            return SavedResponse("", "", None, "openai")
        raise SavedResponseError(f"{where}choices is empty: the response holds no answer")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise SavedResponseError(f"{where}choices[0] is {_kind(choice)}, not an object")
    key = "message" if choice.get("message") is not None else "delta"
    msg = choice.get(key)
    if msg is not None and not isinstance(msg, dict):
        raise SavedResponseError(f"{where}choices[0].{key} is {_kind(msg)}, not an object")
    msg = msg or {}
    content = msg.get("content")
    if content is None and "text" in choice:  # the completions API
        text = _text(choice.get("text"), f"{where}choices[0].text")
    else:
        text = _text(content, f"{where}choices[0].{key}.content")
    field_name = "reasoning_content" if msg.get("reasoning_content") is not None else "reasoning"
    reasoning = _text(msg.get(field_name), f"{where}choices[0].{key}.{field_name}")
    finish = _finish(choice.get("finish_reason"), f"{where}choices[0].finish_reason")
    notes = [] if len(choices) == 1 or chunk else [
        f"the response holds {len(choices)} choices; the first is read"]
    return SavedResponse(text, reasoning, finish, "openai", notes)


def _from_ollama(obj: dict, where: str = "") -> SavedResponse | None:
    """Ollama's /api/chat or /api/generate answer (or one line of its stream)."""
    if "message" in obj:
        msg = obj["message"]
        if not isinstance(msg, dict):
            raise SavedResponseError(f"{where}message is {_kind(msg)}, not an object")
        content = _text(msg.get("content"), f"{where}message.content")
        thinking = _text(msg.get("thinking"), f"{where}message.thinking")
    elif "response" in obj:  # /api/generate
        content = _text(obj["response"], f"{where}response")
        thinking = _text(obj.get("thinking"), f"{where}thinking")
    else:
        return None
    return SavedResponse(content, thinking, _finish(obj.get("done_reason"), f"{where}done_reason"),
                         "ollama")


def _from_object(obj: object, where: str = "", *, chunk: bool = False) -> SavedResponse:
    if not isinstance(obj, dict):
        raise SavedResponseError(f"{where}JSON {_kind(obj)} is not a saved chat response "
                                 "(expected an object with choices, message or response)")
    error = _error_of(obj, where)
    if error is not None:
        raise error
    found = _from_openai(obj, where, chunk=chunk) or _from_ollama(obj, where)
    if found is None:
        keys = _short(", ".join(str(k) for k in list(obj)[:8]), 100) or "none"
        raise SavedResponseError(
            f"{where}a JSON object with none of choices, message or response (its keys: "
            f"{keys}): not a saved chat response")
    return found


def _join(parts: list[SavedResponse], kind: str, notes: list[str]) -> SavedResponse:
    finish = next((p.finish_reason for p in reversed(parts) if p.finish_reason), None)
    return SavedResponse("".join(p.content for p in parts), "".join(p.reasoning for p in parts),
                         finish, kind, notes + [n for p in parts for n in p.notes])


def _json_error(exc: json.JSONDecodeError, text: str, where: str = "") -> SavedResponseError:
    # An unterminated string runs to the end of the text: it ends inside the JSON too.
    ends_inside = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
    cut = " (it ends before the JSON does: cut short?)" if ends_inside else ""
    return SavedResponseError(f"{where}not valid JSON: {exc.msg} (line {exc.lineno}, "
                              f"column {exc.colno}){cut}")


def _loads(text: str, where: str = "") -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise SavedResponseError(f"{where}JSON nested too deeply to read") from None


def _from_json_lines(lines: list[tuple[int, str]]) -> SavedResponse:
    """One JSON object per line (Ollama's stream, or chunks saved one per line)."""
    parts = []
    for n, line in lines:
        where = f"line {n}: "
        try:
            obj = _loads(line, where)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, line, where) from None
        parts.append(_from_object(obj, where, chunk=True))
    return _join(parts, "ollama-ndjson" if parts[0].kind == "ollama" else "openai", [])


_SSE_FIELDS = ("event", "id", "retry")


def _from_sse(text: str) -> SavedResponse:
    """An SSE transcript (``data: {…}`` events, blank lines between them, ``data: [DONE]``)."""
    events: list[tuple[int, str, list[tuple[int, str]]]] = []  # (line, event name, data lines)
    name = ""
    data: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if data:
                events.append((data[0][0], name, data))
            name, data = "", []
            continue
        if line.startswith(":"):  # an SSE comment
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "data":
            data.append((n, value))
        elif field_name == "event":
            name = value.strip()
        elif field_name not in _SSE_FIELDS:
            raise SavedResponseError(f"line {n} is not part of an SSE stream "
                                     f"({_short(line, 60)!r}; every line must be a data:, "
                                     "event:, id: or retry: field, a comment or blank)")
    if data:
        events.append((data[0][0], name, data))

    parts: list[SavedResponse] = []
    done = False
    skipped = 0
    for first, name, lines in events:
        joined = "\n".join(v for _, v in lines)
        if joined.strip() == "[DONE]":
            done = True
            break
        try:
            payloads = [(first, _loads(joined, f"line {first}: "))]
        except json.JSONDecodeError as exc:
            if len(lines) == 1:
                raise _json_error(exc, joined, f"line {first}: a stream event is ") from None
            # Events saved without the blank lines between them: one event per data line.
            payloads = []
            for n, value in lines:
                if value.strip() == "[DONE]":
                    done = True
                    break
                try:
                    payloads.append((n, _loads(value, f"line {n}: ")))
                except json.JSONDecodeError as exc2:
                    raise _json_error(exc2, value, f"line {n}: a stream event is ") from None
        for n, payload in payloads:
            where = f"line {n}: "
            if name == "error":
                raise SavedResponseError(f"{where}the stream holds an error event: "
                                         f"{_short(joined, 300)}")
            if isinstance(payload, dict) and not any(
                    k in payload for k in ("choices", "message", "response", "error")):
                skipped += 1  # a chunk of usage or timings only
                continue
            parts.append(_from_object(payload, where, chunk=True))
        if done:
            break
    if skipped and not parts:
        raise SavedResponseError(f"none of the stream's {skipped} events holds choices, "
                                 "message or response: not a saved chat stream")
    notes = []
    finish = next((p.finish_reason for p in reversed(parts) if p.finish_reason), None)
    if not done and finish is None:
        notes.append("the stream ends with neither a stop reason nor [DONE]: it may be cut "
                     "short")
    return _join(parts, "openai-sse", notes)


def _clean(saved: SavedResponse) -> SavedResponse:
    """Lone surrogates (from \\ud800-style JSON escapes) cannot be printed or stored as
    UTF-8: replaced with U+FFFD, and said so."""
    if _SURROGATE.search(saved.content) or _SURROGATE.search(saved.reasoning):
        saved.content = _SURROGATE.sub("\ufffd", saved.content)
        saved.reasoning = _SURROGATE.sub("\ufffd", saved.reasoning)
        saved.notes.append("lone surrogates (invalid UTF-16 escapes) replaced with U+FFFD")
    return saved


def parse_saved_response(text: str) -> SavedResponse:
    """A saved response: chat-completion JSON (content a string or a list of text parts),
    Ollama JSON/NDJSON, an SSE transcript, a JSON list of streamed chunks, or plain text.

    Raises ``SavedResponseError`` for anything it cannot read truthfully: text that starts
    like a JSON object but does not parse (a cut-off file), JSON of another shape, a field of
    the wrong type, an SSE line that is not an SSE field, a saved error answer.
    """
    stripped = text.strip().lstrip("\ufeff").strip()
    if stripped.startswith(("{", "[")):
        try:
            obj = _loads(stripped)
        except json.JSONDecodeError as exc:
            lines = [(n, ln.strip()) for n, ln in enumerate(stripped.splitlines(), 1)
                     if ln.strip()]
            if len(lines) > 1 and all(ln.startswith("{") for _, ln in lines):
                return _clean(_from_json_lines(lines))
            if stripped.startswith("{") or stripped[1:].lstrip().startswith("{"):
                raise _json_error(exc, stripped) from None
            # "[1] …" and the like: plain text that happens to start with a bracket.
            return SavedResponse(text, "", None, "text")
        if isinstance(obj, list):
            if not obj:
                raise SavedResponseError("an empty JSON list is not a saved chat response")
            parts = [_from_object(o, f"item {i}: ", chunk=True) for i, o in enumerate(obj)]
            return _clean(_join(parts, "ollama-ndjson" if parts[0].kind == "ollama"
                                else "openai", []))
        return _clean(_from_object(obj))
    if re.search(r"^data:", stripped, flags=re.MULTILINE):
        return _clean(_from_sse(stripped))
    return SavedResponse(text, "", None, "text")
