"""The EM loop: map + tree-reduce + M-step + convergence + callbacks.

Each iteration is exactly one ``dask.compute``: the per-block E-step fused with
the statistics (:func:`daskgmm._stats.suffstats_chunk_many`), for every unfinished
restart from the same read of the block, added up by a tree
(:func:`daskgmm._reduction.map_reduce`). The M-step runs on the driver. The
log-likelihood reported for iteration ``t`` is that of the parameters the
iteration started from, exactly as scikit-learn's ``lower_bound_``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import dask.array as da
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._checkpoint import FitState
from ._fingerprint import Digest, content_digest_chunk, stats_and_digest_chunk
from ._init import restart_seeds
from ._reduction import _nbytes, map_reduce
from ._scheduler import one_blas_thread
from ._state import EMResult, IterationInfo, StepPosition, Stepwise
from ._stats import EStepParams, GMMParams, gaussian_moments, suffstats_chunk_many
from ._stepwise import Running, regularised, step_size

__all__ = [
    "EMResult",
    "GaussianEM",
    "IterationInfo",
    "MixtureModel",
    "VariationalEM",
    "best_restart",
    "fit_em",
    "fit_em_many",
    "fit_mixture",
    "fit_stepwise_many",
    "memory_needed",
    "stepwise_update",
]

logger = logging.getLogger(__name__)


class _GaussianStatistics:
    """What both mixtures of this module share: a pass computes the Gaussian kernels'
    statistics (:func:`daskgmm._stats.suffstats_chunk_many`) of every restart around one
    shift, parameters know their own E-step constants and arrays, and the update goes
    through the components' moments (``from_moments`` and ``bound`` are each model's)."""

    missing: bool
    covariance_type: str
    reg_covar: float

    def estep_constants(self, params: Sequence[Any]) -> tuple[EStepParams, ...]:
        return _estep_params(params)

    @property
    def chunk_stats(self) -> Callable[..., Any]:
        # The kernel itself (or a partial of it), not a method: workers unpickle
        # it by reference, and importing daskgmm._stats (NumPy only) costs them
        # nothing; importing this module would bring scikit-learn's k-means and
        # the file layer (~65 MiB each).
        if self.missing:
            return functools.partial(suffstats_chunk_many, missing=True)
        return suffstats_chunk_many

    def update(self, stats: Any, params: Any, constants: EStepParams) -> tuple[Any, float]:
        """Both models' M-step: the components' moments of the totals, the model's own
        update from them (:meth:`from_moments`) and its bound."""
        self._check_weights(stats)
        moments = gaussian_moments(
            stats, params.means, constants.shift, self.covariance_type, self.reg_covar
        )
        new = self.from_moments(moments, params)
        return new, self.bound(new, stats.loglik, stats.weight_sum)

    @staticmethod
    def _check_weights(stats: Any) -> None:
        if not stats.weight_sum > 0:
            raise ValueError("sample_weight sums to zero; at least one weight must be positive.")

    @staticmethod
    def to_arrays(params: Any) -> dict[str, np.ndarray]:
        return params.to_arrays()


def _estep_params(params: Sequence[Any]) -> tuple[EStepParams, ...]:
    """E-step constants of the restarts of one pass, all around one shift.

    One shift lets the pass centre every tile once for all restarts: the first
    restart's own (the weighted mean of its means; restarts of one dataset
    have theirs close together), so that it computes exactly as it would alone.
    A restart whose means sit too far from it for the quadratic features takes
    the whitened path (:func:`daskgmm._kernels._use_quadratic`).
    """
    first = params[0].estep()
    return (first, *(p.estep(first.shift) for p in params[1:]))


class MixtureModel(Protocol):
    """What a model supplies to the fit driver (:func:`fit_mixture`, :func:`fit_em_many`).

    ``from_moments``, ``moments_of``, ``bound`` and the ``covariance_type`` and
    ``reg_covar`` attributes are needed by stepwise EM only
    (:func:`stepwise_capable`): a model whose statistics are the Gaussian ones.

    The driver owns restarts sharing each read, checkpoints and resume, the
    content check, convergence, the best restart and the warning; a model owns
    its parameters and its math. :class:`GaussianEM` is the Gaussian mixture's.
    Parameters (``P``) are any object; the model turns them into named float
    arrays and back for checkpoints.
    """

    #: Names what the parameters are in a checkpoint (a mismatch is refused).
    kind: str
    covariance_type: str
    reg_covar: float

    def initialize(self, X: da.Array, seeds: Sequence[int], sample_weight: Any) -> list[Any]:
        """Initial parameters, one per seed (each restart from its own seed)."""

    def estep_constants(self, params: Sequence[Any]) -> tuple[Any, ...]:
        """Per-pass constants of the restarts iterated in one pass (tiny; on the driver)."""

    def chunk_stats(self, block: np.ndarray, constants: tuple[Any, ...], *, sample_weight: Any,
                    row_offset: int) -> Any:  # fmt: skip
        """Pure NumPy: a block's statistics for every restart (``.parts``, associative ``+``)."""

    def update(self, stats: Any, params: Any, constants: Any) -> tuple[Any, float]:
        """The next parameters and the lower bound of ``params`` (the M-step)."""

    def from_moments(self, moments: tuple[np.ndarray, ...], params: Any) -> Any:
        """The M-step from scikit-learn's ``nk, xk, sk`` (stepwise EM's running statistics)."""

    def bound(self, params: Any, score: float, weight: float) -> float:
        """The lower bound from the samples' summed score over ``weight`` units of weight."""

    def moments_of(self, params: Any) -> tuple[np.ndarray, ...]:
        """The components' shares, means and unregularised covariances that ``params``
        stand for: where stepwise updates start from initial parameters."""

    def to_arrays(self, params: Any) -> dict[str, np.ndarray]:
        """Named float arrays of the parameters (what a checkpoint stores)."""

    def from_arrays(self, arrays: dict[str, np.ndarray], where: str) -> Any:
        """Parameters from :meth:`to_arrays`'s arrays, validated (``where`` names the file)."""


