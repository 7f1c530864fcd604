"""The MLflow UI in a real browser: `hpsearch ui`'s links land on the runs, and compare plots log10_lambda.

Needs playwright (the dev extra) and a chromium (Debian's /usr/bin/chromium, or HPSEARCH_CHROMIUM). Without
them the test is skipped on a developer's machine and fails in CI (CI=true), where .ci/run installs both.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from tests import browser
from tests.conftest import hpsearch, hpsearch_env
from tests.servers import free_port

pytestmark = pytest.mark.slow


def need_browser() -> None:
    if why := browser.missing():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the browser test: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def store(tmp_path_factory, cifar_dir):
    """A project folder whose store holds a tiny coarse, fine and final run."""
    from tests.conftest import project_folder

    need_browser()  # before the slow part
    with project_folder(tmp_path_factory.mktemp("browser"), cifar_dir) as folder:
        for args in (("search", "coarse", "--n-trials", "3"), ("search", "fine", "--n-trials", "3"), ("train-final",)):
            hpsearch(*args)
        yield folder


@pytest.fixture
def page(tmp_path, request):
    """A chromium page; saves a screenshot (path printed) when the test fails."""
    need_browser()
    with browser.chromium() as p:
        yield p
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            shot = tmp_path / "failure.png"
            with contextlib.suppress(Exception):
                p.screenshot(path=shot, full_page=True)
                print(f"screenshot of the failing page: {shot} ({p.url})")


def test_ui_lands_on_the_stage_runs_and_compares_on_log10_lambda(store, page):
    t0 = time.monotonic()
    with browser.hpsearch_ui(store, free_port(), env=hpsearch_env(store)) as ui:
        browser.open_runs(page, ui.runs_url)
        assert browser.run_names(page) == ["final", "fine", "coarse"], "the stage runs, newest first, trials folded"
        assert page.get_by_text("hpsearch: stages, trials nested").count(), "our saved view is open"
        for column in ("best_val_accuracy", "lambda"):
            assert page.get_by_test_id(f"sort-header-{column}").count(), f"no column {column}"
        browser.expand(page, "coarse")
        assert browser.run_names(page) == ["final", "fine", "coarse", "coarse-2", "coarse-1", "coarse-0"]
        for run, dataset in (("final", "cifar10-holdout-val100"), ("coarse-0", "cifar10-holdout-val200")):
            assert browser.dataset_names(page, run) == [dataset], f"the Datasets column of {run}"
        assert browser.dataset_names(page, "coarse") == [], "a stage run trains nothing: no dataset"

        browser.open_runs(page, ui.ranked_url)
        names = browser.run_names(page)
        assert sorted(names) == sorted(f"{s}-{i}" for s in ("coarse", "fine") for i in range(3)), names

        assert set(ui.compare_urls) == {"coarse", "fine"}
        titles = browser.compare_scatter(page, ui.compare_urls["coarse"], x="log10_lambda")
        assert titles == ["log10_lambda", "best_val_accuracy"]
        assert page.get_by_text("Comparing 3 Runs from 1 Experiment").count()
    assert ui.server_groups and ui.left_behind == [], "Ctrl-C left processes of hpsearch ui or its server behind"
    print(f"browser test: {time.monotonic() - t0:.1f} s")
