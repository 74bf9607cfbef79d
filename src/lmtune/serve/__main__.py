"""`python -m lmtune.serve serve --data-dir DIR --port 8000` and `python -m lmtune.serve keys create --project P`."""

import sys

from lmtune.serve.cli import main

sys.exit(main())