@dataclass(frozen=True)
class GaussianEM(_GaussianStatistics):
    """The Gaussian mixture as a :class:`MixtureModel`: shifted float64 statistics,
    scikit-learn's M-step and mean log-likelihood, k-means and the other initialisers.

    Parameters
    ----------
    covariance_type, reg_covar, n_components, init_params
        As in :class:`daskgmm.GaussianMixture`.
    weights_init, means_init, precisions_init : ndarray, optional
        Validated user-given initial parameters.
    missing : bool, default=False
        NaN entries are missing values (``missing='marginalize'``).
    summary : daskgmm._summary.Summary, optional
        The data's rows and per-feature moments, if a pass already made them (an
        unknown-length table's, or the standardisation's): k-means|| then reads
        the data once less.
    """

    covariance_type: str
    reg_covar: float
    n_components: int
    init_params: str = "kmeans"
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    missing: bool = False
    summary: Any = None

    @property
    def kind(self) -> str:
        return self.covariance_type

    def initialize(self, X: da.Array, seeds: Sequence[int], sample_weight: Any) -> list[Any]:
        from ._init import initialize_many

        return initialize_many(
            X,
            seeds=seeds,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            init_params=self.init_params,
            reg_covar=self.reg_covar,
            sample_weight=sample_weight,
            weights_init=self.weights_init,
            means_init=self.means_init,
            precisions_init=self.precisions_init,
            missing=self.missing,
            summary=self.summary,
        )

    def from_moments(self, moments: tuple[np.ndarray, ...], params: GMMParams) -> GMMParams:
        nk, means, covariances = moments
        return GMMParams.from_covariances(self.covariance_type, nk / nk.sum(), means, covariances)

    def moments_of(self, params: GMMParams) -> tuple[np.ndarray, ...]:
        covariances = regularised(params.covariances, self.covariance_type, -self.reg_covar)
        return params.weights, params.means, covariances

    def bound(self, params: GMMParams, score: float, weight: float) -> float:
        return score / weight  # the mean log-likelihood

    def from_arrays(self, arrays: dict[str, np.ndarray], where: str) -> GMMParams:
        from ._checkpoint import _params_from_arrays, check_params

        return check_params(_params_from_arrays(arrays, self.covariance_type, where), where)


