"""A grader as GRPO's reward function, and as an evaluation metric over generated answers.

Usage:
    reward = grader_reward(cfg.method.grpo.grader, cache_dir=cfg.model.cache_dir)
    reward(prompts, completions, references)      # one float per completion; references carry the items
    grader_values(grader, answers, references, cache_dir)   # the same, as `lmtune eval`'s metric

Judges load in this process (built-in names, hub ids or local folders); python graders run in the
sandbox and are refused here when it cannot start. A sample whose grading fails scores 0, as in
OpenAI's reinforcement fine-tuning.
"""

from __future__ import annotations

from typing import Any, Callable

from lmtune.graders.grade import GradingContext, grade
from lmtune.graders.items import item_of
from lmtune.graders.judge import LocalJudges
from lmtune.graders.sandbox import GraderUnavailable, sandbox_problem
from lmtune.graders.similarity import Encoder
from lmtune.graders.spec import PythonGrader, leaves, parse_grader


def local_context(grader: Any, cache_dir: str) -> GradingContext:
    """Judges and encoder loaded in this process; GraderUnavailable for python graders without a sandbox."""
    if any(isinstance(sub, PythonGrader) for sub in leaves(grader)):
        problem = sandbox_problem()
        if problem is not None:
            raise GraderUnavailable(f"python graders are refused here: {problem}")
    return GradingContext(judges=LocalJudges(cache_dir), encoder=Encoder(cache_dir))


def grader_reward(grader: dict[str, Any], cache_dir: str) -> Callable[[list[str], list[str], list[str | None]], list[float]]:
    """GRPO's reward: the grader's reward of each completion against the item its example carries."""
    spec = parse_grader(grader)
    ctx = local_context(spec, cache_dir)

    def reward(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        return [o.reward for o in grade(spec, completions, [item_of(r) for r in references], ctx)]

    return reward


def grader_values(grader: dict[str, Any], outputs: list[str], references: list[str | None], cache_dir: str) -> list[float]:
    """The grader's reward of each generated answer (an evaluation metric; a failed sample scores 0)."""
    spec = parse_grader(grader)
    return [o.reward for o in grade(spec, outputs, [item_of(r) for r in references], local_context(spec, cache_dir))]
