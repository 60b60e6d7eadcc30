import math

import numpy as np
import pytest

from opforce_tutorial.analysis import histogram, js_divergence, js_floor, pmf


def test_js_limits_and_symmetry():
    p = np.array([0.2, 0.3, 0.5])
    q = np.array([0.5, 0.4, 0.1])
    assert js_divergence(p, p) == 0.0
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert 0 < js_divergence(p, q) < math.log(2)
    with pytest.raises(ValueError, match="share bins"):
        js_divergence(p, q[:2])


def test_js_floor_shrinks_like_one_over_n():
    ref = np.exp(-np.linspace(-3, 3, 40) ** 2)
    f1, f2 = js_floor(ref, 1_000), js_floor(ref, 10_000)
    assert f2 < f1
    assert f1 / f2 == pytest.approx(10, rel=0.35)


def test_histogram_and_pmf():
    edges = np.linspace(-1, 1, 5)
    p = histogram([-0.9, -0.2, 0.1, 0.2, 2.0], edges)
    assert p.tolist() == [0.2, 0.2, 0.4, 0.0]  # the sample outside the edges is lost mass
    f = pmf(p, edges, kbt=1.0)
    assert np.isnan(f[3]) and np.nanmin(f) == 0.0
    assert f[0] == pytest.approx(math.log(2))