@dataclass(frozen=True)
class VariationalEM(_GaussianStatistics):
    """The variational Bayesian Gaussian mixture as a :class:`MixtureModel`.

    The E-step is the Gaussian one with per-component constants, scoring each
    sample by ``sum r log r`` (:func:`daskgmm._bayesian.estep_params`); the
    update is scikit-learn's variational M-step and lower bound from the
    totals. Priors given as None are scikit-learn's defaults: ``1 / K``, 1, the
    data's mean, ``n_features``, the data's covariance; the data's moments come
    from a pass the initialisation makes anyway (one more for 'random_from_data').

    Parameters
    ----------
    covariance_type, reg_covar, n_components, init_params
        As in :class:`daskgmm.BayesianGaussianMixture`.
    prior_type : {'dirichlet_process', 'dirichlet_distribution'}
    weight_concentration_prior, mean_precision_prior, mean_prior,
    degrees_of_freedom_prior, covariance_prior
        Validated priors, or None for the defaults (with missing values: the
        moments of the initialisation's data, holes filled with the means).
    missing : bool, default=False
        NaN entries are missing values (``missing='marginalize'``).
    summary : daskgmm._summary.Summary, optional
        The data's rows and per-feature moments, if a pass already made them (an
        unknown-length table's, or the standardisation's): k-means|| then reads
        the data once less.
    """

    covariance_type: str
    reg_covar: float
    n_components: int
    init_params: str
    prior_type: str
    weight_concentration_prior: Any = None
    mean_precision_prior: Any = None
    mean_prior: Any = None
    degrees_of_freedom_prior: Any = None
    covariance_prior: Any = None
    missing: bool = False
    summary: Any = None

    @property
    def kind(self) -> str:
        return f"bayesian-{self.prior_type}-{self.covariance_type}"

    def initialize(self, X: da.Array, seeds: Sequence[int], sample_weight: Any) -> list[Any]:
        from ._bayesian import Priors, data_priors, update
        from ._init import initial_moments

        moments, totals = initial_moments(
            X,
            seeds=seeds,
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            init_params=self.init_params,
            reg_covar=self.reg_covar,
            sample_weight=sample_weight,
            totals=self.mean_prior is None or self.covariance_prior is None,
            missing=self.missing,
            summary=self.summary,
        )
        mean, covariance = (None, None)
        if totals is not None:
            mean, covariance = data_priors(totals, self.covariance_type, self.reg_covar)
        n_features = X.shape[1]
        priors = Priors(
            self.prior_type,
            1.0 / self.n_components
            if self.weight_concentration_prior is None
            else float(self.weight_concentration_prior),
            1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
            mean if self.mean_prior is None else np.asarray(self.mean_prior, np.float64),
            float(n_features)
            if self.degrees_of_freedom_prior is None
            else float(self.degrees_of_freedom_prior),
            covariance
            if self.covariance_prior is None
            else np.asarray(self.covariance_prior, np.float64),
        )
        return [update(nk, xk, sk, self.covariance_type, priors) for nk, xk, sk in moments]

    def from_moments(self, moments: tuple[np.ndarray, ...], params: Any) -> Any:
        from ._bayesian import update

        return update(*moments, self.covariance_type, params.priors)

    def bound(self, params: Any, score: float, weight: float) -> float:
        from ._bayesian import lower_bound

        return lower_bound(params, score)

    def moments_of(self, params: Any) -> tuple[np.ndarray, ...]:
        # sizes exactly (mean_precision = prior + nk); the posterior's point estimates
        # stand for the means and covariances the statistics had
        nk = params.mean_precision - params.priors.mean_precision_prior
        covariances = regularised(params.covariances, self.covariance_type, -self.reg_covar)
        return np.maximum(nk, 0.0), params.means, covariances

    def from_arrays(self, arrays: dict[str, np.ndarray], where: str) -> Any:
        from ._bayesian import BayesParams
        from ._checkpoint import CheckpointError

        try:
            return BayesParams.from_arrays(arrays, self.covariance_type, self.prior_type, where)
        except ValueError as err:
            raise CheckpointError(str(err)) from None


