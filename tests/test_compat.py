"""Each private scikit-learn name daskgmm uses still exists and behaves as relied upon."""

from __future__ import annotations

from numbers import Integral

import pytest
import sklearn
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError

from daskgmm import _compat


def test_interval_and_str_options_validate():
    class Est(BaseEstimator):
        _parameter_constraints = {
            "n": [_compat.Interval(Integral, 1, None, closed="left")],
            "mode": [_compat.StrOptions({"a", "b"})],
        }

        def __init__(self, n=1, mode="a"):
            self.n = n
            self.mode = mode

    Est()._validate_params()
    with pytest.raises(InvalidParameterError, match="must be an int in the range"):
        Est(n=0)._validate_params()
    with pytest.raises(ValueError, match="must be a str among"):
        Est(mode="c")._validate_params()


def test_scikit_learn_in_supported_range():
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    assert (1, 6) <= (major, minor) < (1, 11), sklearn.__version__
