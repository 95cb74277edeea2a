"""The ``daskgmm`` command (also ``python -m daskgmm``).

Every option can also come from a TOML file (``--config job.toml``): a
``[cluster]`` table (``scheduler``, ``cluster``) and one table per command
(``[fit]``, ``[predict]``, ``[select]``, ``[anomalies]``, ``[demo]``) whose keys
are the long option names with ``_`` for ``-`` (``n_components = 8``). Options
given on the command line override the file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import posixpath
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._checkpoint import RefusedError

__all__ = ["main"]

logger = logging.getLogger("daskgmm")


def _estimator_choices() -> tuple[tuple[tuple[str, ...], ...], dict[str, Any]]:
    """The option lists and defaults of the model options, from the estimator itself."""
    from .mixture import GaussianMixture

    constraints = GaussianMixture._parameter_constraints
    choices = tuple(
        tuple(sorted(constraints[name][0].options))
        for name in ("covariance_type", "init_params", "missing")
    )
    return choices, GaussianMixture().get_params()


(COVARIANCE_TYPES, INIT_PARAMS, MISSING), _ESTIMATOR_DEFAULTS = _estimator_choices()

#: Estimator options only `fit` takes (stepwise EM, preprocessing).
_FIT_ONLY = (
    "algorithm",
    "stepwise_epochs",
    "learning_decay",
    "learning_offset",
    "step_blocks",
    "standardize",
    "pca",
)

#: How commands that take a MODEL read INPUT: None is the model's own way.
_MODEL_READING: dict[str, Any] = {
    "variable": None,
    "feature_dim": None,
    "missing": None,
    "nodata": None,
    "columns": None,  # the model's own feature names
    "bands": None,  # the model's own band files
}

#: Defaults of every option, per command (argparse itself keeps none, so that
#: options from a config file can be told apart from defaults).
DEFAULTS: dict[str, dict[str, Any]] = {
    "cluster": {
        "scheduler": None,
        "scheduler_file": None,
        "cluster": "local",
        "worker_timeout": 600.0,
        "dashboard": False,
        "tls_ca_file": None,
        "tls_cert": None,
        "tls_key": None,
    },
    "model": {
        **{
            name: _ESTIMATOR_DEFAULTS[name]
            for name in (
                "covariance_type",
                "tol",
                "reg_covar",
                "max_iter",
                "n_init",
                "init_params",
                "cache",
                "variable",
                "feature_dim",
                "missing",
                "nodata",
                "columns",
                "bands",
            )
        },
        "random_state": 0,  # a job is reproducible by default (the estimator's is None)
    },
    "fit": {
        "checkpoint": None,
        "restart": False,
        "resume": "auto",
        "overwrite": False,
        "model_kind": "gaussian",
        "weight_prior": "dirichlet_process",
        "weight_concentration": None,
        "effective_threshold": 1e-3,
        "profile_out": None,
        **{name: _ESTIMATOR_DEFAULTS[name] for name in _FIT_ONLY},
    },
    "update": {
        "overwrite": False,
        "step_blocks": None,  # the model's own, else the cluster's worker threads
        **_MODEL_READING,
    },
    "predict": {
        "id": None,
        "proba": False,
        "score": False,
        "overwrite": False,
        **_MODEL_READING,
    },
    "select": {
        "k": "1..8",
        "covariance_type": "full",
        "output": None,
        "table": None,
        "plot": None,
        "overwrite": False,
    },
    "anomalies": {
        "id": None,
        "quantile": 0.001,
        "overwrite": False,
        **_MODEL_READING,
    },
    "plot": {
        "features": None,
        "sample": 100_000,
        "max_pixels": 1_000_000,
        "rgb": None,
        "selection": None,
        **_MODEL_READING,
    },
    "demo": {
        "n_samples": 400_000,
        "n_features": 4,
        "n_components": 5,
        "chunk_rows": 50_000,
        "workdir": "daskgmm-demo",
        "seed": 0,
    },
}


#: Exit statuses a batch scheduler can act on (also in ``daskgmm --help``).
EXIT_OK = 0
EXIT_FAILED = 1  # anything unforeseen (a bug): the traceback is printed
EXIT_USAGE = 2  # bad options, paths, data or files: fix the job
EXIT_REFUSED = 3  # a checkpoint, model or output belongs to something else: nothing was replaced
EXIT_CLUSTER = 4  # no workers joined in time, or the scheduler was lost: retry later
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit status: 0 done; 2 bad options, paths, data or files; 3 refused to reuse or replace "
    "a checkpoint, model or output of something else (nothing was changed); 4 cluster "
    "failure (no worker joined within --worker-timeout, scheduler lost); 130 interrupted; "
    "1 anything else."
)


class CLIError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


# ----------------------------------------------------------------- helpers
def format_model(gm, threshold: float = 0.0) -> str:
    """A human-readable table of a fitted mixture: the components of weight at least
    ``threshold`` (all for EM), heaviest first."""
    bayesian = hasattr(gm, "weight_concentration_")
    lines = [
        f"{type(gm).__name__}(n_components={gm.n_components}, "
        f"covariance_type={gm.covariance_type!r}"
        + (f", weight prior {gm.weight_concentration_prior_type!r}" if bayesian else "")
        + f"): converged={gm.converged_}, n_iter={gm.n_iter_}, "
        f"lower_bound={gm.lower_bound_:.6f}",
    ]
    carrying = np.flatnonzero(gm.weights_ >= threshold)
    if bayesian:
        lines.append(
            f"{len(carrying)} of {gm.n_components} components carry weight (>= {threshold:g}), "
            f"{gm.weights_[carrying].sum():.4f} of it in all"
        )
    lines.append(f"{'k':>3} {'weight':>8}  mean")
    with np.printoptions(precision=3, suppress=True, linewidth=200):
        for k in carrying[np.argsort(-gm.weights_[carrying])]:
            lines.append(f"{k:>3} {gm.weights_[k]:8.4f}  {gm.means_[k]}")
    return "\n".join(lines)


def _cache(value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    lowered = str(value).lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise CLIError(f"--cache must be auto, true or false, not {value!r}")


def _k_range(spec: Any) -> list[int]:
    if isinstance(spec, list):
        values = spec
    else:
        text = str(spec)
        if ".." in text:
            lo, _, hi = text.partition("..")
            try:
                values = list(range(int(lo), int(hi) + 1))
            except ValueError:
                raise CLIError(f"--k must look like 1..12 or 2,4,8, not {spec!r}") from None
        else:
            try:
                values = [int(v) for v in text.split(",")]
            except ValueError:
                raise CLIError(f"--k must look like 1..12 or 2,4,8, not {spec!r}") from None
    if not values or min(values) < 1:
        raise CLIError(f"--k needs positive numbers of components, got {spec!r}")
    return values


def _estimator(opts: dict[str, Any], n_components: int, **overrides: Any):
    """The estimator the options describe: a GaussianMixture, or with --model bayesian a
    BayesianGaussianMixture."""
    from .bayesian import BayesianGaussianMixture
    from .mixture import GaussianMixture

    kw = dict(
        n_components=n_components,
        covariance_type=opts["covariance_type"],
        tol=opts["tol"],
        reg_covar=opts["reg_covar"],
        max_iter=opts["max_iter"],
        n_init=opts["n_init"],
        init_params=opts["init_params"],
        random_state=opts["random_state"],
        cache=_cache(opts["cache"]),
        variable=opts["variable"],
        feature_dim=opts["feature_dim"],
        nodata=opts["nodata"],
        columns=_columns(opts),
        bands=_bands(opts),
    )
    for name in _FIT_ONLY:
        if name in opts:
            kw[name] = opts[name]
    if opts.get("model_kind", "gaussian") != "bayesian":
        return GaussianMixture(**{**kw, "missing": opts["missing"], **overrides})
    kw.update(
        missing=opts["missing"],
        weight_concentration_prior_type=opts["weight_prior"],
        weight_concentration_prior=opts["weight_concentration"],
    )
    return BayesianGaussianMixture(**{**kw, **overrides})


def _names(opts: dict[str, Any], key: str, what: str, example: str) -> list[Any] | None:
    """A comma-separated option (or a TOML list) as a list; None when not given."""
    value = opts.get(key)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
        if not value:
            raise CLIError(f"--{key} needs {what}, e.g. --{key} {example}")
    return None if value is None else list(value)


def _bands(opts: dict[str, Any], model: Any = None) -> list[str] | None:
    """--bands as a list; else, for a model, the band files it was fitted on."""
    value = _names(opts, "bands", "file names or globs", "B2.TIF,B3.TIF")
    if value is None and model is not None and model.bands is not None:
        value = list(model.bands)
    return value


def _columns(opts: dict[str, Any], model: Any = None) -> list[str] | None:
    """--columns as a list; else, for a model, the columns it was fitted on (if a table)."""
    value = _names(opts, "columns", "column names", "spend,visits")
    if value is None and model is not None and hasattr(model, "feature_names_in_"):
        value = [str(c) for c in model.feature_names_in_]
    return value


def _require(opts: dict[str, Any], *names: str) -> None:
    for name in names:
        if opts.get(name) in (None, ""):
            what = name.upper() if name in ("input", "model") else "--" + name.replace("_", "-")
            raise CLIError(f"missing {what} (on the command line or in the config file)")


def _check_exists(path: str) -> None:
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path)
    if not (fs.glob(fs_path) if any(c in fs_path for c in "*?[") else fs.exists(fs_path)):
        raise CLIError(f"input {path!r} does not exist")


class Progress:
    """Per-iteration progress: a tqdm bar on a terminal, log lines otherwise."""

    def __init__(self, max_iter: int, quiet: bool):
        self.bar = None
        self.quiet = quiet
        self.max_iter = max_iter
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=max_iter, unit="iter", desc="EM", leave=False)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.bar = None

    def __call__(self, info) -> None:
        if self.bar is not None:
            if info.n_iter == 1 or self.bar.n > info.n_iter:
                self.bar.reset(total=self.max_iter)
            self.bar.update(info.n_iter - self.bar.n)
            self.bar.set_postfix(
                restart=info.init, ll=f"{info.lower_bound:.6f}", change=f"{info.change:.2e}"
            )
        elif not self.quiet:
            logger.info(
                "restart %d iteration %d: log-likelihood %.6f, change %.3g (%.2f s)",
                info.init,
                info.n_iter,
                info.lower_bound,
                info.change,
                info.seconds,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- commands
def cmd_fit(opts: dict[str, Any]) -> int:
    """Fit a mixture to INPUT and save it to --output."""
    gm = _estimator(opts, int(opts["n_components"]))
    progress = Progress(gm.max_iter, opts["quiet"])
    tic = time.perf_counter()
    try:
        gm.fit(
            opts.get("_input") or opts["input"],
            checkpoint=opts["checkpoint"],
            resume=_resume(opts),
            callback=progress,
        )
    finally:
        progress.close()
    # the same job (same parameters, same input files) may replace its own model
    gm.save(opts["output"], overwrite=opts["overwrite"] or opts.get("_same_job", False))
    n_rows = opts["_input"].X.shape[0] if opts.get("_input") is not None else None
    profile = segment_profile(gm, n_rows) if n_rows else None
    if opts.get("profile_out") and profile is not None:
        from fsspec.implementations.local import LocalFileSystem

        from ._checkpoint import replace_file

        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerows(profile)
        replace_file(
            LocalFileSystem(), os.path.abspath(opts["profile_out"]), text.getvalue().encode()
        )
    if not opts["quiet"]:
        bayesian = opts.get("model_kind") == "bayesian"
        print(format_model(gm, float(opts["effective_threshold"]) if bayesian else 0.0))
        if profile is not None and hasattr(gm, "feature_names_in_"):
            print(format_profile(profile))
        print(f"fitted in {time.perf_counter() - tic:.1f} s; model written to {opts['output']}")
    return 0


#: The header a segment profile starts with: how --profile-out knows a file it may replace.
_PROFILE_MARK = "component,weight,rows"


def segment_profile(gm: Any, n_rows: int) -> list[list[Any]]:
    """Per component (heaviest first): its weight, its size in rows (the weight times
    the rows fitted: the expected count) and its mean of every feature column, in the
    input's units (with --pca: of the principal subspace's point)."""
    names = [str(c) for c in getattr(gm, "feature_names_in_", [])] or [
        f"feature_{j}" for j in range(gm.n_features_in_)
    ]
    rows: list[list[Any]] = [["component", "weight", "rows", *names]]
    means = gm.means_in_input_units()
    for k in np.argsort(-gm.weights_, kind="stable"):
        rows.append(
            [
                int(k),
                float(gm.weights_[k]),
                round(float(gm.weights_[k]) * n_rows, 1),
                *(float(v) for v in means[k]),
            ]
        )
    return rows


def format_profile(profile: list[list[Any]]) -> str:
    """The segment profile as an aligned text table."""
    header, *rows = profile
    cells = [header] + [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def _resume(opts: dict[str, Any]) -> str | bool:
    if opts["restart"]:
        return False
    value = str(opts["resume"]).lower()
    choices = {"auto": "auto", "yes": True, "true": True, "no": False, "false": False}
    if value not in choices:
        raise CLIError(f"--resume must be auto, yes or no, not {opts['resume']!r}")
    return choices[value]


def _load_model(path: str):
    from . import load

    try:
        return load(path)
    except FileNotFoundError:
        raise CLIError(f"model {path!r} does not exist") from None


def _check_input_for_model(opts: dict[str, Any]) -> tuple[Any, Any]:
    """INPUT opens as the model will read it, with as many features as it was trained on:
    the model and the opened input."""
    from ._data import open_input

    _check_exists(opts["input"])
    gm = _model_for_input(opts)
    inp = open_input(
        opts["input"],
        variable=gm.variable,
        feature_dim=gm.feature_dim,
        nodata=gm.nodata,
        columns=_columns(opts, gm),
        bands=_bands(opts, gm),
    )
    if inp.X.shape[1] != gm.n_features_in_:
        raise CLIError(
            f"the model was trained on {gm.n_features_in_} features but {opts['input']!r} has "
            f"{inp.X.shape[1]}"
        )
    return gm, inp


def _block_progress(opts: dict[str, Any], what: str) -> Callable[[int, int], None]:
    """Blocks written out of the total: a bar on a terminal, a log line per tenth otherwise."""
    bar = None
    tenth = -1

    def update(done: int, total: int) -> None:
        nonlocal bar, tenth
        if opts["quiet"]:
            return
        if sys.stderr.isatty():
            if bar is None:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="block", desc=what, leave=False)
            bar.update(done - bar.n)
            if done == total:
                bar.close()
        elif done * 10 // max(total, 1) != tenth or done == total:
            tenth = done * 10 // max(total, 1)
            logger.info("%s: %d of %d blocks written", what, done, total)

    return update


def _model_for_input(opts: dict[str, Any]):
    """The model, reading INPUT with --variable/--feature-dim/--missing/--nodata, else
    the model's own."""
    gm = _load_model(opts["model"])
    reading = dict(
        variable=opts.get("variable") or gm.variable,
        feature_dim=opts.get("feature_dim") or gm.feature_dim,
        nodata=gm.nodata if opts.get("nodata") is None else opts["nodata"],
    )
    reading["missing"] = opts.get("missing") or gm.missing
    reading["columns"] = _columns(opts, gm)
    reading["bands"] = _bands(opts, gm)
    return gm.set_params(**reading)


