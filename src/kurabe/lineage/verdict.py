"""The verdict: ``derived``, ``independent`` or ``inconclusive``, and its reason in a sentence.

Weights decide when they can be compared, because they are the only evidence that survives
renaming and is hard to fake by accident:

* **derived**: at least half the compared layers match (score >= MATCH_SCORE);
* **independent**: no compared layer matches, nor the embedding or output layer;
* **inconclusive**: some layers match and most do not (a merge, a partial copy, layers
  grown or pruned), or only the embedding matches.

When no tensor has the same shape in both files, the weights cannot be compared: the verdict
is **independent** when the tokenizers differ too (strong evidence against direct
derivation) and nothing declared links the two, and **inconclusive** otherwise (a pruned or
grown copy with the same tokenizer cannot be told from an independent model of another
size). Declarations never decide on their own: they are named in the reason when they
disagree with the weights.
"""

from __future__ import annotations

from typing import Any

from kurabe.lineage.evidence import Evidence
from kurabe.lineage.weights import MATCH_SCORE, WeightsResult


def weight_evidence(w: WeightsResult) -> list[Evidence]:
    out = []
    compared, matched = w.compared, w.matched
    sampled = (f" ({len(compared)} of {w.layers_in_model} layers sampled)"
               if len(compared) < w.layers_in_model else "")
    figures = (f"median best |cos| {w.median('similarity'):.3f} vs {w.median('null'):.3f} "
               "expected for independent weights; median score "
               f"{w.median('score'):.2f}") if compared else ""
    if compared:
        if len(matched) * 2 >= len(compared):
            out.append(Evidence("weights", f"{len(matched)} of {len(compared)} layers match"
                                f"{sampled} ({figures})", "strong", "derived"))
        elif not matched:
            out.append(Evidence("weights", f"none of {len(compared)} layers match{sampled} "
                                f"({figures})", "strong", "independent"))
        else:
            shown = ", ".join(str(layer.layer) for layer in matched[:8])
            out.append(Evidence("weights", f"{len(matched)} of {len(compared)} layers match"
                                f"{sampled} (layers {shown}{', ...' if len(matched) > 8 else ''};"
                                f" {figures}): part of one model may come from the other",
                                "moderate"))
        searched = sorted({t.method for layer in matched for t in layer.tensors
                           if t.matched and t.method and "searched" in t.method
                           and t.tried.get("rows in place", 0.0) < MATCH_SCORE})
        if searched:
            out.append(Evidence("weights", "some tensors match only after reordering ("
                                f"{'; '.join(searched)}): {permuted_units(searched)}",
                                "strong", "derived"))
    for t in w.other:
        if t.score is None:
            continue
        how = f"{t.method}, {t.note}" if t.note else t.method
        if t.matched:
            out.append(Evidence("weights", f"{t.name} matches (best |cos| {t.similarity:.3f} vs "
                                f"{t.null:.3f}; {how})", "moderate", "derived"))
        else:
            out.append(Evidence("weights", f"{t.name} does not match (best |cos| "
                                f"{t.similarity:.3f} vs {t.null:.3f}; {how})", "moderate",
                                "independent"))
    if w.spectrum_gap is not None:
        out.append(Evidence("weights", "singular values of the sampled rows: median gap "
                            f"{w.spectrum_gap:.3f} (0 for the same matrix; permutation-"
                            "invariant, but models trained the same way have similar "
                            "spectra too)", "weak"))
    if w.skipped:
        shown = ", ".join(f"{s['name']} ({s['why']})" for s in w.skipped[:3])
        out.append(Evidence("weights", f"{len(w.skipped)} tensor(s) not compared: {shown}"
                            f"{', ...' if len(w.skipped) > 3 else ''}", "none"))
    return out


def permuted_units(methods: list[str]) -> str:
    """What a set of search methods found moved: "heads permuted", "experts and heads
    permuted", or "rows reordered" when no head, expert or hidden unit is named."""
    units = sorted({m.split(" across ", 1)[1].split(" (", 1)[0] for m in methods
                    if " across " in m})
    return f"{' and '.join(units)} permuted" if units else "rows reordered"


def _tokenizer_phrase(tok: dict[str, Any]) -> str | None:
    if tok.get("identical") is True:
        return "same tokenizer"
    if tok.get("identical") is None:
        return None
    contained = tok.get("containment") or 0.0
    if contained >= 0.95:
        return f"one vocabulary holds {contained:.0%} of the other's"
    return f"different tokenizers ({contained:.0%} of tokens shared)"


def decide(weights: WeightsResult | None, evidence: list[Evidence], tok: dict[str, Any],
           shape_facts: dict[str, Any]) -> tuple[str, str]:
    """The verdict and its one-sentence reason (see the module text)."""
    declared_for = [e for e in evidence if e.kind == "declared" and e.suggests == "derived"
                    and e.strength == "moderate"]
    declared_against = [e for e in evidence if e.kind == "declared"
                        and e.suggests == "independent" and e.strength == "moderate"]
    tok_phrase = _tokenizer_phrase(tok)
    extra = [tok_phrase] if tok_phrase else []
    compared = weights.compared if weights is not None else []
    if weights is not None and compared:
        matched = weights.matched
        n, k = len(compared), len(matched)
        of = f"{k} of {n}" + (" sampled" if n < weights.layers_in_model else "")
        figures = (f"median best |cos| {weights.median('similarity'):.3f} vs "
                   f"{weights.median('null'):.3f} expected for independent weights")
        permuted = next((e.finding.rsplit("): ", 1)[1] for e in evidence
                         if e.kind == "weights" and "only after reordering" in e.finding), None)
        if 2 * k >= n:
            verdict = "derived"
            head = f"weights: {of} layers match ({figures})"
            if permuted:
                extra.insert(0, permuted)
            if declared_against:
                extra.append("although the files declare otherwise")
        elif k == 0 and not any(t.matched for t in weights.other):
            verdict = "independent"
            head = f"weights: none of {n}{' sampled' if n < weights.layers_in_model else ''} " \
                   f"layers match ({figures})"
            if declared_for:
                extra.append("although a base model is declared")
        else:
            verdict = "inconclusive"
            if k:
                head = f"weights: only {of} layers match ({figures}): a partial copy, a merge " \
                       "or layers added or removed"
            else:
                head = "weights: no layer matches but the embedding or output layer does"
        return verdict, "; ".join([head, *extra])
    if weights is not None and weights.other:
        if any(t.matched for t in weights.other):
            return "inconclusive", "; ".join(["no layer could be compared, but the embedding "
                                              "or output layer matches", *extra])
    if not shape_facts.get("same_shape") or not compared:
        widths = next((e.finding for e in evidence if e.kind == "shapes"), "")
        differ = tok.get("identical") is False and (tok.get("containment") or 0.0) < 0.5
        if differ and not declared_for:
            return "independent", ("no tensor could be compared (different shapes), "
                                   f"{tok_phrase}, and nothing declared links them")
        why = []
        if tok.get("identical") or (tok.get("containment") or 0.0) >= 0.5:
            why.append(tok_phrase or "related tokenizers")
        if declared_for:
            why.append("a declared base model names the other")
        if not why:
            why.append("nothing else to go by")
        return "inconclusive", ("no tensor could be compared (different shapes; "
                                f"{widths.split(' (')[0] if widths else 'no weights'}), but "
                                f"{' and '.join(why)}: a pruned or grown copy cannot be told "
                                "from an independent model of another size")
    return "inconclusive", "nothing to compare"
