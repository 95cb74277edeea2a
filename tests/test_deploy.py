"""The deployment recipes: every file parses, manifests use the operator's field names,
job files hold only options the CLI knows, scripts are valid shell."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tomllib

import pytest
import yaml

from daskgmm import cli

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"

# Field names of the core Kubernetes objects the recipes use (k8s API reference).
CONTAINER = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "envFrom",
    "ports",
    "resources",
    "volumeMounts",
    "readinessProbe",
    "livenessProbe",
    "workingDir",
    "securityContext",
}
POD_SPEC = {
    "containers",
    "initContainers",
    "restartPolicy",
    "volumes",
    "serviceAccountName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "securityContext",
    "imagePullSecrets",
    "activeDeadlineSeconds",
}
SERVICE_SPEC = {"type", "selector", "ports", "clusterIP"}
# The Dask operator's resources (dask_kubernetes/operator/customresources/templates.yaml).
DASK_CLUSTER_SPEC = {"idleTimeout", "scheduler", "worker"}
DASK_SCHEDULER = {"spec", "service"}
DASK_WORKER = {"replicas", "spec"}
DASK_JOB_SPEC = {"job", "cluster"}


def _keys(obj, allowed, where):
    unknown = set(obj) - allowed
    assert not unknown, f"{where}: unknown fields {sorted(unknown)}"


def _check_pod_spec(spec, where):
    _keys(spec, POD_SPEC, where)
    assert spec["containers"], f"{where}: no containers"
    for c in spec["containers"]:
        _keys(c, CONTAINER, f"{where}.containers[{c.get('name')}]")
        assert c.get("image"), f"{where}: container without image"


def _check_dask_cluster_spec(spec, where):
    _keys(spec, DASK_CLUSTER_SPEC, where)
    assert {"scheduler", "worker"} <= set(spec), f"{where}: scheduler and worker are required"
    _keys(spec["scheduler"], DASK_SCHEDULER, f"{where}.scheduler")
    _check_pod_spec(spec["scheduler"]["spec"], f"{where}.scheduler.spec")
    _keys(spec["scheduler"]["service"], SERVICE_SPEC, f"{where}.scheduler.service")
    _keys(spec["worker"], DASK_WORKER, f"{where}.worker")
    assert isinstance(spec["worker"]["replicas"], int)
    _check_pod_spec(spec["worker"]["spec"], f"{where}.worker.spec")


def _documents():
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            yield path, list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == ".json":
            yield path, [json.loads(path.read_text())]
        elif path.suffix == ".toml":
            yield path, [tomllib.loads(path.read_text())]


def test_every_data_file_parses():
    found = {p.name for p, _ in _documents()}
    assert {"daskjob.yaml", "cronjob.yaml", "configmap.yaml", "jobqueue.yaml", "job.toml"} <= found


def test_kubernetes_manifests_use_operator_field_names():
    seen = set()
    for path in (DEPLOY / "kubernetes").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            seen.add(doc["kind"])
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            if doc["kind"] == "DaskJob":
                assert doc["apiVersion"] == "kubernetes.dask.org/v1"
                _keys(doc["spec"], DASK_JOB_SPEC, "DaskJob.spec")
                _keys(doc["spec"]["job"], {"metadata", "spec"}, "DaskJob.spec.job")
                _check_pod_spec(doc["spec"]["job"]["spec"], "DaskJob.spec.job.spec")
                _keys(doc["spec"]["cluster"], {"metadata", "spec"}, "DaskJob.spec.cluster")
                _check_dask_cluster_spec(
                    doc["spec"]["cluster"]["spec"], "DaskJob.spec.cluster.spec"
                )
                runner = doc["spec"]["job"]["spec"]["containers"][0]
                assert "daskgmm fit --config" in " ".join(runner["args"])
            elif doc["kind"] == "CronJob":
                pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                _check_pod_spec(pod, "CronJob pod")
                assert doc["spec"]["concurrencyPolicy"] == "Forbid"
            elif doc["kind"] == "ConfigMap":
                job = tomllib.loads(doc["data"]["job.toml"])
                _check_job_options(job, f"{path.name}:job.toml")
    assert {"DaskJob", "CronJob", "ConfigMap", "Role", "RoleBinding"} <= seen


def _check_job_options(document, where):
    for table, options in document.items():
        assert table in ("cluster", *cli.COMMANDS), f"{where}: unknown table {table}"
        known = set(cli.DEFAULTS["cluster"]) | {"input", "model", "output", "n_components"}
        known |= set(cli.DEFAULTS.get(table, {}))
        if table in ("fit", "select", "demo"):
            known |= set(cli.DEFAULTS["model"])
        unknown = set(options) - known
        assert not unknown, f"{where}: [{table}] unknown options {sorted(unknown)}"


@pytest.mark.parametrize("folder", ["slurm", "pbs"])
def test_batch_recipes(folder):
    job = tomllib.loads((DEPLOY / folder / "job.toml").read_text())
    _check_job_options(job, f"{folder}/job.toml")
    assert job["cluster"]["cluster"].startswith(folder)
    cli.build_parser().parse_args(["fit", "--config", "x.toml"])  # the scripts' command
    config = yaml.safe_load((DEPLOY / folder / "jobqueue.yaml").read_text())
    assert set(config["jobqueue"]) == {folder}
    assert {"cores", "memory", "processes"} <= set(config["jobqueue"][folder])
    for script in (DEPLOY / folder).glob("nightly.*"):
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        assert "daskgmm fit --config job.toml" in text
        assert "daskgmm predict --config job.toml" in text


def test_dockerfile_installs_the_package_and_runs_the_cli():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "COPY daskgmm ./daskgmm" in text and 'pip install ".[plot]"' in text
    assert 'CMD ["daskgmm", "demo"]' in text


@pytest.mark.parametrize(
    "folder, script, submit_dir", [("slurm", "nightly.sbatch", "SLURM_SUBMIT_DIR"),
                                   ("pbs", "nightly.pbs", "PBS_O_WORKDIR")]
)  # fmt: skip
def test_batch_script_runs_as_a_spool_copy_in_the_submit_folder(
    tmp_path, folder, script, submit_dir
):
    """The batch system runs a copy of the script from its spool, in another folder
    ($HOME for PBS): the job must still find job.toml and jobqueue.yaml."""
    submit = tmp_path / "project" / "deploy" / folder
    submit.mkdir(parents=True)
    for name in ("job.toml", "jobqueue.yaml"):
        (submit / name).write_text((DEPLOY / folder / name).read_text())
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "job12345").write_text((DEPLOY / folder / script).read_text())
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    shim = env_dir / "bin" / "daskgmm"  # stands in for the CLI: records where it ran
    shim.write_text(
        f'#!/usr/bin/env bash\necho "$PWD|$DASK_CONFIG|$*" >> {log}\n'
        'test -f job.toml && test -f "$DASK_CONFIG/jobqueue.yaml"\n'
    )
    shim.chmod(0o755)
    (env_dir / "bin" / "activate").write_text(f'export PATH="{env_dir / "bin"}:$PATH"\n')
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DASKGMM_ENV": str(env_dir),
           submit_dir: str(submit)}  # fmt: skip
    subprocess.run(["bash", str(spool / "job12345")], cwd=home, env=env, check=True)
    assert log.read_text().splitlines() == [
        f"{submit}|{submit}|fit --config job.toml",
        f"{submit}|{submit}|predict --config job.toml",
    ]
    # submitted some other way (no submit folder known): one clear line, nothing run
    del env[submit_dir]
    res = subprocess.run(["bash", str(spool / "job12345")], cwd=home, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0 and "from the folder holding job.toml" in res.stderr


def test_recipes_bound_the_run_and_name_what_they_need():
    cron = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()))
    role = next(d for d in cron if d["kind"] == "Role")
    assert "watch" in role["rules"][0]["verbs"]  # kubectl delete --wait watches
    job = yaml.safe_load((DEPLOY / "kubernetes" / "daskjob.yaml").read_text())
    assert "idleTimeout" not in job["spec"]["cluster"]["spec"]  # ignored for a DaskJob
    assert job["spec"]["job"]["spec"]["activeDeadlineSeconds"] > 0
    for folder in ("slurm", "pbs"):
        assert "${TMPDIR:-/tmp}" in (DEPLOY / folder / "jobqueue.yaml").read_text()
        assert "Slurm" not in (DEPLOY / "pbs" / "job.toml").read_text()
        text = (DEPLOY / folder / "README.md").read_text()
        assert "need not be on a package index" in text
    root = DEPLOY.parent
    assert {".git", ".venv", "*.zarr"} <= set((root / ".dockerignore").read_text().split())


def test_each_recipe_has_a_tls_variant_that_the_cli_takes():
    for folder in ("slurm", "pbs"):
        job = tomllib.loads((DEPLOY / folder / "job-tls.toml").read_text())
        _check_job_options(job, f"{folder}/job-tls.toml")
        assert {"tls_ca_file", "tls_cert", "tls_key"} <= set(job["cluster"])
        plain = tomllib.loads((DEPLOY / folder / "job.toml").read_text())
        assert {k: v for k, v in job.items() if k != "cluster"} == {
            k: v for k, v in plain.items() if k != "cluster"
        }
    job = yaml.safe_load((DEPLOY / "kubernetes" / "daskjob-tls.yaml").read_text())
    tls = [
        "--tls-ca-file",
        "/tls/ca.pem",
        "--tls-cert",
        "/tls/cert.pem",
        "--tls-key",
        "/tls/key.pem",
    ]
    cluster = job["spec"]["cluster"]["spec"]
    scheduler = cluster["scheduler"]["spec"]["containers"][0]["args"]
    assert scheduler[:4] == ["dask", "scheduler", "--protocol", "tls"] and scheduler[4:] == tls
    assert cluster["worker"]["spec"]["containers"][0]["args"][-6:] == tls
    runner = " ".join(job["spec"]["job"]["spec"]["containers"][0]["args"])
    assert "--scheduler tls://daskgmm-nightly-scheduler:8786" in runner
    cli.build_parser().parse_args(["fit", "--config", "x.toml", *tls])  # the runner's options
    for pod in (
        job["spec"]["job"]["spec"],
        cluster["scheduler"]["spec"],
        cluster["worker"]["spec"],
    ):
        assert {
            "name": "tls",
            "secret": {"secretName": "daskgmm-tls", "defaultMode": 0o400},
        } in pod["volumes"]
        assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in pod["containers"][0][
            "volumeMounts"
        ]