def stepwise_capable(model: Any) -> bool:
    """Whether ``model`` supplies what stepwise EM needs (Gaussian statistics as
    moments: :meth:`MixtureModel.from_moments`, ``moments_of`` and ``bound``)."""
    return all(hasattr(model, name) for name in ("from_moments", "moments_of", "bound"))


def memory_needed(
    block_rows: int,
    n_features: int,
    n_components: int,
    covariance_type: str,
    n_init: int,
    missing: bool = False,
) -> int:
    """About the bytes one block task of a pass holds at its peak, for a fit that cannot
    fit to be refused before its first pass.

    Per restart: the block's log-densities and responsibilities (and their
    working copy), ``3 x rows x K`` float64; the parameters, their E-step
    constants and the block's statistics, about ``4 x K x D x D`` float64
    (``full``), ``4 x K x D`` (``diag``, ``spherical``) or ``4 x D x D``
    (``tied``) plus the means. The block itself counts once, twice with missing
    values (a block's samples are regrouped by missingness pattern in float64).
    """
    K, D = n_components, n_features
    second = {"full": K * D * D, "tied": D * D, "diag": K * D, "spherical": K}[covariance_type]
    per_restart = 8 * (3 * block_rows * K + 4 * (second + K * D))
    return int(8 * block_rows * D * (2 if missing else 1) + n_init * per_restart)


def _statistics(
    X: da.Array,
    model: MixtureModel,
    params: list[Any],
    *,
    sample_weight: da.Array | None,
    split_every: int | None,
    held: list,
    with_digest: bool,
    blocks: Sequence[int] | None = None,
) -> tuple[tuple[Any, ...], Any, Digest | None]:
    """One graph over X's blocks (all, or ``blocks``): the statistics of every parameter
    set in ``params`` from one read, and the blocks' content digest if asked.

    Returns the E-step constants, the statistics per parameter set, the digest.
    """
    with one_blas_thread():  # tiny matrices; see one_blas_thread
        eps = model.estep_constants(params)
    chunk_fn = model.chunk_stats
    if with_digest:
        chunk_fn = functools.partial(stats_and_digest_chunk, chunk_fn)
    total = map_reduce(
        X,
        chunk_fn,
        eps,
        sample_weight=sample_weight,
        split_every=split_every,
        partial_nbytes=_nbytes(eps),  # the statistics: about the parameters' size
        hold=held,
        blocks=blocks,
    )
    if with_digest:
        return eps, total.stats.parts, total.digest
    return eps, total.parts, None


