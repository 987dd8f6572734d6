from __future__ import annotations

import math

import numpy as np
import pytest

from search_spaces import make_divisible, mobilenet_v2


@pytest.mark.parametrize("width", [math.inf, -math.inf, math.nan, 0, 0.0, -0.5, -1, True, "1.0", None])
def test_width_mult_must_be_a_finite_positive_number(width):
    with pytest.raises(ValueError, match=r"^width_mult must be a finite number > 0, but got "):
        mobilenet_v2(width)


@pytest.mark.parametrize("width", [1, 0.35, np.float64(1.4), np.float32(0.75), 1e-6, 1e3])
def test_width_mult_accepts_positive_numbers(width):
    assert mobilenet_v2(width) == mobilenet_v2(float(width))


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_make_divisible_rejects_non_finite_values(value):
    with pytest.raises(ValueError, match="must be a finite number"):
        make_divisible(value)
