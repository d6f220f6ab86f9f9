"""Shared test fixtures: where the shared data and golden vectors live."""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a busy machine (several test runs on 2 cores) libgomp's
# spin-waiting made small-model forwards ~40x slower. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CICO_SHARED_DIR", REPO.parent / "shared"))
GOLDEN_DIR = Path(os.environ.get("CICO_GOLDEN_DIR", SHARED / "golden"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout (real DAVIS/OVIS samples, spec, golden vectors)."""
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder not found: {SHARED} (set CICO_SHARED_DIR)")
    return SHARED
