"""Every training run carries its data as an MLflow dataset input: split, validation block, digest, source."""

from __future__ import annotations

import json

import numpy as np
from mlflow.tracking import MlflowClient

from model.cifar10 import Dataset
from pipeline.api import Project
from pipeline.tracking.data_input import DataInput


def fake(split="holdout", n_train=450, n_val=50) -> Dataset:
    z = np.zeros((1, 3072), np.float32)
    return Dataset(z, np.zeros(n_train), z, np.zeros(n_val), z, np.zeros(100), z[0], z[0], "ab" * 32, split, n_val)


def test_the_name_and_profile_say_the_split_and_the_validation_block():
    last = DataInput(fake(), 0, "/data/cifar")
    assert last.name == "cifar10-holdout-val50"
    assert last.profile()["validation"] == "training images 450..499 of 500 (block 0)"
    second = DataInput(fake(), 1, "/data/cifar")
    assert second.name == "cifar10-holdout-val50-block1"
    assert second.profile()["validation"] == "training images 400..449 of 500 (block 1)"
    assert DataInput(fake("exercise"), 0, "/d").name == "cifar10-exercise"
    entity = last.entity()
    assert entity.dataset.digest == "abababababab" and json.loads(entity.dataset.profile)["digest"] == "ab" * 32
    assert json.loads(entity.dataset.source) == {"uri": "/data/cifar"} and entity.dataset.source_type == "local"
    assert [(t.key, t.value) for t in entity.tags] == [("mlflow.data.context", "training")]


def test_a_download_mirror_is_recorded_without_its_password():
    source = DataInput(fake(), 0, "https://me:s3cret@mirror.example/cifar-10-python.tar.gz").entity().dataset
    assert source.source_type == "http" and "s3cret" not in source.source
    assert json.loads(source.source) == {"url": "https://me:***@mirror.example/cifar-10-python.tar.gz"}


def test_every_kind_of_training_logs_its_dataset_input(project, cifar_dir):
    p = Project()
    p.search("coarse", 2)
    p.train("studies/exercise-1.toml")
    p.train_final(lam=1e-3)
    client = MlflowClient(p.session.tracking_uri)
    runs = client.search_runs([p.session.tracker.experiment_id])
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags["hpsearch.role"], []).append(run)
    assert sorted((role, len(r)) for role, r in by_role.items()) == [("final", 1), ("single", 1), ("stage", 1),
                                                                      ("trial", 2)]
    assert all(not r.inputs.dataset_inputs for r in by_role["stage"])  # a stage trains nothing itself
    for run in by_role["trial"] + by_role["single"] + by_role["final"]:
        (given,) = run.inputs.dataset_inputs
        profile = json.loads(given.dataset.profile)
        assert profile["digest"] == run.data.params["data.digest"]
        assert given.dataset.digest == profile["digest"][:12]
        assert json.loads(given.dataset.source) == {"uri": str(cifar_dir)}
        assert profile["n_val"] == int(run.data.params["data.n_val"])
    assert [i.dataset.name for i in by_role["single"][0].inputs.dataset_inputs] == ["cifar10-exercise"]
    assert by_role["final"][0].inputs.dataset_inputs[0].dataset.name == "cifar10-holdout-val100"


def test_a_dataset_another_worker_inserted_at_the_same_moment_is_logged_on_the_second_try():
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.tracker import Tracker

    class RacingClient:  # the server answers the loser of the insert race with a duplicate key, once
        calls: list = []

        def log_inputs(self, run_id, datasets):
            self.calls.append(run_id)
            if len(self.calls) == 1:
                raise MlflowException("duplicate key value violates unique constraint \"dataset_pk\"")

    tracker = Tracker.__new__(Tracker)
    tracker.client = RacingClient()
    tracker.log_input("run-1", DataInput(fake(), 0, "/d").entity())
    assert RacingClient.calls == ["run-1", "run-1"]