def cmd_update(opts: dict[str, Any]) -> int:
    """Fold INPUT into MODEL by stepwise updates (partial_fit) and save it to --output."""
    from ._data import open_input, worker_threads

    gm = _model_for_input(opts)
    if opts["step_blocks"] is not None:
        gm.set_params(step_blocks=int(opts["step_blocks"]))
    X = open_input(
        opts["input"],
        variable=gm.variable,
        feature_dim=gm.feature_dim,
        nodata=gm.nodata,
        columns=_columns(opts, gm),
        bands=_bands(opts, gm),
    ).X
    per_step = gm.step_blocks or worker_threads()
    n_blocks, steps_before = X.numblocks[0], gm.n_steps_
    tic = time.perf_counter()
    for start in range(0, n_blocks, per_step):
        gm.partial_fit(X.blocks[start : start + per_step])
        if not opts["quiet"]:
            logger.info(
                "update %d: blocks %d-%d of %d, bound %.6f",
                gm.n_steps_ - steps_before,
                start + 1,
                min(start + per_step, n_blocks),
                n_blocks,
                gm.lower_bound_,
            )
    gm.save(opts["output"], overwrite=opts["overwrite"])
    if not opts["quiet"]:
        print(format_model(gm))
        print(
            f"{gm.n_steps_ - steps_before} updates from {X.shape[0]:,} samples in "
            f"{time.perf_counter() - tic:.1f} s ({gm.n_steps_} updates, "
            f"{gm.n_samples_seen_:,} samples seen in all); model written to {opts['output']}"
        )
    return 0


