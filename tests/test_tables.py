"""Tables as inputs: pandas and dask DataFrames, Parquet and CSV files.

Oracles: the fit of the same values as an array (a table changes nothing but
where the values come from), Parquet footers (row counts without a read), and
the exact one-line errors for bad tables, before any cluster starts.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import zarr

import daskgmm._tables as tables
from daskgmm import BayesianGaussianMixture, GaussianMixture, load
from daskgmm._data import open_input

from .test_cli import _run, scheduler_address  # noqa: F401 (fixture)

FEATURES = ["spend", "visits", "tenure"]


@pytest.fixture(scope="module")
def customers():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 1, (3000, 3)), rng.normal(4, 1, (3000, 3))])
    X *= [1000.0, 1.0, 0.01]  # very different scales
    df = pd.DataFrame(X, columns=FEATURES)
    df.insert(0, "customer_id", np.arange(len(df)) + 10_000)
    df["region"] = np.where(X[:, 1] > 2, "north", "south")
    return df


@pytest.fixture(scope="module")
def parquet(customers, tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "customers.parquet"
    customers.to_parquet(path, row_group_size=250)  # 24 row groups
    return path


@pytest.mark.parametrize("Estimator", [GaussianMixture, BayesianGaussianMixture])
def test_a_table_fits_as_its_values_do(Estimator, customers, parquet, tmp_path):
    import dask.dataframe as dd

    X = customers[FEATURES].to_numpy()
    reference = Estimator(2, random_state=0).fit(X)
    csv = tmp_path / "customers.csv"
    customers.to_csv(csv, index=False)
    inputs = {
        "pandas": customers,
        "dask": dd.from_pandas(customers, npartitions=7),
        "parquet": str(parquet),
        "csv": str(csv),
    }
    for name, table in inputs.items():
        gm = Estimator(2, random_state=0, columns=FEATURES).fit(table)
        np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(gm.covariances_, reference.covariances_, rtol=1e-10)
        assert list(gm.feature_names_in_) == FEATURES, name


def test_parquet_lengths_come_from_the_footers_and_tiny_row_groups_share_blocks(
    parquet, monkeypatch
):
    reads = []
    original = tables._read_pieces
    monkeypatch.setattr(tables, "_read_pieces", lambda *a: reads.append(len(a[1])) or original(*a))
    import dask

    with dask.config.set({"daskgmm.chunk-bytes": 1000 * 3 * 8}):
        inp = open_input(str(parquet), columns=FEATURES)
    assert reads == []  # opened from the footers: no row read
    assert inp.X.chunks[0] == (1000,) * 6  # 24 row groups of 250, four to a block
    assert inp.feature_names == tuple(FEATURES)
    values = inp.X.compute(scheduler="sync")
    assert reads == [4] * 6
    np.testing.assert_array_equal(values, pd.read_parquet(parquet)[FEATURES].to_numpy())


def test_a_directory_of_parquet_files(customers, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    for i in range(5):
        customers.iloc[i * 1200 : (i + 1) * 1200].to_parquet(folder / f"part-{i}.parquet")
    gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(str(folder))
    reference = GaussianMixture(2, random_state=0).fit(customers[FEATURES].to_numpy())
    np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-12)
    labels = gm.predict(str(folder)).compute()
    np.testing.assert_array_equal(labels, reference.predict(customers[FEATURES].to_numpy()))


def test_a_loaded_model_reads_its_own_columns(customers, parquet, tmp_path):
    gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(str(parquet))
    gm.save(tmp_path / "m.zarr")
    loaded = load(tmp_path / "m.zarr")
    assert list(loaded.feature_names_in_) == FEATURES and loaded.columns == FEATURES
    # the same columns in another order, among others: read by name
    shuffled = customers[["region", "tenure", "customer_id", "spend", "visits"]]
    other = tmp_path / "other.parquet"
    shuffled.to_parquet(other)
    loaded.set_params(columns=None)
    np.testing.assert_array_equal(
        loaded.predict(str(other)).compute(), gm.predict(customers[FEATURES].to_numpy())
    )
    fitted = GaussianMixture(2, random_state=0).fit(customers[FEATURES])
    np.testing.assert_array_equal(  # a DataFrame too is read by column name
        fitted.predict(customers[["visits", "tenure", "spend"]]),
        fitted.predict(customers[FEATURES].to_numpy()),
    )
    with pytest.raises(ValueError, match="has no column 'tenure'"):
        fitted.predict(customers[["visits", "spend"]])


@pytest.mark.parametrize(
    "columns, message",
    [
        (["spend", "income"], "has no column 'income'; its columns are ['customer_id', "),
        (["spend", "region"], "column 'region' is not numeric"),
    ],
)
def test_bad_columns_are_one_line_naming_them(customers, parquet, columns, message):
    for table in (customers, str(parquet)):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
            GaussianMixture(2, columns=columns).fit(table)


def test_bad_tables_on_the_command_line_stop_before_a_cluster(customers, parquet, tmp_path):
    empty = tmp_path / "empty.parquet"
    customers.iloc[:0].to_parquet(empty)
    cases = [
        (parquet, ["--columns", "spend,income"], "has no column 'income'"),
        (parquet, ["--columns", "spend,region"], "column 'region' is not numeric"),
        (empty, ["--columns", "spend,visits"], "has no rows"),
    ]
    for path, extra, message in cases:
        r = _run(
            "fit",
            path,
            *extra,
            "-k",
            2,
            "-o",
            tmp_path / "m.zarr",
            "--scheduler",
            "tcp://127.0.0.1:9",
        )  # nothing listens: preflight comes first
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_command_line_fits_and_predicts_a_parquet_table(
    customers,
    parquet,
    tmp_path,
    scheduler_address,  # noqa: F811
):
    model, labels = tmp_path / "m.zarr", tmp_path / "labels.zarr"
    r = _run("fit", parquet, "--columns", ",".join(FEATURES), "-k", 2, "-o", model,
             "--scheduler", scheduler_address)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _run("predict", model, parquet, "-o", labels, "--scheduler", scheduler_address)
    assert r.returncode == 0, r.stderr
    written = zarr.open_group(str(labels), mode="r")["label"][:]
    expected = load(model).predict(customers[FEATURES].to_numpy())
    np.testing.assert_array_equal(written, expected)


# ------------------------------------------------------------------ outputs
SMALL_BLOCKS = {"DASK_DASKGMM__CHUNK_BYTES": str(1000 * 3 * 8)}  # 1000-row blocks


def _parts(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))


def test_predict_writes_every_row_once_with_its_id_and_completes_a_partial_output(
    customers,
    parquet,
    tmp_path,
    scheduler_address,  # noqa: F811
):
    from .test_cli import ENV

    env = {**ENV, **SMALL_BLOCKS}
    model, out = tmp_path / "m.zarr", tmp_path / "segments.parquet"
    GaussianMixture(2, random_state=0, columns=FEATURES).fit(str(parquet)).save(model)
    args = ["predict", model, parquet, "--id", "customer_id", "-o", out, "--proba", "--score",
            "--scheduler", scheduler_address]  # fmt: skip
    r = _run(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert _parts(out) == [f"part-{i:05d}.parquet" for i in range(6)]
    written = pd.read_parquet(out)
    assert list(written.columns) == ["customer_id", "label", "probability_0", "probability_1",
                                     "log_density"]  # fmt: skip
    assert written["customer_id"].is_unique and len(written) == len(customers)
    joined = customers.merge(written, on="customer_id", validate="one_to_one")
    gm = load(model)
    X = joined[FEATURES].to_numpy()
    np.testing.assert_array_equal(joined["label"], gm.predict(X))
    np.testing.assert_allclose(joined["log_density"], gm.score_samples(X), rtol=1e-12)
    # a run killed mid-way: two parts missing, one left aside half written
    (out / "part-00002.parquet").unlink()
    (out / "part-00004.parquet").rename(out / "part-00004.parquet.0123abcd.tmp")
    meta = (out / "_daskgmm.json").read_text().replace('"complete": true', '"complete": false')
    (out / "_daskgmm.json").write_text(meta)
    again = _run(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert "(2 blocks written, 4 already done)" in again.stdout
    assert _parts(out) == [f"part-{i:05d}.parquet" for i in range(6)]
    assert not list(out.glob("*.tmp"))
    pd.testing.assert_frame_equal(pd.read_parquet(out), written)


def test_table_outputs_never_replace_what_is_not_theirs(customers, parquet, tmp_path):
    gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(customers)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a daskgmm table output"):
        gm.predict_to_table(str(parquet), mine, ids=["customer_id"], overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    gm.predict_to_table(customers, out, ids="customer_id")
    other = GaussianMixture(2, random_state=1, columns=FEATURES, n_init=2).fit(customers)
    with pytest.raises(ValueError, match="another model or other options; pass --overwrite"):
        other.predict_to_table(customers, out, ids="customer_id")
    info = other.predict_to_table(customers, out, ids="customer_id", overwrite=True)
    assert info["rows"] == len(customers)


def test_anomalies_write_the_flagged_rows(customers, parquet, tmp_path):
    gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(customers)
    info = gm.predict_to_table(str(parquet), tmp_path / "flagged", ids=["customer_id"],
                               anomaly_quantile=0.01)  # fmt: skip
    flagged = pd.read_parquet(tmp_path / "flagged")
    density = gm.score_samples(customers[FEATURES].to_numpy())
    expected = customers["customer_id"][density < info["threshold"]]
    assert sorted(flagged["customer_id"]) == sorted(expected) and 40 <= len(flagged) <= 80
    assert list(flagged.columns) == ["customer_id", "log_density"]


def test_bad_ids_stop_before_a_cluster(customers, tmp_path):
    doubled = tmp_path / "doubled.parquet"
    table = customers.copy()
    table.loc[17, "customer_id"] = table.loc[3, "customer_id"]
    table.to_parquet(doubled)
    model = tmp_path / "m.zarr"
    GaussianMixture(2, random_state=0, columns=FEATURES).fit(customers).save(model)
    for ids, message in (("customer_id", "repeat 1 of 6000 rows (first repeated: [10003])"),
                         ("client", "has no id column 'client'")):  # fmt: skip
        r = _run("predict", model, doubled, "--id", ids, "-o", tmp_path / "out",
                 "--scheduler", "tcp://127.0.0.1:9")  # fmt: skip
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_fit_prints_and_writes_the_segment_profile(customers, parquet, tmp_path):
    profile = tmp_path / "profile.csv"
    model = tmp_path / "m.zarr"
    r = _run("fit", parquet, "--columns", ",".join(FEATURES), "-k", 2, "-o", model,
             "--profile-out", profile, "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = pd.read_csv(profile)
    assert list(written.columns) == ["component", "weight", "rows", *FEATURES]
    gm = load(model)
    heaviest = written.iloc[0]
    k = int(heaviest["component"])
    assert heaviest["weight"] == pytest.approx(gm.weights_.max(), rel=1e-12)
    assert heaviest["rows"] == pytest.approx(gm.weights_[k] * len(customers), abs=0.05)
    np.testing.assert_allclose(heaviest[FEATURES].to_numpy(float), gm.means_[k], rtol=1e-12)
    header = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("component"))
    assert header.split() == ["component", "weight", "rows", *FEATURES]
    # its own profile is replaced by a re-run; anything else never
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    r = _run("fit", parquet, "--columns", ",".join(FEATURES), "-k", 2, "-o", model,
             "--profile-out", notes, "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 3 and "not a segment profile" in r.stderr
    assert notes.read_text() == "my,own,table\n"


# ------------------------------------------------------------- preprocessing
def _subspace_data(n=6000, d=20, seed=0):
    """Three clusters in a known 2-D subspace of 20 features, rotated, on wild scales."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, n)
    signal = np.array([[0, 0], [6, 0], [0, 6]])[labels] + rng.normal(size=(n, 2))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = np.hstack([3 * signal, rng.normal(size=(n, d - 2))]) @ q.T
    return X * np.logspace(-2, 3, d), labels


