"""MNIST, held in memory on the training device.

The whole data set is 47 MB of uint8, so instead of a DataLoader that decodes and rotates one
PIL image at a time, each split is loaded once as one tensor of pixels in [0, 1] on the device.
Batches are slices of it: shuffled with a seeded generator, rotated (and, where a recipe says so,
shifted) on the device, one random map per image, and normalized with the MNIST mean and std.
Nothing leaves the device per step.
"""
import contextlib
import io
import math
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(SystemExit):
    """The data cannot be had. Uncaught, it ends the script as argparse does a bad flag: its one
    line on stderr, and exit status 1."""

    def __init__(self, message):
        super().__init__(f"error: {message}")


def default_data_dir():
    """$MNIST_DIR when set, else ./data (torchvision downloads there on first use)."""
    return os.environ.get("MNIST_DIR") or "./data"


def raw_folder(data_dir):
    """data_dir/MNIST/raw, with ~ expanded as a shell (and torchvision) would; a data_dir that is
    itself such a folder is taken as it is."""
    path = Path(data_dir).expanduser()
    return path if path.parts[-2:] == ("MNIST", "raw") else path / "MNIST" / "raw"


def _download(data_dir, missing):
    """Fetch the four files as torchvision does; its per-mirror chatter is kept out of the log."""
    folder = raw_folder(data_dir)
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    print(f"Downloading MNIST to {folder} ...", flush=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            datasets.MNIST(folder.parent.parent, train=True, download=True)
    except Exception:
        if created:   # leave no empty folders behind
            shutil.rmtree(created, ignore_errors=True)
        what = ("MNIST is not" if len(missing) == len(RAW_FILES)
                else f"{', '.join(missing)} of MNIST are not")
        raise DataError(
            f"{what} in {folder} and could not be downloaded; "
            f"put the files {', '.join(RAW_FILES)} there (uncompressed IDX) or pass --data-dir"
        ) from None


def check_idx_file(path):
    """The dimensions in the file's IDX header; DataError unless its size is what they promise."""
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:2] != b"\0\0" or header[2] != 0x08:
            raise DataError(f"{path} is not an MNIST IDX file of bytes; "
                            "delete it to download it again")
        dims_bytes = f.read(4 * header[3])
    dims = [int.from_bytes(dims_bytes[i:i + 4], "big") for i in range(0, len(dims_bytes), 4)]
    expected = 4 + 4 * header[3] + math.prod(dims)
    size = path.stat().st_size
    if len(dims) != header[3] or size != expected:
        raise DataError(
            f"{path} is truncated or corrupt ({size:,} bytes, its header promises {expected:,}); "
            "delete it to download it again"
        )
    return dims


def check_mnist(folder):
    """Raise DataError unless the four files hold what training needs: per split, as many labels as
    28x28 images (at least one), each label a digit 0-9, and no test image among the training
    images. Each message is one line naming the file; sizes against headers are check_idx_file's,
    and a file that cannot be read is named with the reason."""
    try:
        dims = {name: check_idx_file(folder / name) for name in RAW_FILES}
        for images, labels in (RAW_FILES[:2], RAW_FILES[2:]):
            if len(dims[images]) != 3 or dims[images][1:] != [28, 28]:
                shape = " x ".join(f"{d:,}" for d in dims[images])
                raise DataError(f"{folder / images} does not hold 28x28 images "
                                f"(its header says {shape})")
            if dims[images][0] == 0:
                raise DataError(f"{folder / images} holds no images (its header says 0)")
            if len(dims[labels]) != 1:
                raise DataError(f"{folder / labels} is not a file of labels (its header has "
                                f"{len(dims[labels])} dimensions, not 1)")
            if dims[labels][0] != dims[images][0]:
                raise DataError(f"{folder / labels} holds {dims[labels][0]:,} labels for the "
                                f"{dims[images][0]:,} images of {images}; "
                                "the two files are of different sets")
            largest = max((folder / labels).read_bytes()[8:], default=0)
            if largest > 9:
                raise DataError(f"{folder / labels} holds the label {largest}; "
                                "a digit's label is 0-9")
        train_images, test_images = folder / RAW_FILES[0], folder / RAW_FILES[2]
        seen = set(images_of(train_images))
        shared = sum(image in seen for image in images_of(test_images))
    except OSError as e:
        raise DataError(f"cannot read {e.filename or folder}: {e.strerror or e}") from None
    if shared:
        raise DataError(f"{train_images} holds {shared:,} of the {dims[RAW_FILES[2]][0]:,} test "
                        f"images of {test_images.name}; training on the test set measures nothing")


