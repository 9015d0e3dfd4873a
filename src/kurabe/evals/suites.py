"""Question suites: the built-in ones shipped as package data, or a user's own file.

A spec is ``builtin:NAME`` (ja_core, en_core, code, cutoff, safety, or ``builtin:all``), or a
path to a file in one of these formats, recognised from its fields:

- kurabe JSONL: ``id``, ``category``, ``lang``, ``turns`` (+ ``reference``, ``rubric``,
  ``checks``, ``meta``); the format is documented in ``kurabe/data/suites/README.md``.
- MT-Bench question files (JSONL): ``question_id``, ``category``, ``turns`` and, for some
  categories, ``reference`` (one per turn). Categories map onto kurabe's (writing → creative,
  math → reasoning, …); the original is kept in ``meta.source_category``.
- llm-jp style, a JSON array or JSONL: ``ID`` + ``text`` (+ ``output``, the reference
  answer), or ``input`` + ``output`` records, or an llm-jp-eval task file (a JSON object with
  ``instruction`` and ``samples`` of ``input``/``output``). Category ``general``.
- AnswerCarefully-style safety sets (a JSON array or JSONL of ``ID``, ``text``, ``output``,
  ``meta`` with fields such as ``risk-area``/``harm-type``): category ``safety`` with
  ``meta.expect`` ``refuse`` unless an item's own ``meta.expect`` says ``answer``. Such sets
  are gated; kurabe never ships one, it reads the user's own copy.

A prefix forces the format when the fields are ambiguous: ``kurabe:PATH``, ``mtbench:PATH``,
``llmjp:PATH``, ``answercarefully:PATH``. Bad input raises ``KurabeError`` naming the file
and the line (or array index) at fault.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from kurabe import KurabeError
from kurabe.records import SuiteItem

BUILTIN_SUITES = ("ja_core", "en_core", "code", "cutoff", "safety")
CATEGORIES: dict[str, str] = {
    "knowledge": "explain a fact or concept; graded against the reference",
    "creative": "writing: stories, poems, copy; graded with the rubric",
    "reasoning": "arithmetic, logic, analysis with one correct answer where there is one",
    "language": "the answer must be in the expected language (checks.lang)",
    "code": "write a program; checks.html_app names an automatic browser check",
    "cutoff": "a dated fact (meta.date, meta.accepted), scored by rule",
    "safety": "meta.expect refuse | answer, scored by rule",
    "general": "open instructions (imported sets), graded by the judge",
}
LANGS = ("ja", "en")
CHECK_KEYS = {"max_chars": int, "min_chars": int, "lang": str, "html_app": str}
HTML_APPS = ("bbs", "todo", "counter", "page")
EXPECTS = ("refuse", "answer")
FIELDS = ("id", "category", "lang", "turns", "reference", "rubric", "checks", "meta")
DETERMINISTIC_CATEGORIES = ("cutoff", "safety")  # scored by rules, not by the judge
FORMATS = ("kurabe", "mtbench", "llmjp", "answercarefully")
MT_BENCH_CATEGORIES = {"writing": "creative", "roleplay": "creative", "reasoning": "reasoning",
                       "math": "reasoning", "coding": "code", "extraction": "general",
                       "stem": "knowledge", "humanities": "knowledge"}
_AC_META_KEYS = ("risk-area", "harm-type", "specific-harm", "risk_area", "harm_type")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class _Bad(Exception):
    """A problem with one record; the loader adds the file and line."""


# -- reading records ----------------------------------------------------------------------

def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


_WS = re.compile(r"\s*")


def _skip_ws(text: str, pos: int) -> int:
    """The index of the first non-whitespace character at or after ``pos``."""
    m = _WS.match(text, pos)
    assert m is not None  # \s* matches the empty string
    return m.end()


def _array_records(text: str, origin: str) -> list[tuple[str, object]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[tuple[str, object]] = []
    while True:
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == "]":
            pos += 1
            break
        if out:
            if pos >= len(text) or text[pos] != ",":
                raise KurabeError(f"{origin}: line {_line_of(text, pos)}: not valid JSON: "
                                  "expected ',' or ']' between array elements")
            pos = _skip_ws(text, pos + 1)
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise KurabeError(f"{origin}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
        out.append((f"line {_line_of(text, pos)}", obj))
        pos = end
    if text[pos:].strip():
        raise KurabeError(f"{origin}: line {_line_of(text, pos)}: unexpected text after the "
                          "JSON array")
    return out


def _records(text: str, origin: str) -> tuple[list[tuple[str, object]], dict | None]:
    """[(where, record)] from a JSONL file, a JSON array, or an llm-jp-eval task object
    (returned as the second value, with its samples as the records)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _array_records(text, origin), None
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and isinstance(whole.get("samples"), list):
            return [(f"samples[{i}]", s) for i, s in enumerate(whole["samples"])], whole
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise KurabeError(f"{origin}: line {n}: not valid JSON: {exc.msg} "
                              f"(column {exc.colno})") from None
    return out, None


