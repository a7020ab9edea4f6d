"""`python -m arena`: the command line (`arena/cli.py`)."""

import os
import sys

if not sys.stderr.isatty():
    # Libraries' progress bars (tqdm, and huggingface_hub's switch for them) read these once, when first
    # imported, so they are set before anything loads: in a log file their redraws are lines of carriage
    # returns, and the arena's own lines already say what is loading and how long it took.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from arena.cli import main  # noqa: E402

raise SystemExit(main())
