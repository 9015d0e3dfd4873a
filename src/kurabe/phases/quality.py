"""The quality round, in three stored stages: generate, check, judge.

Each stage reads what the previous one stored, so a judge can be swapped without
regenerating (``kurabe judge``), and an interrupted round resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from typing import Callable

from kurabe.client import ChatClient, ChatRequest
from kurabe.config import ShootoutConfig
from kurabe.evals import judge as J
from kurabe.evals.suites import SuiteItem, load_suite, sample_items
from kurabe.metrics import speed_metrics
from kurabe.reasoning import request_fields
from kurabe.store import Store
from kurabe.thinking import split_stream

ProgressHook = Callable[[str, int, int], None]
DETERMINISTIC_CATEGORIES = ("cutoff", "safety")  # scored by rules, not by the judge


def quality_items(config: ShootoutConfig) -> list[SuiteItem]:
    q = config.quality
    items: list[SuiteItem] = []
    for spec in q.suites:
        items.extend(load_suite(spec))
    if q.per_category:
        items = sample_items(items, per_category=q.per_category, seed=q.seed)
    return items


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class QualityRound:
    def __init__(self, config: ShootoutConfig, store: Store, progress: ProgressHook | None = None,
                 starts_in_reasoning: dict[str, bool | None] | None = None) -> None:
        self.config = config
        self.q = config.quality
        self.store = store
        self.progress = progress or (lambda *_: None)
        self.items = quality_items(config)
        self.by_id = {i.id: i for i in self.items}
        names = [m.name for m in config.models]
        self.models = self.q.models or names
        self.model_cfg = {m.name: m for m in [*config.models, *config.judges]}
        self.starts_in_reasoning = starts_in_reasoning or {}

    # -- stage 1: generation ---------------------------------------------------------------

    def generation_plan(self) -> list[tuple[SuiteItem, int, str]]:
        plan = []
        turn = 0
        for r in range(self.q.repeats):
            for item in self.items:
                order = self.models if turn % 2 == 0 else list(reversed(self.models))
                plan.extend((item, r, m) for m in order)
                turn += 1
        return plan

    async def generate(self, clients: dict[str, ChatClient]) -> None:
        plan = self.generation_plan()
        done_keys = self.store.answered_keys()
        total = len(plan)
        done = sum(1 for item, r, m in plan if (m, item.id, r) in done_keys)
        for item, repeat, model in plan:
            if (model, item.id, repeat) in done_keys:
                continue
            self.progress(f"answer {model} · {item.id}", done, total)
            await self._answer(clients[model], model, item, repeat)
            done += 1
        self.progress("answers", done, total)

    async def _answer(self, client: ChatClient, model: str, item: SuiteItem, repeat: int) -> None:
        cfg = self.model_cfg[model]
        extra = {**cfg.extra_body, **request_fields(cfg.reasoning, client.endpoint.engine_kind)}
        messages: list[dict[str, str]] = []
        turns = []
        record = None
        split = None
        for question in item.turns:
            messages.append({"role": "user", "content": question})
            req = ChatRequest(messages=list(messages), max_tokens=self.q.max_tokens,
                              temperature=self.config.run.temperature, seed=self.q.seed,
                              extra_body=extra)
            record = await client.stream_chat(req)
            split = split_stream([(c.t_s, c.content, c.reasoning) for c in record.chunks],
                                 starts_in_reasoning=self.starts_in_reasoning.get(model)).split
            turns.append({"question": question, "answer": split.answer,
                          "reasoning": split.reasoning, "record": record.to_json()})
            if record.error:
                break
            messages.append({"role": "assistant", "content": split.answer})
        metrics = speed_metrics(record, starts_in_reasoning=self.starts_in_reasoning.get(model))
        self.store.add_answer({
            "model": model, "item_id": item.id, "suite": item.suite, "category": item.category,
            "repeat": repeat, "status": "error" if record.error else "ok", "error": record.error,
            "outcome": metrics.outcome, "answer": split.answer if split else "",
            "reasoning": "\n\n".join(t["reasoning"] for t in turns if t["reasoning"]),
            "turns_json": json.dumps(turns, ensure_ascii=False),
            "metrics_json": json.dumps(metrics.as_dict(), ensure_ascii=False),
        })

    # -- stage 2: deterministic checks -----------------------------------------------------

    def check(self) -> None:
        from kurabe.evals import checks as C
        from kurabe.evals.cutoff import classify_fact_answer

        done = self.store.checked_keys()
        answers = [a for a in self.store.answers() if a["item_id"] in self.by_id]
        code_jobs = []
        for i, a in enumerate(answers):
            key = (a["model"], a["item_id"], a["repeat"])
            if key in done:
                continue
            self.progress(f"check {a['model']} · {a['item_id']}", i, len(answers))
            item = self.by_id[a["item_id"]]
            text, outcome = a["answer"], a["outcome"]
            rows = [("outcome", None, None, outcome)]
            if text.strip():
                ratio = C.japanese_ratio(text)
                rows.append(("japanese_ratio", None, ratio.ratio, None))
                if item.lang in ("ja", "en"):
                    lang = C.language_mismatch(text, item.lang)
                    rows.append(("language", lang.passed, lang.ratio, lang.reason))
            limits = item.checks or {}
            if limits.get("max_chars") or limits.get("min_chars"):
                res = C.length_check(text, max_chars=limits.get("max_chars"),
                                     min_chars=limits.get("min_chars"))
                rows.append(("length", res.passed, res.chars, None))
            if outcome not in ("thinking_exhausted", "error") and text.strip():
                refusal = C.detect_refusal(text, item.lang, outcome)
                # passed = 1 means "refused" for this check: it is a finding, not a grade.
                rows.append(("refusal", refusal.refused, None,
                             ", ".join(refusal.patterns) or refusal.reason or None))
            if item.category == "cutoff":
                cls = classify_fact_answer(text, (item.meta or {}).get("accepted", []),
                                           item.lang, outcome=outcome)
                rows.append(("cutoff", cls == "correct", None, str(cls)))
            if limits.get("html_app") and self.q.code_checks:
                code_jobs.append((a, item))
            for name, passed, value, detail in rows:
                self.store.add_check({"model": a["model"], "item_id": a["item_id"],
                                      "repeat": a["repeat"], "name": name,
                                      "passed": None if passed is None else int(bool(passed)),
                                      "value": value, "detail": detail})
        if code_jobs:
            self._code_checks(code_jobs)

    def _code_checks(self, jobs) -> None:
        from kurabe.evals.checks import NOT_ANSWERED
        from kurabe.evals.codecheck import check_app, extract_html

        chromium = find_chromium()

        def record(a, name, passed, detail):
            self.store.add_check({"model": a["model"], "item_id": a["item_id"],
                                  "repeat": a["repeat"], "name": name,
                                  "passed": None if passed is None else int(bool(passed)),
                                  "value": None, "detail": detail})

        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            sync_playwright = None
        if chromium is None or sync_playwright is None:
            why = "no Chromium found" if chromium is None else "playwright is not installed"
            for a, _ in jobs:
                record(a, "code:skipped", None, why)
            return
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                for n, (a, item) in enumerate(jobs):
                    self.progress(f"code check {a['model']} · {a['item_id']}", n, len(jobs))
                    if a["outcome"] in NOT_ANSWERED:
                        # No answer to try (thinking_exhausted, empty, error): not a failed page.
                        record(a, "code:skipped", None, f"{a['outcome']}: no answer to check")
                        continue
                    kind = item.checks["html_app"]
                    html = extract_html(a["answer"])
                    if html is None:
                        record(a, "code:extracted", False, "no HTML document in the answer")
                        continue
                    result = check_app(kind, html, browser=browser)
                    record(a, "code:extracted", True, f"{len(html)} characters of HTML")
                    for sub in result.checks:
                        record(a, f"code:{sub.name}", sub.passed, sub.detail)
            finally:
                browser.close()

    # -- stage 3: judging ------------------------------------------------------------------

    def judge_plan(self) -> list[tuple]:
        answers = {(a["model"], a["item_id"], a["repeat"]): a for a in self.store.answers()}
        plan = []
        for item in self.items:
            if item.category in DETERMINISTIC_CATEGORIES:
                continue
            for r in range(self.q.repeats):
                for m in self.models:
                    if (m, item.id, r) in answers:
                        plan.append(("single", item, r, m, "", ""))
                if self.q.pairwise:
                    for a, b in combinations(self.models, 2):
                        if (a, item.id, r) in answers and (b, item.id, r) in answers:
                            plan.append(("pairwise", item, r, a, b, "ab"))
                            plan.append(("pairwise", item, r, a, b, "ba"))
        return plan

    def pending(self, judge_name: str | None) -> dict[str, int]:
        answered = self.store.answered_keys()
        gen = sum(1 for item, r, m in self.generation_plan() if (m, item.id, r) not in answered)
        checked = self.store.checked_keys()
        chk = len([a for a in self.store.answers()
                   if (a["model"], a["item_id"], a["repeat"]) not in checked
                   and a["item_id"] in self.by_id])
        judged = 0
        if judge_name:
            done = self.store.graded_keys(judge_name)
            judged = sum(1 for k, item, r, m, mb, pos in self.judge_plan()
                         if (k, item.id, r, m, mb, pos) not in done)
        return {"generate": gen, "check": chk, "judge": judged}

    async def judge(self, judge_name: str, client: ChatClient) -> None:
        answers = {(a["model"], a["item_id"], a["repeat"]): a for a in self.store.answers()}
        done = self.store.graded_keys(judge_name)
        plan = self.judge_plan()
        total = len(plan)
        finished = 0
        judge_cfg = self.model_cfg[judge_name]
        extra = {**judge_cfg.extra_body,
                 **request_fields(self.q.judge_reasoning, client.endpoint.engine_kind)}
        for kind, item, r, m, mb, pos in plan:
            key = (kind, item.id, r, m, mb, pos)
            finished += 1
            if key in done:
                continue
            self.progress(f"judge {kind} {m}{' vs ' + mb if mb else ''} · {item.id}", finished, total)
            base = {"judge": judge_name, "kind": kind, "item_id": item.id, "repeat": r,
                    "model": m, "model_b": mb or None, "position": pos or None}
            sides = [answers[(m, item.id, r)]] + ([answers[(mb, item.id, r)]] if mb else [])
            not_answered = [s for s in sides if s["outcome"] != "answered"]
            if not_answered:
                # thinking_exhausted / empty / leaked answers are never graded as answers.
                self.store.add_grade({**base, "status": "skipped", "detail": ", ".join(
                    f"{s['model']}: {s['outcome']}" for s in not_answered)})
                continue
            turns = [t for t in json.loads(sides[0]["turns_json"])]
            questions = [t["question"] for t in turns]
            if kind == "single":
                messages = J.single_prompt(turns=questions, answers=[t["answer"] for t in turns],
                                           lang=item.lang, category=item.category,
                                           rubric=item.rubric, reference=item.reference)
                schema = J.SINGLE_SCHEMA
            else:
                first, second = (sides[0], sides[1]) if pos == "ab" else (sides[1], sides[0])
                messages = J.pair_prompt(
                    turns=questions,
                    answers_a=[t["answer"] for t in json.loads(first["turns_json"])],
                    answers_b=[t["answer"] for t in json.loads(second["turns_json"])],
                    lang=item.lang, category=item.category, rubric=item.rubric,
                    reference=item.reference)
                schema = J.PAIR_SCHEMA
            req = ChatRequest(messages=messages, max_tokens=self.q.judge_max_tokens,
                              temperature=0.0, seed=self.q.seed,
                              extra_body={**extra, **J.response_format(schema, client.endpoint.engine_kind)})
            record = await client.stream_chat(req)
            if record.error and record.http_status in (400, 422) and any(
                    word in record.error.lower()
                    for word in ("response_format", "json_schema", "schema", "grammar")):
                # The engine refused structured output: ask again, parse the text.
                req.extra_body = extra
                record = await client.stream_chat(req)
            split = split_stream([(c.t_s, c.content, c.reasoning) for c in record.chunks]).split
            if record.error:
                self.store.add_grade({**base, "status": "error", "detail": record.error})
                continue
            verdict = J.parse_single(split.answer) if kind == "single" else J.parse_pair(split.answer)
            self.store.add_grade({
                **base, "status": verdict.status, "score": verdict.score, "verdict": verdict.winner,
                "explanation": verdict.explanation, "raw_output": split.answer,
                "judge_reasoning": split.reasoning,
                "detail": f"parsed from {verdict.how}" if verdict.how else
                          ("judge thinking used the whole budget" if not split.answer and split.reasoning
                           else "no grade found in the judge's answer"),
            })
        self.progress("judging", total, total)


