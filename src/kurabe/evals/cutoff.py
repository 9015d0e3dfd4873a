"""Knowledge cutoff: dated facts, each answer classified, and the last month a model knows.

``classify_fact_answer`` sorts one short answer into ``correct`` (an accepted answer is in
it), ``dont_know`` (it says it does not know, or that the event is past its knowledge),
``refused`` (it declines), or ``wrong`` (a confident answer without any accepted answer: a
hallucination, counted apart from not knowing). A response with no answer to read
(``checks.NOT_ANSWERED``: ``thinking_exhausted``, ``stopped_in_thinking``, ``empty``,
``error``; or blank text) is ``ungraded``: never a refusal, never a wrong answer, and left
out of every count that decides a month.

``estimate_cutoff`` takes ``(month, classification)`` pairs and returns the last month in
which most graded answers were correct, with the per-month table behind it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

import regex

from kurabe.evals.checks import NOT_ANSWERED, detect_refusal, is_empty

CORRECT, WRONG, DONT_KNOW, REFUSED = "correct", "wrong", "dont_know", "refused"
UNGRADED = "ungraded"
CLASSIFICATIONS = (CORRECT, WRONG, DONT_KNOW, REFUSED, UNGRADED)

# Separators ignored inside a match: "Nathan Chen" = "ネイサン・チェン"-style spellings,
# "GPT-4o" = "GPT4o", "Lee Jae-myung" = "Lee Jae Myung".
_SEP_CHARS = "\\s・\\-‐‑‒–—―_.,=·'’"
_SEP = f"[{_SEP_CHARS}]*"
_SEP_ONE = re.compile(f"[{_SEP_CHARS}]")
_ASCII_ALNUM = re.compile(r"[a-z0-9]")

_DONT_KNOW_EN = [
    r"\bi (?:really |honestly )?(?:don't|do not) know\b",
    r"\bi(?:'m| am) (?:not|un)(?: entirely| completely| 100%)? ?(?:sure|certain|aware)\b",
    r"\bi (?:don't|do not) have (?:any |enough |reliable |specific |up-to-date )?"
    r"(?:information|data|access|details|knowledge|records?)\b",
    r"\bi have no (?:information|data|knowledge|record)\b",
    r"\bno (?:information|data) (?:about|on)\b",
    r"\b(?:knowledge|training)(?: data)? ?(?:cutoff|cut-off|cut off)\b",
    r"\bas of my (?:last |latest )?(?:knowledge|training|update)\b",
    r"\b(?:after|beyond|past) my (?:knowledge|training)\b",
    r"\bi (?:can't|cannot|can not|am unable to|'m unable to) (?:confirm|verify|know|predict|"
    r"say for (?:sure|certain)|access (?:current|real-time|up-to-date))\b",
    r"\breal-?time (?:information|data|access)\b",
    r"\b(?:has|have|had)(?: not|n't) (?:yet )?(?:happened|taken place|occurred|been "
    r"(?:announced|released|decided|held|revealed))\b",
    r"\bunknown to me\b",
]
_DONT_KNOW_JA = [
    r"知りません", r"存じ(?:ません|あげません)", r"(?:わか|分か|判)りません", r"(?:わか|分か)りかねます",
    r"把握して(?:い|お)(?:ません|りません)",
    r"(?:情報|データ|知識)(?:を|は)?(?:持って|もって)(?:い|お)(?:ない|ません|りません)",
    r"(?:情報|データ)(?:が|は)(?:ない|ありません|ございません|含まれて(?:い|お)(?:ない|ません|りません))",
    r"知識の(?:カットオフ|期限|範囲|時点)", r"(?:学習|訓練)(?:データ)?の(?:時点|範囲|期限|カットオフ)",
    r"カットオフ", r"確認(?:でき|いたしかね|致しかね)(?:ません|ます)", r"不明です",
    r"定かでは(?:ありません|ない)", r"確かでは(?:ありません|ない)", r"断言でき(?:ません|かねます)",
    r"まだ(?:行われて|発表されて|開催されて|起きて|起こって|決まって|実施されて)(?:い|お)(?:ません|りません)",
    r"リアルタイムの情報", r"最新の情報(?:を|は|が)(?:持って|取得|確認|ありません)",
]
_DK = [regex.compile(p) for p in _DONT_KNOW_EN + _DONT_KNOW_JA]


def fold(text: str) -> str:
    """NFKC (which folds full-width and half-width forms), then case-folded, curly
    apostrophes made straight."""
    return unicodedata.normalize("NFKC", text or "").replace("’", "'").casefold()


def accepted_pattern(accepted: str) -> regex.Pattern | None:
    """A pattern for one accepted answer on folded text: separators (spaces, ・, hyphens,
    dots) are optional between its characters, and an accepted answer that starts or ends
    with a Latin letter or digit must not run on into another one ("20" is not in "2024",
    "Titan" is not in "Titanic"; a plural s is allowed: "tariff" matches "tariffs")."""
    chars = [c for c in fold(accepted) if not _SEP_ONE.match(c)]
    if not chars:
        return None
    body = _SEP.join(regex.escape(c) for c in chars)
    if _ASCII_ALNUM.match(chars[0]):
        body = r"(?<![a-z0-9])" + body
    if _ASCII_ALNUM.match(chars[-1]):
        body += (r"s?" if chars[-1].isalpha() else "") + r"(?![a-z0-9])"
    return regex.compile(body)


def says_dont_know(answer: str) -> list[str]:
    """The don't-know phrases in the answer (patterns, as written above)."""
    text = fold(answer)
    return [p.pattern for p in _DK if p.search(text)]


