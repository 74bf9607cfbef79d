"""Settings of `lmtune serve`: where data lives, what may be trained, how jobs and inference behave.

Usage:
    cfg = ServeConfig(data_dir="/srv/lmtune", port=8000)
    cfg = load_serve_config("serve.yaml", data_dir="/srv/lmtune")   # YAML file + command-line values
    cfg.db_path, cfg.blob_dir, cfg.runs_dir                         # derived paths

The server writes the resolved settings to <data_dir>/serve.json so its worker processes use the
same values. Everything under data_dir is private to the service's user (folders 0700, files 0600).

Threads: unset, training_threads and inference_threads split the cores this process may use
(os.sched_getaffinity) so that a chat answered while a job trains does not fight it for every core:
inference gets a quarter of the cores (at least 1, at most 8), each worker's training child an equal
share of the rest (at least 1). On 2 cores with 1 worker: 1 and 1; on 16 cores: 4 and 12.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
MAX_INFERENCE_THREADS = 8  # generation of one short reply gains little beyond this; training gets the rest


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_threads(cores: int, workers: int) -> tuple[int, int]:
    """(training threads per worker, inference threads) for `cores` cores: the documented default split."""
    inference = min(MAX_INFERENCE_THREADS, max(1, cores // 4))
    return max(1, (cores - inference) // workers), inference


class ServeConfig(BaseModel):
    """Settings of the OpenAI-compatible service."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data_dir: str = "lmtune-data"
    """Folder holding the SQLite database, uploaded files (blobs/), runs/ and per-job logs (jobs/)."""
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?(\+psycopg)?://")
    """PostgreSQL database shared by several replicas, e.g. postgresql://lmtune@db/lmtune (null: SQLite in data_dir)."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port to listen on."""
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    """Largest accepted upload; bigger ones get 413."""
    adapter_cache_size: int = Field(4, ge=1)
    """Fine-tuned models (adapters) kept loaded for inference, least recently used evicted first."""
    base_models: list[str] = Field(default_factory=lambda: ["smollm2-135m-instruct", "tiny-llama"])
    """Base models that can be fine-tuned and served (built-in names or local folders)."""
    workers: int = Field(1, ge=1)
    """Worker processes; each trains one job at a time, taking queued jobs fairly across projects (docs/scale.md)."""
    executor: Literal["local", "ray"] = "local"
    """Where jobs train: "local", child processes of the workers; "ray", Ray tasks on the cluster's nodes
    (data_dir must then be a path every node reaches; docs/scale.md)."""
    ray_address: str = "auto"
    """The Ray cluster of executor "ray": "auto" (the one `ray start` runs on this machine), host:port
    (its GCS address) or ray://host:port (Ray Client)."""
    job_gpus: float = Field(0.0, ge=0)
    """GPUs each job asks its Ray node for (executor "ray"; its CPUs are training_threads)."""
    start_workers: bool = True
    """Start the worker processes together with the HTTP server (off: run `lmtune.serve.worker` yourself)."""
    eval_at_end: bool = False
    """Run the base-vs-fine-tuned comparison at the end of each job (minutes on a CPU; off by default)."""
    checkpoint_every: int = Field(50, gt=0)
    """Training steps between checkpoints; pause and restart continue from the latest one."""
    keep_checkpoints: int = Field(3, ge=1)
    """Checkpoints kept on disk per job (the checkpoint list keeps every one recorded)."""
    default_n_epochs: int = Field(3, gt=0)
    """Epochs a job's "auto" n_epochs starts from, before it is fitted to the file's size (docs/serve.md)."""
    default_batch_size: int = Field(8, gt=0)
    """Largest batch_size an "auto" batch size takes (about 0.2 % of the training examples, at least 1)."""
    default_learning_rate_multiplier: float = Field(1.0, gt=0)
    """An "auto" learning_rate_multiplier at batch size 8, scaled by sqrt(batch_size / 8) (the rate is 2e-4
    times the multiplier)."""
    default_beta: float = Field(0.1, gt=0)
    """DPO beta when a job says "auto"."""
    max_seq_len: int = Field(1024, gt=0)
    """data.max_seq_len of every job."""
    training_threads: int | None = Field(None, gt=0)
    """training.num_threads of every job (null: the default split, the cores left by inference over the workers)."""
    inference_threads: int | None = Field(None, gt=0)
    """PyTorch threads used by the server for generation (null: the default split, a quarter of the cores, 1-8)."""
    max_tokens_limit: int = Field(2048, gt=0)
    """Largest max_tokens a completion request may ask for."""
    max_running_jobs_per_project: int | None = Field(None, gt=0)
    """Jobs of one project that may train at once (null: as many as there are workers); the rest wait queued."""
    requests_per_minute: int | None = Field(None, gt=0)
    """Requests one API key may make per minute (null: unlimited); more get 429 with retry-after."""
    tokens_per_minute: int | None = Field(None, gt=0)
    """Prompt plus completion tokens one API key may use per minute on completions (null: unlimited)."""
    poll_seconds: float = Field(0.5, gt=0)
    """How often a worker looks for new jobs, cancellations, metrics and checkpoints."""
    reinforcement_max_new_tokens: int = Field(256, gt=0)
    """Longest completion a reinforcement job samples (method.grpo.max_new_tokens)."""
    grader_cpu_seconds: int = Field(30, gt=0)
    """CPU seconds a python grader's sandbox may use per /graders/run call."""
    grader_wall_seconds: float = Field(60.0, gt=0)
    """Wall-clock seconds after which a python grader's sandbox is killed."""
    grader_memory_mb: int = Field(1024, ge=64)
    """Address space of a python grader's sandbox in MiB."""
    console: bool = True
    """Serve the web console under /console (sign-in with an API key; see docs/console.md)."""
    console_session_hours: float = Field(8.0, gt=0)
    """How long a console sign-in lasts before the browser must sign in again."""
    console_runs_dir: str | None = None
    """Folder of `lmtune train` runs whose reports the console lists to every signed-in key (null: none)."""

    @property
    def root(self) -> Path:
        """The data folder as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.root / "lmtune.db"

    @property
    def database(self) -> str:
        """What the Store opens: database_url, else the SQLite file in the data folder."""
        return self.database_url or str(self.db_path)

    @property
    def replica(self) -> str:
        """This server's name among replicas sharing a database: host and data folder."""
        return f"{socket.gethostname()}:{self.root}"

    @property
    def blob_dir(self) -> Path:
        """Uploaded and generated files, named by file id."""
        return self.root / "blobs"

    @property
    def runs_dir(self) -> Path:
        """Run folders of the jobs (output.dir of every job)."""
        return self.root / "runs"

    @property
    def jobs_dir(self) -> Path:
        """Per-job config.yaml and train.log."""
        return self.root / "jobs"

    def project_cache(self, project: str) -> Path:
        """data.cache_dir of the project's jobs: its prepared data and baselines, inside the data folder."""
        return self.root / "cache" / project

    def with_thread_split(self) -> ServeConfig:
        """These settings with unset thread counts filled in by the default split of the usable cores."""
        training, inference = split_threads(usable_cores(), self.workers)
        return self.model_copy(update={"training_threads": self.training_threads or training,
                                       "inference_threads": self.inference_threads or inference})

    def make_root(self) -> Path:
        """Create the data folder, private to the service's user."""
        self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        self.root.chmod(PRIVATE_DIR)  # also when it existed already, e.g. made by a test or an admin
        return self.root

    @property
    def settings_file(self) -> Path:
        """The resolved settings, written by the server for its workers."""
        return self.root / "serve.json"

    def save(self) -> Path:
        """Write the resolved settings to <data_dir>/serve.json."""
        self.make_root()
        fd = os.open(self.settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self.model_dump(mode="json"), indent=2))
        self.settings_file.chmod(PRIVATE_FILE)  # a file from an older version may be 0644
        return self.settings_file


def load_serve_config(path: str | Path | None = None, **values: Any) -> ServeConfig:
    """Settings from a YAML or JSON file (optional) with non-None keyword values on top."""
    tree: dict[str, Any] = {}
    if path is not None:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    tree.update({k: v for k, v in values.items() if v is not None})
    return ServeConfig.model_validate(tree)
