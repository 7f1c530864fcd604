"""What the official CIFAR-10 "python version" looks like, and the error for a copy that doesn't.

Every module of this package raises :class:`DataError` for problems a user can cause; its message
is one line that names the file and says what to do next, in words that fit any front end (the
CLI adds its own option names).
"""

from __future__ import annotations

from pathlib import Path

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
D = 3072                      # 32 x 32 x 3, channel-major rows as in the official files

ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
DEFAULT_DOWNLOAD_DIR = Path("data")

HINT_DATA_DIR = (f"point the data folder at {BATCHES_DIR}, the folder above it or {ARCHIVE_NAME}, "
                 f"or leave it unset to download")
HINT_REFETCH = "delete it and download or extract the dataset again"


class DataError(Exception):
    """A problem with the data a user can fix; the message is one line saying what and how."""


def missing_files(folder: Path) -> list[str]:
    """The batch files (train and test) that folder lacks."""
    return [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