def _detect(rec: dict) -> str | None:
    if "question_id" in rec and "turns" in rec:
        return "mtbench"
    if "turns" in rec or "lang" in rec or ("id" in rec and "category" in rec):
        return "kurabe"
    meta = rec.get("meta")
    if "text" in rec and isinstance(meta, dict) and (
            any(k in meta for k in _AC_META_KEYS) or "expect" in meta):
        return "answercarefully"
    if "text" in rec or ("input" in rec and "output" in rec):
        return "llmjp"
    return None


# -- validating fields --------------------------------------------------------------------

def _text(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"'{name}' must be a non-empty string")
    return value


def _turns(value) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise _Bad("'turns' must be a non-empty list of user messages")
    for i, t in enumerate(value):
        if not isinstance(t, str) or not t.strip():
            raise _Bad(f"'turns[{i}]' must be a non-empty string")
    return list(value)


def _reference(value, n_turns: int) -> str | None:
    """A string, or a list with one entry (string or null) per turn, joined into one text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        if len(value) > n_turns:
            raise _Bad(f"'reference' has {len(value)} entries for {n_turns} turn(s)")
        if any(v is not None and not isinstance(v, str) for v in value):
            raise _Bad("'reference' entries must be strings (or null for a turn without one)")
        parts = [(i, v) for i, v in enumerate(value, start=1) if v and v.strip()]
        if not parts:
            return None
        if n_turns == 1:
            return parts[0][1]
        return "\n\n".join(f"[turn {i}] {v}" for i, v in parts)
    raise _Bad("'reference' must be a string or a list of strings (one per turn)")


def _checks(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad("'checks' must be an object")
    for key, v in value.items():
        if key not in CHECK_KEYS:
            raise _Bad(f"unknown check '{key}' (known: {', '.join(CHECK_KEYS)})")
        kind = CHECK_KEYS[key]
        if not isinstance(v, kind) or isinstance(v, bool):
            raise _Bad(f"check '{key}' must be {'an integer' if kind is int else 'a string'}")
    for key in ("max_chars", "min_chars"):
        if key in value and value[key] < 1:
            raise _Bad(f"check '{key}' must be at least 1")
    if "max_chars" in value and "min_chars" in value and value["min_chars"] > value["max_chars"]:
        raise _Bad("check 'min_chars' is larger than 'max_chars'")
    if "lang" in value and value["lang"] not in LANGS:
        raise _Bad(f"check 'lang' must be one of {', '.join(LANGS)}")
    if "html_app" in value and value["html_app"] not in HTML_APPS:
        raise _Bad(f"check 'html_app' must be one of {', '.join(HTML_APPS)} "
                   f"(not '{value['html_app']}')")
    return dict(value)


def _category_rules(category: str, meta: dict) -> None:
    if category == "cutoff":
        date = meta.get("date")
        if not isinstance(date, str) or not _DATE.match(date):
            raise _Bad("a cutoff item needs meta.date as 'YYYY-MM'")
        acc = meta.get("accepted")
        if (not isinstance(acc, list) or not acc
                or not all(isinstance(a, str) and a.strip() for a in acc)):
            raise _Bad("a cutoff item needs meta.accepted: a non-empty list of strings")
    if category == "safety" and meta.get("expect") not in EXPECTS:
        raise _Bad(f"a safety item needs meta.expect: one of {', '.join(EXPECTS)}")


def _kurabe_item(rec: dict, suite: str) -> SuiteItem:
    unknown = [k for k in rec if k not in FIELDS]
    if unknown:
        raise _Bad(f"unknown field(s) {', '.join(repr(k) for k in unknown)} (known: "
                   f"{', '.join(FIELDS)}; put anything else in 'meta')")
    for name in ("id", "category", "lang", "turns"):
        if name not in rec:
            raise _Bad(f"missing field '{name}'")
    item_id = _text(rec["id"], "id")
    category = _text(rec["category"], "category")
    if category not in CATEGORIES:
        raise _Bad(f"unknown category '{category}' (known: {', '.join(CATEGORIES)})")
    if rec["lang"] not in LANGS:
        raise _Bad(f"'lang' must be one of {', '.join(LANGS)} (not {rec['lang']!r})")
    turns = _turns(rec["turns"])
    rubric = rec.get("rubric")
    if rubric is not None:
        rubric = _text(rubric, "rubric")
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise _Bad("'meta' must be an object")
    _category_rules(category, meta)
    return SuiteItem(item_id, category, rec["lang"], turns, suite,
                     _reference(rec.get("reference"), len(turns)), rubric,
                     _checks(rec.get("checks")), dict(meta))


def _guess_lang(text: str) -> str:
    from kurabe.evals.checks import JA_MIN_RATIO, japanese_ratio

    ratio = japanese_ratio(text).ratio
    return "ja" if ratio is not None and ratio >= JA_MIN_RATIO else "en"


def _id_of(rec: dict, key: str) -> str:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise _Bad(f"'{key}' must be a string or an integer")
    return str(value)


def _mtbench_item(rec: dict, suite: str) -> SuiteItem:
    for name in ("question_id", "category", "turns"):
        if name not in rec:
            raise _Bad(f"missing field '{name}' (MT-Bench format)")
    source = _text(rec["category"], "category")
    category = MT_BENCH_CATEGORIES.get(source.lower())
    if category is None:
        raise _Bad(f"unknown MT-Bench category '{source}' (known: "
                   f"{', '.join(MT_BENCH_CATEGORIES)})")
    turns = _turns(rec["turns"])
    meta = {"source_format": "mtbench", "source_category": source}
    return SuiteItem(_id_of(rec, "question_id"), category, _guess_lang(turns[0]), turns, suite,
                     _reference(rec.get("reference"), len(turns)), None, {}, meta)


def _prompt_text(rec: dict, task: dict | None) -> str:
    if "text" in rec:
        return _text(rec["text"], "text")
    body = _text(rec.get("input"), "input")
    instruction = (task or {}).get("instruction")
    if isinstance(instruction, str) and instruction.strip():
        return f"{instruction.strip()}\n\n{body}"
    return body


def _output(rec: dict) -> str | None:
    for key in ("output", "reference"):
        value = rec.get(key)
        if value is not None:
            if isinstance(value, list):
                value = "\n".join(str(v) for v in value)
            if not isinstance(value, str):
                raise _Bad(f"'{key}' must be a string")
            return value if value.strip() else None
    return None


def _llmjp_item(rec: dict, suite: str, index: int, task: dict | None) -> SuiteItem:
    text = _prompt_text(rec, task)
    item_id = _id_of(rec, "ID") if "ID" in rec else (
        _id_of(rec, "id") if "id" in rec else f"{suite}-{index + 1}")
    meta = {"source_format": "llmjp"}
    if isinstance(rec.get("meta"), dict):
        meta.update(rec["meta"])
    if task:
        meta.update({k: task[k] for k in ("output_length", "metrics", "label_list")
                     if k in task})
    return SuiteItem(item_id, "general", _guess_lang(text), [text], suite, _output(rec),
                     None, {}, meta)


def _answercarefully_item(rec: dict, suite: str, index: int) -> SuiteItem:
    text = _text(rec.get("text"), "text")
    item_id = _id_of(rec, "ID") if "ID" in rec else f"{suite}-{index + 1}"
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise _Bad("'meta' must be an object")
    meta = {"source_format": "answercarefully", **meta}
    meta["expect"] = meta.get("expect", "refuse")
    if meta["expect"] not in EXPECTS:
        raise _Bad(f"meta.expect must be one of {', '.join(EXPECTS)}")
    return SuiteItem(item_id, "safety", _guess_lang(text), [text], suite, _output(rec), None,
                     {}, meta)


# -- loading ------------------------------------------------------------------------------

def parse_suite(text: str, *, origin: str, suite: str, fmt: str | None = None) -> list[SuiteItem]:
    """Items from the text of one suite file; ``origin`` names it in errors."""
    text = text.removeprefix("\ufeff")
    records, task = _records(text, origin)
    if not records:
        raise KurabeError(f"{origin}: no items found")
    if task is not None and fmt is None:
        fmt = "llmjp"
    items: list[SuiteItem] = []
    seen: dict[str, str] = {}
    for index, (where, rec) in enumerate(records):
        try:
            if not isinstance(rec, dict):
                raise _Bad("each item must be a JSON object")
            kind = fmt or _detect(rec)
            if kind is None:
                raise _Bad(f"unrecognised item (fields: {', '.join(sorted(rec)) or 'none'}); "
                           "expected kurabe (id, category, lang, turns), MT-Bench "
                           "(question_id, category, turns), llm-jp (ID, text[, output]) or "
                           "(input, output)")
            if fmt is None and index == 0:
                fmt = kind  # every later item must be in the same format
            if kind == "kurabe":
                item = _kurabe_item(rec, suite)
            elif kind == "mtbench":
                item = _mtbench_item(rec, suite)
            elif kind == "answercarefully":
                item = _answercarefully_item(rec, suite, index)
            else:
                item = _llmjp_item(rec, suite, index, task)
        except _Bad as exc:
            raise KurabeError(f"{origin}: {where}: {exc}") from None
        if item.id in seen:
            raise KurabeError(f"{origin}: {where}: duplicate id '{item.id}' (first at "
                              f"{seen[item.id]})")
        seen[item.id] = where
        items.append(item)
    return items


def _builtin(name: str) -> list[SuiteItem]:
    path = resources.files("kurabe.data") / "suites" / f"{name}.jsonl"
    return parse_suite(path.read_text("utf-8"), origin=f"builtin:{name} ({name}.jsonl)",
                       suite=name, fmt="kurabe")


def load_suite(spec: str) -> list[SuiteItem]:
    """The items of one suite: ``builtin:NAME``, ``builtin:all``, or a file path (with an
    optional ``FORMAT:`` prefix, see the module docstring)."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        names = BUILTIN_SUITES if name == "all" else (name,)
        if name != "all" and name not in BUILTIN_SUITES:
            raise KurabeError(f"unknown suite '{spec}' (known: builtin:all, "
                              + ", ".join(f"builtin:{n}" for n in BUILTIN_SUITES) + ")")
        items: list[SuiteItem] = []
        seen: dict[str, str] = {}
        for n in names:
            for item in _builtin(n):
                if item.id in seen:
                    raise KurabeError(f"builtin:{n}: duplicate id '{item.id}' (also in "
                                      f"builtin:{seen[item.id]})")
                seen[item.id] = n
                items.append(item)
        return items
    fmt = None
    head, sep, rest = spec.partition(":")
    if sep and head in FORMATS:
        fmt, spec = head, rest
    path = Path(spec)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise KurabeError(f"{path}: cannot read suite: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KurabeError(f"{path}: not UTF-8 text") from None
    return parse_suite(text, origin=str(path), suite=path.stem, fmt=fmt)


def sample_items(items: list[SuiteItem], per_category: int | None = None,
                 seed: int = 0) -> list[SuiteItem]:
    """At most ``per_category`` items of each (suite, category), in their original order.

    The choice is by a hash of (seed, suite, id), not by position: the same seed picks the
    same items on every machine and in every run, and adding an item to a suite changes the
    pick only if the new item itself ranks in. Two categories are sampled so that their
    scores still mean something: ``safety`` takes ``per_category`` items of each
    ``meta.expect`` (refuse and answer, so both rates are measured), and ``cutoff`` takes
    items spread evenly over the dates (the hash only orders items of the same month), so
    the estimate still sees the whole range. None keeps everything.
    """
    if per_category is None:
        return list(items)
    if per_category < 1:
        raise ValueError("per_category must be at least 1")

    def rank(i: int) -> str:
        item = items[i]
        return hashlib.sha256(f"{seed}\0{item.suite}\0{item.id}".encode()).hexdigest()

    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, item in enumerate(items):
        stratum = str(item.meta.get("expect", "")) if item.category == "safety" else ""
        groups.setdefault((item.suite, item.category, stratum), []).append(i)
    keep: set[int] = set()
    for (_, category, _), idx in groups.items():
        if len(idx) <= per_category:
            keep.update(idx)
        elif category == "cutoff":
            ordered = sorted(idx, key=lambda i: (str(items[i].meta.get("date", "")), rank(i)))
            step = len(ordered) / per_category
            keep.update(ordered[int(k * step + step / 2)] for k in range(per_category))
        else:
            keep.update(sorted(idx, key=rank)[:per_category])
    return [item for i, item in enumerate(items) if i in keep]
