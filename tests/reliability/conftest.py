"""tests/reliability: the faults of issue 11 (kill points, locks, W&B after resume, full disks) and
bad inputs named in one line. The probe's small test helpers (tiny_lm, fake_probe) live in tests/probe."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probe"))
