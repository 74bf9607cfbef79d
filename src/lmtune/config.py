"""The typed run configuration: the single source of defaults for the CLI, YAML files and the API.

Usage:
    cfg = RunConfig.model_validate({"model": {"name": "minilm-l6"}, "method": {"task": "classification"}})
    cfg.training.learning_rate     # every field typed, with its default and docstring

Reading YAML files, `--set` overrides and the printed schema live in lmtune.config_file.
"""

from __future__ import annotations

from pathlib import Path

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lmtune.config_method import MethodConfig
from lmtune.config_section import Section
from lmtune.config_tune import TuneConfig


class ModelConfig(Section):
    name: str = "smollm2-135m-instruct"
    """Built-in name (smollm2-135m-instruct, minilm-l6, tiny-llama), hub id, local HF directory or .gguf file."""
    from_config: dict[str, Any] | None = None
    """Build a randomly initialised model from this transformers config dict (tests, benchmarks)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Dtype of the weights in memory; mixed precision is chosen in training.precision."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel passed to transformers."""
    trust_remote_code: bool = False
    """Allow a hub model to run its own Python code; off unless you trust the repository."""
    cache_dir: str = "~/.cache/lmtune"
    """Where converted built-in models (GGUF -> safetensors) are cached, and prepared data and baseline
    scores unless `data.cache_dir` is set."""
    load_in_4bit: bool = False
    """QLoRA: load the base weights in 4-bit NF4 with bitsandbytes (CUDA only)."""


class SplitConfig(Section):
    validation: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction held out for validation when no validation_file is given."""
    test: float = Field(0.1, ge=0.0, lt=1.0)
    """Fraction held out for test when no test_file is given."""


class DataConfig(Section):
    train_file: str | None = None
    """Training data: .jsonl/.json/.csv/.parquet/.txt (optionally .gz), or a TweetEval-style text file."""
    validation_file: str | None = None
    """Validation data; split off train_file when absent."""
    test_file: str | None = None
    """Test data; split off train_file when absent."""
    format: Literal[
        "auto", "text", "prompt_completion", "alpaca", "messages", "transcript", "labelled", "preference"
    ] = "auto"
    """Record format; `auto` detects it from the keys of the records."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Rename columns before format detection, e.g. {question: prompt, answer: completion}."""
    template: Literal["auto", "tokenizer", "human-assistant", "alpaca", "chatml"] = "auto"
    """Prompt template; `auto` uses the tokenizer's chat template when it has one, else chatml."""
    system_prompt: str | None = None
    """System message prepended to every conversation that has none."""
    instruction: str | None = None
    """For labelled text trained by generation: the user prompt, with {text} and {labels} placeholders."""
    label_names: list[str] | None = None
    """Label set; read from a mapping.txt beside TweetEval-style files or in a folder above, else from the data."""
    context: str | None = None
    """Task context put in the prompt of labelled text, e.g. `The tweets are about abortion.` for a stance
    target: the default instruction starts with it, a custom one places it with {context}."""
    normalize_whitespace: bool = True
    """Labelled text (classification heads and label prompts): strip the ends and make every run of
    whitespace one space before tokenising. WordPiece tokenizers (BERT, MiniLM) do this anyway; byte-level
    BPE ones (Llama, SmolLM2) see whitespace, so formatting left by data collection can become a label
    cue (TweetEval irony: two trailing spaces where a removed #irony hashtag was, in training only)."""
    train_on_prompt: bool = False
    """Also put loss on prompt/user tokens (default: only on answers)."""
    max_seq_len: int = Field(1024, gt=0)
    """Examples longer than this many tokens are truncated (and counted in the warnings)."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    """Fractions for the deterministic train/validation/test split."""
    seed: int = 42
    """Seed of the split and of sampling with max_train_examples."""
    max_train_examples: int | None = Field(None, gt=0)
    """Use a deterministic sample of this many training examples (after dedup and split)."""
    max_validation_examples: int | None = Field(None, gt=0)
    """Use a deterministic sample of this many validation examples (evaluated every eval_every steps)."""
    max_test_examples: int | None = Field(None, gt=0)
    """Use a deterministic sample of this many test examples (for the base vs fine-tuned comparison)."""
    dedup: bool = True
    """Remove exact duplicates (normalised text hash)."""
    near_duplicate_threshold: float = Field(0.6, gt=0.0, le=1.0)
    """Jaccard of character 5-grams at or above which two examples are near duplicates (texts of 6-30
    words also match when one word apart); 0.6 is about 15 % of the words differing."""
    leakage: Literal["error", "warn", "drop"] = "error"
    """What to do when a validation/test example (near-)duplicates a training example."""
    cache_dir: str | None = None
    """Where prepared data and baseline scores are cached (they hold copies of the examples); unset:
    `model.cache_dir`. The service gives each project its own, inside its data folder."""


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Modules that get adapters: all linear layers except the output head, or a list of names."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r)."""


