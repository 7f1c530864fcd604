"""End to end on small data: coarse (3 trials) → fine (3 trials) → train-final, checked through the
Optuna storage and MlflowClient; then `report`, `compare` and the UI's links on the same runs. (How fine derives
its bounds, on hand-made studies: test_pipeline_fine_bounds.py.)"""

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


def test_fine_search_keeps_to_the_bounds_it_derived(searched):
    """The fine study, its parent run and its trials agree on the bounds (derived in test_pipeline_fine_bounds.py)."""
    _, client, _ = searched
    fine = study("fine")
    lo, hi = fine.user_attrs["lambda_min"], fine.user_attrs["lambda_max"]
    coarse = {t.number: t for t in study("coarse").get_trials()}
    top = [coarse[int(n)] for n in fine.user_attrs["source_trials"].split(",")]
    assert [t.state.name for t in top] == ["COMPLETE", "COMPLETE"] and top[0].value >= top[1].value
    assert lo < min(t.params["lambda"] for t in top) < max(t.params["lambda"] for t in top) < hi
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
    from pipeline.search.results import best_trial
    from pipeline.session import Session, Stores
    from pipeline.settings import config

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


# ---- runs that compare well, and the links to compare them ----------------------------------------------
def test_runs_carry_what_the_compare_view_plots(searched):
    _, client, _ = searched
    exp = client.get_experiment_by_name("cifar10-lambda")
    for stage in ("coarse", "fine"):
        assert study(stage).metric_names == ["val_accuracy"]
        parent = runs(client, f"tags.`hpsearch.role` = 'stage' and tags.`hpsearch.stage` = '{stage}'")[0]
        m = parent.data.metrics
        assert {"best_val_accuracy", "median_val_accuracy", "best_lambda", "n_trials", "wall_time_s"} <= set(m)
        best = study(stage).best_trial
        assert m["best_val_accuracy"] == pytest.approx(best.value)
        assert m["best_lambda"] == pytest.approx(best.params["lambda"]) and m["n_trials"] == 3
    for run in client.search_runs([exp.experiment_id]):
        note = run.data.tags["mlflow.note.content"]
        assert note and "\n" not in note, run.info.run_name
        if run.data.tags["hpsearch.role"] in ("trial", "final"):
            p = run.data.params
            assert float(p["log10_lambda"]) == pytest.approx(math.log10(float(p["lambda"])))


def test_the_experiment_opens_on_its_runs_in_a_saved_view(searched):
    import json


    _, client, _ = searched
    tags = client.get_experiment_by_name("cifar10-lambda").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    views = {key.removeprefix("mlflow.sharedViewState."): json.loads(value) for key, value in tags.items()
             if key.startswith("mlflow.sharedViewState.")}
    assert set(views) == {"hpsearch-stages", "hpsearch-ranked"}
    stages, ranked = (json.loads(views[k]["state"]) for k in ("hpsearch-stages", "hpsearch-ranked"))
    assert stages["orderByKey"] == "attributes.start_time", "the UI nests trials only in start-time order"
    assert ranked["orderByKey"] == "metrics.`best_val_accuracy`" and ranked["orderByAsc"] is False
    assert {"params.`lambda`", "metrics.`best_val_accuracy`"} <= set(stages["selectedColumns"])
    assert "params.`log10_lambda`" in ranked["selectedColumns"]
    assert isinstance(views["hpsearch-stages"]["createdAt"], int)


def decode_compare(url: str) -> tuple[str, list[str], list[str]]:
    """(base, run ids, experiment ids) of a compare URL, as MLflow's compare page parses it."""
    import json
    from urllib.parse import parse_qsl, unquote

    base, _, query = url.partition("/#/compare-runs?")
    pairs = parse_qsl(query)
    assert pairs[0][0] == "runs", "the compare page reads the key '?runs': runs must come first"
    q = dict(pairs)
    assert q["workflowType"] == "machine_learning"
    return base, json.loads(unquote(q["runs"])), json.loads(unquote(q["experiments"]))


def trial_run_ids(stage: str) -> list[str]:
    return [t.user_attrs["mlflow_run_id"] for t in sorted(study(stage).get_trials(), key=lambda t: t.number)]


