"""OpenAI's grader objects as typed pydantic models (the shapes of `openai.types.graders`).

Usage:
    grader = parse_grader({"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                           "reference": "{{ item.answer }}", "operation": "eq"})
    grader.type            # "string_check"

Unknown keys are errors, as in the rest of lmtune's configs. A multi grader's `graders` is a map of
name -> grader (OpenAI's documented form); a single grader object is accepted too (the Python client's
type says so) and is known by its own name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

SIMILARITY_METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor",
                      "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
MAX_SOURCE_BYTES = 256 * 1024  # a python grader's source, OpenAI's documented limit


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StringCheckGrader(Spec):
    type: Literal["string_check"]
    name: str = Field(min_length=1, max_length=256)
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(Spec):
    type: Literal["text_similarity"]
    name: str = Field(min_length=1, max_length=256)
    input: str
    reference: str
    evaluation_metric: Literal[SIMILARITY_METRICS]  # type: ignore[valid-type]


class PythonGrader(Spec):
    type: Literal["python"]
    name: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1)
    image_tag: str | None = None
    """Accepted for compatibility; every python grader runs in lmtune's one sandbox."""

    @field_validator("source")
    @classmethod
    def _size(cls, value: str) -> str:
        if len(value.encode()) > MAX_SOURCE_BYTES:
            raise ValueError(f"python grader source is over {MAX_SOURCE_BYTES // 1024} KiB")
        return value


class ContentPart(Spec):
    type: Literal["input_text", "output_text"]
    text: str


class JudgeMessage(Spec):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | ContentPart | list[str | ContentPart]
    type: Literal["message"] | None = None

    def text(self) -> str:
        """The message's text (parts joined)."""
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(p if isinstance(p, str) else p.text for p in parts)


class SamplingParams(Spec):
    max_completions_tokens: int | None = Field(None, gt=0, le=4096)
    reasoning_effort: str | None = None
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class ScoreModelGrader(Spec):
    type: Literal["score_model"]
    name: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)
    range: list[float] | None = None
    sampling_params: SamplingParams | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not value[0] < value[1]):
            raise ValueError("range must be two numbers [low, high] with low < high")
        return value

    def bounds(self) -> tuple[float, float]:
        """(low, high) of the score, [0, 1] unless `range` says otherwise."""
        return (self.range[0], self.range[1]) if self.range else (0.0, 1.0)


class LabelModelGrader(Spec):
    type: Literal["label_model"]
    name: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _labels(self) -> "LabelModelGrader":
        if len(set(self.labels)) != len(self.labels) or any(not label for label in self.labels):
            raise ValueError("labels must be distinct non-empty strings")
        missing = [p for p in self.passing_labels if p not in self.labels]
        if missing:
            raise ValueError(f"passing_labels {missing} are not among labels {self.labels}")
        return self


Leaf = Annotated[Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader,
                       LabelModelGrader], Field(discriminator="type")]


class MultiGrader(Spec):
    type: Literal["multi"]
    name: str = Field(min_length=1, max_length=256)
    graders: dict[str, Leaf] = Field(min_length=1)
    calculate_output: str = Field(min_length=1, max_length=4096)

    @field_validator("graders", mode="before")
    @classmethod
    def _one_grader(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" in value and isinstance(value.get("type"), str):
            return {str(value.get("name", "grader")): value}
        return value

    @model_validator(mode="after")
    def _formula(self) -> "MultiGrader":
        from lmtune.graders.formula import parse_formula

        for key in self.graders:
            if not key.isidentifier():
                raise ValueError(f"graders: the name {key!r} is not usable in calculate_output "
                                 "(letters, digits and _, not starting with a digit)")
        parse_formula(self.calculate_output, set(self.graders))
        return self


Grader = Annotated[Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader,
                         LabelModelGrader, MultiGrader], Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(Grader)


def parse_grader(data: Any) -> Grader:
    """A grader object from its JSON form (pydantic's ValidationError names a bad field)."""
    return _ADAPTER.validate_python(data)


def leaves(grader: Grader) -> list[Grader]:
    """The grader itself, or a multi grader's sub-graders."""
    return list(grader.graders.values()) if isinstance(grader, MultiGrader) else [grader]
