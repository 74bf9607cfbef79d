"""Grade model outputs with a grader object: one entry point for training rewards, evaluation and the API.

Usage:
    ctx = GradingContext(judges=LocalJudges(), encoder=Encoder())
    outcomes = grade(parse_grader(spec), ["4", "five"], [{"answer": "4"}, {"answer": "5"}], ctx)
    outcomes[0].reward, outcomes[0].sub_rewards, outcomes[0].errors    # 1.0, {}, {...all False}

Every grader scores a whole batch at once (one sandbox per python grader call, one generation batch per
judge). A failure of one sample (a template variable its item lacks, a judge answer without a score, an
exception in `grade`) gives that sample reward 0 with OpenAI's error flag set and `detail` saying what
happened; a limit that stops a sandboxed python grader does the same for every sample of the call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lmtune.graders.formula import FormulaError, parse_formula
from lmtune.graders.judge import (DEFAULT_MAX_TOKENS, JudgeParseError, Judges, label_instruction, label_of,
                                  score_instruction, score_of)
from lmtune.graders.sandbox import Limits, run_sandboxed
from lmtune.graders.similarity import Encoder, similarity
from lmtune.graders.spec import (Grader, LabelModelGrader, MultiGrader, PythonGrader, ScoreModelGrader,
                                 StringCheckGrader, TextSimilarityGrader)
from lmtune.graders.template import TemplateError, render, sample_namespace

ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error",
               "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
               "truncated_observation_error", "unresponsive_reward_error")


@dataclass
class GradingContext:
    """What graders need besides their spec: judge models, the MiniLM encoder and the sandbox's limits."""

    judges: Judges | None = None
    encoder: Encoder | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass
class Outcome:
    """One sample's grade: the reward, sub-grader rewards (multi), and what went wrong if anything did."""

    reward: float = 0.0
    sub_rewards: dict[str, float] = field(default_factory=dict)
    flag: str | None = None
    detail: str | None = None
    seconds: float = 0.0

    def errors(self) -> dict[str, Any]:
        """OpenAI's metadata.errors object."""
        out: dict[str, Any] = {name: name == self.flag for name in ERROR_FLAGS}
        out["python_grader_runtime_error_details"] = self.detail if self.flag == "python_grader_runtime_error" else None
        out["python_grader_server_error_type"] = None
        # OpenAI has one details field for judges; lmtune puts a parse error's reason there too.
        judge = self.flag is not None and self.flag.startswith("model_grader")
        out["model_grader_server_error_details"] = self.detail if judge else None
        return out


def _failed(flag: str, detail: str) -> Outcome:
    return Outcome(0.0, {}, flag, detail)


def _texts(template: str, outputs: list[str], items: list[dict]) -> list[str | Outcome]:
    rendered: list[str | Outcome] = []
    for output, item in zip(outputs, items, strict=True):
        try:
            rendered.append(render(template, item, sample_namespace(output)))
        except TemplateError as err:
            rendered.append(_failed("invalid_variable_error", str(err)))
    return rendered


def _pairwise(grader: StringCheckGrader | TextSimilarityGrader, outputs: list[str], items: list[dict],
              ctx: GradingContext) -> list[Outcome]:
    inputs, refs = _texts(grader.input, outputs, items), _texts(grader.reference, outputs, items)
    out = []
    for given, ref in zip(inputs, refs):
        if isinstance(given, Outcome) or isinstance(ref, Outcome):
            out.append(given if isinstance(given, Outcome) else ref)
        elif isinstance(grader, StringCheckGrader):
            out.append(Outcome(_string_check(grader.operation, given, ref)))
        else:
            encoder = ctx.encoder or Encoder()
            ctx.encoder = encoder
            out.append(Outcome(similarity(grader.evaluation_metric, given, ref, encoder)))
    return out


def _string_check(operation: str, given: str, ref: str) -> float:
    """eq/ne compare exactly; like is `ref` inside `given`, ilike the same ignoring case."""
    if operation == "eq":
        return float(given == ref)
    if operation == "ne":
        return float(given != ref)
    if operation == "like":
        return float(ref in given)
    return float(ref.casefold() in given.casefold())