def fit_em_many(
    X: da.Array,
    restarts: Sequence[EMResult],
    *,
    model: MixtureModel | None = None,
    reg_covar: float = 0.0,
    tol: float,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    on_pass: Callable[[list[EMResult]], None] | None = None,
    on_digest: Callable[[Digest], None] | None = None,
) -> list[EMResult]:
    """Run EM for several restarts at once: one read of the data per iteration for all.

    Every pass computes the statistics of each unfinished restart from the same
    blocks; a restart drops out when it converges or reaches ``max_iter``.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Validated, one chunk along the features; persist it first if it fits in memory.
    restarts : sequence of EMResult
        Starting state of each restart (``EMResult(params, 0, -inf, (), False, init)``
        for a fresh one; a saved state to resume).
    model : MixtureModel, optional
        Its statistics, update and lower bound; default: the Gaussian mixture
        of the restarts' covariance type with ``reg_covar``.
    reg_covar, tol, max_iter
        As in :class:`daskgmm.GaussianMixture`.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    split_every : int, optional
        Fan-in of the reduction tree.
    callback : callable, optional
        Called with an :class:`IterationInfo` per restart after every iteration
        (progress bars). An exception it raises stops the fit.
    on_pass : callable, optional
        Called with the states of all restarts after every pass (checkpoints).
    on_digest : callable, optional
        Called with the content digest of ``X`` (and ``sample_weight``), computed
        in the first pass from the blocks it reads anyway, before that pass's
        results are used or saved; an exception it raises (data that differ
        from a checkpoint's) stops the fit.

    Returns
    -------
    list of EMResult
        Final state of each restart, in order.

    Raises
    ------
    ValueError
        NaN/inf in ``X`` (first pass), or a covariance that is not positive-definite.
    """
    states = list(restarts)
    if model is None:
        first = states[0].params
        model = GaussianEM(first.covariance_type, reg_covar, first.n_components)
    held: list = []  # the last pass's results, released after the next pass's graph
    while True:
        active = [i for i, s in enumerate(states) if not s.finished(max_iter)]
        if not active:
            return states
        tic = time.perf_counter()
        eps, totals, digest = _statistics(
            X,
            model,
            [states[i].params for i in active],
            sample_weight=sample_weight,
            split_every=split_every,
            held=held,
            with_digest=on_digest is not None,
        )
        if on_digest is not None:
            on_digest(digest)
            on_digest = None
        seconds = time.perf_counter() - tic
        infos = []
        for i, ep, stats in zip(active, eps, totals, strict=True):
            state = states[i]
            with one_blas_thread():
                params, lower_bound = model.update(stats, state.params, ep)
            running = None
            if stepwise_capable(model):  # the pass's statistics, for stepwise updates later
                batch = Running.of(stats, state.params.means, ep.shift, model.covariance_type)
                running = batch if state.running is None else state.running.step(batch, 1.0)
            change = lower_bound - state.lower_bound
            history = (*state.lower_bounds, lower_bound)
            states[i] = EMResult(
                params,
                state.n_iter + 1,
                lower_bound,
                history,
                abs(change) < tol,
                state.init,
                running,
            )
            logger.debug(
                "init %d iteration %d: lower bound %.8g, change %.3g (%.3fs)",
                state.init,
                state.n_iter + 1,
                lower_bound,
                change,
                seconds,
            )
            infos.append(
                IterationInfo(
                    state.init,
                    state.n_iter + 1,
                    lower_bound,
                    change,
                    params,
                    history,
                    abs(change) < tol,
                    seconds,
                )
            )
        if on_pass is not None:
            on_pass(list(states))
        if callback is not None:
            for info in infos:
                callback(info)


#: Seconds between two checkpoints inside a stepwise epoch (its end always saves),
#: unless the Dask config ``daskgmm.stepwise-save-seconds`` says otherwise: updates
#: come every few tens of milliseconds, an atomic save costs a few fsyncs.
STEP_SAVE_SECONDS = 1.0


def _step_save_seconds() -> float:
    import dask

    return float(dask.config.get("daskgmm.stepwise-save-seconds", STEP_SAVE_SECONDS))


def epoch_order(seed: int, epoch: int, n_blocks: int) -> np.ndarray:
    """The order in which a stepwise epoch visits the row blocks."""
    return np.random.RandomState([seed, epoch]).permutation(n_blocks)


