"""How far a judge's grades can be trusted, from its stored probes and grades.

* forced against free: the sample graded again without the grammar; exact agreement with
  the forced grade, mean absolute difference, and the share of free answers unscored;
* degenerate explanations of the main single grades: empty, the same text given for
  different answers, or not about the answer (no shared words, or for Japanese no shared
  kanji/katakana bigrams, with the question, answer and reference);
* consistency: the spread of each sampled answer's grades (its main grade and its
  re-grades at a higher temperature);
* refusals: the judge's yes/no against the refusal patterns, per model (agreement, Cohen's
  kappa);
* the context check: prompts not sent because they did not fit the judge's context.

Every share comes with its 95% Wilson interval (``kurabe.analysis.stats.proportion_ci``).
Definitions: docs/metrics.md ("The judge's diagnostics").
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kurabe.analysis.stats import MeanEstimate, mean_ci, proportion_ci
from kurabe.config import ShootoutConfig
from kurabe.records import GradeRow, ProbeRow, Snapshot, SuiteItem
from kurabe.store import Store

if TYPE_CHECKING:
    from kurabe.analysis.quality import QualityAnalysis
    from kurabe.analysis.speed import FairnessWarning

# An explanation is "repeated" when its normalised text is given for at least this many
# different answers, or for at least this share of them (and two or more).
REPEATED_MIN_ANSWERS = 3
REPEATED_MIN_SHARE = 0.30
# Below this many content words in the question, answer and reference together, an English
# explanation is not checked for being about them (a Japanese answer has few English words).
OFF_TOPIC_MIN_SOURCE_WORDS = 5
# Grades of one answer that differ by this much or more count as inconsistent.
INCONSISTENT_SPREAD = 2.0

_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from into as is are was were be been being
it its it's this that these those there their they them he she his her we you your our i
not no yes do does did has have had can could would should will may might must shall than
then so such very also only just more most less much many some any all each both either
answer answers response responses question questions assistant user score scores grade
graded rating rated good well bad poor correct correctly incorrect wrong fine ok okay
""".split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")
# Kanji and katakana (with the long-vowel mark): content characters; hiragana-only bigrams
# are mostly particles and endings (です, ます, ので) shared by any two Japanese texts.
_JA_CONTENT_RUN = re.compile(r"[\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}")


@dataclass(frozen=True)
class Share:
    """k of n, with the 95% Wilson interval; ``rate`` None when n is 0."""

    k: int
    n: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """"75% (41–93%), 6/8"; "–" when n is 0."""
        if self.rate is None or self.ci_low is None or self.ci_high is None:
            return "–"
        return (f"{100 * self.rate:.0f}% ({100 * self.ci_low:.0f}–{100 * self.ci_high:.0f}%), "
                f"{self.k}/{self.n}")


def share(k: int, n: int) -> Share:
    if n <= 0:
        return Share(k, n, None, None, None)
    low, high = proportion_ci(k, n)
    return Share(k, n, k / n, low, high)


def latest(rows: list[ProbeRow]) -> dict[tuple[str, str, int, str, str, int], ProbeRow]:
    """The latest stored row of each probe key (a retried probe: its last try)."""
    return {r.key: r for r in rows}


# -- forced against free ---------------------------------------------------------------------


@dataclass
class ForcedVsFree:
    asked: int  # sampled answers graded free (not skipped, no error)
    free_scored: int
    agreement: Share  # free grade == forced grade, of the free grades that were scored
    mean_abs_diff: MeanEstimate  # |free − forced|, of the same
    free_unscored: Share  # of the free answers
    skipped: str | None = None  # why no free grade was asked (an engine without a grammar)

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "free_scored": self.free_scored,
                "agreement": self.agreement.to_dict(),
                "mean_abs_diff": self.mean_abs_diff.to_dict(),
                "free_unscored": self.free_unscored.to_dict(), "skipped": self.skipped}


def forced_vs_free(free: list[ProbeRow], main: dict[tuple[str, str, int], GradeRow]
                   ) -> ForcedVsFree | None:
    if not free:
        return None
    answered = [p for p in free if p.status in ("scored", "unscored")]
    skipped = next((p.detail for p in free if p.status == "skipped"), None)
    pairs = []
    for p in answered:
        forced = main.get((p.model, p.item_id, p.repeat))
        if p.status == "scored" and forced is not None and forced.score is not None:
            assert p.score is not None  # scored: has a score
            pairs.append((p.score, forced.score))
    unscored = sum(p.status == "unscored" for p in answered)
    return ForcedVsFree(
        asked=len(answered), free_scored=len(pairs),
        agreement=share(sum(a == b for a, b in pairs), len(pairs)),
        mean_abs_diff=mean_ci([abs(a - b) for a, b in pairs]),
        free_unscored=share(unscored, len(answered)),
        skipped=skipped if not answered else None)


