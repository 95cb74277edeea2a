"""Driver-side state of a fit: what a callback sees and what a checkpoint holds.

Plain dataclasses, no Dask: shared by the EM loop and the checkpoint code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._stats import GMMParams

__all__ = ["EMResult", "IterationInfo", "StepPosition", "Stepwise"]


@dataclass(frozen=True, eq=False)
class IterationInfo:
    """What a callback sees after each iteration.

    Parameters
    ----------
    init : int
        Index of the restart (``0 .. n_init - 1``).
    n_iter : int
        Iterations done in this restart, this one included.
    lower_bound : float
        Mean log-likelihood of the parameters this iteration started from.
    change : float
        ``lower_bound`` minus that of the previous iteration (``inf`` at the first).
    params : GMMParams
        Parameters after this iteration's M-step.
    lower_bounds : tuple of float
        All lower bounds of this restart so far.
    converged : bool
        Whether ``abs(change) < tol``.
    seconds : float
        Wall time of this iteration.
    """

    init: int
    n_iter: int
    lower_bound: float
    change: float
    params: GMMParams
    lower_bounds: tuple[float, ...]
    converged: bool
    seconds: float


@dataclass(frozen=True, eq=False)
class EMResult:
    """Progress of one restart: its parameters and history (also the resume state).

    Parameters
    ----------
    params : GMMParams
        Parameters after ``n_iter`` iterations.
    n_iter : int
        Iterations done.
    lower_bound : float
        Mean log-likelihood of the parameters the last iteration started from
        (``-inf`` before the first).
    lower_bounds : tuple of float
        One per iteration.
    converged : bool
        Whether the last change was below ``tol``.
    init : int
        Restart index.
    running : daskgmm._stepwise.Running, optional
        The statistics the parameters came from (moments per unit weight) and
        the updates counted so far: what stepwise updates go on from.
    """

    params: GMMParams
    n_iter: int
    lower_bound: float
    lower_bounds: tuple[float, ...]
    converged: bool
    init: int = 0
    running: Any = None

    def finished(self, max_iter: int) -> bool:
        """Converged, or out of iterations."""
        return self.converged or self.n_iter >= max_iter


@dataclass(frozen=True)
class Stepwise:
    """How a stepwise fit walks the data (a checkpoint keeps it, so that a resumed
    fit takes the same steps whatever cluster it resumes on).

    Parameters
    ----------
    epochs : int
        Passes of stepwise updates before batch EM takes over.
    blocks_per_step : int
        Row blocks per update, computed in one graph.
    learning_decay, learning_offset : float
        The step sizes, see :func:`daskgmm._stepwise.step_size`.
    seed : int
        The blocks' order in epoch ``e`` is a permutation drawn from ``(seed, e)``.
    """

    epochs: int
    blocks_per_step: int
    learning_decay: float
    learning_offset: float
    seed: int


@dataclass(frozen=True)
class StepPosition:
    """Where a stepwise fit is: the epoch, and how many of its blocks are done.

    ``digest`` holds the content digest (value, rows) of the blocks the first
    epoch has read so far, while the data's content is still to be checked.
    """

    epoch: int = 0
    block: int = 0
    digest: tuple[int, int] | None = None