def _judged(grader: ScoreModelGrader | LabelModelGrader, outputs: list[str], items: list[dict],
            ctx: GradingContext) -> list[Outcome]:
    conversations: list[list[tuple[str, str]] | Outcome] = []
    for output, item in zip(outputs, items, strict=True):
        try:
            sample = sample_namespace(output)
            conv = [(m.role, render(m.text(), item, sample)) for m in grader.input]
        except TemplateError as err:
            conversations.append(_failed("invalid_variable_error", str(err)))
            continue
        rule = score_instruction(grader.bounds()) if isinstance(grader, ScoreModelGrader) else label_instruction(grader.labels)
        conversations.append([*conv, ("system", rule)])
    todo = [c for c in conversations if not isinstance(c, Outcome)]
    answers: list[str] = []
    if todo:
        if ctx.judges is None:
            return [_failed("model_grader_server_error", "no judge models are available here") for _ in outputs]
        params = getattr(grader, "sampling_params", None)
        try:
            answers = ctx.judges(grader.model, todo, (params and params.max_completions_tokens) or DEFAULT_MAX_TOKENS,
                                 (params and params.temperature) or 0.0, (params and params.seed) or 0)
        except Exception as err:  # noqa: BLE001 - a judge that cannot load or run fails its samples, not the caller
            return [_failed("model_grader_server_error", f"judge {grader.model!r}: {type(err).__name__}: {err}")
                    for _ in outputs]
    answer_iter = iter(answers)
    out = []
    for conv in conversations:
        if isinstance(conv, Outcome):
            out.append(conv)
            continue
        text = next(answer_iter)
        try:
            if isinstance(grader, ScoreModelGrader):
                out.append(Outcome(score_of(text, grader.bounds())))
            else:
                out.append(Outcome(float(label_of(text, grader.labels) in grader.passing_labels)))
        except JudgeParseError as err:
            out.append(_failed("model_grader_parse_error", str(err)))
    return out


def _python(grader: PythonGrader, outputs: list[str], items: list[dict], ctx: GradingContext) -> list[Outcome]:
    cases = [{"sample": sample_namespace(o), "item": i} for o, i in zip(outputs, items, strict=True)]
    result = run_sandboxed(grader.source, cases, ctx.limits)
    if result["error"] is not None:
        return [_failed("python_grader_runtime_error", result["error"]) for _ in outputs]
    return [_failed("python_grader_runtime_error", s["error"]) if isinstance(s, dict) else Outcome(s)
            for s in result["scores"]]


def _multi(grader: MultiGrader, outputs: list[str], items: list[dict], ctx: GradingContext) -> list[Outcome]:
    formula = parse_formula(grader.calculate_output, set(grader.graders))
    subs = {name: grade(sub, outputs, items, ctx) for name, sub in grader.graders.items()}
    out = []
    for k in range(len(outputs)):
        scores = {name: results[k].reward for name, results in subs.items()}
        failed = next((results[k] for results in subs.values() if results[k].flag), None)
        if failed is not None:
            out.append(Outcome(0.0, scores, failed.flag, failed.detail))
            continue
        try:
            out.append(Outcome(formula(scores), scores))
        except FormulaError as err:
            out.append(Outcome(0.0, scores, "formula_parse_error", str(err)))
    return out


def grade(grader: Grader, outputs: list[str], items: list[dict[str, Any]], ctx: GradingContext) -> list[Outcome]:
    """One Outcome per (model output, dataset item) pair."""
    if len(outputs) != len(items):
        raise ValueError(f"{len(outputs)} outputs but {len(items)} items")
    if not outputs:
        return []
    started = time.perf_counter()
    if isinstance(grader, (StringCheckGrader, TextSimilarityGrader)):
        out = _pairwise(grader, outputs, items, ctx)
    elif isinstance(grader, (ScoreModelGrader, LabelModelGrader)):
        out = _judged(grader, outputs, items, ctx)
    elif isinstance(grader, PythonGrader):
        out = _python(grader, outputs, items, ctx)
    else:
        out = _multi(grader, outputs, items, ctx)
    seconds = (time.perf_counter() - started) / len(outputs)
    for outcome in out:
        outcome.seconds = seconds
    return out
