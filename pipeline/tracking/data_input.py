"""The data a training read, as an MLflow dataset input: what the runs view's Datasets column and the run page's
dataset panel show. Its name says the split and the validation block, its digest is the start of the data digest
(the profile holds all of it and the sizes), and its source says where the images came from: the data folder
given, or the official archive's URL for a download (redacted: a mirror's URL may carry a password).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

from model.cifar10 import Dataset
from pipeline.urls import redact

CONTEXT = "training"  # the input tag mlflow.data.context: what the data was used for
DIGEST_CHARS = 12  # shown beside the name; MLflow keeps at most 36 and suggests about 8


@dataclass(frozen=True)
class DataInput:
    data: Dataset
    val_fold: int  # which block of val_size training images validates (holdout); 0 is the last block
    origin: str  # the data folder, or the URL it was downloaded from

    @property
    def name(self) -> str:
        if self.data.split != "holdout":
            return f"cifar10-{self.data.split}"
        return f"cifar10-holdout-val{self.data.val_size}" + (f"-block{self.val_fold}" if self.val_fold else "")

    def profile(self) -> dict:
        d = self.data
        n_train, n_val = len(d.y_train), len(d.y_val)
        if d.split == "holdout":  # model.cifar10.dataset's blocks: fold 0 is the last val_size images
            hi = n_train + n_val - self.val_fold * n_val
            validation = f"training images {hi - n_val}..{hi - 1} of {n_train + n_val} (block {self.val_fold})"
        else:
            validation = "data_batch_2 (training on data_batch_1)"
        return {"split": d.split, "validation": validation, "n_train": n_train, "n_val": n_val,
                "n_test": len(d.y_test), "digest": d.digest}

    def entity(self):
        """The mlflow.entities.DatasetInput to log on a run."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # a local path matches the "file" and "" local sources: the same class
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(redact(self.origin))
        meta = MetaDataset(source, name=self.name, digest=self.data.digest[:DIGEST_CHARS]).to_dict()
        return DatasetInput(DatasetEntity(**meta, profile=json.dumps(self.profile())),
                            tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)])
