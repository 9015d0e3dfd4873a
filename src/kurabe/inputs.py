"""What a run is given, resolved once: the run's snapshot.

When a run is created, its prompts (from ``[[prompts]]`` or a prompt set), its quality items
(loaded and sampled from the suites) and the judge's instructions are resolved and stored in
the run's own SQLite file beside the full config. ``report``, resume, ``judge`` and
``compare`` then read the snapshot and never the files it came from, so a run folder copied
anywhere is complete.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kurabe import KurabeError
from kurabe.config import PromptConfig, ShootoutConfig, format_validation_error
from kurabe.records import CalibrationItem, Snapshot, SuiteItem

if TYPE_CHECKING:
    from kurabe.store import Store


BUILTIN_SETS = {"speed": "speed_prompts.toml"}


def load_prompt_set(spec: str) -> list[PromptConfig]:
    """``builtin:speed`` or a path to a TOML file with ``[[prompts]]`` tables."""
    if spec.startswith("builtin:"):
        key = spec.removeprefix("builtin:")
        if key not in BUILTIN_SETS:
            raise KurabeError(f"unknown prompt set '{spec}' (known: "
                              + ", ".join(f"builtin:{k}" for k in BUILTIN_SETS) + ")")
        text = resources.files("kurabe.data").joinpath(BUILTIN_SETS[key]).read_text("utf-8")
        origin = spec
    else:
        path = Path(spec)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise KurabeError(f"{path}: cannot read prompt set: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise KurabeError(f"{path}: not a prompt set: not UTF-8 text") from None
        origin = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KurabeError(f"{origin}: not valid TOML: {exc}") from None
    try:
        prompts = [PromptConfig.model_validate(p) for p in data.get("prompts", [])]
    except ValidationError as exc:
        raise KurabeError(format_validation_error(exc, origin)) from None
    if not prompts:
        raise KurabeError(f"{origin}: no [[prompts]] found")
    return prompts


def resolve_prompts(config: ShootoutConfig) -> list[PromptConfig]:
    if config.prompts:
        return config.prompts
    if not config.run.prompt_set:
        raise KurabeError("no prompts: add [[prompts]] or set run.prompt_set")
    return load_prompt_set(config.run.prompt_set)


def resolve_suite_items(config: ShootoutConfig) -> list[SuiteItem]:
    q = config.quality
    if q is None:
        return []
    from kurabe.evals.suites import load_suite, sample_items

    items: list[SuiteItem] = []
    for spec in q.suites:
        items.extend(load_suite(spec))
    if q.per_category:
        items = sample_items(items, per_category=q.per_category, seed=q.seed)
    return items


def resolve_calibration_items(config: ShootoutConfig) -> list[CalibrationItem]:
    """The judge's calibration items, when the round has a judge to calibrate."""
    q = config.quality
    if q is None or not q.judge or not q.calibrate:
        return []
    from kurabe.evals.calibration import resolve_calibration_items as resolve

    return resolve(q.calibration_set, q.calibration_per_flaw, q.seed)


def build_snapshot(config: ShootoutConfig) -> Snapshot:
    """Read every input file now (errors name the file), before anything is created."""
    from kurabe.evals.judge import judge_prompts

    return Snapshot(
        config=config.model_dump(mode="json"),
        prompts=[p.model_dump(mode="json") for p in resolve_prompts(config)],
        suite_items=[i.to_dict() for i in resolve_suite_items(config)],
        judge_prompts=judge_prompts() if config.quality is not None else {},
        calibration_items=[i.to_dict() for i in resolve_calibration_items(config)],
    )


def prompts_of(snapshot: Snapshot) -> list[PromptConfig]:
    return [PromptConfig.model_validate(p) for p in snapshot.prompts]


def items_of(snapshot: Snapshot) -> list[SuiteItem]:
    return [SuiteItem.from_dict(i) for i in snapshot.suite_items]


def calibration_items_of(snapshot: Snapshot) -> list[CalibrationItem]:
    return [CalibrationItem.from_dict(i) for i in snapshot.calibration_items]


def run_snapshot(store: Store) -> Snapshot:
    """A run's snapshot. A run made before snapshots existed gets one now, resolved from its
    config's files, and keeps it."""
    snapshot = store.snapshot()
    if snapshot is None:
        snapshot = build_snapshot(ShootoutConfig.from_json(store.run().config_json))
        store.write_snapshot(snapshot)
    return snapshot
