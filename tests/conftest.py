from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Keep the suite deterministic and light on a 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
