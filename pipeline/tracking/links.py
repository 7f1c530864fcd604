"""Links into the MLflow UI: the runs view hpsearch presets, compare pages, and the experiment tags behind them.

What the MLflow 3.17 UI reads (its bundle, mlflow/server/js/build/static/js; see docs/tracking.md, "What the UI
opens on"):
- `#/experiments/<id>/runs?workflowType=machine_learning`: the runs table with the machine-learning side bar.
  The UI takes the experiment's kind from this parameter (else from the browser's local storage, GenAI by
  default), not from the `mlflow.experimentKind` tag; we set the tag as well for UIs that read it.
- `viewStateShareKey=<key>` opens the saved view stored in the experiment tag `mlflow.sharedViewState.<key>`:
  sort, visible columns, chart settings. Which rows are expanded is never taken from a saved view.
- `#/compare-runs?runs=[...]&experiments=[...]`, `runs` first: the page reads the key "?runs".
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline.errors import UserError
from pipeline.names import LAMBDA, OBJECTIVE, TAG_PREFIX
from pipeline.urls import is_http, redact

UI_HOST = "127.0.0.1"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the UI's "Machine learning" kind
VIEW_TAG = "mlflow.sharedViewState."  # + the view's key
STAGES, RANKED = "hpsearch-stages", "hpsearch-ranked"  # our saved views
ACCURACY = f"metrics.`best_{OBJECTIVE}`"  # stage runs, trials and the final run all log it
STATE = f"tags.`{TAG_PREFIX}.state`"
DATASET = "attributes.`Dataset`"  # each training's dataset input (data_input.py): shown only when selected


def ui_base(tracking_uri: str, port: int) -> str:
    """Where the UI of this store is: the tracking server itself, else `hpsearch ui` on 127.0.0.1:port.
    A server's credentials and query stay out: the browser asks for them, and nothing prints them."""
    if not is_http(tracking_uri):
        return f"http://{UI_HOST}:{port}"
    parts = urlsplit(tracking_uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return redact(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))


def runs_url(base: str, experiment_id: str, view: str = STAGES) -> str:
    """The experiment's runs table, machine-learning side, in one of our saved views (sort and columns)."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view}"


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """MLflow's compare page for these runs (parallel coordinates, scatter, box and contour plots, tables)."""
    runs, experiments = (quote(json.dumps(ids, separators=(",", ":")), safe="[],") for ids in (run_ids, experiment_ids))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&workflowType=machine_learning"


def experiment_tags(created_ms: int) -> dict[str, str]:
    """The experiment tags the UI presets come from: its kind, and the saved views the runs URLs open.

    The stages view keeps MLflow's newest-first order: the UI nests trials under their stage run only when
    runs are ordered by start time, so a sort by accuracy would flatten the tree. The ranked view sorts.
    """
    stages = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
              "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
              "runsHiddenMode": "SHOW_ALL", "selectedColumns": [
                  ACCURACY, f"metrics.`best_{LAMBDA}`", "metrics.`test_accuracy`", f"params.`{LAMBDA}`", STATE,
                  DATASET]}
    ranked = stages | {"searchFilter": f"tags.`{TAG_PREFIX}.role` = 'trial'", "orderByKey": ACCURACY,
                       "selectedColumns": [ACCURACY, f"params.`{LAMBDA}`", f"params.`log10_{LAMBDA}`",
                                           f"tags.`{TAG_PREFIX}.stage`", STATE, DATASET]}
    views = {STAGES: ("hpsearch: stages, trials nested", stages), RANKED: ("hpsearch: trials by best val acc", ranked)}
    tags = {KIND_TAG: KIND}
    for key, (name, state) in views.items():
        tags[VIEW_TAG + key] = json.dumps({"name": name, "createdAt": created_ms, "updatedAt": created_ms,
                                           "state": json.dumps(state)})
    return tags


def stage_run_ids(tracker, stage: str) -> list[str]:
    """The runs that stand for a stage: the trials under its latest stage run (coarse, fine, confirm), or,
    for a stage without one (final), its own runs; in trial order, then oldest first."""
    parents = tracker.find_runs(role="stage", stage=stage)
    if parents:
        runs = [r for r in tracker.children(parents[-1].info.run_id)
                if r.data.tags.get(f"{TAG_PREFIX}.role") == "trial"]
        runs.sort(key=lambda r: (int(r.data.tags.get(f"{TAG_PREFIX}.trial", -1)), r.info.start_time))
    else:
        runs = tracker.find_runs(stage=stage)
    return [r.info.run_id for r in runs]


def compare_run_ids(tracker, stages: list[str]) -> list[str]:
    """The runs of all the named stages; one UserError line naming a stage that has none."""
    ids: list[str] = []
    for stage in stages:
        found = stage_run_ids(tracker, stage)
        if not found:
            raise UserError(f"no runs of stage {stage!r} in experiment {tracker.experiment!r} of "
                            f"{redact(tracker.uri)}; run that stage first (`hpsearch pipeline` runs coarse, "
                            "fine and final)")
        ids += [i for i in found if i not in ids]
    return ids