# -- degenerate explanations -----------------------------------------------------------------


_GRADE_MARK = re.compile(r"\[\[[^\]]{0,8}\]\]")


def normalise_explanation(text: str | None) -> str:
    """NFKC, lower case, without a written grade (``[[7]]``), whitespace, punctuation or
    symbols: two explanations that differ only in their grade or their commas are the same
    text."""
    text = _GRADE_MARK.sub("", unicodedata.normalize("NFKC", text or "")).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZC")


def _content_words(text: str) -> set[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return {w for w in _WORD.findall(text) if w not in _STOPWORDS and (len(w) > 2
                                                                       or w.isdigit())}


def _ja_bigrams(text: str) -> set[str]:
    text = unicodedata.normalize("NFKC", text)
    return {run[i:i + 2] for run in _JA_CONTENT_RUN.findall(text) for i in range(len(run) - 1)}


def about_the_answer(explanation: str, source: str) -> bool | None:
    """Whether the explanation shares a content word or (Japanese) a kanji/katakana bigram
    with ``source`` (question, answer and reference); None where it cannot be checked: the
    explanation has no content words or bigrams, or is in a script the source barely uses
    (an English explanation of a Japanese answer)."""
    verdicts = []
    bigrams = _ja_bigrams(explanation)
    if bigrams:
        source_bigrams = _ja_bigrams(source)
        if source_bigrams:
            verdicts.append(bool(bigrams & source_bigrams))
    words = _content_words(explanation)
    if words:
        source_words = _content_words(source)
        if len(source_words) >= OFF_TOPIC_MIN_SOURCE_WORDS:
            verdicts.append(bool(words & source_words))
    if not verdicts:
        return None
    return any(verdicts)


@dataclass
class Degenerate:
    graded: int  # scored single grades looked at
    empty: Share
    repeated: Share
    off_topic: Share  # of the explanations that could be checked
    repeated_texts: list[dict[str, Any]] = field(default_factory=list)  # {text, answers}
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"graded": self.graded, "empty": self.empty.to_dict(),
                "repeated": self.repeated.to_dict(), "off_topic": self.off_topic.to_dict(),
                "repeated_texts": self.repeated_texts, "examples": self.examples}


def degenerate_explanations(grades: list[GradeRow], sources: dict[tuple[str, str, int], str],
                            answers: dict[tuple[str, str, int], str]) -> Degenerate | None:
    """``grades``: the judge's scored single grades; ``sources``: (model, item, repeat) ->
    question + answer + reference; ``answers``: the same key -> the answer's text (two
    answers that are the same text may get the same explanation)."""
    if not grades:
        return None
    normal = {(g.model, g.item_id, g.repeat): normalise_explanation(g.explanation)
              for g in grades}
    empty = [k for k, text in normal.items() if not text]
    texts: dict[str, set[str]] = defaultdict(set)
    for key, text in normal.items():
        if text:
            texts[text].add(answers.get(key, "\x00".join(map(str, key))))
    n = len(grades)
    repeated_texts = {t for t, seen in texts.items()
                      if len(seen) >= REPEATED_MIN_ANSWERS
                      or (len(seen) >= 2 and len(seen) / n >= REPEATED_MIN_SHARE)}
    repeated = [k for k, text in normal.items() if text in repeated_texts]
    checked = off = 0
    examples: dict[str, list[dict[str, str]]] = {"empty": [], "off_topic": []}
    for g in grades:
        key = (g.model, g.item_id, g.repeat)
        if not normal[key]:
            if len(examples["empty"]) < 3:
                examples["empty"].append({"model": g.model, "item_id": g.item_id})
            continue
        verdict = about_the_answer(g.explanation or "", sources.get(key, ""))
        if verdict is None:
            continue
        checked += 1
        if not verdict:
            off += 1
            if len(examples["off_topic"]) < 3:
                examples["off_topic"].append({"model": g.model, "item_id": g.item_id,
                                              "explanation": (g.explanation or "")[:200]})
    shown: list[dict[str, Any]] = []
    for g in grades:
        text = normal[(g.model, g.item_id, g.repeat)]
        if text in repeated_texts and all(s["normalised"] != text for s in shown):
            shown.append({"normalised": text, "text": (g.explanation or "")[:200],
                          "answers": sum(1 for t in normal.values() if t == text)})
    return Degenerate(graded=n, empty=share(len(empty), n), repeated=share(len(repeated), n),
                      off_topic=share(off, checked),
                      repeated_texts=[{"text": s["text"], "answers": s["answers"]}
                                      for s in shown[:5]], examples=examples)


