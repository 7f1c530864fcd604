"""CIFAR-10 in its "python version" layout: safe loading, download + checksum, splits, normalisation.

Pure NumPy and the standard library. Every problem a user can cause (missing or corrupt files, a
bad checksum, a hostile pickle, a bad split) raises :class:`DataError` with one line that names
the file and says what to do next.

    layout     names, sizes and DataError
    unpickle   reading a batch pickle without running anything from it
    batch      load_batch, load_meta: one file as checked arrays
    fetch      locate, ensure, download, extract
    archive    the archive's member checks and extraction, with or without tarfile's data filter
    dataset    splits, normalisation, digest, load_dataset (read_batches + split_dataset)
    opcodes, ndarrays   the stack machine under unpickle, and the NumPy arrays it may build

Typical use::

    ds = load_dataset(ensure(data_dir="~/data"), split="holdout", val_size=5000)
"""

from model.cifar10.batch import load_batch, load_meta
from model.cifar10.dataset import (
    DEFAULT_VAL_SIZE,
    MAX_VAL_SIZE,
    SPLITS,
    Batches,
    Dataset,
    check_split,
    dataset_digest,
    feature_stats,
    load_dataset,
    normalise,
    read_batches,
    split_dataset,
    standardise,
)
from model.cifar10.fetch import download, ensure, extract, locate
from model.cifar10.layout import (
    ARCHIVE_NAME,
    BATCHES_DIR,
    CLASSES,
    DEFAULT_DOWNLOAD_DIR,
    META_FILE,
    TEST_FILE,
    TRAIN_FILES,
    D,
    DataError,
    missing_files,
)

__all__ = [
    "ARCHIVE_NAME", "BATCHES_DIR", "CLASSES", "D", "DEFAULT_DOWNLOAD_DIR", "DEFAULT_VAL_SIZE", "MAX_VAL_SIZE",
    "META_FILE", "SPLITS", "TEST_FILE", "TRAIN_FILES", "Batches", "DataError", "Dataset", "check_split",
    "dataset_digest", "download",
    "ensure", "extract", "feature_stats", "load_batch", "load_dataset", "load_meta", "locate", "missing_files",
    "normalise", "read_batches", "split_dataset", "standardise",
]
