"""Where the data comes from: --data-dir / HPSEARCH_DATA, else a download; loaded once per process."""

from __future__ import annotations

import functools
from pathlib import Path

from model import data
from pipeline.errors import UserError

DOWNLOAD_DIR = Path("data")


def resolve(data_dir: Path | None, say=None) -> Path:
    """The cifar-10-batches-py folder to use, downloading the official archive when none is given."""
    try:
        if data_dir is not None:
            return data.locate(data_dir)
        if (DOWNLOAD_DIR / "cifar-10-batches-py").is_dir():
            return data.locate(DOWNLOAD_DIR)
        if say:
            say(f"no --data-dir given: downloading CIFAR-10 to {DOWNLOAD_DIR}/ (170 MB)")
        return data.ensure(None, download_to=DOWNLOAD_DIR, progress=_download_progress(say))
    except data.DataError as e:
        raise UserError(str(e)) from None


def _download_progress(say):
    last = [-1]

    def report(done: int, total: int | None) -> None:
        if say and total:
            pct = int(100 * done / total)
            if pct // 10 != last[0]:
                last[0] = pct // 10
                say(f"  downloaded {done / 1e6:.0f} / {total / 1e6:.0f} MB")

    return report


@functools.lru_cache(maxsize=2)
def dataset(folder: Path, split: str, val_size: int) -> data.Dataset:
    """Load, split and normalise once per process and split (the coarse and fine stages share it)."""
    try:
        return data.load_dataset(folder, split=split, val_size=val_size)
    except data.DataError as e:
        raise UserError(str(e)) from None