def cmd_predict(opts: dict[str, Any]) -> int:
    """Write labels (and probabilities, log-density) of INPUT to a Zarr store."""
    gm, ids = _model_for_input(opts), _ids(opts)
    kw = dict(proba=opts["proba"], score=opts["score"], overwrite=opts["overwrite"],
              progress=_block_progress(opts, "predict"))  # fmt: skip
    if ids:
        info = gm.predict_to_table(_table_input(opts), opts["output"], ids=ids, **kw)
    elif _geotiff(opts["output"]):
        info = gm.predict_to_geotiff(opts["input"], opts["output"], **kw)
    else:
        info = gm.predict_to_zarr(opts["input"], opts["output"], **kw)
    if not opts["quiet"]:
        print(
            f"wrote {', '.join(info['variables'])} for {info['samples']:,} samples to "
            f"{opts['output']} ({info['blocks']} blocks written, {info['skipped']} already done)"
        )
    return 0


def cmd_anomalies(opts: dict[str, Any]) -> int:
    """Flag the samples of lowest density under a model (a mask in a Zarr store)."""
    q = float(opts["quantile"])
    gm = _model_for_input(opts)
    ids = _ids(opts)
    kw = dict(anomaly_quantile=q, overwrite=opts["overwrite"],
              progress=_block_progress(opts, "anomalies"))  # fmt: skip
    if ids:
        info = gm.predict_to_table(_table_input(opts), opts["output"], ids=ids, **kw)
    elif _geotiff(opts["output"]):
        info = gm.predict_to_geotiff(opts["input"], opts["output"], **kw)
    else:
        info = gm.predict_to_zarr(opts["input"], opts["output"], **kw)
    if not opts["quiet"]:
        what = (
            f"the {info['rows']:,} flagged rows of {info['samples']:,}"
            if ids
            else f"mask of {info['samples']:,} samples"
        )
        print(
            f"log-density threshold at quantile {q}: {info['threshold']:.6f}; {what} "
            f"written to {opts['output']}"
        )
    return 0


def _geotiff(path: str) -> bool:
    from ._raster_output import is_geotiff_target

    return is_geotiff_target(path)


def _table_input(opts: dict[str, Any]) -> Any:
    """The table preflight opened (its ids checked there), else INPUT."""
    return opts.get("_input") or opts["input"]


def _ids(opts: dict[str, Any]) -> list[str]:
    if not opts.get("id"):
        return []
    return _names({"id": str(opts["id"])}, "id", "column names", "customer_id")


def _covariance_types(value: Any) -> list[str]:
    types = value if isinstance(value, list) else str(value).split(",")
    for ct in types:
        if ct not in COVARIANCE_TYPES:
            raise CLIError(
                f"unknown covariance type {ct!r}; expected some of {','.join(COVARIANCE_TYPES)}"
            )
    return types


def _selection_paths(opts: dict[str, Any]) -> tuple[str, str, str]:
    stem = opts["table"] or "selection"
    return f"{stem}.csv", f"{stem}.json", opts["plot"] or f"{stem}.png"


#: How each file ``select`` writes is recognised as its own before it is replaced.
_SELECTION_MARKS = {".csv": b"covariance_type,n_components,bic", ".json": b'"daskgmm-selection"'}


def _check_selection_targets(opts: dict[str, Any]) -> None:
    """Refuse to replace a table or plot that ``select`` did not write."""
    for path in _selection_paths(opts):
        mark = _SELECTION_MARKS.get(os.path.splitext(path)[1], b"daskgmm model selection")
        if os.path.lexists(path) and not _marked(path, mark):
            raise RefusedError(
                f"{path!r} exists and was not written by daskgmm select; refusing to replace "
                "it (even with --overwrite). Choose another --table/--plot."
            )


def _marked(path: str, mark: bytes) -> bool:
    """A plain file (no link) whose first MiB holds ``mark``: one daskgmm wrote."""
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    with open(path, "rb") as f:
        return mark in f.read(1 << 20)


def _write_selection(opts: dict[str, Any], rows: list[dict[str, Any]], best: Any) -> None:
    """The table (CSV and JSON) of the fits done so far, each file replaced in one step."""
    from fsspec.implementations.local import LocalFileSystem

    from ._checkpoint import replace_file

    csv_path, json_path, _ = _selection_paths(opts)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    document = {
        "format": "daskgmm-selection",
        "rows": rows,
        "best": {"covariance_type": best.covariance_type, "n_components": best.n_components},
    }
    replace_file(LocalFileSystem(), csv_path, table.getvalue().encode())
    replace_file(LocalFileSystem(), json_path, json.dumps(document, indent=1).encode())


def cmd_select(opts: dict[str, Any]) -> int:
    """Fit a range of component counts and covariance types; report BIC/AIC."""
    from ._data import open_input

    ks = _k_range(opts["k"])
    types = _covariance_types(opts["covariance_type"])
    inp = open_input(
        opts["input"],
        variable=opts["variable"],
        feature_dim=opts["feature_dim"],
        nodata=opts["nodata"],
        columns=_columns(opts),
        bands=_bands(opts),
    )
    X = inp.X.persist() if _cache(opts["cache"]) is not False else inp.X
    rows, best = [], None
    n_fits = len(ks) * len(types)
    for ct in types:
        for k in ks:
            logger.info(
                "select: fitting covariance_type=%s k=%d (%d of %d)", ct, k, len(rows) + 1, n_fits
            )
            tic = time.perf_counter()
            gm = _estimator(
                opts,
                k,
                covariance_type=ct,
                variable=None,
                feature_dim=None,
                nodata=None,  # X has them as NaN already
                cache=False,
            )
            gm.fit(X)
            criteria = gm.information_criteria(X)  # one read for both
            bic, aic = criteria["bic"], criteria["aic"]
            rows.append(
                {
                    "covariance_type": ct,
                    "n_components": k,
                    "bic": bic,
                    "aic": aic,
                    "log_likelihood": criteria["log_likelihood"],
                    "n_parameters": criteria["n_parameters"],
                    "converged": gm.converged_,
                    "n_iter": gm.n_iter_,
                    "seconds": round(time.perf_counter() - tic, 3),
                }
            )
            if not opts["quiet"]:
                print(f"{ct:>9} k={k:<3} BIC {bic:14.2f}  AIC {aic:14.2f}")
            if best is None or bic < best[0]:
                best = (bic, gm)
            _write_selection(opts, rows, best[1])  # a later failure keeps what finished
    csv_path, json_path, plot = _selection_paths(opts)
    _plot_selection(rows, types, plot)
    if opts["output"]:
        best[1].set_params(
            variable=opts["variable"], feature_dim=opts["feature_dim"], nodata=opts["nodata"]
        )
        best[1].save(opts["output"], overwrite=opts["overwrite"])
    if not opts["quiet"]:
        print(
            f"best by BIC: covariance_type={best[1].covariance_type!r}, "
            f"n_components={best[1].n_components}; table {csv_path}, {json_path}, plot {plot}"
            + (f", model {opts['output']}" if opts["output"] else "")
        )
    return 0


