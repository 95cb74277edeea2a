"""Customer segmentation on a Parquet table, with and without standardisation.

Generates a customer table (default 2 million rows, five segments) whose
columns live on very different scales (yearly spend in dollars, visits per
month, a returns rate), writes it as a Parquet dataset, then, through the
command line:

- fits six components on the raw columns and on the standardised ones
  (``--standardize``): on the raw columns the dollars swamp everything else;
- writes the segments back with the customer ids (``predict --id``);
- prints each fit's segment profile (weight, rows, every column's mean in
  dollars, visits, years) and the agreement with the true segments;
- draws the segments on the first two principal components.

    python examples/customer_segmentation.py [OUTDIR] [--rows N]
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_segmentation import new_output_folder

COLUMNS = ["annual_spend", "visits_per_month", "tenure_years", "basket_size", "returns_rate"]

#: Per segment: the means of the columns above, and their spreads.
SEGMENTS = np.array(
    [
        [1200.0, 2.0, 1.0, 35.0, 0.02],  # occasional newcomers
        [1500.0, 9.0, 6.0, 30.0, 0.03],  # loyal regulars
        [1400.0, 3.0, 7.0, 90.0, 0.04],  # big-basket veterans
        [1300.0, 4.0, 2.0, 40.0, 0.20],  # serial returners
        [9000.0, 12.0, 9.0, 120.0, 0.05],  # top spenders
    ]
)
SPREAD = np.array([400.0, 1.0, 1.0, 8.0, 0.02])


def write_customers(folder: str, rows: int, files: int = 4) -> np.ndarray:
    """The table as ``files`` Parquet files of 64k-row groups; returns the true segments."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    truth = rng.choice(len(SEGMENTS), rows, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    os.makedirs(folder)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        values = SEGMENTS[truth[part]] + rng.normal(size=(len(part), len(COLUMNS))) * SPREAD
        table = {"customer_id": part + 1_000_000}
        table.update({c: values[:, j] for j, c in enumerate(COLUMNS)})
        table["region"] = rng.choice(["north", "south", "east", "west"], len(part))
        pq.write_table(pa.table(table), os.path.join(folder, f"part-{i}.parquet"),
                       row_group_size=65_536)  # fmt: skip
    return truth


def daskgmm(*args: str) -> None:
    from daskgmm.cli import main

    status = main([*args, "--cluster", "local"])
    if status:
        raise SystemExit(status)


def main(outdir: str = "customer-segmentation-output", rows: int = 2_000_000) -> None:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    new_output_folder(outdir)
    table = os.path.join(outdir, "customers")
    truth = write_customers(table, rows)
    print(f"{rows:,} customers x {len(COLUMNS)} columns written to {table}/ (Parquet)")
    columns = ",".join(COLUMNS)
    scores = {}
    for name, extra in (("raw", []), ("standardized", ["--standardize"])):
        model = os.path.join(outdir, f"model-{name}.zarr")
        segments = os.path.join(outdir, f"segments-{name}")
        print(f"\n== {name} columns")
        daskgmm("fit", table, "--columns", columns, "-k", "5", *extra, "-o", model,
                "--profile-out", os.path.join(outdir, f"profile-{name}.csv"), "-q")  # fmt: skip
        print(pd.read_csv(os.path.join(outdir, f"profile-{name}.csv")).round(3).to_string())
        daskgmm("predict", model, table, "--id", "customer_id", "-o", segments, "-q")
        written = pd.read_parquet(segments).sort_values("customer_id")
        scores[name] = adjusted_rand_score(truth, written["label"].to_numpy())
        print(f"{name}: {len(written):,} segments written to {segments}/; ARI against the true "
              f"segments {scores[name]:.3f}")  # fmt: skip
    picture(table, os.path.join(outdir, "segments-standardized"), outdir)


def picture(table: str, segments: str, outdir: str) -> None:
    """A sample of the customers on the first two principal components of the
    standardised columns, coloured by segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = pd.read_parquet(table).merge(pd.read_parquet(segments), on="customer_id")
    rows = rows.sample(min(len(rows), 20_000), random_state=0)
    Z = rows[COLUMNS].to_numpy()
    Z = (Z - Z.mean(0)) / Z.std(0)
    _, _, axes = np.linalg.svd(Z, full_matrices=False)
    pcs = Z @ axes[:2].T
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(pcs[:, 0], pcs[:, 1], c=rows["label"], cmap="tab10", s=2, alpha=0.5)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("segments (standardised fit)")
    path = os.path.join(outdir, "segments.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"picture written to {path}")


if __name__ == "__main__":
    args = sys.argv[1:]
    n = 2_000_000
    if "--rows" in args:
        i = args.index("--rows")
        n = int(args[i + 1])
        del args[i : i + 2]
    main(*args[:1], rows=n)
