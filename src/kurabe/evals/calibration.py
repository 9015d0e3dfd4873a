"""The judge's calibration set: questions with a known-good and a known-bad answer.

A set is ``builtin:calibration`` (``kurabe/data/calibration/*.jsonl``, Japanese first) or a
path to a JSONL file in the same format (docs/judge.md, "Format of a calibration set"). Bad
input raises ``KurabeError`` naming the file and the line at fault.

The judge grades each item four times, with the round's own prompt builder and parsers
(``kurabe.evals.judge``): a single grade of the good answer and of the bad one, and the pair
in both orders. ``kurabe.analysis.calibration`` turns the verdicts into accuracies.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from kurabe import KurabeError
from kurabe.evals import judge as J
from kurabe.records import CalibrationItem

BUILTIN_SET = "builtin:calibration"
_BUILTIN_FILES = ("ja.jsonl", "en.jsonl")  # Japanese first

FLAWS: dict[str, str] = {
    "wrong_fact": "states a wrong fact",
    "wrong_language": "is in another language than the question asks for",
    "benign_refusal": "refuses a harmless request",
    "broken_code": "code that cannot work",
    "truncated": "stops mid-sentence",
    "wrong_reasoning": "reasons to a wrong result",
}
LANGS = ("ja", "en")
CATEGORIES = ("knowledge", "creative", "reasoning", "language", "code", "general")
REQUIRED = ("id", "lang", "category", "flaw", "question", "good", "bad")
OPTIONAL = ("rubric", "reference", "note")

# (kind, item, position): single good|bad, pairwise good_first|bad_first
CalibrationTask = tuple[str, CalibrationItem, str]
POSITIONS = (("single", "good"), ("single", "bad"), ("pairwise", "good_first"),
             ("pairwise", "bad_first"))


class _Bad(Exception):
    """A problem with one record; the loader adds the file and line."""


def _item(rec: Any, source: str) -> CalibrationItem:
    if not isinstance(rec, dict):
        raise _Bad(f"expected a JSON object, got {type(rec).__name__}")
    known = (*REQUIRED, *OPTIONAL)
    for key in rec:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            raise _Bad(f"unknown field '{key}'"
                       + (f"; did you mean '{close[0]}'?" if close
                          else f" (known: {', '.join(known)})"))
    for key in REQUIRED:
        if key not in rec:
            raise _Bad(f"missing field '{key}'")
    for key in known:
        value = rec.get(key)
        if key in rec and not (isinstance(value, str) or (value is None and key in OPTIONAL)):
            raise _Bad(f"field '{key}' must be a string")
        if key in REQUIRED and not str(value).strip():
            raise _Bad(f"field '{key}' is empty")
    if rec["lang"] not in LANGS:
        raise _Bad(f"lang '{rec['lang']}': use one of {', '.join(LANGS)}")
    if rec["flaw"] not in FLAWS:
        raise _Bad(f"flaw '{rec['flaw']}': use one of {', '.join(FLAWS)}")
    if rec["category"] not in CATEGORIES:
        raise _Bad(f"category '{rec['category']}': use one of {', '.join(CATEGORIES)}")
    if rec["good"].strip() == rec["bad"].strip():
        raise _Bad("the good and the bad answer are the same text")
    return CalibrationItem(**{k: rec[k] for k in known if k in rec}, source=source)


def parse_calibration_set(text: str, origin: str, source: str | None = None
                          ) -> list[CalibrationItem]:
    """The items of one JSONL text; errors name ``origin`` and the line."""
    items: list[CalibrationItem] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KurabeError(f"{origin}: line {n}: not valid JSON: {exc.msg} "
                              f"(column {exc.colno})") from None
        try:
            item = _item(rec, source or origin)
        except _Bad as exc:
            raise KurabeError(f"{origin}: line {n}: {exc}") from None
        if item.id in first_line:
            raise KurabeError(f"{origin}: line {n}: id '{item.id}' is used twice (first on "
                              f"line {first_line[item.id]})")
        first_line[item.id] = n
        items.append(item)
    return items


def load_calibration_set(spec: str) -> list[CalibrationItem]:
    """``builtin:calibration`` or a path to a JSONL calibration set."""
    if spec.startswith("builtin:"):
        if spec != BUILTIN_SET:
            raise KurabeError(f"unknown calibration set '{spec}' (built in: {BUILTIN_SET})")
        folder = resources.files("kurabe.data").joinpath("calibration")
        items: list[CalibrationItem] = []
        for name in _BUILTIN_FILES:
            text = folder.joinpath(name).read_text("utf-8")
            items += parse_calibration_set(text, f"{spec} ({name})", source=spec)
        seen: set[str] = set()
        for item in items:
            if item.id in seen:  # a bug in kurabe's own data, named as such
                raise KurabeError(f"{spec}: id '{item.id}' is used twice")
            seen.add(item.id)
        return items
    path = Path(spec).expanduser()
    if path.is_dir():
        raise KurabeError(f"{path}: a folder, not a calibration set (a JSONL file)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KurabeError(f"{path}: cannot read calibration set: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KurabeError(f"{path}: not a calibration set: not UTF-8 text (byte "
                          f"{exc.start})") from None
    items = parse_calibration_set(text, str(path))
    if not items:
        raise KurabeError(f"{path}: no calibration items (one JSON object per line)")
    return items


def sample_per_flaw(items: list[CalibrationItem], per_flaw: int | None, seed: int = 0
                    ) -> list[CalibrationItem]:
    """``per_flaw`` items of each kind of flaw, Japanese ones first, then in an order fixed
    by ``seed``; the chosen items keep their order in the set. None: every item."""
    if per_flaw is None:
        return list(items)

    def rank(item: CalibrationItem) -> tuple[bool, str]:
        digest = hashlib.sha256(f"{seed}:{item.id}".encode()).hexdigest()
        return (item.lang != "ja", digest)

    chosen: set[str] = set()
    for flaw in dict.fromkeys(i.flaw for i in items):
        mine = sorted((i for i in items if i.flaw == flaw), key=rank)
        chosen.update(i.id for i in mine[:per_flaw])
    return [i for i in items if i.id in chosen]


def resolve_calibration_items(spec: str, per_flaw: int | None = None, seed: int = 0
                              ) -> list[CalibrationItem]:
    return sample_per_flaw(load_calibration_set(spec), per_flaw, seed)


def calibration_tasks(items: list[CalibrationItem]) -> list[CalibrationTask]:
    """Every request of a calibration, in a fixed order (a resume sends what is missing)."""
    return [(kind, item, position) for item in items for kind, position in POSITIONS]


def task_messages(kind: str, item: CalibrationItem, position: str,
                  prompts: dict[str, Any] | None = None
                  ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The judge's messages and the schema of its verdict, built by the round's own prompt
    builder (``kurabe.evals.judge``)."""
    prompts = prompts or J.judge_prompts()
    common: dict[str, Any] = {"turns": [item.question], "lang": item.lang,
                              "category": item.category, "rubric": item.rubric,
                              "reference": item.reference, "prompts": prompts}
    if kind == "single":
        answer = item.good if position == "good" else item.bad
        return J.single_prompt(answers=[answer], **common), prompts["single_schema"]
    first, second = (item.good, item.bad) if position == "good_first" else (item.bad, item.good)
    return (J.pair_prompt(answers_a=[first], answers_b=[second], **common),
            prompts["pair_schema"])


def parse_verdict(kind: str, text: str) -> J.Verdict:
    return J.parse_single(text) if kind == "single" else J.parse_pair(text)