def test_standardize_is_the_fit_of_the_standardised_values(customers):
    X = customers[FEATURES].to_numpy()
    gm = GaussianMixture(2, random_state=0, standardize=True).fit(X)
    Z = (X - X.mean(0)) / X.std(0)
    reference = GaussianMixture(2, random_state=0).fit(Z)
    np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gm.transform_.scale, X.std(0), rtol=1e-12)
    np.testing.assert_allclose(
        gm.means_in_input_units(), reference.means_ * X.std(0) + X.mean(0), rtol=1e-9
    )
    np.testing.assert_array_equal(gm.predict(X), reference.predict(Z))
    assert gm.sample(10)[0].shape == (10, 3)
    scale = np.diag(X.std(0))
    np.testing.assert_allclose(
        gm.covariances_in_input_units(), scale @ reference.covariances_ @ scale, rtol=1e-8
    )
    diag = GaussianMixture(2, random_state=0, standardize=True, covariance_type="diag").fit(X)
    within = diag.covariances_in_input_units()
    np.testing.assert_allclose(np.diagonal(within, axis1=1, axis2=2),
                               diag.covariances_ * X.var(0), rtol=1e-10)  # fmt: skip
    assert np.count_nonzero(within - np.diagonal(within, axis1=1, axis2=2)[:, :, None]
                            * np.eye(3)) == 0  # fmt: skip


