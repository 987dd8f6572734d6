from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Keep the suite deterministic and light on a 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _tflite_export_only_in_litert_tests(request, monkeypatch):
    """With the [litert] extra installed a search also writes best/model.tflite (~25 s of
    conversion per run); only tests marked ``litert`` pay for that, so the default suite takes the
    same time with and without the extra."""
    if request.node.get_closest_marker("litert") is None:
        import nas.search

        monkeypatch.setattr(nas.search, "litert_available", lambda: False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_space():
    """A space small enough to train a supernet over in seconds (10 classes, 12-16 px)."""
    from search_spaces import SearchSpace, StageChoices

    return SearchSpace(
        name="tiny-test",
        resolutions=(12, 16),
        stem_channels=8,
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), stride=1),
            StageChoices(expansions=(2, 4), channels=(8, 16), repeats=(1, 2), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 4), channels=(16, 24), repeats=(1, 2), kernel_sizes=(3,), stride=2),
        ),
        last_channels=32,
        num_classes=10,
    )


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> str:
    """600 of scikit-learn's digits as an .npz (x: N x 8 x 8 uint8, y), a small real dataset."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:600] * (255 / 16)).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "digits600.npz"
    np.savez(path, x=x, y=digits.target[:600].astype(np.int64))
    return str(path)