# -- consistency -----------------------------------------------------------------------------


@dataclass
class Consistency:
    items: int  # sampled answers with at least two scored grades
    grades_per_item: float | None  # mean scored grades per such answer
    temperature: float
    repeats: int
    mean_sd: MeanEstimate  # per-answer standard deviation of its grades
    mean_range: MeanEstimate  # per-answer max − min
    inconsistent: Share  # answers whose grades differ by INCONSISTENT_SPREAD or more

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "grades_per_item": self.grades_per_item,
                "temperature": self.temperature, "repeats": self.repeats,
                "mean_sd": self.mean_sd.to_dict(), "mean_range": self.mean_range.to_dict(),
                "inconsistent": self.inconsistent.to_dict()}


def consistency(regrades: list[ProbeRow], main: dict[tuple[str, str, int], GradeRow], *,
                temperature: float, repeats: int) -> Consistency | None:
    if not regrades:
        return None
    scores: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for p in regrades:
        key = (p.model, p.item_id, p.repeat)
        if p.status == "scored" and p.score is not None:
            scores[key].append(p.score)
    for key in list(scores):
        forced = main.get(key)
        if forced is not None and forced.status == "scored" and forced.score is not None:
            scores[key].append(forced.score)
    spreads = [s for s in scores.values() if len(s) >= 2]
    sds = [statistics.stdev(s) for s in spreads]
    ranges = [max(s) - min(s) for s in spreads]
    return Consistency(
        items=len(spreads),
        grades_per_item=(sum(map(len, spreads)) / len(spreads)) if spreads else None,
        temperature=temperature, repeats=repeats, mean_sd=mean_ci(sds),
        mean_range=mean_ci(ranges),
        inconsistent=share(sum(r >= INCONSISTENT_SPREAD for r in ranges), len(ranges)))


# -- refusal confirmation --------------------------------------------------------------------


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two yes/no raters: (observed − chance agreement) / (1 − chance);
    None when chance agreement is 1 (both raters gave one and the same answer throughout)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    yes_a = sum(a for a, _ in pairs) / n
    yes_b = sum(b for _, b in pairs) / n
    chance = yes_a * yes_b + (1 - yes_a) * (1 - yes_b)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)


@dataclass
class RefusalAgreement:
    n: int  # answers with both a pattern verdict and a judge verdict
    judge_refused: Share  # the judge-confirmed refusal rate
    pattern_refused: int
    agreement: Share
    kappa: float | None
    unscored: int  # judge answers with no yes/no in them

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "judge_refused": self.judge_refused.to_dict(),
                "pattern_refused": self.pattern_refused, "agreement": self.agreement.to_dict(),
                "kappa": self.kappa, "unscored": self.unscored}


def refusal_agreement(pairs: list[tuple[bool, bool]], unscored: int = 0) -> RefusalAgreement:
    """``pairs``: (pattern says refused, judge says refused) per answer."""
    n = len(pairs)
    return RefusalAgreement(
        n=n, judge_refused=share(sum(j for _, j in pairs), n),
        pattern_refused=sum(p for p, _ in pairs),
        agreement=share(sum(p == j for p, j in pairs), n), kappa=cohen_kappa(pairs),
        unscored=unscored)


# -- all of it -------------------------------------------------------------------------------


@dataclass
class JudgeProbesAnalysis:
    judge: str
    sample: int  # answers sampled for the forced/free and consistency probes
    forced: ForcedVsFree | None
    degenerate: Degenerate | None
    consistency: Consistency | None
    refusals: dict[str, RefusalAgreement]  # per model
    not_sent: dict[str, int]  # probe -> prompts that did not fit the judge's context
    errors: int  # probes whose latest try failed

    @property
    def empty(self) -> bool:
        return (self.forced is None and self.degenerate is None and self.consistency is None
                and not self.refusals)

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "sample": self.sample,
                "forced_vs_free": self.forced.to_dict() if self.forced else None,
                "degenerate_explanations": (self.degenerate.to_dict()
                                            if self.degenerate else None),
                "consistency": self.consistency.to_dict() if self.consistency else None,
                "refusals": {m: r.to_dict() for m, r in self.refusals.items()},
                "not_sent": self.not_sent, "errors": self.errors}