@pytest.mark.parametrize("Estimator", [GaussianMixture, BayesianGaussianMixture])
def test_pca_recovers_clusters_in_a_subspace_and_travels_with_the_model(Estimator, tmp_path):
    from sklearn.metrics import adjusted_rand_score

    X, labels = _subspace_data()
    raw = Estimator(3, random_state=0).fit(X)
    gm = Estimator(3, random_state=0, standardize=True, pca=2).fit(X)
    ari = adjusted_rand_score(labels, gm.predict(X))
    raw_ari = adjusted_rand_score(labels, raw.predict(X))
    assert ari >= 0.95, (ari, raw_ari)
    assert gm.means_.shape == (3, 2) and gm.n_features_in_ == 20
    assert np.linalg.matrix_rank(gm.covariances_in_input_units()[0]) == 2
    assert 0 < gm.transform_.explained_variance_ratio.sum() <= 1
    gm.save(tmp_path / "m.zarr")
    loaded = load(tmp_path / "m.zarr")
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))
    np.testing.assert_allclose(loaded.score_samples(X), gm.score_samples(X), rtol=1e-12)
    zarr.open_array(str(tmp_path / "m.zarr" / "transform-scale"), mode="r+")[0] = 0.0
    with pytest.raises(ValueError, match="transform array 'scale' holds values <= 0"):
        load(tmp_path / "m.zarr")


