"""A real browser on the MLflow UI, shared by tests/test_browser.py and docs/screenshots.py.

    from tests.browser import chromium, compare_scatter, expand, hpsearch_ui, open_runs

    with hpsearch_ui(project_folder, port) as ui, chromium() as page:
        open_runs(page, ui.runs_url)
        expand(page, "coarse")
        compare_scatter(page, ui.compare_urls["coarse"], x="log10_lambda")

Playwright for Python drives Debian's chromium (no browser download): HPSEARCH_CHROMIUM names another
binary. The selectors come from the MLflow 3.17 UI: ARIA roles and labels where it has them, else its
`data-component-id`s and element ids.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ENV = "HPSEARCH_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 60_000  # a first page load compiles the UI's bundle: slow on a busy 2-core machine
RUN_NAME_CELL = '[col-id="attributes.`Run Name`"]'
DATASETS_CELL = '[col-id="attributes.`Dataset`"]'
# The MLflow Assistant panel opens by itself on a browser's first visit and takes a third of the page; these
# are the UI's own local-storage flags (key_v1) for "already auto-opened once" and "panel closed".
QUIET_ASSISTANT = """
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
"""


def chromium_path() -> str | None:
    """The chromium binary to drive, or None when there is none."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    found = shutil.which(path)
    return found if found and os.access(found, os.X_OK) else None


def missing() -> str | None:
    """Why a browser test cannot run here (playwright or chromium missing), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    if chromium_path() is None:
        return (f"no chromium at {os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM}: apt-get install chromium, "
                f"or set {CHROMIUM_ENV}")
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 800, scale: float = 1):
    """A page in a fresh headless chromium; the browser and its processes end with the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
            page.set_default_timeout(TIMEOUT_MS)
            page.add_init_script(QUIET_ASSISTANT)
            yield page
        finally:
            browser.close()


def open_runs(page, url: str) -> None:
    """The runs view; waits until its table shows runs."""
    page.goto(url)
    page.locator(RUN_NAME_CELL + " a").first.wait_for()


def run_row(page, name: str):
    """The table row of the run named `name`."""
    return page.locator('[role="row"]').filter(has=page.locator(f"{RUN_NAME_CELL} a", has_text=re.compile(
        rf"^{re.escape(name)}$")))


def run_names(page) -> list[str]:
    return [t.strip() for t in page.locator(f"{RUN_NAME_CELL} a").all_inner_texts()]


def dataset_names(page, name: str) -> list[str]:
    """The dataset inputs the runs table's Datasets column shows for the run named `name`."""
    # The grid draws a row in parts (the pinned name column, the scrolling rest) that share its row-index.
    index = run_row(page, name).first.get_attribute("row-index")
    cell = page.locator(f'[role="row"][row-index="{index}"] {DATASETS_CELL}').first
    cell.wait_for()
    return re.findall(r"cifar10-[\w-]+", cell.inner_text())


def expand(page, stage: str) -> None:
    """Unfold a stage run's trials (the +/- button in its name cell)."""
    run_row(page, stage).first.locator(f"{RUN_NAME_CELL} button").first.click()
    page.locator(f"{RUN_NAME_CELL} a", has_text=re.compile(rf"^{re.escape(stage)}-\d+$")).first.wait_for()


def compare_scatter(page, url: str, x: str, y: str = "best_val_accuracy") -> list[str]:
    """The compare page's scatter plot of param x against metric y; returns the plot's axis titles."""
    page.goto(url)
    tab = page.get_by_role("tab", name="Scatter Plot")
    tab.wait_for()
    tab.click()
    for axis, key in (("x", x), ("y", y)):
        page.locator(f"#{axis}-axis-selector").click()
        page.get_by_role("option", name=key, exact=True).click()
    titles = page.locator(".js-plotly-plot .xtitle, .js-plotly-plot .ytitle")
    page.locator(".js-plotly-plot .xtitle", has_text=x).wait_for()
    return [(t or "").strip() for t in titles.all_text_contents()]


# ---- `hpsearch ui` as a process ------------------------------------------------------------------------
@dataclass
class UI:
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    server_groups: set[int] = field(default_factory=set)  # the MLflow server's process group
    left_behind: list[int] = field(default_factory=list)  # processes still alive after Ctrl-C (then killed)

    @property
    def runs_url(self) -> str:
        return self._url("MLflow UI: ")

    @property
    def ranked_url(self) -> str:
        return self._url("  trials by val acc: ")

    @property
    def compare_urls(self) -> dict[str, str]:
        found = (re.match(r"\s+compare (\w+):\s+(\S+)$", line) for line in self.lines)
        return {m[1]: m[2] for m in found if m}

    def _url(self, prefix: str) -> str:
        return next(line[len(prefix):].strip() for line in self.lines if line.startswith(prefix))


def process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def hpsearch_ui(folder: Path, port: int, env: dict | None = None, timeout: float = 120) -> Iterator[UI]:
    """`python -m pipeline ui --port PORT` in `folder`, in its own session, until it printed its links.

    On exit: Ctrl-C (SIGINT) as a user would, then SIGKILL to both process groups (ours and the MLflow
    server's) for whatever is left, so nothing outlives the block.
    """
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ui = UI(proc)
    reader = threading.Thread(target=lambda: ui.lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not any("Ctrl-C to stop" in line for line in ui.lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hpsearch ui did not start (exit {proc.poll()}):\n" + "\n".join(ui.lines))
            time.sleep(0.2)
        ui.server_groups = _groups(children(proc.pid))
        yield ui
    finally:
        ui.server_groups |= _groups(children(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        for pgid in {proc.pid, *ui.server_groups}:
            if left := process_group(pgid):
                ui.left_behind += left
                os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        reader.join(5)


def _groups(pids: list[int]) -> set[int]:
    groups = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    return groups
