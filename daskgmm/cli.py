"""The ``daskgmm`` command (also ``python -m daskgmm``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main"]

logger = logging.getLogger("daskgmm")


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from sklearn.metrics import adjusted_rand_score

    from .cluster import connect
    from .datasets import make_mixture
    from .mixture import GaussianMixture

    with connect(args.scheduler, args.cluster) as client:
        print(
            f"Dask cluster: {len(client.scheduler_info()['workers'])} workers at "
            f"{client.scheduler.address}"
        )
        data = make_mixture(
            args.n_samples,
            args.n_features,
            args.n_components,
            chunk_rows=args.chunk_rows,
            random_state=args.seed,
        )
        print(
            f"Data: {data.X.shape[0]:,} samples x {data.X.shape[1]} features, "
            f"{data.X.numblocks[0]} chunks ({data.X.nbytes / 1e6:.1f} MB), "
            f"{args.n_components} true components"
        )
        tic = time.perf_counter()
        gm = GaussianMixture(
            args.n_components,
            covariance_type=args.covariance_type,
            random_state=args.seed,
            n_init=args.n_init,
        ).fit(data.X)
        seconds = time.perf_counter() - tic
        print(f"Fitted in {seconds:.2f} s ({gm.n_iter_} EM iterations)")
        print(format_model(gm))
        labels = gm.predict(data.X)
        ari = adjusted_rand_score(data.labels.compute(), labels.compute())
        print(f"BIC: {gm.bic(data.X):.6g}")
        print(f"Adjusted Rand index against the true labels: {ari:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskgmm",
        description="Gaussian mixture models fitted by distributed EM on Dask.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_cluster_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help="address of a running Dask scheduler "
            "(default: $DASK_SCHEDULER_ADDRESS, else --cluster)",
        )
        p.add_argument(
            "--cluster",
            default="local",
            metavar="KIND[:N]",
            help="cluster to start when no scheduler is given: local[:N] "
            "(default: local, one worker per core)",
        )

    demo = sub.add_parser(
        "demo",
        help="generate a mixture and fit it on a local cluster",
        description="Generate a Gaussian mixture of known parameters, fit it with distributed "
        "EM on a local Dask cluster and print the model and how well it recovers "
        "the truth.",
    )
    demo.add_argument("--n-samples", type=int, default=400_000)
    demo.add_argument("--n-features", type=int, default=4)
    demo.add_argument("--n-components", type=int, default=5)
    demo.add_argument(
        "--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"]
    )
    demo.add_argument("--n-init", type=int, default=1)
    demo.add_argument("--chunk-rows", type=int, default=50_000)
    demo.add_argument("--seed", type=int, default=0)
    add_cluster_options(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)
    import distributed  # noqa: F401  (configures its loggers on import: override after)

    logging.getLogger("distributed").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"daskgmm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("daskgmm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