def _source(item: SuiteItem, turns: list[dict[str, Any]]) -> str:
    parts = [t.get("question", "") + "\n" + t.get("answer", "") for t in turns]
    return "\n".join([*parts, item.reference or ""])


def analyse_judge_probes(store: Store, judge: str, items: dict[str, SuiteItem], *,
                         temperature: float, repeats: int, models: list[str]
                         ) -> JudgeProbesAnalysis | None:
    """The judge's diagnostics for this round's items (None: no grades and no probes)."""
    grades = [g for g in store.grades(judge) if g.item_id in items]
    main = {(g.model, g.item_id, g.repeat): g for g in grades if g.kind == "single"}
    probes = [p for p in latest(store.probes(judge)).values()
              if p.probe != "sweep" and p.item_id in items]
    if not main and not probes:
        return None
    answers = {a.key: a for a in store.answers() if a.item_id in items}
    scored = [g for g in main.values() if g.status == "scored"]
    sources = {k: _source(items[k[1]], a.turns) for k, a in answers.items()}
    by_probe: dict[str, list[ProbeRow]] = defaultdict(list)
    for p in probes:
        by_probe[p.probe].append(p)
    sampled = {(p.model, p.item_id, p.repeat) for p in probes
               if p.probe in ("free", "consistency")}
    refusals: dict[str, RefusalAgreement] = {}
    if by_probe["refusal"]:
        pattern = {(c.model, c.item_id, c.repeat): bool(c.passed) for c in store.checks()
                   if c.name == "refusal" and c.passed is not None}
        pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        unscored: Counter[str] = Counter()
        for p in by_probe["refusal"]:
            key = (p.model, p.item_id, p.repeat)
            if p.status == "scored" and key in pattern and p.verdict in ("refused",
                                                                          "not_refused"):
                pairs[p.model].append((pattern[key], p.verdict == "refused"))
            elif p.status == "unscored":
                unscored[p.model] += 1
        refusals = {m: refusal_agreement(pairs[m], unscored[m]) for m in models
                    if pairs[m] or unscored[m]}
    not_sent = Counter(p.probe for p in probes if p.error_kind == "context_exceeded")
    return JudgeProbesAnalysis(
        judge=judge, sample=len(sampled),
        forced=forced_vs_free(by_probe["free"], main),
        degenerate=degenerate_explanations(
            scored, sources, {k: a.answer for k, a in answers.items()}),
        consistency=consistency(by_probe["consistency"], main, temperature=temperature,
                                repeats=repeats),
        refusals=refusals, not_sent=dict(not_sent),
        errors=sum(p.status == "error" and p.error_kind != "context_exceeded"
                   for p in probes))


# -- the context check -----------------------------------------------------------------------


def judge_context(store: Store, judge: str) -> dict[str, Any] | None:
    """The latest check of the judge's prompts against its context (a ``judge_context``
    event), and the prompts that were not sent because they did not fit: ``{judge, ctx,
    reserve, counted_by, kinds, message, not_sent: {grading kind or probe: n}}``; None when
    the judge was never checked and nothing was held back."""
    check: dict[str, Any] | None = None
    for e in store.events():
        if e.kind != "judge_context":
            continue
        try:
            data = json.loads(e.detail)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("judge") == judge:
            check = data
    not_sent: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    latest_grades = {g.key: g for g in store.grades(judge)}
    for g in latest_grades.values():
        asked[g.kind] += g.status != "skipped"
        if g.error_kind == "context_exceeded":
            not_sent[g.kind] += 1
    for p in latest(store.probes(judge)).values():
        asked[p.probe] += p.status != "skipped"
        if p.error_kind == "context_exceeded":
            not_sent[p.probe] += 1
    if check is None and not not_sent:
        return None
    out = dict(check or {"judge": judge, "ctx": None, "message": None})
    out["not_sent"] = dict(not_sent)
    out["asked"] = {k: asked[k] for k in not_sent}
    return out


def sweep_scores(store: Store, judge: str | None) -> dict[tuple[str, str, int, str], float] | None:
    """The sweep judge's scored grades of the sweep answers, by (model, prompt, repeat,
    setting); None when the sweep has no judge or none of its answers was judged."""
    if not judge:
        return None
    rows = [p for p in latest(store.probes(judge)).values() if p.probe == "sweep"]
    if not rows:
        return None
    return {(p.model, p.item_id, p.repeat, p.setting): p.score for p in rows
            if p.status == "scored" and p.score is not None}