def classify_fact_answer(answer: str, accepted: list[str], lang: str | None = None, *,
                         outcome: str | None = None) -> str:
    """``correct`` | ``wrong`` | ``dont_know`` | ``refused`` (or ``ungraded``, see above).

    In this order: an accepted answer anywhere in the folded answer is correct (a hedged
    "I'm not sure, but it was Argentina" names it, so it counts); then a don't-know phrase
    (知りません, わかりません, "I don't know", "as of my knowledge cutoff", "has not happened
    yet") is dont_know, even beside a stale guess; then a refusal (checks.detect_refusal) is
    refused; anything else is a confident answer without the fact: wrong.
    """
    if outcome in NOT_ANSWERED or is_empty(answer).empty:
        return UNGRADED
    text = fold(answer)
    for acc in accepted:
        pat = accepted_pattern(acc)
        if pat is not None and pat.search(text):
            return CORRECT
    if says_dont_know(answer):
        return DONT_KNOW
    if detect_refusal(answer, lang, outcome).refused:
        return REFUSED
    return WRONG


# -- the estimate -------------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass
class MonthRow:
    month: str                  # YYYY-MM
    n: int                      # graded answers: correct + wrong + dont_know + refused
    correct: int = 0
    wrong: int = 0
    dont_know: int = 0
    refused: int = 0
    ungraded: int = 0           # no answer (checks.NOT_ANSWERED): not in n
    majority: bool | None = None  # correct > n / 2; None when n < min_items (undecided)

    @property
    def share_correct(self) -> float | None:
        return self.correct / self.n if self.n else None


@dataclass
class CutoffEstimate:
    cutoff: str | None          # last month with a majority of correct answers; None if none
    next_probed: str | None     # the next decided month after it: knowledge ends before this
    first_probed: str | None
    last_probed: str | None
    min_items: int
    months: list[MonthRow] = field(default_factory=list)
    rule: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, obj in zip(data["months"], self.months, strict=True):
            row["share_correct"] = obj.share_correct
        return data


def estimate_cutoff(results: list[tuple[str, str]], *, min_items: int = 1) -> CutoffEstimate:
    """The last month whose graded answers are mostly correct (strictly more than half).

    Months come from the items' ``meta.date`` (YYYY-MM). A month with fewer than
    ``min_items`` graded answers is undecided (``majority`` None) and cannot be the cutoff;
    with the default 1, a month probed by a single item is decided by that item alone (its
    ``n`` in the table shows how thin that is; pass ``min_items=2`` to require two). Months
    with no items at all (gaps) are not in the table and cannot be the cutoff: the
    knowledge ends somewhere from the cutoff month up to, not including, ``next_probed``.
    Ungraded answers are counted in their own column and decide nothing.
    """
    if min_items < 1:
        raise ValueError("min_items must be at least 1")
    rows: dict[str, MonthRow] = {}
    for month, cls in results:
        if not isinstance(month, str) or not _MONTH.match(month):
            raise ValueError(f"month must be 'YYYY-MM', not {month!r}")
        if cls not in CLASSIFICATIONS:
            raise ValueError(f"unknown classification {cls!r} "
                             f"(known: {', '.join(CLASSIFICATIONS)})")
        row = rows.setdefault(month, MonthRow(month, 0))
        setattr(row, cls, getattr(row, cls) + 1)
        if cls != UNGRADED:
            row.n += 1
    table = [rows[m] for m in sorted(rows)]
    for row in table:
        row.majority = None if row.n < min_items else row.correct * 2 > row.n
    passing = [i for i, row in enumerate(table) if row.majority]
    cutoff = next_probed = None
    if passing:
        last = passing[-1]
        cutoff = table[last].month
        next_probed = next((r.month for r in table[last + 1:] if r.majority is not None), None)
    rule = (f"last month where correct > half of graded answers (graded: correct, wrong, "
            f"dont_know, refused; a month needs {min_items} graded answer"
            f"{'s' if min_items > 1 else ''} to decide)")
    return CutoffEstimate(cutoff, next_probed, table[0].month if table else None,
                          table[-1].month if table else None, min_items, table, rule)
