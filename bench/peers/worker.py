"""Subprocess entry point: one training run of one system, or one evaluation, per process.

    python -m bench.peers.worker train SYSTEM SPEC.json       # writes <spec.out_dir>/result.json
    python -m bench.peers.worker eval SPEC.json ADAPTER|-     # prints one JSON line

Each run gets its own process so its peak resident memory is its own and no state leaks between
systems (thread pools, allocator caches, imported kernels).
"""

from __future__ import annotations

import json
import sys

from bench.peers.common import SYSTEMS, TRL_SYSTEMS, Spec, set_threads, write_result


def main(argv: list[str]) -> None:
    """Dispatch `train SYSTEM SPEC` or `eval SPEC ADAPTER`."""
    if len(argv) == 3 and argv[0] == "train" and argv[1] in SYSTEMS:
        spec = Spec.load(argv[2])
        set_threads(spec)
        if argv[1] == "hf-trainer":
            from bench.peers.hf_trainer import run
            record = run(spec)
        elif argv[1] in TRL_SYSTEMS:
            from bench.peers.trl_sft import run as run_trl
            record = run_trl(spec, argv[1])
        else:
            from bench.peers.lmtune_fit import run as run_lmtune
            record = run_lmtune(spec, argv[1])
        write_result(spec, {"system": argv[1], **record})
    elif len(argv) == 3 and argv[0] == "eval":
        spec = Spec.load(argv[1])
        set_threads(spec)
        from bench.peers.evaluate import run as run_eval
        print(json.dumps(run_eval(spec, None if argv[2] == "-" else argv[2])))
    else:
        systems = ",".join(SYSTEMS)
        sys.exit(f"usage: python -m bench.peers.worker train {{{systems}}} SPEC.json | eval SPEC.json ADAPTER")


if __name__ == "__main__":
    main(sys.argv[1:])
