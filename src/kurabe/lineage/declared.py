"""What the files say about themselves: architecture, declared base models, license, names.

All of it is written by whoever made the file, so none of it is proof. A declared base model
that names the other model is moderate evidence (files are often converted or renamed, and a
declaration can be wrong or missing); the same architecture, license or basename is weak
(independent models share them all the time).
"""

from __future__ import annotations

from typing import Any

from kurabe.lineage.evidence import Evidence, norm_name, same_text
from kurabe.lineage.files import ModelFile


def base_models(md: dict[str, Any]) -> list[dict[str, Any]]:
    """``general.base_model.N.*`` entries (name, organization, repo_url, ...)."""
    count = md.get("general.base_model.count")
    n = count if isinstance(count, int) and not isinstance(count, bool) else 0
    out = []
    for i in range(min(n, 64)):
        prefix = f"general.base_model.{i}."
        entry = {k.removeprefix(prefix): v for k, v in md.items() if k.startswith(prefix)}
        if entry:
            out.append(entry)
    return out


def names_of(model: ModelFile) -> list[str]:
    """What a model may be called: general.name, basename (with and without its size
    label), the file or folder name, a config's _name_or_path."""
    md = model.metadata
    out = []
    for key in ("general.name", "general.basename", "hf.name_or_path"):
        value = md.get(key)
        if isinstance(value, str) and value.strip():
            out.append(value.strip().split("/")[-1])
    basename, size = md.get("general.basename"), md.get("general.size_label")
    if isinstance(basename, str) and isinstance(size, str):
        out.append(f"{basename}-{size}")
    stem = model.path.name.removesuffix(".gguf")
    out.append(stem)
    return [n for n in out if norm_name(n)]


def _names_other(entry: dict[str, Any], other: ModelFile) -> str | None:
    """The name under which a base-model entry names ``other``, or None."""
    candidates = [entry.get("name"), entry.get("repo_url")]
    targets = names_of(other)
    for value in candidates:
        if not isinstance(value, str):
            continue
        tail = value.rstrip("/").split("/")[-1]
        for target in targets:
            if same_text(tail, target) or same_text(value, target):
                return target
    return None


def _shown(entry: dict[str, Any]) -> str:
    for key in ("repo_url", "name"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            org = entry.get("organization")
            if key == "name" and isinstance(org, str) and org:
                return f"{org}/{value}"
            return value
    return "an unnamed model"


def declared_evidence(a: ModelFile, b: ModelFile) -> tuple[list[Evidence], dict[str, Any]]:
    """Evidence from the declared metadata, and the declared facts of both (for JSON)."""
    evidence: list[Evidence] = []
    facts: dict[str, Any] = {}
    for label, model in (("a", a), ("b", b)):
        md = model.metadata
        facts[label] = {
            "architecture": model.architecture,
            "name": md.get("general.name"), "basename": md.get("general.basename"),
            "organization": md.get("general.organization"),
            "size_label": md.get("general.size_label"),
            "license": md.get("general.license"),
            "base_models": base_models(md),
            "twin_of": md.get("kurabe.twin.source") if md.get("kurabe.twin") is True
            else None,
        }
        if model.kind == "safetensors":
            facts[label]["model_type"] = md.get("hf.model_type")
    fa, fb = facts["a"], facts["b"]

    if fa["architecture"] and fa["architecture"] == fb["architecture"]:
        evidence.append(Evidence("declared", f"both declare the {fa['architecture']} "
                                 "architecture: the same code runs them, which says nothing "
                                 "about where the weights came from", "weak"))
    elif fa["architecture"] and fb["architecture"]:
        evidence.append(Evidence("declared", f"different architectures ({fa['architecture']} "
                                 f"vs {fb['architecture']}); a conversion can change the "
                                 "declared architecture, so this is not proof", "weak",
                                 "independent"))

    for label, model, other in (("a", a, b), ("b", b, a)):
        for entry in facts[label]["base_models"]:
            target = _names_other(entry, other)
            if target is not None:
                evidence.append(Evidence(
                    "declared", f"{model.label} declares {_shown(entry)} as its base model, "
                    f"which names {other.label} ({target}); a declaration, not proof",
                    "moderate", "derived"))
    if fa["base_models"] and fb["base_models"]:
        shared = [_shown(e) for e in fa["base_models"]
                  if any(same_text(_shown(e), _shown(f)) for f in fb["base_models"])]
        if shared:
            evidence.append(Evidence("declared", "both declare the same base model ("
                                     f"{', '.join(shared)}): a common origin, if true",
                                     "moderate", "derived"))
    for label, model in (("a", a), ("b", b)):
        if not facts[label]["base_models"]:
            continue
        named = ", ".join(_shown(e) for e in facts[label]["base_models"])
        other = b if label == "a" else a
        if not any(_names_other(e, other) for e in facts[label]["base_models"]):
            evidence.append(Evidence("declared", f"{model.label} declares its base model(s): "
                                     f"{named}", "none"))

    twins = [(model, facts[label]["twin_of"]) for label, model in (("a", a), ("b", b))
             if facts[label]["twin_of"]]
    if len(twins) == 1:
        model, source = twins[0]
        other = b if model is a else a
        evidence.append(Evidence(
            "declared", f"{model.label} declares itself a kurabe synthetic twin of {source}: "
            f"random weights with that model's shapes, not {other.label}'s weights",
            "moderate", "independent"))
    elif twins:
        evidence.append(Evidence(
            "declared", f"both declare themselves kurabe synthetic twins (of {twins[0][1]} and "
            f"{twins[1][1]}): random weights, which one twin may still have been copied "
            "from the other", "weak"))

    la, lb = fa["license"], fb["license"]
    if isinstance(la, str) and isinstance(lb, str):
        if same_text(la, lb):
            evidence.append(Evidence("declared", f"the same license ({la})", "weak"))
        else:
            evidence.append(Evidence("declared", f"different licenses ({la} vs {lb}); a "
                                     "derivative usually keeps its base's license", "weak",
                                     "independent"))
    if same_text(fa["basename"], fb["basename"]):
        evidence.append(Evidence("declared", f"the same basename ({fa['basename']})", "weak",
                                 "derived"))
    if same_text(fa["organization"], fb["organization"]):
        evidence.append(Evidence("declared", f"the same organization ({fa['organization']})",
                                 "weak"))
    return evidence, facts
