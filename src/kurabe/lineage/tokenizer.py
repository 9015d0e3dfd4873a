"""Tokenizer evidence: the vocabulary, its merges, and the special tokens.

Many independent models share a tokenizer (a popular one is reused as it is), so identical
tokenizers are weak evidence of lineage. Different tokenizers are strong evidence against
*direct* derivation: retraining a model on a new tokenizer throws away its embeddings. The
exception is vocabulary extension (new tokens appended to the old ones, as Japanese
continued pre-training often does): the old vocabulary is then contained in the new one,
which this module reports as such.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kurabe.lineage.evidence import Evidence

# Share of the smaller vocabulary found in the larger one.
CONTAINED = 0.95  # at least this: one vocabulary contains the other (extension)
UNRELATED = 0.5  # below this: different tokenizers
SPECIAL_ROLES = ("bos", "eos", "padding", "unknown", "sep", "eot", "eom")


def _digest(items: list[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", errors="surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _tokens(tok: dict[str, Any]) -> list[str] | None:
    tokens = tok.get("tokens")
    if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens[:16]):
        return [str(t) for t in tokens]
    return None


def _merges(tok: dict[str, Any]) -> list[str] | None:
    merges = tok.get("merges")
    if isinstance(merges, list) and merges:
        return [str(m) for m in merges]
    return None


def _specials(tok: dict[str, Any], tokens: list[str] | None) -> dict[str, Any]:
    out = {}
    for role in SPECIAL_ROLES:
        value = tok.get(f"{role}_token_id")
        if isinstance(value, int) and not isinstance(value, bool):
            text = tokens[value] if tokens is not None and 0 <= value < len(tokens) else None
            out[role] = {"id": value, "token": text}
    return out


def token_map(a: list[str], b: list[str]) -> tuple[list[int], list[int]]:
    """Ids of the tokens both vocabularies hold, in A and in B (same order)."""
    where: dict[str, int] = {}
    for i, t in enumerate(b):
        where.setdefault(t, i)
    ids_a, ids_b = [], []
    seen = set()
    for i, t in enumerate(a):
        j = where.get(t)
        if j is not None and t not in seen:
            seen.add(t)
            ids_a.append(i)
            ids_b.append(j)
    return ids_a, ids_b


def tokenizer_evidence(ta: dict[str, Any], tb: dict[str, Any], la: str, lb: str
                       ) -> tuple[list[Evidence], dict[str, Any]]:
    """Evidence and facts (for JSON) from two tokenizers (GGUF ``tokenizer.ggml.*`` keys
    without the prefix). ``la``/``lb``: the models' labels."""
    evidence: list[Evidence] = []
    toks_a, toks_b = _tokens(ta), _tokens(tb)
    facts: dict[str, Any] = {
        "a": {"model": ta.get("model"), "pre": ta.get("pre"),
              "tokens": len(toks_a) if toks_a else None,
              "sha256": _digest(toks_a) if toks_a else None},
        "b": {"model": tb.get("model"), "pre": tb.get("pre"),
              "tokens": len(toks_b) if toks_b else None,
              "sha256": _digest(toks_b) if toks_b else None},
    }
    if toks_a is None or toks_b is None:
        missing = ", ".join(label for label, t in ((la, toks_a), (lb, toks_b)) if t is None)
        evidence.append(Evidence("tokenizer", f"no vocabulary to compare in {missing}", "none"))
        facts["identical"] = None
        return evidence, facts

    identical = toks_a == toks_b
    set_a, set_b = set(toks_a), set(toks_b)
    shared = len(set_a & set_b)
    jaccard = shared / max(1, len(set_a | set_b))
    contained = shared / max(1, min(len(set_a), len(set_b)))
    facts.update(identical=identical, shared_tokens=shared, jaccard=round(jaccard, 4),
                 containment=round(contained, 4))
    kind = f"{ta.get('model')}/{ta.get('pre')}" if ta.get("pre") else str(ta.get("model"))
    if identical:
        evidence.append(Evidence(
            "tokenizer", f"identical vocabulary ({len(toks_a):,} tokens, {kind}, sha256 "
            f"{facts['a']['sha256'][:12]}); many independent models share a tokenizer",
            "weak", "derived"))
    elif contained >= CONTAINED:
        small, big = (la, lb) if len(set_a) <= len(set_b) else (lb, la)
        evidence.append(Evidence(
            "tokenizer", f"{big}'s vocabulary holds {contained:.0%} of {small}'s "
            f"({len(toks_a):,} vs {len(toks_b):,} tokens): consistent with a vocabulary "
            "extension or a shared tokenizer family", "weak", "derived"))
    elif contained < UNRELATED:
        evidence.append(Evidence(
            "tokenizer", f"different tokenizers: {contained:.0%} of the smaller vocabulary "
            f"is in the other (Jaccard {jaccard:.2f}; {len(toks_a):,} vs {len(toks_b):,} "
            f"tokens); a model is not given a new tokenizer by fine-tuning, and a vocabulary "
            "extension keeps the old tokens", "strong", "independent"))
    else:
        evidence.append(Evidence(
            "tokenizer", f"partly shared vocabularies: {contained:.0%} of the smaller one is "
            f"in the other (Jaccard {jaccard:.2f})", "moderate", "independent"))

    merges_a, merges_b = _merges(ta), _merges(tb)
    if merges_a is not None and merges_b is not None:
        same = merges_a == merges_b
        overlap = len(set(merges_a) & set(merges_b)) / max(1, len(set(merges_a)
                                                                  | set(merges_b)))
        facts["merges"] = {"a": len(merges_a), "b": len(merges_b), "identical": same,
                           "jaccard": round(overlap, 4)}
        if not identical:
            evidence.append(Evidence(
                "tokenizer", "identical merges" if same else
                f"merges overlap {overlap:.0%} (Jaccard; {len(merges_a):,} vs "
                f"{len(merges_b):,})", "weak", "derived" if overlap >= CONTAINED else None))
    elif (merges_a is None) != (merges_b is None):
        facts["merges"] = {"a": len(merges_a or []), "b": len(merges_b or []),
                           "identical": False, "jaccard": 0.0}

    spec_a, spec_b = _specials(ta, toks_a), _specials(tb, toks_b)
    facts["special_tokens"] = {"a": spec_a, "b": spec_b}
    roles = sorted(set(spec_a) & set(spec_b))
    if roles:
        differ = [r for r in roles if spec_a[r] != spec_b[r]]
        if not differ:
            shown = ", ".join(f"{r} {spec_a[r]['id']}" for r in roles)
            evidence.append(Evidence("tokenizer", f"the same special tokens ({shown})", "weak"))
        else:
            shown = ", ".join(f"{r} {spec_a[r]['id']} vs {spec_b[r]['id']}" for r in differ)
            evidence.append(Evidence("tokenizer", f"different special tokens ({shown})",
                                     "weak"))
    return evidence, facts
