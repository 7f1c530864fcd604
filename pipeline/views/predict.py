"""`hpsearch predict`: classify PNG/JPEG images or CIFAR-10 batch files with the champion model.

Every input becomes rows in the CIFAR layout (3072 raw pixels 0..255, channel-major R, G, B planes
of 32 × 32), all rows go to the registered pyfunc model in one predict call, and each row gets a
line (or a JSON object). A file that cannot be read is reported and skipped; the others still run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.cifar10 import CLASSES, D, DataError, load_batch
from pipeline.tracking.registry import load_champion

SIDE = 32
FORMATS = ("PNG", "JPEG")
PICKLE_MAGIC = b"\x80"  # pickle protocol 2+, as the CIFAR batches are written


@dataclass
class Inputs:
    """names[i] labels X[i]; errors holds one 'FILE: reason' line per file that could not be read."""

    names: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def X(self) -> np.ndarray:
        """(n, 3072) float32 raw pixels, the model's input."""
        if not self.rows:
            return np.empty((0, D), np.float32)
        return np.concatenate(self.rows).astype(np.float32)


@dataclass
class Predictions:
    names: list[str]
    P: np.ndarray  # (n, 10) class probabilities
    errors: list[str]

    def records(self) -> list[dict]:
        return [
            {"file": name, "class": CLASSES[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {c: float(v) for c, v in zip(CLASSES, p, strict=True)}}
            for name, p in zip(self.names, self.P, strict=True)
        ]

    def table(self) -> str:
        """One line per image: file, class, probability, in aligned columns."""
        w = max((len(n) for n in self.names), default=0)
        cw = max(len(c) for c in CLASSES)
        return "\n".join(f"{r['file']:<{w}}  {r['class']:<{cw}}  {r['probability']:.2f}" for r in self.records())

    def to_json(self) -> str:
        return json.dumps(self.records(), indent=2)


def image_row(path: str | os.PathLike) -> np.ndarray:
    """A PNG or JPEG file as one CIFAR row: (3072,) uint8, resized to 32 × 32 RGB.

    Raises OSError (or ValueError) when the file is missing, not such an image, or truncated.
    """
    from PIL import Image, ImageOps

    with Image.open(path, formats=FORMATS) as img:
        img = ImageOps.exif_transpose(img)  # photos from phones store their rotation in EXIF
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: convert() would clip at 255
            img = Image.fromarray((np.asarray(img, np.uint32) >> 8).astype(np.uint8))
        img = img.convert("RGB")
        if img.size != (SIDE, SIDE):
            # Lanczos with Pillow's support scaling low-pass filters when shrinking, so no aliasing.
            img = img.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
        return np.asarray(img, np.uint8).transpose(2, 0, 1).reshape(-1)


def _is_pickle(path: Path) -> bool:
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ValueError("not a regular file")  # a FIFO or device would block the read below
    with open(path, "rb") as f:
        return f.read(1) == PICKLE_MAGIC


def read_inputs(paths: list[str | os.PathLike]) -> Inputs:
    """Images and batch files as rows; a failing file adds an error line and nothing else."""
    from PIL import Image, UnidentifiedImageError

    out = Inputs()
    for path in paths:
        path = Path(path)
        try:
            if _is_pickle(path):
                X, _ = load_batch(path)
                out.names.extend(f"{path}[{i}]" for i in range(len(X)))
                out.rows.append(X)
            else:
                out.rows.append(image_row(path)[None, :])
                out.names.append(str(path))
        except DataError as e:  # names the file already
            out.errors.append(str(e))
        except UnidentifiedImageError:
            out.errors.append(f"{path}: not a PNG or JPEG image, nor a CIFAR-10 batch file")
        except Image.DecompressionBombError as e:
            out.errors.append(f"{path}: refused: {e}")
        except FileNotFoundError:
            out.errors.append(f"{path}: file not found")
        except IsADirectoryError:
            out.errors.append(f"{path}: is a folder, not an image")
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # what Pillow raises on a broken file
            out.errors.append(f"{path}: cannot read the image ({e})")
    return out


def predict_files(tracking_uri: str, paths: list[str | os.PathLike]) -> Predictions:
    """Load the champion, read every file, classify all readable images in one predict call."""
    model = load_champion(tracking_uri)
    inputs = read_inputs(paths)
    X = inputs.X
    P = np.asarray(model.predict(X), np.float64) if len(X) else np.empty((0, len(CLASSES)))
    return Predictions(inputs.names, P, inputs.errors)