def test_compare_prints_the_compare_page_of_a_stages_trials(searched):
    folder, client, _ = searched
    exp_id = client.get_experiment_by_name("cifar10-lambda").experiment_id
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        coarse = hpsearch("compare", "coarse").stdout
        both = hpsearch("compare", "coarse", "fine", "--port", "5123").stdout
        final = hpsearch("compare", "final").stdout
    assert len(coarse.splitlines()) == 1
    assert decode_compare(coarse.strip()) == ("http://127.0.0.1:5000", trial_run_ids("coarse"), [exp_id])
    assert decode_compare(both.strip()) == ("http://127.0.0.1:5123", trial_run_ids("coarse") + trial_run_ids("fine"),
                                            [exp_id])
    (final_run,) = runs(client, "tags.`hpsearch.role` = 'final'")
    assert decode_compare(final.strip())[1] == [final_run.info.run_id]


def test_compare_json_is_the_report_plus_the_url(searched):
    import json

    folder, _, _ = searched
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        report = json.loads(hpsearch("report", "--json").stdout)
        doc = json.loads(hpsearch("compare", "coarse", "--json").stdout)
        final = json.loads(hpsearch("compare", "final", "--json").stdout)
    assert doc["stages"] == {"coarse": report["stages"]["coarse"]} and doc["best"] == report["best"]
    assert doc["run_ids"] == trial_run_ids("coarse") and decode_compare(doc["url"])[1] == doc["run_ids"]
    assert final["stages"] == {} and len(final["run_ids"]) == 1, "the final stage has runs but no study"


def test_compare_opens_the_browser_with_open(searched, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url))
    monkeypatch.chdir(searched[0])
    out = hpsearch("compare", "fine", "--open").stdout
    assert opened == [out.strip()] and decode_compare(opened[0])[1] == trial_run_ids("fine")


def test_compare_finds_stages_by_tags_in_the_sessions_experiment_only(searched, monkeypatch):
    """A stage with no study (confirm) is found by its runs' tags; another experiment's runs never mix in."""
    from pipeline.tracking.tracker import Tracker

    folder, client, _ = searched
    monkeypatch.chdir(folder)
    other = Tracker(f"sqlite:///{folder}/mlruns/mlflow.db", "other-experiment")
    made = {}
    for stage in ("confirm", "coarse"):
        parent = other.create_run(stage, {"study": f"other-experiment-{stage}", "role": "stage", "stage": stage})
        made[stage] = [other.create_run(f"{stage}-{i}", {"stage": stage, "trial": i, "role": "trial"}, parent)
                       for i in range(2)]
    result = hpsearch("compare", "confirm", code=1)
    assert result.stdout == "" and result.stderr.splitlines() == [
        f"error: no runs of stage 'confirm' in experiment 'cifar10-lambda' of sqlite:///{folder}/mlruns/mlflow.db; "
        "run that stage first (`hpsearch pipeline` runs coarse, fine and final)"]
    confirm = hpsearch("--experiment", "other-experiment", "compare", "confirm").stdout
    assert decode_compare(confirm.strip())[1:] == (made["confirm"], [other.experiment_id])
    assert decode_compare(hpsearch("compare", "coarse").stdout.strip())[1] == trial_run_ids("coarse")


def test_ui_links_are_the_runs_view_and_each_search_stages_compare_page(searched):
    from pipeline.session import Session, Stores
    from pipeline.views.ui import links_of

    folder, client, _ = searched
    exp_id = client.get_experiment_by_name("cifar10-lambda").experiment_id
    session = Session(Stores(storage_url=f"{folder}/{STORAGE}", tracking_uri=f"sqlite:///{folder}/mlruns/mlflow.db"))
    lines = links_of(session, "http://127.0.0.1:5000")
    base = f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey="
    assert lines[:2] == [f"MLflow UI: {base}hpsearch-stages", f"  trials by val acc: {base}hpsearch-ranked"]
    assert [line.split()[:2] for line in lines[2:]] == [["compare", "coarse:"], ["compare", "fine:"]]
    for line, stage in zip(lines[2:], ("coarse", "fine"), strict=True):
        assert decode_compare(line.split()[-1])[1] == trial_run_ids(stage)