def _plot_selection(rows: list[dict[str, Any]], types: list[str], path: str) -> None:
    from fsspec.implementations.local import LocalFileSystem

    from ._checkpoint import replace_file
    from ._plots import selection_png

    try:
        png = selection_png(rows, types)
    except ImportError as err:
        logger.warning("%s No plot.", err)
        return
    replace_file(LocalFileSystem(), path, png)


#: The pictures ``plot`` draws, by file name in its output folder.
PLOT_FILES = ("components.png", "weights.png", "labels.png", "selection.png")


def _plot_targets(folder: str) -> None:
    """``plot`` replaces only pictures daskgmm drew (their PNG ``Software`` text)."""
    from ._plots import MARK

    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise RefusedError(f"plot output {folder!r} exists and is not a folder")
    for name in PLOT_FILES:
        path = os.path.join(folder, name)
        if os.path.lexists(path) and not _marked(path, f"Software\x00{MARK} ".encode()):
            raise RefusedError(
                f"{path!r} exists and is not a picture daskgmm drew; refusing to replace it "
                "(choose another -o folder)"
            )


def _feature_pair(opts: dict[str, Any], names: list[str]) -> tuple[int, int] | None:
    """--features A,B as two feature indices (names or numbers); None: the first two
    principal components."""
    pair = _feature_indices(opts, "features", names, 2, "0,2")
    if pair is None:
        return None
    if pair[0] == pair[1]:
        raise CLIError(f"--features needs two different features, got {opts['features']!r}")
    return pair[0], pair[1]


def _feature_indices(
    opts: dict[str, Any], key: str, names: list[str], count: int, example: str
) -> list[int] | None:
    """``--key`` as ``count`` feature indices, each given by name or number."""
    words = {2: "two features", 3: "three features"}[count]
    value = _names(opts, key, words, example)
    if value is None:
        return None
    if len(value) != count:
        raise CLIError(f"--{key} needs {words}, e.g. --{key} {example}; got {opts[key]!r}")
    indices = []
    for part in map(str, value):
        if part in names:
            indices.append(names.index(part))
        elif part.isdigit() and int(part) < len(names):
            indices.append(int(part))
        else:
            raise CLIError(f"--{key}: {part!r} is not one of the features {names}")
    return indices