def stepwise_update(
    model: MixtureModel,
    params: Any,
    running: Running | None,
    stats: Any,
    constants: Any,
    schedule: Any,
    n_rows: int | None = None,
) -> tuple[Any, Running]:
    """One stepwise update: the batch's ``stats`` (computed under ``params`` with
    ``constants``) moved into the running statistics with the schedule's step,
    then the M-step. Without running statistics, they start as those ``params``
    stand for (:meth:`Running.start`). The sizes stand for ``n_rows`` rows
    (default: the rows seen)."""
    with one_blas_thread():
        batch = Running.of(stats, params.means, constants.shift, model.covariance_type)
        if running is None:
            running = Running.start(model.moments_of(params), model.covariance_type)
        eta = step_size(running.n_steps, schedule.learning_decay, schedule.learning_offset)
        running = running.step(batch, eta)
        moments = running.moments(running.scale(n_rows), model.reg_covar)
        return model.from_moments(moments, params), running


def fit_stepwise_many(
    X: da.Array,
    restarts: Sequence[EMResult],
    *,
    model: MixtureModel,
    schedule: Stepwise,
    position: StepPosition,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    on_step: Callable[[list[EMResult], StepPosition], None] | None = None,
    on_digest: Callable[[Digest], None] | None = None,
) -> tuple[list[EMResult], StepPosition, bool]:
    """Epochs of stepwise EM for several restarts at once, from ``position`` on.

    Each update computes the statistics of ``schedule.blocks_per_step`` row
    blocks for every restart in one graph (one read of those blocks for all),
    moves each restart's running statistics towards them
    (:meth:`daskgmm._stepwise.Running.step`) and runs the M-step. The sizes in
    the statistics stand for the whole data (``n_samples`` rows at the mean
    weight seen), which the variational M-step's priors weigh against.

    Returns
    -------
    restarts : list of EMResult
        ``n_iter`` counts the epochs; ``lower_bounds`` gains, per epoch, the
        running score's bound (each batch scored under the parameters of its
        time); ``lower_bound`` is ``-inf``, so that batch EM afterwards does not
        compare its exact bound with that estimate.
    position : StepPosition
    checked : bool
        Whether ``on_digest`` was called (it is, with the digest of the first
        epoch's blocks, before that epoch's end is saved; or after one pass of
        its own when resuming inside the first epoch is impossible).
    """
    states = list(restarts)
    n_blocks, n_rows = X.numblocks[0], X.shape[0]
    done = position.epoch >= schedule.epochs or states[0].n_iter >= max_iter
    if (
        on_digest is not None
        and not done
        and position.digest is None
        and (position.epoch or position.block)
    ):  # the first epoch's digest is incomplete: one pass of its own
        on_digest(map_reduce(X, content_digest_chunk, sample_weight=sample_weight))
        on_digest = None
    checked = on_digest is None
    digest = None if on_digest is None else Digest(*(position.digest or (0, 0)))
    held: list = []
    while position.epoch < schedule.epochs and states[0].n_iter < max_iter:
        order = epoch_order(schedule.seed, position.epoch, n_blocks)
        tic = time.perf_counter()
        while position.block < n_blocks:
            blocks = order[position.block : position.block + schedule.blocks_per_step]
            eps, totals, read = _statistics(
                X,
                model,
                [s.params for s in states],
                sample_weight=sample_weight,
                split_every=split_every,
                held=held,
                with_digest=digest is not None,
                blocks=blocks,
            )
            if digest is not None:
                digest = digest + read
            for i, (state, ep, stats) in enumerate(zip(states, eps, totals, strict=True)):
                if not stats.weight_sum > 0:
                    continue  # blocks of zero weight teach nothing
                params, running = stepwise_update(
                    model, state.params, state.running, stats, ep, schedule, n_rows
                )
                states[i] = replace(state, params=params, running=running)
            block = position.block + len(blocks)
            if block == n_blocks and digest is not None:
                on_digest(digest)
                digest, checked = None, True
            position = StepPosition(
                position.epoch, block, None if digest is None else (digest.value, digest.n_rows)
            )
            if block < n_blocks and on_step is not None:
                on_step(list(states), position)
        seconds = time.perf_counter() - tic
        position = StepPosition(position.epoch + 1, 0)
        infos = []
        for i, state in enumerate(states):
            if state.running is None:
                raise ValueError(
                    "sample_weight sums to zero; at least one weight must be positive."
                )
            scale = state.running.scale(n_rows)
            bound = model.bound(state.params, state.running.score * scale, scale)
            previous = state.lower_bounds[-1] if state.lower_bounds else -math.inf
            history = (*state.lower_bounds, bound)
            states[i] = replace(
                state, n_iter=state.n_iter + 1, lower_bound=-math.inf, lower_bounds=history
            )
            logger.debug(
                "init %d stepwise epoch %d: running bound %.8g (%.3fs)",
                state.init,
                state.n_iter + 1,
                bound,
                seconds,
            )
            infos.append(
                IterationInfo(
                    state.init,
                    state.n_iter + 1,
                    bound,
                    bound - previous,
                    state.params,
                    history,
                    False,
                    seconds,
                )
            )
        if on_step is not None:
            on_step(list(states), position)
        if callback is not None:
            for info in infos:
                callback(info)
    return states, position, checked


