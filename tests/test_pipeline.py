"""End to end on small data: coarse (3 trials) → fine (3 trials) → train-final, checked through the
Optuna storage and MlflowClient."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import hpsearch

STORAGE = "studies/optuna.journal"



def study(stage: str) -> optuna.Study:
    return optuna.load_study(study_name=f"cifar10-lambda-{stage}", storage=_storage())


def _storage():
    from pipeline.session import open_storage

    return open_storage(STORAGE)


def runs(client: MlflowClient, where: str = ""):
    exp = client.get_experiment_by_name("cifar10-lambda")
    return client.search_runs([exp.experiment_id], where)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cifar_dir):
    """Runs the three stages once for the whole module (the slow part), then the tests inspect."""
    from tests.conftest import project_folder

    with project_folder(tmp_path_factory.mktemp("project"), cifar_dir) as folder:
        out = {
            "coarse": hpsearch("search", "coarse", "--n-trials", "3").output,
            "coarse_again": hpsearch("search", "coarse", "--n-trials", "3").output,
            "fine": hpsearch("search", "fine", "--n-trials", "3").output,
            "final": hpsearch("train-final").output,
            "final_again": hpsearch("train-final").output,
        }
        uri = f"sqlite:///{folder}/mlruns/mlflow.db"  # absolute: MLflow caches stores by URI
        yield folder, MlflowClient(tracking_uri=uri, registry_uri=uri), out


def test_trial_counts_and_rerun_adds_nothing(searched):
    for stage in ("coarse", "fine"):
        trials = study(stage).get_trials()
        assert len(trials) == 3
        assert all(t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert "3/3 trials finished, complete" in searched[2]["coarse_again"]


def test_one_parent_run_per_stage_and_one_child_per_trial(searched):
    _, client, _ = searched
    for stage in ("coarse", "fine"):
        parents = runs(client, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'")
        assert len(parents) == 1
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["hpsearch.study"] == f"cifar10-lambda-{stage}"
        arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"accuracy_vs_lambda.png", "trials.csv"} <= arts
        children = runs(client, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        trials = {t.number: t for t in study(stage).get_trials()}
        assert sorted(int(c.data.tags["hpsearch.trial"]) for c in children) == sorted(trials)
        for child in children:
            trial = trials[int(child.data.tags["hpsearch.trial"])]
            assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
            assert child.info.run_name == f"{stage}-{trial.number}"
            assert child.data.tags["hpsearch.state"] == trial.state.name
            assert child.info.status in ("FINISHED",)
            p = child.data.params
            assert float(p["lambda"]) == pytest.approx(trial.params["lambda"])
            assert p["train.n_s"] == "10" and p["train.seed"] == "0" and len(p["data.digest"]) == 64
            assert "code_version" in p and "train.lambda" in p["space"]
            assert float(p["log10_lambda"]) == pytest.approx(math.log10(trial.params["lambda"]))
            hist = client.get_metric_history(child.info.run_id, "val_accuracy")
            steps = [m.step for m in hist]
            assert steps == sorted(steps) and steps[0] == 5 and len(steps) <= 100
            for key in ("train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "eta"):
                assert client.get_metric_history(child.info.run_id, key)
            assert "curves.png" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_fine_bounds_are_derived_from_the_coarse_top_two(searched):
    _, client, _ = searched
    coarse = [t for t in study("coarse").get_trials() if t.state.name == "COMPLETE"]
    top = sorted(coarse, key=lambda t: t.value, reverse=True)[:2]
    lams = sorted(t.params["lambda"] for t in top)
    lo, hi = lams[0] / 10**0.25, lams[1] * 10**0.25
    fine = study("fine")
    assert fine.user_attrs["lambda_min"] == pytest.approx(lo)
    assert fine.user_attrs["lambda_max"] == pytest.approx(hi)
    assert fine.user_attrs["source_trials"] == ",".join(str(t.number) for t in top)
    for t in fine.get_trials():
        assert lo <= t.params["lambda"] <= hi
    parent = runs(client, "tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = 'fine'")[0]
    logged = json.loads(parent.data.params["space"])
    assert [(d["key"], d["low"], d["high"], d["log"]) for d in logged] == [("train.lambda", pytest.approx(lo),
                                                                          pytest.approx(hi), True)]


def test_final_model_is_registered_and_predicts_like_the_network(searched, cifar_dir):
    import mlflow

    from model.cifar10 import load_dataset
    from model.network import forward
    from model.train import train
    from pipeline import config
    from pipeline.results import best_trial
    from pipeline.session import Session, Stores

    folder, client, out = searched
    finals = runs(client, "tags.`hpsearch.role` = 'final'")
    assert len(finals) == 1, "the second train-final reuses the finished run"
    assert "already trained" in out["final_again"]
    final = finals[0]
    version = client.get_model_version_by_alias("cifar10-mlp", "champion")
    assert version.run_id == final.info.run_id
    assert 0 <= final.data.metrics["test_accuracy"] <= 1
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlruns/mlflow.db")
        mlflow.set_registry_uri(f"sqlite:///{folder}/mlruns/mlflow.db")
        model = mlflow.pyfunc.load_model("models:/cifar10-mlp@champion")
        lam = best_trial(Session(Stores(storage_url=STORAGE))).params["lambda"]
        cfg = config.load("final")
    assert float(final.data.params["lambda"]) == pytest.approx(lam)
    data = load_dataset(cifar_dir, "holdout", cfg.data.val_size)
    settings = cfg.replace({"train.lambda": lam}).train_settings()
    params = train(data.X_train, data.y_train, data.X_val, data.y_val, settings).params
    from model.cifar10 import load_batch

    raw, _ = load_batch(cifar_dir / "test_batch")
    expected = forward(params, data.X_test)[1].argmax(axis=1)
    got = np.asarray(model.predict(raw.astype(np.float32))).argmax(axis=1)
    assert (got == expected).all()
    assert not math.isnan(float(final.data.metrics["test_accuracy"]))


def test_report_lists_each_stage_and_the_best_trial(searched):
    import json

    folder, _, _ = searched
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        text = hpsearch("report").stdout
        doc = json.loads(hpsearch("report", "--json").stdout)
    assert "cifar10-lambda-coarse" in text and "cifar10-lambda-fine" in text and "best:" in text
    assert set(doc["stages"]) == {"coarse", "fine"}
    for rows in doc["stages"].values():
        assert len(rows) == 3
        for row in rows:
            assert {"trial", "lambda", "best_val_accuracy", "final_val_accuracy", "state", "duration_s"} <= set(row)
            assert row["state"] in ("COMPLETE", "PRUNED")
    values = [r["final_val_accuracy"] for rows in doc["stages"].values() for r in rows if r["state"] == "COMPLETE"]
    assert doc["best"]["val_accuracy"] == pytest.approx(max(values))
    assert doc["best"]["stage"] in ("coarse", "fine") and doc["best"]["mlflow_run_id"]
