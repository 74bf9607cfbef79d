#!/usr/bin/env bash
# The prepared GPU check of issue 28: lmtune against trl-liger and trl-best on one GPU, then each of
# lmtune's GPU levers alone, within a time budget (450 s by default; both parts run under `timeout`,
# so the check ends inside 8 minutes); JSON + Markdown under the output folder.
#
#     bench/gpu_wheels.sh                                   # once, on a machine with PyPI (makes .gpu/)
#     bench/gpu_check.sh --carry .gpu --out "$OUT"          # on the GPU machine (the device tool: carry .gpu)
#     bench/gpu_check.sh --device cpu --out /tmp/check      # dry mode: tiny model, a few steps, no GPU
#
# GPU: installs .gpu/wheels into a private folder first on the path (the image's own packages stay),
# builds the random-weight llama-1b (SmolLM2's vocabulary), and runs `python -m bench.peers` twice:
# 1. trl-best, trl-liger, lmtune: 20 steps of 16 GSM8K chats, validation loss on 32 test chats;
# 2. lmtune again, lmtune-no-kernels, lmtune-mask-attention, lmtune-token-budget, lmtune-compile (one
#    lever changed each)
#    in what is left of the time budget (cut by `timeout`; part 1's results are written before it starts).
# Dry mode: the tiny shape, 2 steps of 2 chats, lmtune and whichever peers run here (trl-best when trl
# is installed; trl-liger needs CUDA), then lmtune-no-kernels as part 2.
# Options: --device cuda|cpu, --out DIR (default bench/results/gpu-check), --carry DIR (default .gpu),
# --python PATH (default python3), --budget SECONDS (default 450 on CUDA, 1200 in the dry mode),
# --model-config NAME (default llama-1b), --systems "A B ..." (part 1's systems instead of the default,
# e.g. "trl-default lmtune-lowmem" for the memory target).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda OUT_DIR=bench/results/gpu-check CARRY=.gpu PY=python3 BUDGET= SHAPE=llama-1b SYSTEMS=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --carry) CARRY=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --model-config) SHAPE=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
# The dry mode's budget only guards against a hang: a loaded 2-core machine took 6-7 minutes for it.
[ -n "$BUDGET" ] || { [ "$DEVICE" = cuda ] && BUDGET=450 || BUDGET=1200; }
started=$(date +%s)
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu-check.log"
: >"$LOG"
say() { echo "[gpu_check $(( $(date +%s) - started )) s] $*" | tee -a "$LOG"; }

if [ "$DEVICE" = cuda ]; then
  [ -d "$CARRY/wheels" ] || { echo "no $CARRY/wheels: run bench/gpu_wheels.sh first and carry $CARRY" >&2; exit 2; }
  SITE=$(mktemp -d /tmp/lmtune-site.XXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$CARRY"/wheels/*.whl
  export PYTHONPATH="$SITE"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >>"$LOG" 2>&1 || true
  COMMON=(--device cuda --model-config "$SHAPE" --model "$CARRY/smollm2" --gsm8k "$CARRY/gsm8k"
          --batch-size 16 --grad-accum 1 --steps 20 --rounds 1 --eval-examples 32 --peak-seconds 2)
  MAIN=(trl-best trl-liger lmtune)
  LEVERS=(lmtune lmtune-no-kernels lmtune-mask-attention lmtune-token-budget lmtune-compile)  # lmtune again: the spread
else
  COMMON=(--device cpu --model-config tiny --steps 2 --batch-size 2 --grad-accum 1 --rounds 1 --threads 1
          --eval-examples 4 --peak-seconds 0.2 --peak-size 256)
  MAIN=(lmtune)
  if "$PY" -c "import trl" 2>/dev/null; then MAIN+=(trl-best); else say "trl is not installed: trl-best left out"; fi
  say "trl-liger left out: Liger's kernels need CUDA"
  # On the CPU kernels and packed attention resolve to the plain path already: one variant checks part 2.
  LEVERS=(lmtune-no-kernels)
fi
[ -z "$SYSTEMS" ] || read -r -a MAIN <<<"$SYSTEMS"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, transformers, peft, lmtune; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$LOG"

left=$(( BUDGET - ($(date +%s) - started) ))
say "part 1 ($left s left): ${MAIN[*]}"
timeout "$left" "$PY" -m bench.peers "${COMMON[@]}" --systems "${MAIN[@]}" --skip-generate --skip-serve \
  --results-dir "$OUT_DIR" --name gpu-check 2>&1 | tee -a "$LOG"
left=$(( BUDGET - ($(date +%s) - started) ))
if [ "$left" -gt 60 ]; then
  say "part 2 (levers, $left s left): ${LEVERS[*]}"
  timeout "$left" "$PY" -m bench.peers "${COMMON[@]}" --systems "${LEVERS[@]}" --skip-generate \
    --skip-serve --results-dir "$OUT_DIR" --name gpu-check-levers 2>&1 | tee -a "$LOG" \
    || say "part 2 stopped (time budget or failure); part 1's results stand"
else
  say "part 2 skipped: $left s left of the $BUDGET s budget"
fi
say "done; results in $OUT_DIR"