def best_restart(restarts: Sequence[EMResult]) -> EMResult:
    """The restart of largest final lower bound (the first on ties, as scikit-learn)."""
    best = restarts[0]
    for restart in restarts[1:]:
        if restart.lower_bound > best.lower_bound:
            best = restart
    return best


def fit_mixture(
    X: da.Array,
    model: MixtureModel,
    *,
    n_init: int,
    random_state: np.random.RandomState,
    tol: float,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    checkpoint: Any = None,
    meta: dict[str, Any] | None = None,
    state: Any = None,
    start: tuple[Any, float, Any] | None = None,
    stepwise: Stepwise | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    on_digest: Callable[[Any], None] | None = None,
    on_restart: Callable[[int, EMResult | None], None] | None = None,
) -> tuple[EMResult, list[EMResult]]:
    """The fit driver, written once for every model.

    Initialises the restarts not yet initialised (all of them from one pass per
    read, each from its own seed), resumes those a checkpoint holds, iterates
    all restarts on one read per pass (:func:`fit_em_many`), saves after every
    pass, chooses the best restart and warns when it did not converge.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Validated; persisted already where it fits in memory.
    model : MixtureModel
        The parameters and math (:class:`GaussianEM` for the Gaussian mixture).
    n_init : int
        Restarts.
    random_state : numpy.random.RandomState
        The seeds are drawn from it; its state before the draw is what a
        checkpoint keeps, so a resumed fit draws the same seeds.
    tol, max_iter
        Convergence: ``abs(change of the lower bound) < tol``, or ``max_iter`` passes.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    split_every : int, optional
    checkpoint : daskgmm._checkpoint.Checkpoint, optional
        Saved after the initialisation and after every pass.
    meta : dict, optional
        Saved with the checkpoint (the data's fingerprint and the estimator).
    state : daskgmm._checkpoint.FitState, optional
        What the checkpoint held: its restarts are resumed, the others initialised.
    start : (parameters, lower bound, running statistics or None), optional
        Continue from these (a warm start) instead of initialising (one restart).
    stepwise : Stepwise, optional
        Run its epochs of stepwise EM (:func:`fit_stepwise_many`) before batch
        EM; its ``seed`` is the first restart's. A checkpoint's
        schedule and position take precedence, so that a resumed fit takes the
        same steps as an uninterrupted one.
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration.
    on_digest : callable, optional
        See :func:`fit_em_many`.
    on_restart : callable, optional
        ``on_restart(init, None)`` when a restart starts, ``on_restart(init, result)``
        when the fit ends (verbose output).

    Returns
    -------
    best : EMResult
    restarts : list of EMResult
    """
    if state is not None:
        random_state.set_state(state.rng_state)
    rng_state = random_state.get_state()
    seeds = restart_seeds(random_state, n_init)
    if stepwise is not None and state is not None and state.stepwise is not None:
        stepwise = state.stepwise
    elif stepwise is not None:
        # the blocks' order from the first restart's seed: restart 0 of n_init restarts
        # takes the same steps as a fit of one restart (epoch_order draws its own stream)
        stepwise = replace(stepwise, seed=seeds[0])
    position = (state.position if state is not None else None) or StepPosition()
    restarts: list[EMResult] = list(state.restarts) if state is not None else []
    if state is not None:
        logger.info(
            "Resuming from checkpoint %s: %d restart(s) initialised, iterations done %s.",
            checkpoint.url,
            len(restarts),
            [r.n_iter for r in restarts],
        )

    def save(states: list[EMResult], complete: bool = False) -> None:
        if checkpoint is not None:
            where = position if stepwise is not None else None
            fit_state = FitState(tuple(states), rng_state, complete, stepwise, where)
            checkpoint.save(fit_state, meta or {}, model)

    saved, every = [time.monotonic()], _step_save_seconds()

    def save_step(states: list[EMResult], where: StepPosition) -> None:
        nonlocal position
        position = where
        if where.block == 0 or time.monotonic() - saved[0] >= every:
            save(states)
            saved[0] = time.monotonic()

    missing = range(len(restarts), n_init)
    for init in missing:
        if on_restart is not None:
            on_restart(init, None)
    if missing and start is None:
        initial = model.initialize(X, seeds[len(restarts) :], sample_weight)
        restarts += [
            EMResult(params, 0, -math.inf, (), False, init)
            for init, params in zip(missing, initial, strict=True)
        ]
    elif missing:
        restarts += [EMResult(start[0], 0, start[1], (), False, 0, start[2])]
    if missing:
        save(restarts)
    if stepwise is not None:
        restarts, position, checked = fit_stepwise_many(
            X,
            restarts,
            model=model,
            schedule=stepwise,
            position=position,
            max_iter=max_iter,
            sample_weight=sample_weight,
            split_every=split_every,
            callback=callback,
            on_step=save_step,
            on_digest=on_digest,
        )
        on_digest = None if checked else on_digest
    restarts = fit_em_many(
        X,
        restarts,
        model=model,
        tol=tol,
        max_iter=max_iter,
        sample_weight=sample_weight,
        split_every=split_every,
        callback=callback,
        on_pass=save,
        on_digest=on_digest,
    )
    for restart in restarts:
        if on_restart is not None:
            on_restart(restart.init, restart)
    best = best_restart(restarts)
    if not best.converged and max_iter > 0:
        warnings.warn(
            "Best performing initialization did not converge. Try different init "
            "parameters, or increase max_iter, tol, or check for degenerate data.",
            ConvergenceWarning,
            stacklevel=3,
        )
    save(restarts, complete=True)
    return best, restarts