def test_preprocessing_bad_options(customers):
    X = customers[FEATURES].to_numpy()
    with pytest.raises(
        ValueError, match=r"pca=4 needs at most as many components as features \(3\)"
    ):
        GaussianMixture(2, pca=4).fit(X)
    with pytest.raises(ValueError, match="pca cannot be combined with missing='marginalize'"):
        GaussianMixture(2, pca=2, missing="marginalize").fit(X)


def test_command_line_standardize_and_pca_on_a_table(customers, parquet, tmp_path):
    model, out = tmp_path / "m.zarr", tmp_path / "segments"
    r = _run("fit", parquet, "--columns", ",".join(FEATURES), "-k", 2, "--standardize",
             "--pca", 2, "-o", model, "--cluster", "local:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _run("predict", model, parquet, "--id", "customer_id", "-o", out, "--cluster", "local:1")
    assert r.returncode == 0, r.stderr
    gm = load(model)
    assert gm.standardize and gm.pca == 2 and gm.means_.shape == (2, 2)
    written = customers.merge(pd.read_parquet(out), on="customer_id", validate="one_to_one")
    np.testing.assert_array_equal(written["label"], gm.predict(written[FEATURES].to_numpy()))


def test_a_glob_of_parquet_files(customers, tmp_path):
    for i in range(3):
        customers.iloc[i * 2000 : (i + 1) * 2000].to_parquet(tmp_path / f"day-{i}.parquet")
    (tmp_path / "notes.parquet.txt").write_text("not a table")
    gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(str(tmp_path / "day-*.parquet"))
    reference = GaussianMixture(2, random_state=0).fit(customers[FEATURES].to_numpy())
    np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-12)


