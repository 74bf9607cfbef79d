"""The training path stays light: libraries only evaluation or plotting needs are imported where used."""

from __future__ import annotations

import subprocess
import sys

# scikit-learn brings pandas and pyarrow; rouge-score brings nltk; together ~150 MB resident per run.
HEAVY = ("matplotlib", "sklearn", "pandas", "pyarrow", "nltk", "sacrebleu", "rouge_score")


def test_training_modules_do_not_import_evaluation_libraries():
    code = ("import sys, lmtune.train.loop, lmtune.train.methods, lmtune.model.load, lmtune.model.adapters, "
            "lmtune.data.formats, lmtune.data.encode; print(' '.join(sorted(m for m in "
            f"{HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_the_default_service_and_training_do_not_import_ray():
    # Ray is an extra (lmtune[cluster]); only executor "ray" may load it.
    code = ("import sys, lmtune.cli, lmtune.serve.app, lmtune.serve.worker_loop, lmtune.pipeline.training; "
            "from lmtune.execute.base import make_executor; make_executor('local'); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
