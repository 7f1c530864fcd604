"""Names and defaults written once: stores, experiment, studies, the registered model, the searched λ.

Everything a user or a stored record sees by name (a study, a tag, a param, a model alias) is spelled
here, so renaming one is a one-line change with a migration note.
"""

from __future__ import annotations

DEFAULT_STORAGE = "studies/optuna.journal"  # a journal file: safe for parallel processes on one machine
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # MLflow 3.13+ refuses the plain file store
DEFAULT_EXPERIMENT = "cifar10-lambda"
# The environment variables the CLI's global options and the Python API read (session.Stores.from_env), and that
# the --jobs workers are started with (session.Stores.to_env).
DATA_ENV, STORAGE_ENV, TRACKING_ENV, EXPERIMENT_ENV = (
    "HPSEARCH_DATA", "HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI", "HPSEARCH_EXPERIMENT")
# Optuna's heartbeat on a database storage: a worker silent for the grace period is dead, its trial FAILs.
DEFAULT_HEARTBEAT_S, DEFAULT_GRACE_S = 30, 120
HEARTBEAT_ENV, GRACE_ENV = "HPSEARCH_HEARTBEAT_S", "HPSEARCH_GRACE_S"
GATE_ENV = "HPSEARCH_WORKER_GATE"  # set for the --jobs workers: they wait for their starter's go on their stdin
DEBUG_ENV = "HPSEARCH_DEBUG"  # set: an unexpected error shows its traceback instead of one line
UI_PORT = 5000  # `hpsearch ui` and the links that `hpsearch compare` prints
DASHBOARD_PORT = 8080  # `hpsearch dashboard` (optuna-dashboard's own default)

MODEL_NAME = "cifar10-mlp"
MODEL_ALIAS = "champion"
MODEL_URI = f"models:/{MODEL_NAME}@{MODEL_ALIAS}"

SEARCH_STAGES = ("coarse", "fine")  # the stages whose trials compete for promotion
LAMBDA = "lambda"  # the Optuna parameter and MLflow param of the L2 strength
OBJECTIVE = "val_accuracy"  # the metric every study maximises (its name in Optuna's plots and dashboards)

TAG_PREFIX = "hpsearch"  # our MLflow tags: hpsearch.study, hpsearch.stage, hpsearch.role, hpsearch.state, ...
TRIAL_TAG = "trial"  # a trial's run: the trial's number
FINAL_TRIAL_TAG = "final_trial"  # the final run: the number of its claim, so a dead claimer's run can be closed
MODEL_VERSION_TAG = "model_version"  # the final run's tag and its claim's user attr: the registered version
LAMBDA_SOURCE_TAG = "lambda_source"  # the final run: where its λ came from (the confirm stage, a search, --lambda)
DIGEST_ATTR = "config_digest"  # a final trial's user attr and every training run's tag: the digest of its settings
NOTE_TAG = "mlflow.note.content"  # MLflow's: the run description the MLflow UI shows
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's: what nested runs carry in the UI

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attr holding its stage run
RUN_ATTR = "mlflow_run_id"  # the trial's user attr holding its run
IMPORTED_ATTR = "imported_from"  # a trial's user attr: "<study>/<trial number>" it was copied from (--from-experiment)
IMPORTANCE_PREFIX = "importance."  # a stage run's metrics: importance.<setting> over its trials (PED-ANOVA)
IMPORTANCES_BOTH_PREFIX = "importance_coarse_fine."  # the fine run's: over the coarse and fine trials together
IMPORTANCE_TAG = "importance"  # a stage run's tag (hpsearch.importance) when it searched one setting alone
STOPPED_TAG = "stopped"  # a stage run's tag (hpsearch.stopped) when --timeout stopped it before it was complete
DEADLINE_ENV = "HPSEARCH_DEADLINE"  # --timeout as one wall-clock deadline (Unix time) that --jobs workers share

SPACE_ATTR = "space"  # the study's user attr: the space it searches, as JSON
SETTINGS_ATTR = "settings"  # the trial's user attr: setting key -> the value it trained with
SURPLUS_ATTR = "surplus"  # the trial's user attr: it yielded to an earlier live trial and trained nothing
N_VAL_ATTR = "n_val"  # the trial's user attr: the validation images its accuracy was measured on
RANK_ATTR = "search_rank_agreement"  # the confirm study's user attr: Spearman ρ of search vs confirm values
RANK_METRIC = "search_rank_rho"  # the confirm stage run's metric of the same ρ


FINAL_STAGE = "final"  # the study whose one trial per final setting claims the final training


def tag(key: str) -> str:
    """The MLflow tag one of our keys is stored under: hpsearch.<key>."""
    return f"{TAG_PREFIX}.{key}"


def study_name(experiment: str, stage: str) -> str:
    return f"{experiment}-{stage}"

# ---- several workers on one study (pipeline/workers/) ----------------------------------------------------------
OWNER_ATTRS = ("host", "namespace", "pid", "instance")  # a trial's owner, recorded before it claims anything
CLAIM_ATTR = "claim"  # the trial's key: of the live trials holding one key, the earliest wins
ADOPT_ATTR = "adopts"  # an enqueued trial that takes over the FINISHED run of a trial killed before its tell
REASON_ATTR = "reason"  # how a trial ended, when not plainly
ONCE_STAGE = "once"  # the study whose trials claim what is done once per experiment (closing a stage run)
# Test-only: "<point>:<signal>[:<token folder>]" makes the process kill itself with the signal at the named point
# (workers/faults.py); with a token folder, only the first process to reach the point does. Unset: no effect.
FAULT_ENV = "HPSEARCH_TEST_FAULT"
