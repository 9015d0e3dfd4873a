"""One piece of lineage evidence: what was found, how strong it is, and which way it points."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# How much a finding can move the verdict. "strong": on its own it decides (weights that
# match far above chance; tokenizers that share almost nothing); "moderate": worth stating,
# never proof (a declared base model); "weak": consistent with either answer, shown for
# completeness (the same architecture, the same tokenizer); "none": a fact without a
# direction (a file that holds no vocabulary).
STRENGTHS = ("strong", "moderate", "weak", "none")

# Which way a finding points: toward "derived" (built from the other's weights), toward
# "independent", or neither (None).
DIRECTIONS = ("derived", "independent")


@dataclass
class Evidence:
    kind: str  # declared | tokenizer | shapes | weights
    finding: str  # one sentence
    strength: str  # one of STRENGTHS
    suggests: str | None = None  # one of DIRECTIONS, or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def same_text(a: Any, b: Any) -> bool:
    """Names compared loosely: case, spaces and punctuation ignored."""
    return bool(norm_name(a)) and norm_name(a) == norm_name(b)


def norm_name(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value.lower() if ch.isalnum())
