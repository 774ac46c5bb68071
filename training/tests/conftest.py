"""Tests of the training tooling: its modules live in ``training/`` (not installed), so that
folder goes on ``sys.path``, as it is for a script run as ``python training/<script>.py``."""

from __future__ import annotations

import sys
from pathlib import Path

TRAINING = Path(__file__).resolve().parent.parent
if str(TRAINING) not in sys.path:
    sys.path.insert(0, str(TRAINING))