class EarlyStoppingConfig(Section):
    metric: str = "eval_loss"
    """Validation metric watched for early stopping and for choosing the best checkpoint."""
    mode: Literal["min", "max"] = "min"
    """Whether lower (min) or higher (max) values of the metric are better."""
    patience: int | None = Field(3, ge=1)
    """Stop after this many evaluations without improvement; null disables early stopping."""
    min_delta: float = Field(0.0, ge=0.0)
    """Smallest change that counts as an improvement."""


class TrainingConfig(Section):
    epochs: float = Field(1.0, gt=0)
    """Number of passes over the training data (fractions allowed)."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides epochs)."""
    batch_size: int = Field(8, gt=0)
    """Examples per micro-batch on each process."""
    grad_accum: int = Field(1, gt=0)
    """Micro-batches accumulated per optimizer step."""
    learning_rate: float = Field(2e-4, gt=0)
    """Peak learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (never applied to biases, norms and embeddings)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    """Fraction of the optimizer steps spent warming up linearly."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this value; null disables clipping."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Mixed precision: auto = bf16 where the hardware supports it, else fp32."""
    frozen_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the weights that do not train (the base model under LoRA, the body under a head-only
    probe): auto = bf16 for LoRA adapters trained in bf16 mixed precision, else as loaded (model.dtype).
    Autocast would cast fp32 frozen weights to bf16 again in every forward; stored in bf16 they are
    read as they are and take half the memory. Trained weights stay in model.dtype. auto leaves
    head-only probes alone: they are saved whole, so a cast body would be saved rounded."""
    max_tokens_per_batch: int | None = Field(None, gt=0)
    """Fill each micro-batch by tokens instead of by a count of examples: examples are taken in the
    epoch's order while the micro-batch's tokens stay within this budget (an example longer than the
    budget goes alone); `batch_size` then only sizes evaluation batches. The loss is still divided by
    the whole step's supervised tokens, so a step equals one large batch of the same examples."""
    kernels: Literal["auto", "liger", "none"] = "auto"
    """Fused Triton kernels (Liger: RMSNorm, RoPE, SwiGLU, and the cross-entropy fused with the output
    head at supervised positions): auto = liger on CUDA when liger-kernel is installed (`lmtune[gpu]`),
    else none; liger without CUDA or without the package is an error. CPU runs keep the plain path."""
    packed_attention: Literal["auto", "flash", "flex", "mask"] = "auto"
    """Attention inside packed rows: flash (flash-attn's varlen kernel), flex (PyTorch FlexAttention with a
    document mask; CUDA only), mask (the model's own kernel with a dense block-diagonal mask). auto = flash on CUDA
    when flash-attn is installed, else flex on CUDA, mask on CPU. Only for packed training batches of a
    model loaded with the default `sdpa`; evaluation and generation keep `model.attn_implementation`."""
    compile: bool = False
    """torch.compile each repeated block (decoder layer) in place with dynamic shapes: compiled once in
    the first step, reused by every layer and batch length. Off by default: on a 2-core CPU it compiles
    for about a minute and then runs slower than eager (docs/performance.md); not measured on a GPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    chunked_loss: bool = True
    """Language modelling: take the cross-entropy through the output head a few hundred positions at a
    time, so the [tokens, vocabulary] logits never exist at once (same loss and gradients; ignored for
    models that change their logits after the head, e.g. Gemma 2's softcapping)."""
    packing: bool = True
    """Concatenate the micro-batch's examples into one padding-free row (attention stays per example)."""
    group_by_length: bool = False
    """Without packing: batch examples of similar length to reduce padding."""
    eval_every: int | None = Field(None, gt=0)
    """Evaluate every N optimizer steps (null: once per epoch) and at the end."""
    save_every: int | None = Field(None, gt=0)
    """Write a checkpoint every N optimizer steps (null: at every evaluation)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many recent checkpoints to keep besides the best one."""
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    """Early stopping and best-checkpoint selection."""
    log_every: int = Field(1, gt=0)
    """Write metrics.jsonl every N optimizer steps."""
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
    """Extra experiment trackers besides metrics.jsonl."""
    progress_bar: bool = True
    """Show a progress bar on the terminal."""
    num_processes: int = Field(1, ge=1)
    """Data-parallel processes of the run: `lmtune train` starts them through `accelerate launch` (gloo on
    CPU, one GPU each otherwise). batch_size is per process, so the global batch is batch_size x grad_accum x
    num_processes; the loss of a step is divided by its supervised tokens over all processes (docs/scale.md)."""
    num_threads: int | None = Field(None, gt=0)
    """CPU threads for PyTorch (null: PyTorch's default, one per core, less the cores that other processes
    keep busy when the run starts, with a warning; docs/training.md)."""
    release_freed_memory: bool = False
    """CPU runs on Linux (glibc): give every allocation of 256 KiB or more its own memory mapping, so an
    activation freed between layers returns to the system at once. glibc otherwise raises its mapping
    threshold to 32 MiB as tensors are freed and keeps freed memory in its heap, where a tensor still alive
    above it pins it. Measured on SmolLM2 LoRA (docs/performance.md): with gradient checkpointing the peak
    falls from 2.5 to 1.4 GB, but every new mapping is page-faulted afresh and steps run ~40 % slower;
    off by default, on for the lowest memory."""


# Instructions the prompt search tries besides the run's own (docs/evaluation.md).
SEARCH_INSTRUCTIONS = (
    "Which of these labels fits the text best: {labels}?\n\nText: {text}",
    "{text}\n\nQuestion: which one of {labels} describes the text above? Answer with the label only.",
)


def check_metric(metric: str) -> None:
    """Raise ValueError unless `metric` is a headline metric eval.metric accepts (labels checked later)."""
    if metric in ("macro_f1", "accuracy", "macro_recall"):
        return
    names = [n.strip() for n in metric.removeprefix("f1:").split(",")]
    if not metric.startswith("f1:") or not all(names):
        raise ValueError(f"eval.metric must be macro_f1, accuracy, macro_recall, f1:<label> or "
                         f"f1:<label>,<label>,..., got {metric!r}")


class EvalConfig(Section):
    at_end: bool = True
    """Compare the base and the fine-tuned model on the test split at the end of training."""
    max_new_tokens: int = Field(16, gt=0)
    """Tokens generated per test example."""
    batch_size: int = Field(16, gt=0)
    """Examples per generation batch."""
    few_shot: int = Field(4, ge=0)
    """Examples from the training split shown before each test prompt in the few-shot baseline (0: none)."""
    seed: int = 0
    """Seed of the few-shot example choice and of the bootstrap intervals."""
    forgetting_blocks: int = Field(8, ge=0)
    """256-token blocks of Python's documentation scored before and after training (0: skip)."""
    baseline_model: str | None = None
    """Causal LM for the prompt-only baselines of a classification run (null: the run's own model when it
    can generate, else the built-in smollm2-135m-instruct)."""
    positive_label: str | None = None
    """Also report the F1 of this class (e.g. `irony`, TweetEval irony's official metric)."""
    metric: str = "macro_f1"
    """Headline metric of labelled data (first column of the report, chooses the searched prompt):
    macro_f1, accuracy, macro_recall, `f1:<label>` (one class) or `f1:<label>,<label>` (F1 averaged
    over those classes, e.g. `f1:against,favor` for SemEval stance)."""
    baselines: list[Literal["generated", "constrained"]] = Field(default_factory=lambda: ["generated", "constrained"])
    """How the base model's prompt baselines are scored: `generated` (answer freely, parse the label) and
    `constrained` (labelled data: the label with the highest log-likelihood, zero-shot, k-shot and the
    validation-searched prompt). [] skips the baselines; the fine-tuned model is scored either way."""
    calibrate: bool = True
    """Constrained scoring: contextual calibration, dividing each label's probability by its probability
    for the content-free inputs below (Zhao et al. 2021), which removes the prompt's bias towards a label."""
    content_free: list[str] = Field(default_factory=lambda: ["N/A"], min_length=1)
    """Texts put in the prompt in place of an example to measure that bias (their probabilities are averaged)."""
    prompt_search: bool = True
    """Constrained baselines: also try every search_instructions x search_shots prompt, calibrated or not, on
    the validation split, and report the best one (by eval.metric) on the test split."""
    search_instructions: list[str] = Field(default_factory=lambda: list(SEARCH_INSTRUCTIONS), min_length=1)
    """Instruction templates the prompt search tries besides the run's own ({text}, {labels}, {context})."""
    search_shots: list[int] = Field(default_factory=lambda: [0, 4], min_length=1)
    """Numbers of training examples in the prompt that the prompt search tries."""
    shot_selection: Literal["order", "similar"] = "order"
    """k-shot generated baselines: `order` takes seeded training examples, one label after another, the same
    for every prompt; `similar` takes for each prompt the k training examples nearest to it by the built-in
    MiniLM sentence embedding (minilm-l6). Constrained baselines always use `order` (their calibration
    needs one prompt for all examples)."""

    graders: list[dict[str, Any]] = Field(default_factory=list)
    """OpenAI grader objects (docs/graders.md) scored on every generated answer of chat data, reported as
    `grader_<name>` with a bootstrap 95 % interval; the item is the example's record (reinforcement data)
    or {reference_answer: the last assistant message}."""

    @field_validator("graders")
    @classmethod
    def _graders(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from lmtune.graders.spec import parse_grader

        parsed = [parse_grader(g).model_dump(exclude_none=True) for g in value]
        names = [g["name"] for g in parsed]
        if len(set(names)) != len(names):
            raise ValueError(f"eval.graders: two graders share a name in {names}")
        return parsed

    @model_validator(mode="after")
    def _check_eval(self) -> "EvalConfig":
        check_metric(self.metric)
        for template in self.search_instructions:
            if "{text}" not in template:
                raise ValueError(f"eval.search_instructions: {template!r} has no {{text}} placeholder")
        if any(k < 0 for k in self.search_shots):
            raise ValueError(f"eval.search_shots must be 0 or more, got {self.search_shots}")
        return self


class OutputConfig(Section):
    dir: str = "runs"
    """Folder that holds the run folders."""
    name: str = "run"
    """Run name; the folder is <dir>/<name>-<timestamp>."""


class RunConfig(Section):
    """A whole fine-tuning run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base model."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Data files, format, template and splits."""
    method: MethodConfig = Field(default_factory=MethodConfig)
    """What is trained and how."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA settings (used when method.peft is lora)."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Optimisation and the training loop."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation after training."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    """Where the run is written."""
    tune: TuneConfig = Field(default_factory=TuneConfig)
    """Hyperparameter search of `lmtune tune` (ignored by `lmtune train`)."""

    def data_cache(self) -> Path:
        """The folder of prepared data and baseline scores: `data.cache_dir`, else `model.cache_dir`."""
        return Path(self.data.cache_dir or self.model.cache_dir).expanduser()

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.data.split.validation + self.data.split.test >= 1.0:
            raise ValueError("data.split.validation + data.split.test must be below 1")
        for key in self.tune.space:
            if not _is_leaf(key):
                raise ValueError(f"tune.space: {key!r} is not a config value (e.g. training.learning_rate)")
        return self


def _is_leaf(path: str) -> bool:
    """Whether dotted `path` names a value (not a section) of RunConfig."""
    node: Any = RunConfig
    for part in path.split("."):
        fields = getattr(node, "model_fields", None) if isinstance(node, type) else None
        if not fields or part not in fields:
            return False
        node = fields[part].annotation
    return not (isinstance(node, type) and issubclass(node, BaseModel))
