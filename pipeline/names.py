"""Names and defaults written once: stores, experiment, studies, the registered model, the searched λ.

Everything a user or a stored record sees by name (a study, a tag, a param, a model alias) is spelled
here, so renaming one is a one-line change with a migration note.
"""

from __future__ import annotations

DEFAULT_STORAGE = "studies/optuna.journal"  # a journal file: safe for parallel processes on one machine
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # MLflow 3.13+ refuses the plain file store
DEFAULT_EXPERIMENT = "cifar10-lambda"
# The environment variables the CLI's global options and the Python API read.
DATA_ENV, STORAGE_ENV, TRACKING_ENV, EXPERIMENT_ENV = (
    "HPSEARCH_DATA", "HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT")
# Optuna's heartbeat on a database storage: a worker silent for the grace period is dead, its trial FAILs.
DEFAULT_HEARTBEAT_S, DEFAULT_GRACE_S = 30, 120
HEARTBEAT_ENV, GRACE_ENV = "HPSEARCH_HEARTBEAT_S", "HPSEARCH_GRACE_S"
UI_PORT = 5000  # `hpsearch ui` and the links that `hpsearch compare` prints

MODEL_NAME = "cifar10-mlp"
MODEL_ALIAS = "champion"
MODEL_URI = f"models:/{MODEL_NAME}@{MODEL_ALIAS}"

SEARCH_STAGES = ("coarse", "fine")  # the stages whose trials compete for promotion
LAMBDA = "lambda"  # the Optuna parameter and MLflow param of the L2 strength
OBJECTIVE = "val_accuracy"  # the metric every study maximises (its name in Optuna's plots and dashboards)

TAG_PREFIX = "hpsearch"  # our MLflow tags: hpsearch.study, hpsearch.stage, hpsearch.role, hpsearch.state, ...
PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attr holding its stage run
RUN_ATTR = "mlflow_run_id"  # the trial's user attr holding its run
RANK_ATTR = "search_rank_agreement"  # the confirm study's user attr: Spearman ρ of search vs confirm values
RANK_METRIC = "search_rank_rho"  # the confirm stage run's metric of the same ρ


FINAL_STAGE = "final"  # the study whose one trial per final setting claims the final training

def study_name(experiment: str, stage: str) -> str:
    return f"{experiment}-{stage}"
