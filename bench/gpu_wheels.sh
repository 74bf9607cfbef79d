#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what bench/gpu_check.sh carries to an offline GPU machine:
#
#     bench/gpu_wheels.sh [DIR]          # default .gpu; run after `make setup`
#
# DIR/wheels: the packages the GPU image lacks or has in other versions (python 3.12, manylinux
# x86-64, no dependencies: the image has torch, numpy, tokenizers, safetensors, huggingface_hub,
# pyarrow, pandas, xxhash, pyyaml); the versions are the ones this checkout's .venv tests with.
# DIR/smollm2: SmolLM2's tokenizer and config (the llama shapes of the GPU check use its vocabulary).
# DIR/gsm8k: the GSM8K files (../shared does not travel). DIR is added to git's exclude list:
# wheels are never committed. Then, on the device tool: carry DIR, run `bench/gpu_check.sh --carry DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu}
PY=.venv/bin/python
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/$DEST/" "$exclude" 2>/dev/null || echo "/$DEST/" >>"$exclude"
rm -rf "$DEST/wheels"
mkdir -p "$DEST/wheels"

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
# transformers without `kernels` (it would fetch hub kernels, and the machine is offline); trl and
# datasets for the TRL peers; liger-kernel for both sides; pydantic for lmtune's config. trl and
# liger-kernel are not in .[dev]: when absent here they take pyproject's bench pin and the tested version.
PACKAGES="transformers peft accelerate datasets dill multiprocess pydantic pydantic-core annotated-types
typing-inspection"
pins=(trl=="$(version trl 2>/dev/null || echo 1.16.0)" liger-kernel=="$(version liger-kernel 2>/dev/null || echo 0.8.5)")
for name in $PACKAGES; do pins+=("$name==$(version "$name")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/wheels" "${pins[@]}"

"$PY" - "$DEST" <<'EOF'
import shutil
import sys
from pathlib import Path

from lmtune.config import ModelConfig
from lmtune.model.load import load_tokenizer, resolve_source

dest = Path(sys.argv[1])
folder = dest / "smollm2"
folder.mkdir(parents=True, exist_ok=True)
cfg = ModelConfig(name="smollm2-135m-instruct")
load_tokenizer(cfg).save_pretrained(folder)
shutil.copy(Path(resolve_source(cfg)) / "config.json", folder / "config.json")
gsm8k = dest / "gsm8k"
gsm8k.mkdir(exist_ok=True)
source = Path("..") / "shared" / "data" / "gsm8k"
for split, lines in (("train", 2000), ("test", 200)):  # far more than the check reads
    rows = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
    (gsm8k / f"{split}.jsonl").write_text("".join(rows), encoding="utf-8")
EOF
du -sh "$DEST"
ls "$DEST/wheels"
