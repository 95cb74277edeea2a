"""Stepwise (mini-batch) EM: running statistics and step sizes. Pure NumPy, no Dask.

Stepwise EM (Cappé & Moulines 2009; Liang & Klein 2009) keeps a running
average ``s`` of the expected sufficient statistics per unit of sample weight
and, after every mini-batch, moves it towards the batch's statistics
``s_batch`` (computed under the current parameters) and runs the usual M-step::

    s <- (1 - eta_t) s + eta_t s_batch,   eta_t = (t + learning_offset) ** -learning_decay

with ``t`` the updates done before this one. The first update starts from
the statistics the initial parameters stand for and takes ``eta`` = 1 - 1e-9:
the first batch's statistics, but for the components it holds no sample of,
which keep their initial moments (:meth:`Running.start`). For
``learning_decay`` in (0.5, 1] the steps satisfy Robbins-Monro's conditions.

The statistics are kept as *moments*: each component's share of the weight,
its mean and its covariance (unregularised, in the covariance type's shape).
A convex combination of two sets of moments is then the pooled-moment formula
(Chan, Golub & LeVeque): exact, and free of the cancellation that summed
``x x^T`` would suffer far from the origin. Both models' M-steps take moments
(scikit-learn's ``nk, xk, sk``), so the Bayesian mixture takes the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._stats import SuffStats, gaussian_moments

__all__ = ["Running", "regularised", "step_size"]

Float = NDArray[np.floating]

#: The arrays :meth:`Running.to_arrays` writes (and :meth:`Running.from_arrays` requires).
ARRAY_NAMES = ("nk", "means", "covariances", "score", "weight", "n_steps", "n_samples")


#: The weight of the first batch against the statistics of initial parameters.
FIRST_STEP = 1.0 - 1e-9


def step_size(n_steps: int, decay: float, offset: float) -> float:
    """The weight of the next batch after ``n_steps`` updates: 1 for the first."""
    return 1.0 if n_steps == 0 else float((n_steps + offset) ** -decay)


def regularised(covariances: Float, covariance_type: str, reg_covar: float) -> Float:
    """``covariances`` with ``reg_covar`` added to their diagonal (negative: removed)."""
    out = np.array(covariances, dtype=np.float64)
    if covariance_type == "full":
        idx = np.arange(out.shape[-1])
        out[:, idx, idx] += reg_covar
    elif covariance_type == "tied":
        out.flat[:: out.shape[0] + 1] += reg_covar
    else:
        out += reg_covar
    return out


@dataclass(frozen=True, eq=False)
class Running:
    """The running statistics of stepwise EM, and what the steps need to go on.

    Parameters
    ----------
    covariance_type : str
    nk : ndarray of shape (n_components,)
        Each component's (weighted) responsibility per unit of sample weight.
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Unregularised, in the covariance type's shape (``tied``: pooled over
        the components, as scikit-learn's).
    score : float
        The last batch's score per unit weight (the mean log-likelihood; for the
        variational mixture ``sum r log r``) under the parameters it was read
        with: what a stepwise epoch reports as its bound. Not averaged: the
        first batches, scored under the initial parameters, would dominate an
        average for most of an epoch.
    weight : float
        Sample weight seen by all updates.
    n_steps : int
        Updates done.
    n_samples : int
        Rows seen by all updates.
    """

    covariance_type: str
    nk: Float
    means: Float
    covariances: Float
    score: float
    weight: float = 0.0
    n_steps: int = 0
    n_samples: int = 0

    @classmethod
    def of(cls, stats: SuffStats, means: Float, shift: Float, covariance_type: str) -> Running:
        """A batch's statistics (accumulated around ``means`` and ``shift``) as moments:
        one update's worth."""
        if not stats.weight_sum > 0:
            raise ValueError(
                "sample_weight sums to zero in a batch; a batch needs a positive weight."
            )
        nk, xk, sk = gaussian_moments(stats, means, shift, covariance_type, 0.0)
        w = float(stats.weight_sum)
        return cls(covariance_type, nk / w, xk, sk, float(stats.loglik) / w, w, 1, stats.n_samples)

    @classmethod
    def start(cls, moments: tuple[Float, Float, Float], covariance_type: str) -> Running:
        """The statistics that initial parameters stand for (each component's share,
        mean and unregularised covariance): no update, no rows.

        The first update gives them a negligible weight (:data:`FIRST_STEP`),
        where taking the first batch whole would collapse the components it
        holds no sample of (blocks of sorted or spatially clustered data) onto
        ``reg_covar``: so blended, such a component keeps its initial mean and
        covariance and only loses weight until its samples come. Weighing them
        more would slow the first epoch where the initial covariances are poor
        (``random_from_data``'s are ``reg_covar``).
        """
        share, means, covariances = (np.asarray(a, np.float64) for a in moments)
        return cls(covariance_type, share / share.sum(), means, covariances, 0.0, 0.0, 0, 0)

    def step(self, batch: Running, eta: float) -> Running:
        """The running statistics after an update that gives ``batch`` the weight ``eta``
        (1: a pass of batch EM, whose statistics replace the running ones)."""
        counts = {
            "weight": self.weight + batch.weight,
            "n_steps": self.n_steps + batch.n_steps,
            "n_samples": self.n_samples + batch.n_samples,
        }
        if eta >= 1.0 and self.n_samples:  # a batch-EM pass: its statistics replace these
            return replace(batch, **counts)
        eta = min(eta, FIRST_STEP)
        wa, wb = (1.0 - eta) * self.nk, eta * batch.nk
        nk = wa + wb
        safe = np.maximum(nk, np.finfo(np.float64).tiny)
        fa, fb = wa / safe, wb / safe
        means = fa[:, None] * self.means + fb[:, None] * batch.means
        da, db = self.means - means, batch.means - means
        ct = self.covariance_type
        if ct == "full":
            cov = fa[:, None, None] * (self.covariances + da[:, :, None] * da[:, None, :])
            cov += fb[:, None, None] * (batch.covariances + db[:, :, None] * db[:, None, :])
        elif ct == "tied":  # pooled: the within-component scatter over the total weight
            scatter = (1.0 - eta) * self.nk.sum() * self.covariances
            scatter = scatter + eta * batch.nk.sum() * batch.covariances
            scatter += (da * wa[:, None]).T @ da + (db * wb[:, None]).T @ db
            cov = scatter / safe.sum()
        elif ct == "diag":
            cov = fa[:, None] * (self.covariances + da**2) + fb[:, None] * (
                batch.covariances + db**2
            )
        else:  # spherical: the mean of the diagonal
            cov = fa * (self.covariances + np.mean(da**2, axis=1))
            cov += fb * (batch.covariances + np.mean(db**2, axis=1))
        return Running(ct, nk, means, cov, batch.score, **counts)

    def scale(self, n_rows: int | None = None) -> float:
        """The weight the statistics stand for: the weight seen, or that of ``n_rows``
        rows at the mean weight per row seen (a fit that knows its data's size)."""
        if n_rows is None or not self.n_samples:
            return self.weight
        return n_rows * self.weight / self.n_samples

    def moments(self, scale: float, reg_covar: float) -> tuple[Float, Float, Float]:
        """scikit-learn's ``nk, xk, sk`` for an M-step: sizes for ``scale`` units of
        weight, means, covariances with ``reg_covar`` on the diagonal."""
        return (
            self.nk * scale,
            self.means,
            regularised(self.covariances, self.covariance_type, reg_covar),
        )

    # ------------------------------------------------------------- arrays
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (what checkpoints and model files store, never pickled)."""
        return {
            "nk": self.nk,
            "means": self.means,
            "covariances": self.covariances,
            "score": np.float64(self.score),
            "weight": np.float64(self.weight),
            "n_steps": np.int64(self.n_steps),
            "n_samples": np.int64(self.n_samples),
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, Any], covariance_type: str, shape: tuple[int, int], where: str
    ) -> Running:
        """Running statistics read back, validated (``where`` names the file)."""
        from ._covariance import get_covariance_model

        K, D = shape
        missing = sorted(set(ARRAY_NAMES) - set(arrays))
        if missing:
            raise ValueError(f"{where}: the stepwise statistics lack {', '.join(missing)}.")
        a = {n: np.asarray(arrays[n]) for n in ARRAY_NAMES}
        expected = {
            "nk": (K,),
            "means": (K, D),
            "covariances": get_covariance_model(covariance_type).covariances_shape(K, D),
        }
        for name in ARRAY_NAMES:
            want = expected.get(name, ())
            kind = "i" if name.startswith("n_") and name != "nk" else "f"
            if a[name].shape != want or a[name].dtype.kind != kind:
                raise ValueError(
                    f"{where}: stepwise statistic {name!r} is {a[name].dtype}{a[name].shape}, "
                    f"expected {'integer' if kind == 'i' else 'float'}{want}."
                )
            negative = name in ("nk", "weight", "n_steps", "n_samples") and np.any(a[name] < 0)
            if negative or not np.all(np.isfinite(a[name])):
                raise ValueError(f"{where}: stepwise statistic {name!r} holds invalid values.")
        return cls(
            covariance_type,
            a["nk"].astype(np.float64),
            a["means"].astype(np.float64),
            a["covariances"].astype(np.float64),
            float(a["score"]),
            float(a["weight"]),
            int(a["n_steps"]),
            int(a["n_samples"]),
        )
