"""/v1/fine_tuning/alpha/graders/run and /validate: OpenAI's grader endpoints on lmtune's graders.

Usage:
    app.include_router(router, prefix="/v1")
    client.fine_tuning.alpha.graders.run(grader={...}, model_sample="4", item={"answer": "4"})
    client.fine_tuning.alpha.graders.validate(grader={...})

A judge (score_model, label_model) must be a base model the server offers or one of the project's
fine-tuned models. A template variable the item lacks is a 400 naming it; a sample's own failure (an
exception or a limit in a python grader, a judge answer without a score) is a 200 with reward 0 and
OpenAI's error flag and details, as OpenAI answers. Python graders need the sandbox: where it cannot
start, both routes refuse them with a 400 saying why.
"""

from __future__ import annotations

import ast
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from lmtune.graders.grade import GradingContext, Outcome, grade
from lmtune.graders.sandbox import Limits, sandbox_problem
from lmtune.graders.similarity import Encoder
from lmtune.graders.spec import Grader, LabelModelGrader, PythonGrader, ScoreModelGrader, leaves
from lmtune.serve.auth import Project
from lmtune.serve.config import ServeConfig
from lmtune.serve.errors import APIError
from lmtune.serve.query import refuse_unknown_query

router = APIRouter(tags=["graders"], dependencies=[Depends(refuse_unknown_query)])


class GraderRun(BaseModel):
    """POST /v1/fine_tuning/alpha/graders/run."""

    model_config = ConfigDict(extra="forbid")
    grader: Grader
    model_sample: str
    item: Any = None


class GraderValidate(BaseModel):
    """POST /v1/fine_tuning/alpha/graders/validate."""

    model_config = ConfigDict(extra="forbid")
    grader: Grader


class ServeJudges:
    """Judges served by the model pool: base models and the project's own fine-tuned models."""

    def __init__(self, request: Request, project: str):
        self.pool, self.project = request.app.state.pool, project

    def __call__(self, model: str, conversations: list[list[tuple[str, str]]], max_new_tokens: int,
                 temperature: float, seed: int) -> list[str]:
        """One answer of `model` to each conversation."""
        loaded = self.pool.get(model, self.project)
        prompts = [loaded.chat_prompt(conv) for conv in conversations]
        return [g.text for g in loaded.complete(prompts, max_new_tokens, temperature, 1.0, [], seed)]


def check_grader(request: Request, project: str, grader: Grader, fine_tuned_judges: bool = True) -> None:
    """400 when the grader cannot run here: a judge model that is not offered (training jobs judge with
    base models only: their judge loads in the training process), python without a sandbox, python
    source that does not parse or defines no grade()."""
    cfg, store = request.app.state.cfg, request.app.state.store
    for sub in leaves(grader):
        if isinstance(sub, (ScoreModelGrader, LabelModelGrader)):
            known = sub.model in cfg.base_models or fine_tuned_judges and store.one(
                "SELECT id FROM models WHERE id=? AND project=? AND deleted=0", (sub.model, project))
            if not known:
                also = " or a fine-tuned model of this project" if fine_tuned_judges else ""
                raise APIError(400, f"grader {sub.name!r}: model {sub.model!r} is not available as a judge; use "
                               f"one of {', '.join(cfg.base_models)}{also}",
                               param="grader.model", code="model_not_available")
        if isinstance(sub, PythonGrader):
            problem = sandbox_problem()
            if problem is not None:
                raise APIError(400, f"python graders are refused on this server: {problem}",
                               param="grader.source", code="python_grader_unavailable")
            check_source(sub)


def check_source(grader: PythonGrader) -> None:
    """400 unless the source parses and defines grade() at its top level (parsed, never run, here)."""
    try:
        tree = ast.parse(grader.source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise APIError(400, f"grader {grader.name!r}: the source does not parse: {err}",
                       param="grader.source", code="invalid_grader") from None
    if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "grade"
               for node in tree.body):
        raise APIError(400, f"grader {grader.name!r}: the source must define grade(sample, item) at its top level",
                       param="grader.source", code="invalid_grader")


def run_view(grader: Grader, outcome: Outcome) -> dict[str, Any]:
    """OpenAI's GraderRunResponse for one outcome."""
    scores = dict(outcome.sub_rewards) if outcome.sub_rewards else (
        {} if outcome.flag else {grader.name: outcome.reward})
    sampled = [s.model for s in leaves(grader) if isinstance(s, (ScoreModelGrader, LabelModelGrader))]
    return {
        "reward": outcome.reward,
        "metadata": {"name": grader.name, "type": grader.type, "errors": outcome.errors(),
                     "execution_time": outcome.seconds, "scores": scores, "token_usage": None,
                     "sampled_model_name": sampled[0] if sampled else None},
        "sub_rewards": dict(outcome.sub_rewards),
        "model_grader_token_usage_per_model": {},
    }


@router.post("/fine_tuning/alpha/graders/run")
def run_grader(request: Request, project: Project, body: GraderRun) -> dict[str, Any]:
    """Grade one model sample against one item."""
    check_grader(request, project, body.grader)
    item = {} if body.item is None else body.item
    ctx = request.app.state.grading
    ctx = GradingContext(judges=ServeJudges(request, project), encoder=ctx.encoder, limits=ctx.limits)
    (outcome,) = grade(body.grader, [body.model_sample], [item], ctx)
    if outcome.flag == "invalid_variable_error":
        raise APIError(400, f"grader {body.grader.name!r}: {outcome.detail}", param="item", code="invalid_variable")
    return run_view(body.grader, outcome)


@router.post("/fine_tuning/alpha/graders/validate")
def validate_grader(request: Request, project: Project, body: GraderValidate) -> dict[str, Any]:
    """Check a grader without running it; the grader back as it was understood."""
    check_grader(request, project, body.grader)
    return {"grader": body.grader.model_dump(exclude_none=True)}


def grading_state(cfg: ServeConfig) -> GradingContext:
    """What the app keeps for graders between requests: the MiniLM encoder (loaded on first use), the limits."""
    limits = Limits(cpu_seconds=cfg.grader_cpu_seconds, wall_seconds=cfg.grader_wall_seconds,
                    memory_bytes=cfg.grader_memory_mb << 20)
    return GradingContext(encoder=Encoder(), limits=limits)