def images_of(path):
    """The 28x28 images of an IDX file of images, each as its 784 bytes."""
    pixels = path.read_bytes()[16:]
    return (pixels[i:i + 784] for i in range(0, len(pixels), 784))


def load_split(data_dir, train, device="cpu"):
    """(pixels, labels) of one split on the device: pixels float32 (N, 1, 28, 28) in [0, 1]."""
    return load_splits(data_dir, device, (train,))[0]


def load_splits(data_dir, device="cpu", trains=(True, False)):
    """The splits asked for (training, test), the files fetched if missing and checked once, then
    read as they are: nothing else in the folder (torchvision's processed/ files) is read."""
    folder = raw_folder(data_dir)
    missing = [name for name in RAW_FILES if not (folder / name).is_file()]
    if missing:
        _download(data_dir, missing)
    check_mnist(folder)
    splits = []
    for train in trains:
        images, labels = (read_idx(folder / name) for name in RAW_FILES[0 if train else 2:][:2])
        splits.append((images.to(device).unsqueeze(1).float().div_(255), labels.long().to(device)))
    return splits


def read_idx(path):
    """An IDX file of bytes as a uint8 tensor of the dimensions in its header."""
    try:
        raw = bytearray(path.read_bytes())
    except OSError as e:
        raise DataError(f"cannot read {e.filename or path}: {e.strerror or e}") from None
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return torch.frombuffer(raw, dtype=torch.uint8, offset=4 + 4 * len(dims)).view(*dims)


def normalize(pixels):
    return (pixels - MNIST_MEAN) / MNIST_STD


def random_rotation(pixels, max_degrees, generator, max_shift=0.0):
    """Rotate each image by its own angle, uniform in [-max_degrees, max_degrees], about its centre,
    and, where max_shift is given, move it by its own distance along each axis, uniform in
    [-max_shift, max_shift] pixels: one affine map per image, sampled once.

    Nearest-neighbour sampling, as torchvision's RandomRotation (the notebook's) does by default:
    it moves pixels without blending them. What comes in from outside the frame is 0, the black
    background, which is why this runs on pixels before normalization. Without a shift it draws
    no more random numbers than the rotation alone, so runs without one repeat as they did."""
    n, height, width = pixels.shape[0], pixels.shape[-2], pixels.shape[-1]
    angles = torch.rand(n, generator=generator, device=pixels.device) * 2 - 1
    angles = angles * math.radians(max_degrees)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    dx = dy = zero
    if max_shift:
        shifts = (torch.rand(n, 2, generator=generator, device=pixels.device) * 2 - 1) * max_shift
        dx, dy = shifts[:, 0] * 2 / width, shifts[:, 1] * 2 / height   # pixels in grid units
    theta = torch.stack([cos, -sin, dx, sin, cos, dy], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def train_batches(pixels, labels, batch_size, generator, max_degrees=0.0, max_shift=0.0):
    """One epoch of shuffled, augmented, normalized (images, labels) batches."""
    order = torch.randperm(len(labels), generator=generator, device=labels.device)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        images = pixels[index]
        if max_degrees or max_shift:
            images = random_rotation(images, max_degrees, generator, max_shift)
        yield normalize(images), labels[index]


def test_batches(pixels, labels, batch_size):
    """The split in order, normalized, in batches."""
    for start in range(0, len(labels), batch_size):
        yield normalize(pixels[start:start + batch_size]), labels[start:start + batch_size]