def fit_em(
    X: da.Array,
    params: GMMParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    sample_weight: da.Array | None = None,
    split_every: int | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    init: int = 0,
    start_iter: int = 0,
    lower_bounds: tuple[float, ...] = (),
    lower_bound: float = -math.inf,
) -> EMResult:
    """Run EM from ``params`` until ``abs(change) < tol`` or ``max_iter`` iterations.

    One restart of :func:`fit_em_many`.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Validated, one chunk along the features; persist it first if it fits in memory.
    params : GMMParams
        Starting parameters.
    reg_covar, tol, max_iter
        As in :class:`daskgmm.GaussianMixture`.
    sample_weight : dask.array.Array of shape (n_samples,), optional
    split_every : int, optional
        Fan-in of the reduction tree.
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration.
    init : int
        Restart index passed on to the callback.
    start_iter, lower_bounds, lower_bound
        Resume state: iterations already done, their lower bounds, and the last one.

    Returns
    -------
    EMResult
    """
    start = EMResult(params, start_iter, lower_bound, tuple(lower_bounds), False, init)
    (result,) = fit_em_many(
        X,
        [start],
        reg_covar=reg_covar,
        tol=tol,
        max_iter=max_iter,
        sample_weight=sample_weight,
        split_every=split_every,
        callback=callback,
    )
    return result
