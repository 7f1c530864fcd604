"""The README's MLflow UI pictures, taken with the browser code of tests/test_browser.py (tests/browser.py).

Starts `hpsearch ui` on a project folder whose store holds a finished pipeline, opens its runs link with the
coarse trials unfolded, then the coarse compare page's scatter plot on log10_lambda, and writes
mlflow-runs.png and mlflow-compare.png as small palette PNGs:

    make screenshots                                    # this checkout's store
    PYTHONPATH=. .venv/bin/python docs/screenshots.py /path/to/project --out docs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import browser  # noqa: E402 - after the path fix above
from tests.servers import free_port  # noqa: E402

WIDTH, HEIGHT = 1280, 720
COLORS = 96  # palette size: the UI is flat colours and text, so this keeps it sharp at a fraction of the bytes


def shrink(path: Path) -> int:
    """Rewrite the PNG with a palette; returns its size in bytes."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path.stat().st_size


def take(project: Path, out: Path) -> list[Path]:
    if why := browser.missing():
        raise SystemExit(f"screenshots: {why}")
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    shots = [out / "mlflow-runs.png", out / "mlflow-compare.png"]
    with browser.hpsearch_ui(project, free_port(), env=env) as ui, browser.chromium(WIDTH, HEIGHT) as page:
        browser.open_runs(page, ui.runs_url)
        browser.expand(page, "coarse")
        page.mouse.move(0, 0)  # no hover highlight in the picture
        page.screenshot(path=shots[0])
        browser.compare_scatter(page, ui.compare_urls["coarse"], x="log10_lambda")
        page.mouse.move(0, 0)
        page.screenshot(path=shots[1])
    for shot in shots:
        print(f"{shot}: {shrink(shot) / 1024:.0f} KB")
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, nargs="?", default=Path.cwd(),
                        help="folder with mlruns/ of a finished pipeline (default: here)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = parser.parse_args()
    take(args.project.resolve(), args.out)


if __name__ == "__main__":
    main()
