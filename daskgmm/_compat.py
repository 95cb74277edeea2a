"""The one place that imports private scikit-learn names.

scikit-learn's parameter-validation helpers give ``GaussianMixture``'s exact
error messages for bad constructor arguments. They are private API, so they are
imported here only, the supported range is pinned in ``pyproject.toml``
(scikit-learn >= 1.6, < 1.11) and ``tests/test_compat.py`` checks each import.
"""

from __future__ import annotations

from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["Interval", "StrOptions"]
