"""The ``daskgmm`` command (also ``python -m daskgmm``).

Every option can also come from a TOML file (``--config job.toml``): a
``[cluster]`` table (``scheduler``, ``cluster``) and one table per command
(``[fit]``, ``[predict]``, ``[select]``, ``[anomalies]``, ``[demo]``) whose keys
are the long option names with ``_`` for ``-`` (``n_components = 8``). Options
given on the command line override the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["main"]

logger = logging.getLogger("daskgmm")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

#: Defaults of every option, per command (argparse itself keeps none, so that
#: options from a config file can be told apart from defaults).
DEFAULTS: dict[str, dict[str, Any]] = {
    "cluster": {"scheduler": None, "cluster": "local"},
    "model": {
        "covariance_type": "full",
        "tol": 1e-3,
        "reg_covar": 1e-6,
        "max_iter": 100,
        "n_init": 1,
        "init_params": "kmeans",
        "random_state": 0,
        "cache": "auto",
        "variable": None,
        "feature_dim": None,
    },
    "fit": {"checkpoint": None, "restart": False},
    "predict": {
        "proba": False,
        "score": False,
        "overwrite": False,
        "variable": None,
        "feature_dim": None,
    },
    "select": {"k": "1..8", "covariance_type": "full", "output": None, "table": None, "plot": None},
    "anomalies": {"quantile": 0.001, "overwrite": False, "variable": None, "feature_dim": None},
    "demo": {
        "n_samples": 400_000,
        "n_features": 4,
        "n_components": 5,
        "chunk_rows": 50_000,
        "workdir": "daskgmm-demo",
        "seed": 0,
    },
}


class CLIError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


# ----------------------------------------------------------------- helpers
def format_model(gm) -> str:
    """A human-readable table of a fitted mixture."""
    lines = [
        f"GaussianMixture(n_components={gm.n_components}, "
        f"covariance_type={gm.covariance_type!r}): converged={gm.converged_}, "
        f"n_iter={gm.n_iter_}, lower_bound={gm.lower_bound_:.6f}",
        f"{'k':>3} {'weight':>8}  mean",
    ]
    with np.printoptions(precision=3, suppress=True, linewidth=200):
        for k in np.argsort(-gm.weights_):
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
    )
    kw.update(overrides)
    return GaussianMixture(**kw)


def _require(opts: dict[str, Any], *names: str) -> None:
    for name in names:
        if opts.get(name) in (None, ""):
            what = name.upper() if name in ("input", "model") else "--" + name.replace("_", "-")
            raise CLIError(f"missing {what} (on the command line or in the config file)")


def _check_exists(path: str) -> None:
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
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
    _require(opts, "input", "n_components", "output")
    _check_exists(opts["input"])
    gm = _estimator(opts, int(opts["n_components"]))
    progress = Progress(gm.max_iter, opts["quiet"])
    tic = time.perf_counter()
    try:
        gm.fit(
            opts["input"],
            checkpoint=opts["checkpoint"],
            resume=not opts["restart"],
            callback=progress,
        )
    finally:
        progress.close()
    gm.save(opts["output"])
    if not opts["quiet"]:
        print(format_model(gm))
        print(f"fitted in {time.perf_counter() - tic:.1f} s; model written to {opts['output']}")
    return 0


def _load_model(path: str):
    from . import load

    try:
        return load(path)
    except FileNotFoundError:
        raise CLIError(f"model {path!r} does not exist") from None


def _open_for_model(gm, opts: dict[str, Any]):
    from ._data import open_input

    _check_exists(opts["input"])
    variable = opts.get("variable") or gm.variable
    feature_dim = opts.get("feature_dim") or gm.feature_dim
    inp = open_input(opts["input"], variable=variable, feature_dim=feature_dim)
    if inp.X.shape[1] != gm.n_features_in_:
        raise CLIError(
            f"the model was trained on {gm.n_features_in_} features but {opts['input']!r} has "
            f"{inp.X.shape[1]}"
        )
    return inp


def cmd_predict(opts: dict[str, Any]) -> int:
    """Write labels (and probabilities, log-density) of INPUT to a Zarr store."""
    from ._output import write_per_sample

    _require(opts, "model", "input", "output")
    gm = _load_model(opts["model"])
    inp = _open_for_model(gm, opts)
    names = (
        ("label",)
        + (("probability",) if opts["proba"] else ())
        + (("log_density",) if opts["score"] else ())
    )
    info = write_per_sample(opts["output"], gm._params, inp, names, overwrite=opts["overwrite"])
    if not opts["quiet"]:
        print(
            f"wrote {', '.join(names)} for {info['samples']:,} samples to {opts['output']} "
            f"({info['blocks']} blocks written, {info['skipped']} already done)"
        )
    return 0


def cmd_anomalies(opts: dict[str, Any]) -> int:
    """Flag the samples of lowest density under a model (a mask in a Zarr store)."""
    from ._output import quantile_threshold, write_per_sample
    from .mixture import _score_block

    _require(opts, "model", "input", "output")
    q = float(opts["quantile"])
    if not 0.0 < q < 1.0:
        raise CLIError(f"--quantile must be strictly between 0 and 1, got {q}")
    gm = _load_model(opts["model"])
    inp = _open_for_model(gm, opts)
    density = gm._map_rows(inp.X, _score_block, components=False, dtype=np.float64, restore=False)
    threshold = quantile_threshold(density, q)
    info = write_per_sample(
        opts["output"],
        gm._params,
        inp,
        ("anomaly", "log_density"),
        threshold=threshold,
        overwrite=opts["overwrite"],
        extra_attrs={"quantile": q, "threshold": threshold},
    )
    if not opts["quiet"]:
        print(
            f"log-density threshold at quantile {q}: {threshold:.6f}; mask of "
            f"{info['samples']:,} samples written to {opts['output']}"
        )
    return 0


def cmd_select(opts: dict[str, Any]) -> int:
    """Fit a range of component counts and covariance types; report BIC/AIC."""
    from ._data import open_input

    _require(opts, "input")
    _check_exists(opts["input"])
    ks = _k_range(opts["k"])
    types = opts["covariance_type"]
    types = types if isinstance(types, list) else str(types).split(",")
    for ct in types:
        if ct not in COVARIANCE_TYPES:
            raise CLIError(
                f"unknown covariance type {ct!r}; expected some of {','.join(COVARIANCE_TYPES)}"
            )
    inp = open_input(opts["input"], variable=opts["variable"], feature_dim=opts["feature_dim"])
    X = inp.X.persist() if _cache(opts["cache"]) is not False else inp.X
    rows, best = [], None
    for ct in types:
        for k in ks:
            tic = time.perf_counter()
            gm = _estimator(
                opts, k, covariance_type=ct, variable=None, feature_dim=None, cache=False
            )
            gm.fit(X)
            mean, n = gm._mean_log_prob(X)
            n_params = gm._n_parameters()
            bic = -2 * mean * n + n_params * np.log(n)
            aic = -2 * mean * n + 2 * n_params
            rows.append(
                {
                    "covariance_type": ct,
                    "n_components": k,
                    "bic": bic,
                    "aic": aic,
                    "log_likelihood": mean,
                    "n_parameters": n_params,
                    "converged": gm.converged_,
                    "n_iter": gm.n_iter_,
                    "seconds": round(time.perf_counter() - tic, 3),
                }
            )
            if not opts["quiet"]:
                print(f"{ct:>9} k={k:<3} BIC {bic:14.2f}  AIC {aic:14.2f}")
            if best is None or bic < best[0]:
                best = (bic, gm)
    stem = opts["table"] or "selection"
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(f"{stem}.json", "w") as f:
        json.dump(
            {
                "rows": rows,
                "best": {
                    "covariance_type": best[1].covariance_type,
                    "n_components": best[1].n_components,
                },
            },
            f,
            indent=1,
        )
    plot = opts["plot"] or f"{stem}.png"
    _plot_selection(rows, types, plot)
    if opts["output"]:
        best[1].set_params(variable=opts["variable"], feature_dim=opts["feature_dim"])
        best[1].save(opts["output"])
    if not opts["quiet"]:
        print(
            f"best by BIC: covariance_type={best[1].covariance_type!r}, "
            f"n_components={best[1].n_components}; table {stem}.csv/.json, plot {plot}"
            + (f", model {opts['output']}" if opts["output"] else "")
        )
    return 0


def _plot_selection(rows: list[dict[str, Any]], types: list[str], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install 'daskgmm[plot]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ct in types:
        sub = [r for r in rows if r["covariance_type"] == ct]
        ks = [r["n_components"] for r in sub]
        ax.plot(ks, [r["bic"] for r in sub], marker="o", label=f"BIC {ct}")
        ax.plot(ks, [r["aic"] for r in sub], marker="s", linestyle="--", label=f"AIC {ct}")
    ax.set_xlabel("number of components")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title("daskgmm model selection")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_demo(opts: dict[str, Any]) -> int:
    """Generate a mixture, fit it, predict labels to Zarr, report recovery."""
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
    data.X.to_zarr(store, overwrite=True)
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


def preflight(command: str, opts: dict[str, Any]) -> None:
    """Check paths, variables, dimensions and models before any cluster is started.

    Only metadata are read, so mistakes are reported at once, as one line.
    """
    from ._data import open_input

    if command in ("fit", "select"):
        _require(opts, "input", *(("n_components", "output") if command == "fit" else ()))
        _check_exists(opts["input"])
        open_input(opts["input"], variable=opts["variable"], feature_dim=opts["feature_dim"])
        if command == "select":
            _k_range(opts["k"])
        _cache(opts["cache"])
    elif command in ("predict", "anomalies"):
        _require(opts, "model", "input", "output")
        _open_for_model(_load_model(opts["model"]), opts)


COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "fit": cmd_fit,
    "predict": cmd_predict,
    "select": cmd_select,
    "anomalies": cmd_anomalies,
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
        epilog="Options can also come from a TOML file (--config); see 'daskgmm COMMAND -h'.",
    )
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
            "--cluster",
            metavar="KIND[:N]",
            default=S,
            help="cluster to start without --scheduler: local[:N] (default, N "
            "worker processes, one per core), slurm[:N] or pbs[:N] "
            "(dask-jobqueue, N jobs), kubernetes[:N] (Dask operator, N "
            "workers)",
        )

    def data_options(p: argparse.ArgumentParser) -> None:
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

    def model_options(p: argparse.ArgumentParser, select: bool = False) -> None:
        g = p.add_argument_group("model")
        if not select:
            g.add_argument(
                "--covariance-type", choices=COVARIANCE_TYPES, default=S, help="default: full"
            )
        g.add_argument("--tol", type=float, default=S, help="convergence tolerance (1e-3)")
        g.add_argument("--reg-covar", type=float, default=S, help="diagonal regularisation (1e-6)")
        g.add_argument("--max-iter", type=int, default=S, help="EM iterations at most (100)")
        g.add_argument("--n-init", type=int, default=S, help="restarts, best kept (1)")
        g.add_argument("--init-params", choices=INIT_PARAMS, default=S, help="default: kmeans")
        g.add_argument("--random-state", type=int, default=S, help="seed (0)")
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
        "dataset, a .npy file, or a directory of them) and save it "
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
        help="ignore (and overwrite) an existing checkpoint",
    )
    data_options(p)
    model_options(p)
    common(p)

    p = sub.add_parser(
        "predict",
        help="write labels/probabilities/log-density to Zarr",
        description="Write the labels of INPUT under MODEL (and with --proba "
        "the component probabilities, with --score the "
        "log-density) to a Zarr store, block by block. Images keep "
        "their (y, x) shape and coordinates. Re-running after a "
        "kill completes the output.",
    )
    p.add_argument("model", nargs="?", default=S, metavar="MODEL")
    p.add_argument("input", nargs="?", default=S, metavar="INPUT")
    p.add_argument("-o", "--output", metavar="OUT.zarr", default=S)
    p.add_argument("--proba", action="store_true", default=S, help="also probabilities")
    p.add_argument("--score", action="store_true", default=S, help="also log-density")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace an output written by another model or for other data",
    )
    data_options(p)
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
    p.add_argument("model", nargs="?", default=S, metavar="MODEL")
    p.add_argument("input", nargs="?", default=S, metavar="INPUT")
    p.add_argument("--quantile", type=float, default=S, help="share flagged (0.001)")
    p.add_argument("-o", "--output", metavar="OUT.zarr", default=S)
    p.add_argument("--overwrite", action="store_true", default=S)
    data_options(p)
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


def _options(args: argparse.Namespace) -> dict[str, Any]:
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

    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.INFO if opts["verbose"] else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        opts = _options(args)
        _setup_logging(opts)
        preflight(args.command, opts)
        from .cluster import connect, parse_cluster

        if not opts["scheduler"]:
            parse_cluster(opts["cluster"])

        with connect(opts["scheduler"], opts["cluster"]) as client:
            logger.info(
                "Dask cluster: %d workers (%s)",
                len(client.scheduler_info(n_workers=-1)["workers"]),
                client.scheduler.address,
            )
            return COMMANDS[args.command](opts)
    except CLIError as err:
        print(f"daskgmm: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"daskgmm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("daskgmm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
