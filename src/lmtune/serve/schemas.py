"""Request bodies of the API as pydantic models, following the OpenAI API reference.

Usage:
    body = CreateJob.model_validate({"model": "tiny-llama", "training_file": "file-..."})
    body.hyperparameters_for()        # the method's hyperparameters (or the legacy top-level ones)

Unknown fields are errors (400 naming the field), like OpenAI's "Unrecognized request argument".
Responses are plain dicts shaped like the openai package's types (see views in the route modules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from lmtune.graders.spec import Grader

Auto = Literal["auto"]


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric hyperparameter: integers from low, or numbers above low (exclusive)."""

    low: float
    high: float
    integer: bool

    def describe(self) -> str:
        """e.g. "'auto' or an integer from 1 to 1000"."""
        if self.integer:
            return f"'auto' or an integer from {self.low:g} to {self.high:g}"
        return f"'auto' or a number greater than {self.low:g} and at most {self.high:g}"

    def check(self, value: Any) -> Any:
        """The value when it is allowed; ValueError naming the range otherwise."""
        if value == "auto":
            return value
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if number and self.integer and float(value).is_integer():
            value = int(value)
        fits = number and (isinstance(value, int) or not self.integer) and (
            self.low <= value <= self.high if self.integer else self.low < value <= self.high)
        if not fits:
            raise ValueError(f"must be {self.describe()}; got {value!r}")
        return value


# The one definition of the hyperparameters' ranges (the API reference in docs/serve.md quotes them).
RANGES = {"n_epochs": Range(1, 1000, integer=True), "batch_size": Range(1, 1000, integer=True),
          "learning_rate_multiplier": Range(0, 100, integer=False), "beta": Range(0, 100, integer=False),
          "num_processes": Range(1, 64, integer=True),
          "eval_interval": Range(1, 100000, integer=True), "eval_samples": Range(1, 1000, integer=True),
          "compute_multiplier": Range(0, 16, integer=False)}


def _hyperparameter(name: str) -> Any:
    """The field type of hyperparameter `name`: "auto" or a value in RANGES[name], said plainly when not.

    The bounds also go into the OpenAPI schema; the before-validator answers first, naming the range
    (pydantic's own message for a union would be "Input should be 'auto'").
    """
    rule = RANGES[name]
    bounded = Annotated[int, Field(ge=rule.low, le=rule.high)] if rule.integer else \
        Annotated[float, Field(gt=rule.low, le=rule.high)]
    return Annotated[Auto | bounded, BeforeValidator(rule.check), Field(description=f"{rule.describe()}.")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(Body):
    """Supervised hyperparameters; each a number or "auto" (the server's documented default)."""

    n_epochs: _hyperparameter("n_epochs") = "auto"
    batch_size: _hyperparameter("batch_size") = "auto"
    learning_rate_multiplier: _hyperparameter("learning_rate_multiplier") = "auto"
    num_processes: _hyperparameter("num_processes") = "auto"
    """lmtune's own: data-parallel processes of the job (training.num_processes; "auto": 1); batch_size is per process."""


class DpoHyperparameters(Hyperparameters):
    """DPO hyperparameters: the supervised ones plus beta."""

    beta: _hyperparameter("beta") = "auto"


class ReinforcementHyperparameters(Hyperparameters):
    """Reinforcement hyperparameters: the supervised ones plus OpenAI's RFT knobs (docs/serve.md maps them)."""

    eval_interval: _hyperparameter("eval_interval") = "auto"
    eval_samples: _hyperparameter("eval_samples") = "auto"
    compute_multiplier: _hyperparameter("compute_multiplier") = "auto"
    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"
    """Accepted for compatibility; lmtune's models do not reason separately."""


class Reinforcement(Body):
    grader: Grader
    hyperparameters: ReinforcementHyperparameters | None = None


class Supervised(Body):
    hyperparameters: Hyperparameters | None = None


class Dpo(Body):
    hyperparameters: DpoHyperparameters | None = None


class Method(Body):
    """What is trained: supervised fine-tuning, direct preference optimisation or reinforcement (GRPO)."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: Reinforcement | None = None

    @model_validator(mode="after")
    def _grader(self) -> "Method":
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method type 'reinforcement' needs method.reinforcement.grader")
        return self


class CreateJob(Body):
    """POST /v1/fine_tuning/jobs."""

    model: str = Field(min_length=1, max_length=512)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    """Legacy top-level hyperparameters (supervised only); method.*.hyperparameters wins."""

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 metadata keys")
            if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
                raise ValueError("metadata keys are at most 64 characters, values at most 512")
        return value

    @property
    def method_type(self) -> str:
        """supervised, dpo or reinforcement."""
        return self.method.type if self.method else "supervised"

    def hyperparameters_for(self) -> Hyperparameters:
        """The hyperparameters given for the job's method (all "auto" when none were given)."""
        if self.method and self.method.type == "dpo":
            return (self.method.dpo and self.method.dpo.hyperparameters) or DpoHyperparameters()
        if self.method and self.method.type == "reinforcement" and self.method.reinforcement:
            return self.method.reinforcement.hyperparameters or ReinforcementHyperparameters()
        given = self.method.supervised.hyperparameters if self.method and self.method.supervised else None
        return given or self.hyperparameters or Hyperparameters()


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class FunctionCall(Body):
    name: str
    arguments: str
    """The call's arguments: a JSON object written as a string, as OpenAI returns them."""


class ToolCallIn(Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    """Required except on an assistant message that calls tools."""
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message content as one string (text parts joined; none is empty)."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionDefinition(Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Body):
    name: str


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    """{"type": "text" | "json_object"} or {"type": "json_schema", "json_schema": {...}}."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class Sampling(Body):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> list[str]:
        """The stop strings as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def token_limit(self, default: int) -> int:
        """max_completion_tokens, else max_tokens, else `default`."""
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(Sampling):
    """POST /v1/completions (plain text continuation, no chat template)."""

    prompt: str | list[str]

    def prompts(self) -> list[str]:
        """The prompt(s) as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