def test_a_pipeline_with_dask_ml_scaling_and_pca():
    """dask-ml's StandardScaler and PCA in front of the estimator, on a dask array: the
    pipeline's mixture is the fit of the values the two steps hand it, and it finds
    the clusters the model's own standardize + pca finds."""
    import dask.array as da
    from dask_ml.decomposition import PCA
    from dask_ml.preprocessing import StandardScaler
    from sklearn.metrics import adjusted_rand_score
    from sklearn.pipeline import make_pipeline

    X, labels = _subspace_data()
    Xd = da.from_array(X, chunks=(1000, X.shape[1]))
    pipe = make_pipeline(StandardScaler(), PCA(2, svd_solver="full"),
                         GaussianMixture(3, random_state=0)).fit(Xd)  # fmt: skip
    predicted = pipe.predict(Xd)
    assert isinstance(predicted, da.Array)
    Z = pipe[:-1].transform(Xd)
    alone = GaussianMixture(3, random_state=0).fit(Z)
    np.testing.assert_allclose(pipe[-1].means_, alone.means_, rtol=1e-12, atol=1e-12)
    inside = GaussianMixture(3, random_state=0, standardize=True, pca=2).fit(Xd)
    assert adjusted_rand_score(labels, predicted.compute()) >= 0.95
    assert adjusted_rand_score(predicted.compute(), inside.predict(Xd).compute()) >= 0.99


READS: list[int] = []


def _counted_partition(table: pd.DataFrame, i: int) -> pd.DataFrame:
    READS.append(i)
    return table.iloc[i * 500 : (i + 1) * 500].reset_index(drop=True)


def _counted_block(block: np.ndarray, block_id=None) -> np.ndarray:
    READS.append(block_id[0])
    return block


@pytest.mark.parametrize("standardize", [False, True])
def test_unknown_lengths_and_standardize_cost_no_pass_of_their_own(customers, standardize):
    """A dask DataFrame's partitions do not know their lengths: the pass that counts
    them gives the fit the moments it would otherwise read the data for (k-means||'s
    first round, the standardisation). So a fit on it reads every partition as many
    times as the fit on an array of the same blocks, and standardize adds no read."""
    import dask
    import dask.array as da
    import dask.dataframe as dd

    values = customers[FEATURES].to_numpy()
    meta = customers.iloc[:0]
    frame = dd.from_map(functools.partial(_counted_partition, customers), range(12), meta=meta)
    array = da.from_array(values, chunks=(500, 3)).map_blocks(_counted_block, dtype=float)
    reads = {}
    with dask.config.set({"scheduler": "sync", "daskgmm.chunk-bytes": 500 * 3 * 8}):
        for name, X in (("frame", frame), ("array", array)):
            for scaled in (False, standardize):
                READS.clear()
                columns = FEATURES if name == "frame" else None
                gm = GaussianMixture(2, random_state=0, columns=columns, standardize=scaled,
                                     max_iter=5, tol=0, cache=False).fit(X)  # fmt: skip
                reads[name, scaled] = sorted(READS)
                means = gm.means_in_input_units()
                reads[name, scaled, "means"] = means[np.argsort(means[:, 0])]
    assert len(reads["array", False]) > 12 * 10  # k-means, then EM
    assert reads["frame", standardize] == reads["array", False]
    assert reads["array", standardize] == reads["array", False]
    np.testing.assert_allclose(reads["frame", standardize, "means"],
                               reads["array", standardize, "means"], rtol=1e-12)  # fmt: skip


def test_tiny_partitions_share_blocks_and_keep_their_ids(customers, tmp_path):
    import dask
    import dask.dataframe as dd

    frame = dd.from_pandas(customers, npartitions=60)  # 100 rows each
    with dask.config.set({"daskgmm.chunk-bytes": 1000 * 3 * 8}):
        inp = open_input(frame, columns=FEATURES)
        assert inp.X.chunks[0] == (1000,) * 6  # ten partitions to a block, none split
        gm = GaussianMixture(2, random_state=0, columns=FEATURES).fit(frame)
        info = gm.predict_to_table(frame, tmp_path / "segments", ids="customer_id")
    assert info["rows"] == len(customers)
    written = customers.merge(pd.read_parquet(tmp_path / "segments"), on="customer_id",
                              validate="one_to_one")  # fmt: skip
    assert len(written) == len(customers)
    np.testing.assert_array_equal(written["label"], gm.predict(written[FEATURES].to_numpy()))
    assert len(list((tmp_path / "segments").glob("*.parquet"))) == 6