def judge_diagnostics(store: Store, snapshot: Snapshot, cfg: ShootoutConfig,
                      quality: QualityAnalysis | None
                      ) -> tuple[JudgeProbesAnalysis | None, dict[str, dict[str, Any]]]:
    """The quality judge's diagnostics, and the context check of each judge (the quality
    judge's, the sweep judge's), by judge."""
    from kurabe.inputs import items_of

    judge = quality.judge if quality is not None and quality.judge else (
        cfg.quality.judge if cfg.quality else None)
    probes = None
    if judge and cfg.quality is not None:
        items = {i.id: i for i in items_of(snapshot)}
        models = cfg.quality.models or [m.name for m in cfg.models]
        probes = analyse_judge_probes(
            store, judge, items, temperature=cfg.quality.consistency_temperature,
            repeats=cfg.quality.consistency_repeats, models=models)
    contexts = {}
    for name in dict.fromkeys(j for j in (judge, cfg.sweep_judge) if j):
        found = judge_context(store, name)
        if found is not None:
            contexts[name] = found
    return probes, contexts


# Warnings (docs/metrics.md, Fairness warnings): shares above these, over at least
# WARN_MIN_N answers or pairs.
WARN_MIN_N = 4
FREE_UNSCORED_LIMIT = 0.5  # free answers with no grade: the grammar makes the grades
DEGENERATE_LIMIT = 0.5  # explanations empty, repeated or not about the answer
INCONSISTENT_LIMIT = 0.25  # sampled answers whose grades differ by 2 or more


def _pct(x: Share) -> str:
    assert x.rate is not None and x.ci_low is not None and x.ci_high is not None
    return f"{x.k} of {x.n} ({x.rate:.0%}, 95% interval {x.ci_low:.0%}–{x.ci_high:.0%})"


def judge_warnings(quality: QualityAnalysis | None, probes: JudgeProbesAnalysis | None,
                   contexts: dict[str, dict[str, Any]]) -> list[FairnessWarning]:
    from kurabe.analysis.quality import FLIP_RATE_LIMIT
    from kurabe.analysis.speed import FairnessWarning

    out = []
    if quality is not None and quality.judge and quality.position_biased:
        flips, n = quality.flips
        low, high = quality.flip_ci or (0.0, 1.0)
        out.append(FairnessWarning(
            "judge_position_bias",
            f"judge {quality.judge} flipped its pairwise verdict when the answers swapped "
            f"places on {flips} of {n} pairs ({flips / n:.0%}, 95% interval "
            f"{low:.0%}–{high:.0%}; above {FLIP_RATE_LIMIT:.0%}): its pairwise verdicts "
            "follow the answers' positions more than their content"))
    if probes is not None:
        f = probes.forced
        if f is not None and f.free_unscored.n >= WARN_MIN_N and (
                f.free_unscored.rate or 0) > FREE_UNSCORED_LIMIT:
            out.append(FairnessWarning(
                "judge_forced_grades",
                f"judge {probes.judge}: without the grammar, {_pct(f.free_unscored)} of its "
                "answers held no grade: its grades exist because the grammar forces one"))
        d = probes.degenerate
        if d is not None:
            for what, x in (("empty", d.empty), ("the same for different answers", d.repeated),
                            ("not about the answer", d.off_topic)):
                if x.n >= WARN_MIN_N and (x.rate or 0) > DEGENERATE_LIMIT:
                    out.append(FairnessWarning(
                        "judge_degenerate_explanations",
                        f"judge {probes.judge}: {_pct(x)} explanations of its grades were "
                        f"{what}"))
        c = probes.consistency
        if c is not None and c.inconsistent.n >= WARN_MIN_N and (
                c.inconsistent.rate or 0) > INCONSISTENT_LIMIT:
            out.append(FairnessWarning(
                "judge_inconsistent",
                f"judge {probes.judge}: graded again at temperature {c.temperature:g}, "
                f"{_pct(c.inconsistent)} answers got grades {INCONSISTENT_SPREAD:g} or more "
                "points apart"))
    for name, check in contexts.items():
        not_sent = check.get("not_sent") or {}
        if not not_sent:
            continue
        asked = check.get("asked") or {}
        ctx = check.get("ctx")
        counts = ", ".join(f"{n} of {asked.get(k, n)} {k}" for k, n in not_sent.items())
        out.append(FairnessWarning(
            "judge_context",
            f"judge {name}" + (f" (ctx {ctx})" if ctx else "") + f": {counts} prompts did not "
            "fit its context and were not sent (stored as errors, context_exceeded); those "
            "answers have no grade"))
    return out
