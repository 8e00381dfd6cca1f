"""``python -m mrface.training RECIPE [key=value ...]`` (what torchrun launches on every rank)."""

import sys

from mrface.training.cli import main

sys.exit(main())