def _feature_names(gm: Any, inp: Any) -> list[str]:
    """The features' names for pictures: table columns, else band names, else numbers."""
    names = getattr(gm, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    if inp.band_names is not None and len(inp.band_names) == gm.n_features_in_:
        return list(inp.band_names)
    return [f"feature {j}" for j in range(gm.n_features_in_)]


def decimated_labels(gm: Any, inp: Any, max_pixels: int) -> tuple[np.ndarray, int]:
    """The label map of an image on a grid of at most ``max_pixels`` pixels (every
    ``step``-th row and column): for GeoTIFFs from their overviews where they have
    them (a COG: only the overview is read), else read block by block in bounded
    memory."""
    import dask.array as da

    from ._raster import decimation

    if inp.raster is not None:
        image, step = inp.raster.decimated(max_pixels)
        labels = gm.predict(image.reshape(-1, image.shape[2]))
        return np.asarray(labels).reshape(image.shape[:2]), step
    height, width = inp.sample_shape
    step = decimation(height, width, max_pixels)
    image = inp.X.reshape(height, width, inp.X.shape[1])[::step, ::step]
    rows, cols = image.shape[:2]
    labels = gm.predict(image.reshape(rows * cols, inp.X.shape[1]).rechunk({0: "auto"}))
    labels = labels.compute() if isinstance(labels, da.Array) else np.asarray(labels)
    return labels.reshape(rows, cols), step


def cmd_plot(opts: dict[str, Any]) -> int:
    """Draw the model over its data: components, weights, label map, selection curve."""
    from fsspec.implementations.local import LocalFileSystem

    from ._checkpoint import replace_file
    from ._data import bounded_sample
    from ._plots import class_colours, components_png, label_map_png, weights_png

    gm = _model_for_input(opts)
    inp = opts["_input"]
    folder = opts["output"]
    os.makedirs(folder, exist_ok=True)
    names = _feature_names(gm, inp)
    pair = _feature_pair(opts, names)
    title = f"{type(gm).__name__}: {gm.n_components} components, {gm.covariance_type}"
    sample = bounded_sample(inp.X, int(opts["sample"]), int(opts.get("random_state") or 0))
    written = []

    def put(name: str, png: bytes) -> None:
        replace_file(LocalFileSystem(), os.path.join(folder, name), png)
        written.append(name)

    means, covariances = gm.means_in_input_units(), gm.covariances_in_input_units()
    weights = np.asarray(gm.weights_, np.float64)
    put("components.png", components_png(sample, means, covariances, weights,
                                         features=pair, names=names, title=title))  # fmt: skip
    put("weights.png", weights_png(weights, title=title))
    if inp.sample_shape is not None and len(inp.sample_shape) == 2:
        labels, step = decimated_labels(gm, inp, int(opts["max_pixels"]))
        rgb = _rgb(opts, names)
        colours = class_colours(means, rgb)
        extent = None
        if inp.georef is not None:
            a, _, c, _, e, f = inp.georef.transform
            height, width = inp.sample_shape
            extent = (c, c + a * width, f + e * height, f)
        put("labels.png", label_map_png(labels, colours, weights, extent=extent,
                                        title=f"{title}; {_grid_note(step)}"))  # fmt: skip
    if opts["selection"]:
        put("selection.png", _selection_picture(opts["selection"]))
    if not opts["quiet"]:
        print(f"wrote {', '.join(written)} to {folder} ({len(sample):,} samples drawn)")
    return 0


def _grid_note(step: int) -> str:
    return "every pixel" if step == 1 else f"one pixel in {step} x {step}"


def _rgb(opts: dict[str, Any], names: list[str]) -> list[int] | None:
    """--rgb R,G,B as feature indices (names or numbers); default: the three features
    of a three-band input; else None (a qualitative palette)."""
    rgb = _feature_indices(opts, "rgb", names, 3, "3,2,1")
    if rgb is None and len(names) == 3:
        return [0, 1, 2]
    return rgb


def _selection_picture(path: str) -> bytes:
    from ._plots import selection_png

    rows = _selection_rows(path)
    types = list(dict.fromkeys(r["covariance_type"] for r in rows))
    return selection_png(rows, types)


def _selection_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a ``select`` JSON table, checked."""
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read(64 << 20))
    except FileNotFoundError:
        raise CLIError(f"--selection {path!r} does not exist") from None
    except (ValueError, UnicodeDecodeError):
        raise CLIError(f"--selection {path!r} is not JSON written by daskgmm select") from None
    rows = document.get("rows") if isinstance(document, dict) else None
    keys = ("covariance_type", "n_components", "bic", "aic")
    if (
        document.get("format") != "daskgmm-selection"
        or not isinstance(rows, list)
        or not rows
        or not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows)
    ):
        raise CLIError(f"--selection {path!r} is not a table written by daskgmm select")
    return rows


def cmd_demo(opts: dict[str, Any]) -> int:
    """Generate a mixture, fit it, predict labels to Zarr, report recovery."""
    import dask.array as da
    import zarr
    from sklearn.metrics import adjusted_rand_score

    from .datasets import make_mixture

    workdir = opts["workdir"]
    os.makedirs(workdir, exist_ok=True)
    data = make_mixture(
        int(opts["n_samples"]),
        int(opts["n_features"]),
        int(opts["n_components"]),
        chunk_rows=int(opts["chunk_rows"]),
        random_state=int(opts["seed"]),
    )
    store = os.path.join(workdir, "data.zarr")
    # the mark goes in with the array's metadata: a later demo recognises it as its own
    target = zarr.create_array(
        store,
        shape=data.X.shape,
        chunks=(max(data.X.chunks[0]), data.X.shape[1]),
        dtype=data.X.dtype,
        attributes={"daskgmm": _DEMO_MARK},
        overwrite=True,
    )
    da.store(data.X, target, lock=False)  # the array's chunks are the data's
    print(
        f"Data: {data.X.shape[0]:,} samples x {data.X.shape[1]} features "
        f"({data.X.nbytes / 1e6:.1f} MB, {data.X.numblocks[0]} chunks) from "
        f"{opts['n_components']} known components, written to {store}"
    )
    fit_opts = {
        **opts,
        "input": store,
        "output": os.path.join(workdir, "model.zarr"),
        "checkpoint": os.path.join(workdir, "checkpoint"),
        "restart": True,
        "overwrite": True,  # the model of an earlier demo (preflight checked it is one)
    }
    cmd_fit(fit_opts)
    labels_out = os.path.join(workdir, "labels.zarr")
    cmd_predict(
        {
            **opts,
            "model": fit_opts["output"],
            "input": store,
            "output": labels_out,
            "proba": False,
            "score": True,
            "overwrite": True,
        }
    )
    labels = zarr.open_group(labels_out, mode="r")["label"][:]
    truth = data.labels.compute()
    print(
        f"Adjusted Rand index of the predicted labels against the truth: "
        f"{adjusted_rand_score(truth, labels):.4f}"
    )
    return 0


def _check_apart(**paths: str | None) -> None:
    """Refuse an output or checkpoint that is, holds or lies inside another path of the job
    (``-o scene.zarr`` on the input would destroy it)."""
    from ._data import resolve_path

    named = [
        (n, os.path.realpath(resolve_path(p)) if "://" not in p else p.rstrip("/"))
        for n, p in paths.items()
        if p
    ]
    for i, (a, pa) in enumerate(named):
        for b, pb in named[i + 1 :]:
            if (
                pa == pb
                or pa.startswith(pb.rstrip("/") + "/")
                or pb.startswith(pa.rstrip("/") + "/")
            ):
                raise RefusedError(
                    f"the {a} {paths[a]!r} and the {b} {paths[b]!r} are the same or one is "
                    "inside the other; refusing (daskgmm never writes into its input or model)"
                )


def _check_estimator(opts: dict[str, Any], ks: list[int], types: list[str], n_samples: int):
    """Every estimator the command will fit, validated as ``fit`` would (no data read)."""
    for ct in types:
        for k in ks:
            gm = _estimator(opts, k, covariance_type=ct).check_parameters()
    if max(ks) > n_samples:
        raise CLIError(
            f"{max(ks)} components need at least as many samples, but the input has {n_samples}"
        )
    return gm


def _check_fit_output(opts: dict[str, Any], gm, inp) -> None:
    """A model already at --output: the same job's may be replaced; another only with
    --overwrite; anything else never (``model_at`` refuses it)."""
    from ._checkpoint import model_at

    if model_at(opts["output"]) is None or opts["overwrite"]:
        return
    if not gm.same_fit_as(opts["output"], inp):
        raise RefusedError(
            f"model path {opts['output']!r} holds another daskgmm model (other parameters or "
            "other input files); pass --overwrite to replace it"
        )
    opts["_same_job"] = True


def preflight(command: str, opts: dict[str, Any]) -> None:
    """Check every option, path, variable, dimension, model and output before any
    cluster is started.

    Only metadata are read, so mistakes are reported at once, as one line.
    """
    from ._checkpoint import Checkpoint
    from ._data import open_input

    if command == "demo":
        _check_estimator(opts, [int(opts["n_components"])], [opts["covariance_type"]], 1 << 62)
        _check_demo_workdir(opts["workdir"])
    elif command in ("fit", "select"):
        _require(opts, "input", *(("n_components", "output") if command == "fit" else ()))
        _check_exists(opts["input"])
        inp = open_input(
            opts["input"],
            variable=opts["variable"],
            feature_dim=opts["feature_dim"],
            nodata=opts["nodata"],
            columns=_columns(opts),
            bands=_bands(opts),
        )
        _cache(opts["cache"])
        if command == "fit":
            _resume(opts)
            gm = _check_estimator(
                opts, [int(opts["n_components"])], [opts["covariance_type"]], inp.X.shape[0]
            )
            _check_apart(input=opts["input"], output=opts["output"], checkpoint=opts["checkpoint"])
            if opts["checkpoint"]:
                Checkpoint(opts["checkpoint"]).check_target()
                _check_writable(opts["checkpoint"])
            _check_fit_output(opts, gm, inp)
            if opts["profile_out"]:
                _check_profile_target(opts["profile_out"])
                _check_apart(input=opts["input"], profile=opts["profile_out"])
            # the fit takes the input opened here: its files are listed once per job
            opts["_input"] = inp
            _check_writable(opts["output"])
        else:
            types = _covariance_types(opts["covariance_type"])
            _check_estimator(opts, _k_range(opts["k"]), types, inp.X.shape[0])
            table, table_json, plot = _selection_paths(opts)
            _check_apart(
                input=opts["input"], output=opts["output"], table=table, json=table_json, plot=plot
            )
            _check_selection_targets(opts)
            for path in (opts["output"], table, table_json, plot):
                if path:
                    _check_writable(path)
            if opts["output"] and not opts["overwrite"]:
                from ._checkpoint import model_at

                if model_at(opts["output"]) is not None:
                    raise RefusedError(
                        f"model path {opts['output']!r} holds a daskgmm model; pass "
                        "--overwrite to replace it with the best of this selection"
                    )
    elif command == "update":
        from ._checkpoint import model_at

        _require(opts, "model", "input", "output")
        if opts["step_blocks"] is not None and int(opts["step_blocks"]) < 1:
            raise CLIError(f"--step-blocks must be at least 1, got {opts['step_blocks']}")
        _check_apart(input=opts["input"], output=opts["output"])
        _check_apart(input=opts["input"], model=opts["model"])
        _check_input_for_model(opts)
        model_at(opts["output"])  # refuses anything but a daskgmm model there
        _check_writable(opts["output"])
    elif command == "plot":
        _require(opts, "model", "input", "output")
        for name in ("sample", "max_pixels"):
            if int(opts[name]) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be at least 1")
        _check_apart(input=opts["input"], output=opts["output"], model=opts["model"])
        gm, inp = _check_input_for_model(opts)
        names = _feature_names(gm, inp)
        _feature_pair(opts, names)
        _rgb(opts, names)
        if opts["selection"]:
            _selection_rows(opts["selection"])
        _plot_targets(opts["output"])
        opts["_input"] = inp
    elif command in ("predict", "anomalies"):
        from ._output import check_output_target

        _require(opts, "model", "input", "output")
        if command == "anomalies" and not 0.0 < float(opts["quantile"]) < 1.0:
            raise CLIError(f"--quantile must be strictly between 0 and 1, got {opts['quantile']}")
        _check_apart(input=opts["input"], output=opts["output"], model=opts["model"])
        _, inp = _check_input_for_model(opts)
        if _ids(opts):
            from ._table_output import check_table_target

            if inp.table is None:
                raise CLIError(f"--id needs a table input (Parquet, CSV), not {opts['input']!r}")
            inp.table.check_ids(_ids(opts), f"Input {opts['input']!r}")
            check_table_target(opts["output"])
            opts["_input"] = inp  # its ids are checked: not read twice
        elif _geotiff(opts["output"]):
            from ._output import output_names
            from ._raster_output import check_geotiff_targets

            anomalies = command == "anomalies"
            names = output_names(opts.get("proba"), opts.get("score"), anomalies)
            check_geotiff_targets(opts["output"], names, inp)
        else:
            check_output_target(opts["output"])
        _check_writable(opts["output"])


def _check_profile_target(path: str) -> None:
    """A profile replaces only a file that is one (its header), never anything else."""
    if not os.path.lexists(path):
        _check_writable(path)
        return
    ours = os.path.isfile(path) and not os.path.islink(path)
    if ours:
        with open(path, "rb") as f:
            ours = f.read(len(_PROFILE_MARK)).decode("utf-8", "replace") == _PROFILE_MARK
    if not ours:
        raise RefusedError(
            f"{path!r} exists and is not a segment profile daskgmm wrote; refusing to replace "
            "it. Choose another --profile-out."
        )


def _check_demo_workdir(workdir: str) -> None:
    """The demo replaces only what an earlier demo wrote in its folder."""
    from ._checkpoint import model_at
    from ._output import check_output_target

    for name in ("data.zarr", "model.zarr", "labels.zarr", "checkpoint"):
        path = os.path.join(workdir, name)
        if not os.path.lexists(path):
            continue
        if name == "data.zarr":
            ours = os.path.isfile(os.path.join(path, "zarr.json")) and _DEMO_MARK in open(
                os.path.join(path, "zarr.json"), encoding="utf-8", errors="replace"
            ).read(1 << 20)
            if not ours:
                raise RefusedError(
                    f"{path!r} exists and was not written by daskgmm demo; refusing to replace "
                    "it. Choose another --workdir."
                )
        elif name == "model.zarr":
            model_at(path)
        elif name == "labels.zarr":
            check_output_target(path)
        else:
            from ._checkpoint import Checkpoint

            Checkpoint(path).check_target()


_DEMO_MARK = "daskgmm-demo-data"


COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "fit": cmd_fit,
    "predict": cmd_predict,
    "update": cmd_update,
    "select": cmd_select,
    "anomalies": cmd_anomalies,
    "plot": cmd_plot,
    "demo": cmd_demo,
}


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no defaults: those live in :data:`DEFAULTS`)."""
    S = argparse.SUPPRESS
    parser = argparse.ArgumentParser(
        prog="daskgmm",
        description="Gaussian mixture models fitted by distributed EM on Dask: fit models to "
        "Zarr data, write label/probability maps, select the number of "
        "components, flag anomalies.",
        epilog="Options can also come from a TOML file (--config); see 'daskgmm COMMAND -h'. "
        + EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"daskgmm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("job")
        g.add_argument(
            "--config",
            metavar="FILE.toml",
            default=S,
            help="read options from a TOML file; command-line options win",
        )
        g.add_argument("-v", "--verbose", action="store_true", default=S, help="debug logging")
        g.add_argument(
            "-q", "--quiet", action="store_true", default=S, help="only warnings and errors"
        )
        c = p.add_argument_group("cluster")
        c.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            default=S,
            help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
            "(default: $DASK_SCHEDULER_ADDRESS, else --cluster)",
        )
        c.add_argument(
            "--scheduler-file",
            metavar="FILE.json",
            default=S,
            help="the file a running scheduler wrote (dask scheduler --scheduler-file)",
        )
        c.add_argument(
            "--worker-timeout",
            type=float,
            metavar="SECONDS",
            default=S,
            help="fail (exit status 4) when no worker has joined after this long (600)",
        )
        c.add_argument(
            "--dashboard",
            action="store_true",
            default=S,
            help="print the Dask dashboard's link (a local cluster serves one on 127.0.0.1)",
        )
        for name, what in (("ca-file", "CA certificate(s)"), ("cert", "certificate"),
                           ("key", "private key")):  # fmt: skip
            c.add_argument(
                f"--tls-{name}",
                metavar="FILE.pem",
                default=S,
                help=f"TLS {what} (PEM) of this job; with all three, every connection is "
                "mutual TLS (a started cluster too) and a plain tcp:// one is refused",
            )
        c.add_argument(
            "--cluster",
            metavar="KIND[:N]",
            default=S,
            help="cluster to start without --scheduler: local[:N] (default, N "
            "worker processes, one per core), slurm[:N] or pbs[:N] "
            "(dask-jobqueue, N jobs), kubernetes[:N] (Dask operator, N "
            "workers)",
        )

    def table_ids(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--id",
            metavar="COL[,COL]",
            default=S,
            help="tables: write a Parquet dataset whose rows carry these id columns (they "
            "must name each row once)",
        )

    def model_and_input(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", nargs="?", default=S, metavar="MODEL")
        p.add_argument("input", nargs="?", default=S, metavar="INPUT")

    def data_options(p: argparse.ArgumentParser, fitting: bool = True) -> None:
        p.add_argument(
            "--bands",
            metavar="FILE[,FILE]",
            default=S,
            help="INPUT is a folder of single-band rasters: stack these files (names or "
            "globs, e.g. '*_B2.TIF,*_B3.TIF') as bands; default: "
            + ("none" if fitting else "the model's own"),
        )
        p.add_argument(
            "--columns",
            metavar="A,B,...",
            default=S,
            help="tables (Parquet, CSV): the feature columns; default: "
            + ("every numeric column" if fitting else "the model's own"),
        )
        p.add_argument(
            "--variable",
            metavar="NAME",
            default=S,
            help="variable of an xarray dataset / array of a Zarr group",
        )
        p.add_argument(
            "--feature-dim",
            metavar="DIM",
            default=S,
            help="feature dimension of an xarray variable, e.g. band; the other "
            "dimensions become samples",
        )
        p.add_argument(
            "--missing",
            choices=MISSING,
            default=S,
            help="NaN entries: an error, or missing values used exactly (marginalize); "
            f"default: {DEFAULTS['model']['missing']}"
            + (" (predict/anomalies: the model's own)" if not fitting else ""),
        )
        p.add_argument(
            "--nodata",
            type=float,
            metavar="VALUE",
            default=S,
            help="a value that marks missing entries (read as NaN); default: the one the "
            "input declares (nodata, _FillValue, missing_value), if any",
        )

    def model_options(p: argparse.ArgumentParser, select: bool = False) -> None:
        g = p.add_argument_group("model")
        d = DEFAULTS["model"]  # the estimator's own defaults
        if not select:
            g.add_argument(
                "--covariance-type",
                choices=COVARIANCE_TYPES,
                default=S,
                help=f"default: {d['covariance_type']}",
            )
        g.add_argument("--tol", type=float, default=S, help=f"convergence tolerance ({d['tol']:g})")
        g.add_argument(
            "--reg-covar",
            type=float,
            default=S,
            help=f"diagonal regularisation ({d['reg_covar']:g})",
        )
        g.add_argument(
            "--max-iter", type=int, default=S, help=f"EM iterations at most ({d['max_iter']})"
        )
        g.add_argument("--n-init", type=int, default=S, help=f"restarts, best kept ({d['n_init']})")
        g.add_argument(
            "--init-params", choices=INIT_PARAMS, default=S, help=f"default: {d['init_params']}"
        )
        g.add_argument("--random-state", type=int, default=S, help=f"seed ({d['random_state']})")
        g.add_argument(
            "--cache",
            metavar="auto|true|false",
            default=S,
            help="persist the data in cluster memory (auto: if they fit)",
        )

    p = sub.add_parser(
        "fit",
        help="fit a mixture to a dataset and save the model",
        description="Fit a Gaussian mixture to INPUT (a Zarr store or xarray "
        "dataset, a .npy file, or a directory of them; a Parquet or CSV table, or a "
        "directory of Parquet files) and save it "
        "to --output. With --checkpoint, a killed job resumes "
        "where it stopped when run again.",
    )
    p.add_argument("input", nargs="?", default=S, metavar="INPUT")
    p.add_argument("-k", "--n-components", type=int, default=S, metavar="K", required=False)
    p.add_argument("-o", "--output", metavar="MODEL", default=S, help="model path (Zarr)")
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=S,
        help="save the EM state after every iteration; resume from it if present",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        default=S,
        help="ignore (and overwrite) an existing checkpoint (same as --resume no)",
    )
    p.add_argument(
        "--resume",
        metavar="auto|yes|no",
        default=S,
        help="with a checkpoint of another fit (other data or parameters): auto (default) "
        "starts over, yes refuses (exit status 3), no always starts over",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace another daskgmm model at --output (a re-run of the same job replaces "
        "its own model without it; anything that is not a daskgmm model is never replaced)",
    )
    b = p.add_argument_group("model kind")
    b.add_argument(
        "--model",
        dest="model_kind",
        choices=("gaussian", "bayesian"),
        default=S,
        help="gaussian: EM (default); bayesian: a variational Dirichlet-process mixture that "
        "switches off the components the data do not support (give a generous -k)",
    )
    b.add_argument(
        "--weight-prior",
        choices=("dirichlet_process", "dirichlet_distribution"),
        default=S,
        help="bayesian: the weights' prior (default: dirichlet_process)",
    )
    b.add_argument(
        "--weight-concentration",
        type=float,
        metavar="X",
        default=S,
        help="bayesian: the weights' prior concentration (default 1/K); smaller keeps fewer "
        "components",
    )
    b.add_argument(
        "--effective-threshold",
        type=float,
        metavar="W",
        default=S,
        help="bayesian: the weight from which a component counts as carrying weight in the "
        "summary (default 0.001)",
    )
    p.add_argument(
        "--profile-out",
        metavar="FILE.csv",
        default=S,
        help="write the segment profile (per component: weight, rows, the mean of every "
        "feature column); replaces only a profile daskgmm wrote",
    )
    t = p.add_argument_group("preprocessing, kept in the model")
    t.add_argument(
        "--standardize",
        action="store_true",
        default=S,
        help="model the features divided by their standard deviations (one more pass)",
    )
    t.add_argument(
        "--pca",
        type=int,
        metavar="N",
        default=S,
        help="model the first N principal components (randomised SVD; the explained "
        "variance is logged)",
    )
    a = p.add_argument_group("algorithm")
    a.add_argument(
        "--algorithm",
        choices=("em", "stepwise"),
        default=S,
        help="em: batch EM, one read per iteration (default); stepwise: mini-batch epochs "
        "first, then batch EM to --tol: far fewer reads of data that do not fit in memory",
    )
    a.add_argument(
        "--stepwise-epochs",
        type=int,
        metavar="N",
        default=S,
        help=f"stepwise: passes of mini-batch updates ({_ESTIMATOR_DEFAULTS['stepwise_epochs']})",
    )
    a.add_argument(
        "--learning-decay",
        type=float,
        metavar="A",
        default=S,
        help="stepwise: step (t + offset)^-A, A in (0.5, 1] "
        f"({_ESTIMATOR_DEFAULTS['learning_decay']:g})",
    )
    a.add_argument(
        "--learning-offset",
        type=float,
        metavar="T0",
        default=S,
        help=f"stepwise: the steps' offset ({_ESTIMATOR_DEFAULTS['learning_offset']:g})",
    )
    a.add_argument(
        "--step-blocks",
        type=int,
        metavar="N",
        default=S,
        help="stepwise: row blocks per update (default: the cluster's worker threads)",
    )
    data_options(p)
    model_options(p)
    common(p)

    p = sub.add_parser(
        "update",
        help="fold new data into a saved model (stepwise updates)",
        description="Apply stepwise EM updates (partial_fit) to MODEL over INPUT's row "
        "blocks, --step-blocks at a time in the input's order, and save the updated "
        "model to --output: the nightly job that folds in a day's data without "
        "refitting its history. MODEL is never modified in place unless --output "
        "names it and --overwrite is given.",
    )
    model_and_input(p)
    p.add_argument("-o", "--output", metavar="MODEL2", default=S, help="updated model path")
    p.add_argument(
        "--step-blocks",
        type=int,
        metavar="N",
        default=S,
        help="row blocks per update (default: the model's, else the cluster's worker threads)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace another daskgmm model at --output (MODEL itself included)",
    )
    data_options(p, fitting=False)
    common(p)

    p = sub.add_parser(
        "predict",
        help="write labels/probabilities/log-density to Zarr, GeoTIFF (or Parquet with --id)",
        description="Write the labels of INPUT under MODEL (and with --proba "
        "the component probabilities, with --score the "
        "log-density) to a Zarr store, block by block, for an image with -o FILE.tif to "
        "Cloud-Optimised GeoTIFFs on its grid (STEM.probability.tif, STEM.log_density.tif "
        "beside it), or for a table with --id to a "
        "Parquet dataset whose rows carry the ids. Images keep "
        "their (y, x) shape and coordinates. Re-running after a "
        "kill completes the output.",
    )
    model_and_input(p)
    p.add_argument("-o", "--output", metavar="OUT", default=S, help="a Zarr store, a .tif "
                   "file, or with --id a Parquet dataset (a directory)")  # fmt: skip
    table_ids(p)
    p.add_argument("--proba", action="store_true", default=S, help="also probabilities")
    p.add_argument("--score", action="store_true", default=S, help="also log-density")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace an output written by another model or for other data",
    )
    data_options(p, fitting=False)
    common(p)

    p = sub.add_parser(
        "select",
        help="BIC/AIC over numbers of components",
        description="Fit each number of components in --k for each covariance "
        "type and write the BIC/AIC table (CSV and JSON), a PNG "
        "plot, and with --output the model of lowest BIC.",
    )
    p.add_argument("input", nargs="?", default=S, metavar="INPUT")
    p.add_argument("--k", metavar="RANGE", default=S, help="1..12 or 2,4,8 (default 1..8)")
    p.add_argument(
        "--covariance-type",
        metavar="TYPES",
        default=S,
        help="comma-separated, e.g. full,diag (default full)",
    )
    p.add_argument("-o", "--output", metavar="MODEL", default=S, help="save the best model")
    p.add_argument(
        "--table",
        metavar="STEM",
        default=S,
        help="write STEM.csv and STEM.json (default: selection)",
    )
    p.add_argument("--plot", metavar="FILE.png", default=S, help="default: STEM.png")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace a daskgmm model at --output (tables and plots are replaced only when "
        "select wrote them)",
    )
    data_options(p)
    model_options(p, select=True)
    common(p)

    p = sub.add_parser(
        "anomalies",
        help="mask of low-density samples",
        description="Compute the log-density of INPUT under MODEL, find the "
        "--quantile threshold with distributed histograms, and "
        "write a boolean mask (and the log-density) to Zarr.",
    )
    model_and_input(p)
    p.add_argument("--quantile", type=float, default=S, help="share flagged (0.001)")
    p.add_argument("-o", "--output", metavar="OUT", default=S, help="a Zarr store, a .tif "
                   "file, or with --id a Parquet dataset of the flagged rows")  # fmt: skip
    table_ids(p)
    p.add_argument("--overwrite", action="store_true", default=S)
    data_options(p, fitting=False)
    common(p)

    p = sub.add_parser(
        "plot",
        help="pictures of a model over its data",
        description="Draw MODEL over a bounded sample of INPUT into the folder -o: "
        "components.png (1- and 2-sigma ellipses over a 2-D histogram, on --features or "
        "the first two principal components), weights.png, for images labels.png (the "
        "label map on a grid of at most --max-pixels, each class in its mean colour for "
        "three-band inputs or --rgb), and with --selection the BIC/AIC curve of a select "
        "run. Pictures daskgmm drew are replaced; nothing else is.",
    )
    model_and_input(p)
    p.add_argument("-o", "--output", metavar="DIR", default=S, help="folder for the PNGs")
    p.add_argument("--features", metavar="A,B", default=S,
                   help="two features (names or numbers) for the axes; default: the first "
                   "two principal components of the sample")  # fmt: skip
    p.add_argument("--sample", type=int, metavar="N", default=S,
                   help="samples drawn from at most 16 blocks (100000)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, metavar="N", default=S,
                   help="pixels of the label map at most (1000000)")  # fmt: skip
    p.add_argument("--rgb", metavar="R,G,B", default=S,
                   help="features shown as red, green, blue for the class colours "
                   "(default: a three-band input's bands)")  # fmt: skip
    p.add_argument("--selection", metavar="FILE.json", default=S,
                   help="also draw the BIC/AIC curve of this select table")  # fmt: skip
    data_options(p, fitting=False)
    common(p)

    p = sub.add_parser(
        "demo",
        help="generate data, fit, predict: the Quick start",
        description="Generate a Gaussian mixture of known parameters as a Zarr "
        "store, fit it on a Dask cluster (local by default) with a "
        "checkpoint, write the label map, and report how well the "
        "truth is recovered.",
    )
    p.add_argument("--n-samples", type=int, default=S)
    p.add_argument("--n-features", type=int, default=S)
    p.add_argument("-k", "--n-components", type=int, default=S)
    p.add_argument("--chunk-rows", type=int, default=S)
    p.add_argument(
        "--workdir",
        metavar="DIR",
        default=S,
        help="where data, model and labels go (default ./daskgmm-demo)",
    )
    p.add_argument("--seed", type=int, default=S)
    model_options(p)
    common(p)
    return parser


def _option_types(parser: argparse.ArgumentParser, command: str) -> dict[str, type]:
    """The type of each option of ``command`` (int, float, or bool for flags)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    types: dict[str, type] = {}
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._StoreTrueAction):
            types[action.dest] = bool
        elif action.type in (int, float):
            types[action.dest] = action.type
    return types


def _typed(config: dict[str, Any], types: dict[str, type], path: str) -> dict[str, Any]:
    """Config values of the options' types, or one line naming the option."""
    out = dict(config)
    for name, value in config.items():
        want = types.get(name)
        if want is None or value is None:
            continue
        if want is bool:
            if not isinstance(value, bool):
                raise CLIError(f"config file {path!r}: {name} must be true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise CLIError(f"config file {path!r}: {name} must be a number, got {value!r}")
        try:
            converted = want(value)
        except ValueError:
            converted = None
        if converted is None or (want is int and isinstance(value, float) and value != converted):
            kind = "a whole number" if want is int else "a number"
            raise CLIError(f"config file {path!r}: {name} must be {kind}, got {value!r}")
        out[name] = converted
    return out


def _options(
    args: argparse.Namespace, parser: argparse.ArgumentParser | None = None
) -> dict[str, Any]:
    """Defaults, then the config file, then the command line."""
    command = args.command
    given = {k: v for k, v in vars(args).items() if k != "command"}
    config: dict[str, Any] = {}
    if "config" in given:
        path = given.pop("config")
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except FileNotFoundError:
            raise CLIError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise CLIError(f"config file {path!r} is not valid TOML: {err}") from None
        allowed_tables = {"cluster", *COMMANDS}
        unknown_tables = set(document) - allowed_tables
        if unknown_tables:
            raise CLIError(
                f"config file {path!r}: unknown table(s) {sorted(unknown_tables)}; "
                f"expected {sorted(allowed_tables)}"
            )
        config = {**document.get("cluster", {}), **document.get(command, {})}
        config = _typed(config, _option_types(parser or build_parser(), command), path)
    defaults = {
        **DEFAULTS["cluster"],
        "verbose": False,
        "quiet": False,
        "input": None,
        "model": None,
        "output": None,
        "n_components": None,
    }
    if command in ("fit", "select", "demo"):
        defaults.update(DEFAULTS["model"])
    defaults.update(DEFAULTS[command])
    unknown = set(config) - set(defaults)
    if unknown:
        raise CLIError(f"config file: unknown option(s) for {command}: {sorted(unknown)}")
    return {**defaults, **config, **given}


def _setup_logging(opts: dict[str, Any]) -> None:
    level = logging.DEBUG if opts["verbose"] else logging.WARNING if opts["quiet"] else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)
    import distributed  # noqa: F401  (configures its loggers on import: override after)

    # Without -v, the command's own one-line errors speak for the cluster (distributed
    # logs a lost scheduler at ERROR with a traceback of each reconnection attempt).
    # (distributed's config gives some of its loggers, e.g. distributed.client, levels
    # of their own: each is set)
    level = logging.INFO if opts["verbose"] else logging.CRITICAL
    for name in ["distributed", "tornado", "bokeh", *logging.Logger.manager.loggerDict]:
        if name.split(".")[0] in ("distributed", "tornado", "bokeh"):
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _warnings_as_log_lines() -> Iterator[None]:
    """Warnings (a fit that did not converge) as one log line, without a source line."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s: %s", category.__name__, message)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _logs_through_bars() -> contextlib.AbstractContextManager:
    """On a terminal, log lines go through tqdm, so they do not break a progress bar."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _security(opts: dict[str, Any]):
    """TLS from --tls-ca-file/--tls-cert/--tls-key (all three or none), checked before
    any cluster starts; None leaves Dask's own configuration in charge."""
    files = {name: opts[f"tls_{name}"] for name in ("ca_file", "cert", "key")}
    given = {name: path for name, path in files.items() if path}
    if not given:
        return None
    if len(given) < 3:
        missing = ", ".join(f"--tls-{n.replace('_', '-')}" for n in files if n not in given)
        raise CLIError(f"TLS needs --tls-ca-file, --tls-cert and --tls-key; missing {missing}")
    for name, path in given.items():
        if not os.path.isfile(path):
            raise CLIError(f"--tls-{name.replace('_', '-')} {path!r} does not exist")
    from .cluster import tls_security

    return tls_security(*(os.path.abspath(given[n]) for n in ("ca_file", "cert", "key")))


def _lost_scheduler(err: BaseException) -> bool:
    """Whether ``err`` is how ``distributed`` reports a scheduler gone mid-run: a closed
    comm, or the client cancelling every future when it lost the scheduler."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    return isinstance(err, (CommClosedError, CancelledError)) or (
        "scheduler-connection-lost" in str(err)
    )


def _check_writable(path: str) -> None:
    """Create and remove a probe beside ``path`` (in its nearest existing folder), so that
    an output that cannot be written is found before an hour's fit, not after."""
    import fsspec

    from ._data import resolve_path

    target = resolve_path(path)
    fs, fs_path = fsspec.core.url_to_fs(target)
    folder = fs_path.rstrip("/")
    if "://" not in target:  # the folder itself, or its nearest existing ancestor
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
    elif not fs.isdir(folder):
        folder = posixpath.dirname(folder)
    probe = posixpath.join(folder, f".daskgmm-probe-{os.getpid()}-{time.monotonic_ns()}")
    try:
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except OSError as err:
        raise CLIError(f"cannot write {path!r}: {err.strerror or err}") from None


def _one_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see :data:`EXIT_CODES_HELP`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .cluster import ClusterError

    try:
        opts = _options(args, parser)
        _setup_logging(opts)
        preflight(args.command, opts)
        _security(opts)
        from .cluster import connect, parse_cluster

        if not (opts["scheduler"] or opts["scheduler_file"]):
            parse_cluster(opts["cluster"])
        with (
            _logs_through_bars(),
            _warnings_as_log_lines(),
            connect(
                opts["scheduler"],
                opts["cluster"],
                scheduler_file=opts["scheduler_file"],
                worker_timeout=float(opts["worker_timeout"]),
                dashboard=bool(opts["dashboard"]),
                quiet_workers=not opts["verbose"],
                security=_security(opts),
            ) as client,
        ):
            logger.info(
                "Dask cluster: %d workers (%s)",
                len(client.scheduler_info(n_workers=-1)["workers"]),
                client.scheduler.address,
            )
            if opts["dashboard"]:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            return COMMANDS[args.command](opts)
    except CLIError as err:
        print(f"daskgmm: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RefusedError as err:
        print(f"daskgmm: refused: {_one_line(err)}", file=sys.stderr)
        return EXIT_REFUSED
    except ClusterError as err:
        print(f"daskgmm: cluster error: {_one_line(err)}", file=sys.stderr)
        return EXIT_CLUSTER
    except Exception as err:
        if _lost_scheduler(err):  # before OSError: distributed's CommClosedError is one
            print(
                "daskgmm: cluster error: lost the connection to the Dask scheduler; re-run the "
                "job (a fit with --checkpoint resumes, predict completes what was written)",
                file=sys.stderr,
            )
            return EXIT_CLUSTER
        if not isinstance(err, (ValueError, TypeError, OSError)):
            raise
        print(f"daskgmm: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("daskgmm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
