"""The tests of the lesson and its boundary: `python -m unittest` (under a minute on 2 cores).

Grouped by what they protect: the models and their tables, the data, the lesson's training and
testing, the command line and its bad input, the files and signals, and the picture of a model's
mistakes (plot.py). The lab's tests (its tables, the screen, the committed results) are in
lab/test_lab.py. Training runs on a tiny MNIST that the tests write themselves in the IDX format;
the tests that need the real data set run only when $MNIST_DIR points at it (as .ci/run sets it)."""
import contextlib
import copy
import inspect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import unittest.mock
from pathlib import Path
from xml.etree import ElementTree

import torch
import torch.nn as nn

import data
import harness
import models
import plot
import train
from models import MODELS, count_parameters, forward_backward_bytes, summary

HERE = Path(__file__).resolve().parent

# The write-up's tables of Models 1-3, from the first dashed rule to the last.
GOLDEN_MODEL1 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1            [-1, 8, 28, 28]              72
              ReLU-2            [-1, 8, 28, 28]               0
            Conv2d-3           [-1, 12, 28, 28]             864
              ReLU-4           [-1, 12, 28, 28]               0
         MaxPool2d-5           [-1, 12, 14, 14]               0
            Conv2d-6           [-1, 16, 14, 14]           1,728
              ReLU-7           [-1, 16, 14, 14]               0
            Conv2d-8           [-1, 16, 12, 12]           2,304
              ReLU-9           [-1, 16, 12, 12]               0
        MaxPool2d-10             [-1, 16, 6, 6]               0
           Conv2d-11             [-1, 16, 4, 4]           2,304
             ReLU-12             [-1, 16, 4, 4]               0
           Conv2d-13             [-1, 16, 2, 2]           2,304
             ReLU-14             [-1, 16, 2, 2]               0
AdaptiveAvgPool2d-15             [-1, 16, 1, 1]               0
           Linear-16                   [-1, 10]             170
================================================================
Total params: 9,746
Trainable params: 9,746
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.35
Params size (MB): 0.04
Estimated Total Size (MB): 0.39
----------------------------------------------------------------"""

GOLDEN_MODEL2 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1            [-1, 8, 28, 28]              72
              ReLU-2            [-1, 8, 28, 28]               0
       BatchNorm2d-3            [-1, 8, 28, 28]              16
           Dropout-4            [-1, 8, 28, 28]               0
            Conv2d-5           [-1, 12, 28, 28]             864
              ReLU-6           [-1, 12, 28, 28]               0
       BatchNorm2d-7           [-1, 12, 28, 28]              24
           Dropout-8           [-1, 12, 28, 28]               0
         MaxPool2d-9           [-1, 12, 14, 14]               0
           Conv2d-10           [-1, 16, 14, 14]           1,728
             ReLU-11           [-1, 16, 14, 14]               0
      BatchNorm2d-12           [-1, 16, 14, 14]              32
          Dropout-13           [-1, 16, 14, 14]               0
           Conv2d-14           [-1, 16, 12, 12]           2,304
             ReLU-15           [-1, 16, 12, 12]               0
      BatchNorm2d-16           [-1, 16, 12, 12]              32
          Dropout-17           [-1, 16, 12, 12]               0
        MaxPool2d-18             [-1, 16, 6, 6]               0
           Conv2d-19             [-1, 16, 4, 4]           2,304
             ReLU-20             [-1, 16, 4, 4]               0
      BatchNorm2d-21             [-1, 16, 4, 4]              32
          Dropout-22             [-1, 16, 4, 4]               0
           Conv2d-23             [-1, 16, 2, 2]           2,304
             ReLU-24             [-1, 16, 2, 2]               0
      BatchNorm2d-25             [-1, 16, 2, 2]              32
          Dropout-26             [-1, 16, 2, 2]               0
AdaptiveAvgPool2d-27             [-1, 16, 1, 1]               0
           Linear-28                   [-1, 10]             170
================================================================
Total params: 9,914
Trainable params: 9,914
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.68
Params size (MB): 0.04
Estimated Total Size (MB): 0.72
----------------------------------------------------------------"""

GOLDEN_MODEL3 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1            [-1, 8, 28, 28]              72
              ReLU-2            [-1, 8, 28, 28]               0
       BatchNorm2d-3            [-1, 8, 28, 28]              16
           Dropout-4            [-1, 8, 28, 28]               0
            Conv2d-5           [-1, 12, 28, 28]             864
              ReLU-6           [-1, 12, 28, 28]               0
       BatchNorm2d-7           [-1, 12, 28, 28]              24
           Dropout-8           [-1, 12, 28, 28]               0
         MaxPool2d-9           [-1, 12, 14, 14]               0
           Conv2d-10           [-1, 16, 14, 14]           1,728
             ReLU-11           [-1, 16, 14, 14]               0
      BatchNorm2d-12           [-1, 16, 14, 14]              32
          Dropout-13           [-1, 16, 14, 14]               0
           Conv2d-14           [-1, 16, 12, 12]           2,304
             ReLU-15           [-1, 16, 12, 12]               0
      BatchNorm2d-16           [-1, 16, 12, 12]              32
          Dropout-17           [-1, 16, 12, 12]               0
        MaxPool2d-18             [-1, 16, 6, 6]               0
           Conv2d-19             [-1, 11, 4, 4]           1,584
             ReLU-20             [-1, 11, 4, 4]               0
      BatchNorm2d-21             [-1, 11, 4, 4]              22
          Dropout-22             [-1, 11, 4, 4]               0
           Conv2d-23             [-1, 10, 2, 2]             990
             ReLU-24             [-1, 10, 2, 2]               0
      BatchNorm2d-25             [-1, 10, 2, 2]              20
          Dropout-26             [-1, 10, 2, 2]               0
AdaptiveAvgPool2d-27             [-1, 10, 1, 1]               0
           Linear-28                   [-1, 10]             100
================================================================
Total params: 7,788
Trainable params: 7,788
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.67
Params size (MB): 0.03
Estimated Total Size (MB): 0.71
----------------------------------------------------------------"""


# Model 4 is ours, not the write-up's: its table as it stands, so that a change to its layers
# (a shape, a count, a block's order) shows up here.
GOLDEN_MODEL4 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1            [-1, 8, 28, 28]              72
              ReLU-2            [-1, 8, 28, 28]               0
       BatchNorm2d-3            [-1, 8, 28, 28]              16
            Conv2d-4           [-1, 12, 28, 28]             864
              ReLU-5           [-1, 12, 28, 28]               0
       BatchNorm2d-6           [-1, 12, 28, 28]              24
         MaxPool2d-7           [-1, 12, 14, 14]               0
            Conv2d-8           [-1, 16, 14, 14]           1,728
              ReLU-9           [-1, 16, 14, 14]               0
      BatchNorm2d-10           [-1, 16, 14, 14]              32
           Conv2d-11           [-1, 16, 12, 12]           2,304
             ReLU-12           [-1, 16, 12, 12]               0
      BatchNorm2d-13           [-1, 16, 12, 12]              32
        MaxPool2d-14             [-1, 16, 6, 6]               0
           Conv2d-15             [-1, 11, 4, 4]           1,584
             ReLU-16             [-1, 11, 4, 4]               0
      BatchNorm2d-17             [-1, 11, 4, 4]              22
           Conv2d-18             [-1, 10, 2, 2]             990
             ReLU-19             [-1, 10, 2, 2]               0
      BatchNorm2d-20             [-1, 10, 2, 2]              20
AdaptiveAvgPool2d-21             [-1, 10, 1, 1]               0
           Linear-22                   [-1, 10]             100
================================================================
Total params: 7,788
Trainable params: 7,788
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.51
Params size (MB): 0.03
Estimated Total Size (MB): 0.54
----------------------------------------------------------------"""

# Model 5, ours too: BatchNorm before each ReLU, 12 channels where Model 4 has 16.
GOLDEN_MODEL5 = """\
----------------------------------------------------------------
        Layer (type)               Output Shape         Param #
================================================================
            Conv2d-1            [-1, 8, 28, 28]              72
       BatchNorm2d-2            [-1, 8, 28, 28]              16
              ReLU-3            [-1, 8, 28, 28]               0
            Conv2d-4           [-1, 12, 28, 28]             864
       BatchNorm2d-5           [-1, 12, 28, 28]              24
              ReLU-6           [-1, 12, 28, 28]               0
         MaxPool2d-7           [-1, 12, 14, 14]               0
            Conv2d-8           [-1, 12, 14, 14]           1,296
       BatchNorm2d-9           [-1, 12, 14, 14]              24
             ReLU-10           [-1, 12, 14, 14]               0
           Conv2d-11           [-1, 12, 12, 12]           1,296
      BatchNorm2d-12           [-1, 12, 12, 12]              24
             ReLU-13           [-1, 12, 12, 12]               0
        MaxPool2d-14             [-1, 12, 6, 6]               0
           Conv2d-15             [-1, 11, 4, 4]           1,188
      BatchNorm2d-16             [-1, 11, 4, 4]              22
             ReLU-17             [-1, 11, 4, 4]               0
           Conv2d-18             [-1, 10, 2, 2]             990
      BatchNorm2d-19             [-1, 10, 2, 2]              20
             ReLU-20             [-1, 10, 2, 2]               0
AdaptiveAvgPool2d-21             [-1, 10, 1, 1]               0
           Linear-22                   [-1, 10]             100
================================================================
Total params: 5,936
Trainable params: 5,936
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.48
Params size (MB): 0.02
Estimated Total Size (MB): 0.50
----------------------------------------------------------------"""



def write_tiny_mnist(root, n_train=320, n_test=160):
    """Write the four MNIST files under root/MNIST/raw: digit-sized images whose label sets how
    many pixel rows are lit, so a model can learn something in a few steps."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator, dtype=torch.uint8)
        images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 4:6 + 2 * label, 10:18] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_idx(path, tensor):
    """A uint8 tensor as an IDX file: magic 0x08 (bytes) and its dimensions, then the bytes."""
    header = bytes([0, 0, 8, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    Path(path).write_bytes(header + tensor.numpy().tobytes())


def run_main(argv, main=train.main):
    """A script's main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def strict_json(path):
    """The file's JSON, refusing the bare NaN and Infinity tokens that strict readers reject."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def start_training(tmp, metrics, *extra, **popen):
    """train.py in a child process on the tiny data, Model 1 for many epochs, and wait (up to 15
    minutes, a safety net for a busy machine, not a speed limit) for its first finished epoch."""
    child = subprocess.Popen(
        [
            sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs", "100000",
            "--data-dir", str(tmp / "data"), "--metrics", str(metrics), *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    deadline = time.monotonic() + 900
    while not metrics.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    return child


class TinyData(unittest.TestCase):
    """A test with the tiny MNIST in a temporary folder, and train.py's flags for it."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.raw = write_tiny_mnist(self.tmp / "data")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def args(self, *extra):
        return ["--model", "3", "--epochs", "2", "--data-dir", str(self.tmp / "data"), *extra]

    def assert_one_line(self, code, err, status):
        self.assertEqual(code, status, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertNotIn("Traceback", err)

    def assert_refused(self, extra, words="error:", status=2):
        """Refused before training: the status, one line on stderr, nothing on stdout."""
        code, out, err = run_main(self.args(*extra))
        self.assert_one_line(code, err, status)
        self.assertNotIn("EPOCH", out)
        self.assertIn(words, err)
        return err


class TestModelsAndSummary(unittest.TestCase):
    def test_output_is_log_probabilities_of_10_classes(self):
        for number, model_class in MODELS.items():
            model = model_class().eval()
            for batch in (1, 4):
                with self.subTest(model=number, batch=batch):
                    output = model(torch.randn(batch, 1, 28, 28))
                    self.assertEqual(tuple(output.shape), (batch, 10))
                    torch.testing.assert_close(output.exp().sum(dim=1), torch.ones(batch))

    def test_parameter_counts(self):
        expected = {1: 9746, 2: 9914, 3: 7788, 4: 7788, 5: 5936}
        self.assertEqual(sorted(MODELS), sorted(expected))
        for number, count in expected.items():
            self.assertEqual(count_parameters(MODELS[number]()), (count, count))
        for number in (3, 4, 5):
            self.assertLess(count_parameters(MODELS[number]())[0], 8000)
        self.assertLessEqual(count_parameters(MODELS[5]())[0], 6000)

    def test_count_parameters_agrees_with_numel_and_sees_frozen_ones(self):
        model = MODELS[2]()
        total = sum(p.numel() for p in model.parameters())
        self.assertEqual(count_parameters(model), (total, total))
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        first_conv.weight.requires_grad_(False)
        self.assertEqual(count_parameters(model), (total, total - 72))
        self.assertIn("Non-trainable params: 72", summary(model))

    def test_summary_equals_the_write_up_and_our_models_own(self):
        for number, golden in (
            (1, GOLDEN_MODEL1), (2, GOLDEN_MODEL2), (3, GOLDEN_MODEL3), (4, GOLDEN_MODEL4),
            (5, GOLDEN_MODEL5),
        ):
            with self.subTest(model=number):
                self.assertEqual(summary(MODELS[number]()), golden)

    def test_summary_counts_a_module_called_twice_once(self):
        class Twice(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 3, padding=1)          # 9 weights + 1 bias
                self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

            def forward(self, x):
                return self.head(self.conv(self.conv(x)))

        table = summary(Twice())
        self.assertIn("Conv2d-1", table)
        self.assertIn("Conv2d-2", table)          # one row per call ...
        self.assertIn("Linear-4", table)          # ... and nested Sequentials reach their leaves
        self.assertIn("Total params: 7,860", table)  # ... but 10 + 7,850 parameters, counted once

    def test_summary_leaves_the_model_as_it_was(self):
        torch.manual_seed(0)
        model = MODELS[3]().train()
        model.convblock2.eval()
        modes = [m.training for m in model.modules()]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        digits = torch.randn(8, 1, 28, 28)
        before = model.eval()(digits)
        model.train(), model.convblock2.eval()
        self.assertEqual(summary(model), summary(model))   # the same table again: no row left over
        self.assertEqual([m.training for m in model.modules()], modes)
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, state[name]), name)  # BatchNorm statistics too
        self.assertTrue(all(p.grad is None for p in model.parameters()))
        torch.testing.assert_close(model.eval()(digits), before, rtol=0, atol=0)


class TestData(TinyData):
    def test_rotation_turns_each_image_within_its_range_on_a_black_background(self):
        pixels = torch.zeros(64, 1, 28, 28)
        pixels[:, :, 4:24, 13:15] = 1.0    # a vertical bar, 20 px long, through the centre
        rotated = data.random_rotation(pixels, 7.0, torch.Generator().manual_seed(0))
        self.assertEqual(rotated.shape, pixels.shape)
        turned = (rotated != pixels).flatten(1).any(dim=1)
        self.assertGreater(turned.sum().item(), 32)          # most images are turned ...
        self.assertGreater(len(torch.unique(rotated.flatten(1), dim=0)), 8)  # ... each its own way
        # At 7 degrees the bar's ends move at most 10 * sin(7) = 1.2 px sideways, so columns
        # far from it stay background; at 45 degrees they do not.
        far = lambda x: torch.cat([x[..., :10], x[..., 18:]], dim=-1).abs().max().item()
        self.assertEqual(far(rotated), 0.0)
        self.assertGreater(
            far(data.random_rotation(pixels, 45.0, torch.Generator().manual_seed(0))), 0.5
        )
        unrotated = data.random_rotation(pixels, 0.0, torch.Generator().manual_seed(0))
        torch.testing.assert_close(unrotated, pixels, atol=1e-5, rtol=0)

    def test_shift_moves_each_image_within_its_range_and_brings_in_background(self):
        point = torch.zeros(256, 1, 28, 28)
        point[:, :, 14, 14] = 1.0
        shifted = data.random_rotation(point, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(
            torch.equal(shifted.flatten(1).sum(dim=1), torch.ones(256))
        )  # moved, not blurred
        where = shifted.flatten(1).argmax(dim=1)
        rows, columns = where // 28 - 14, where % 28 - 14
        for offsets in (rows, columns):
            self.assertLessEqual(offsets.abs().max().item(), 2)        # no farther than it says ...
            self.assertEqual(set(offsets.tolist()), {-2, -1, 0, 1, 2})  # ... and every way up to it
        white = torch.ones(256, 1, 28, 28)
        moved_in = data.random_rotation(white, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(moved_in[..., 2:26, 2:26], white[..., 2:26, 2:26]))
        self.assertEqual(moved_in.unique().tolist(), [0.0, 1.0])        # what enters is background
        again = data.random_rotation(point, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(again, shifted))
        other = data.random_rotation(point, 0.0, torch.Generator().manual_seed(1), max_shift=2.0)
        self.assertFalse(torch.equal(other, shifted))

    def test_rotation_without_shift_draws_what_it_always_drew(self):
        """A run without --shift repeats the committed runs: one random angle per image, no more."""
        used, alone = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        data.random_rotation(torch.zeros(50, 1, 28, 28), 7.0, used)
        torch.rand(50, generator=alone)
        self.assertTrue(torch.equal(used.get_state(), alone.get_state()))

    def test_train_batches_cover_the_split_once_in_a_seeded_order(self):
        labels = torch.arange(100)
        pixels = torch.zeros(100, 1, 28, 28)
        def order(seed):
            batches = data.train_batches(pixels, labels, 32, torch.Generator().manual_seed(seed))
            return torch.cat([y for _, y in batches])
        self.assertEqual(sorted(order(1).tolist()), list(range(100)))
        self.assertTrue(torch.equal(order(1), order(1)))
        self.assertFalse(torch.equal(order(1), order(2)))

    @unittest.skipUnless(
        os.environ.get("MNIST_DIR"), "set MNIST_DIR to the folder holding MNIST/raw"
    )
    def test_real_mnist_loads_and_normalizes(self):
        (train_pixels, train_labels), (test_pixels, test_labels) = data.load_splits(
            os.environ["MNIST_DIR"]
        )
        self.assertEqual(tuple(train_pixels.shape), (60000, 1, 28, 28))
        self.assertEqual(len(test_labels), 10000)
        self.assertEqual(train_labels.unique().tolist(), list(range(10)))
        normalized = data.normalize(train_pixels)
        self.assertAlmostEqual(normalized.mean().item(), 0.0, delta=0.01)
        self.assertAlmostEqual(normalized.std().item(), 1.0, delta=0.01)

    def test_missing_data_offline_exits_1_naming_the_folder(self):
        empty = self.tmp / "empty"
        offline = {
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "no_proxy": "",
        }
        with unittest.mock.patch.dict(os.environ, offline):
            code, _, err = run_main(["--data-dir", str(empty), "--dry-run", "--epochs", "1"])
        self.assert_one_line(code, err, 1)
        self.assertIn(str(empty / "MNIST" / "raw"), err)
        self.assertIn("train-images-idx3-ubyte", err)
        self.assertFalse(empty.exists())   # the folders the download made are gone with it

    def test_a_partial_data_folder_names_the_missing_files(self):
        (self.raw / "t10k-labels-idx1-ubyte").unlink()
        with unittest.mock.patch.object(
            data.datasets, "MNIST", side_effect=OSError("offline")
        ):  # no download
            code, _, err = run_main(self.args("--dry-run"))
        self.assert_one_line(code, err, 1)
        self.assertIn("t10k-labels-idx1-ubyte of MNIST are not in", err)
        self.assertNotIn("train-images-idx3-ubyte of", err)

    def test_data_files_that_are_wrong_inside_exit_1_naming_the_file(self):
        files = {name: (self.raw / name).read_bytes() for name in data.RAW_FILES}
        train_images, train_labels, test_images, test_labels = (
            self.raw / name for name in data.RAW_FILES
        )
        labels_of = lambda value: files[data.RAW_FILES[3]][:8] + bytes([value]) * (
            len(files[data.RAW_FILES[3]]) - 8
        )
        images_of = lambda n, rows, columns: (
            bytes([0, 0, 8, 3])
            + b"".join(d.to_bytes(4, "big") for d in (n, rows, columns))
            + bytes(n * rows * columns)
        )
        test_set = torch.frombuffer(
            bytearray(files[data.RAW_FILES[2]][16:]), dtype=torch.uint8
        ).view(-1, 28, 28)
        superset = self.tmp / "superset"
        write_idx(superset, torch.cat([torch.zeros(200, 28, 28, dtype=torch.uint8), test_set]))
        superset_labels = self.tmp / "superset-labels"
        write_idx(superset_labels, torch.zeros(200 + len(test_set), dtype=torch.uint8))
        cases = [  # (the files to replace, and their new contents; the file the message must name)
            ({test_labels: labels_of(255)}, test_labels),
            ({test_labels: files[data.RAW_FILES[3]][:-5]}, test_labels),  # truncated
            (
                {train_images: files[data.RAW_FILES[2]]},
                train_labels,
            ),  # the test images in its place
            (
                {train_labels: files[data.RAW_FILES[3]]},
                train_labels,
            ),  # the test labels in its place
            ({train_images: images_of(320, 14, 56)}, train_images),
            ({test_labels: files[data.RAW_FILES[2]]}, test_labels),  # images where labels belong
            (
                {
                    test_images: images_of(0, 28, 28),
                    test_labels: files[data.RAW_FILES[3]][:4] + bytes(4),
                },
                test_images,
            ),
            (
                {train_images: files[data.RAW_FILES[2]], train_labels: files[data.RAW_FILES[3]]},
                train_images,
            ),
            (
                {train_images: superset.read_bytes(), train_labels: superset_labels.read_bytes()},
                train_images,
            ),
        ]
        for replaced, named in cases:
            with self.subTest(files=[p.name for p in replaced], named=named.name):
                for name, original in files.items():
                    (self.raw / name).write_bytes(original)
                for path, contents in replaced.items():
                    path.write_bytes(contents)
                code, out, err = run_main(self.args("--dry-run"))
                self.assert_one_line(code, err, 1)
                self.assertIn(str(named), err)
                self.assertNotIn("EPOCH", out)
        self.assertIn(
            f"holds {len(test_set)} of the {len(test_set)} test images of {test_images.name}", err
        )

    def test_a_data_file_that_cannot_be_read_exits_1_naming_it(self):
        labels = self.raw / "train-labels-idx1-ubyte"
        real_open = open
        def refuse(path, *args, **kwargs):
            if Path(path) == labels:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)
        with unittest.mock.patch("builtins.open", refuse):
            code, out, err = run_main(self.args("--dry-run"))
        self.assert_one_line(code, err, 1)
        self.assertIn(str(labels), err)
        self.assertIn("Permission denied", err)

    def test_the_data_are_the_checked_raw_files_whatever_else_the_folder_holds(self):
        processed = self.raw.parent / "processed"   # torchvision's legacy files, of other data
        processed.mkdir()
        for name in ("training.pt", "test.pt"):
            torch.save(
                (torch.zeros(7, 28, 28, dtype=torch.uint8), torch.zeros(7, dtype=torch.long)),
                processed / name,
            )
        for data_dir in (self.tmp / "data", self.raw):   # the folder of MNIST/raw, or that folder
            with self.subTest(data_dir=data_dir):
                metrics = self.tmp / "m.json"
                code, _, err = run_main(
                    [
                        "--model", "1", "--epochs", "1", "--data-dir", str(data_dir), "--metrics",
                        str(metrics),
                    ]
                )
                self.assertEqual(code, 0, err)
                self.assertEqual(strict_json(metrics)["epochs"][0]["test_total"], 160)
        self.assertEqual(sorted(p.name for p in self.raw.parent.iterdir()), ["processed", "raw"])

    def test_a_data_folder_under_the_home_tilde_is_found(self):
        with unittest.mock.patch.dict(os.environ, {"HOME": str(self.tmp), "MNIST_DIR": "~/data"}):
            for argv in (["--data-dir", "~/data"], []):
                with self.subTest(argv=argv):
                    code, out, err = run_main(["--dry-run", "--epochs", "1", *argv])
                    self.assertEqual(code, 0, err)
                    self.assertIn("EPOCH: 0", out)
        self.assertFalse((Path.cwd() / "~").exists())


class TestTraining(TinyData):
    """The lesson: a run trains, tests and gives its verdict; its numbers come from the seed."""

    def test_two_epochs_end_to_end(self):
        metrics = self.tmp / "m.json"
        result = subprocess.run(
            [
                sys.executable,
                str(HERE / "train.py"),
                *self.args("--metrics", str(metrics), "--save-model", str(self.tmp / "m.pt")),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )  # a safety net, not a speed limit
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Total params: 7,788", result.stdout)
        self.assertIn("Test set: Average loss:", result.stdout)
        self.assertIn("Target (>= 99.40% test accuracy in each of the last 3 epochs): not met",
                      result.stdout)
        record = strict_json(metrics)
        self.assertEqual(record["config"]["parameters"], 7788)
        self.assertEqual(record["config"]["seed"], 1)
        self.assertEqual(record["config"]["recompute_images"], 320)   # all the tiny training set
        self.assertEqual([e["epoch"] for e in record["epochs"]], [0, 1])
        for epoch in record["epochs"]:
            self.assertEqual(epoch["test_total"], 160)
            self.assertGreater(epoch["train_images_per_second"], 0)
        self.assertFalse(record["result"]["target_met"])
        state = torch.load(self.tmp / "m.pt")
        self.assertEqual(sum(v.numel() for k, v in state.items() if "running" not in k
                             and "num_batches" not in k), 7788)

    def test_the_lesson_runs_with_torch_alone(self):
        """Model 5's class, train_epoch, evaluate and recompute_batchnorm_statistics pasted into a
        namespace of torch, nn and F alone train on a DataLoader and test on a plain list of
        batches as the modules' own do."""
        pasted = {"torch": torch, "nn": nn, "F": torch.nn.functional}
        for source in (
            models.Net, models.conv_bn_relu, models.Model5, train.train_epoch, train.evaluate,
            train.recompute_batchnorm_statistics,
        ):
            exec(inspect.getsource(source), pasted)
        generator = torch.Generator().manual_seed(0)
        pixels, labels = torch.rand(96, 1, 28, 28, generator=generator), torch.randint(0, 10, (96,))
        batches = [(pixels[i:i + 32], labels[i:i + 32]) for i in range(0, 96, 32)]   # a list
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), 32)
        results = []
        for lesson in (pasted, vars(train) | {"Model5": models.Model5}):
            torch.manual_seed(0)
            model = lesson["Model5"]()
            before = [p.clone() for p in model.parameters()]
            optimizer = torch.optim.SGD(model.parameters(), lr=0.04, momentum=0.9)
            trained = lesson["train_epoch"](model, loader, optimizer)
            tested = lesson["evaluate"](model, batches)
            fresh = lesson["recompute_batchnorm_statistics"](copy.deepcopy(model), batches)
            results.append((trained, tested, lesson["evaluate"](fresh, batches)))
            self.assertTrue(all(not torch.equal(a, b) for a, b in zip(before, model.parameters())))
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0][1][2], 96)

    def test_same_seed_same_numbers(self):
        def numbers(seed):
            path = self.tmp / f"seed{seed}.json"
            # --augment: the random rotations, too, must come from the seed
            code, _, err = run_main(
                self.args("--seed", str(seed), "--augment", "--metrics", str(path))
            )
            self.assertEqual(code, 0, err)
            keys = ("train_loss", "train_accuracy", "test_loss", "test_correct", "lr")
            return [[e[k] for k in keys] for e in json.loads(path.read_text())["epochs"]]
        first = numbers(1)
        self.assertEqual(first, numbers(1))
        self.assertNotEqual(first, numbers(2))

    def test_a_dry_run_is_one_batch_each_way_and_records_what_ran(self):
        metrics = self.tmp / "m.json"
        code, out, err = run_main(self.args("--dry-run", "--epochs", "1", "--batch-size", "8",
                                            "--test-batch-size", "20", "--metrics", str(metrics)))
        self.assertEqual(code, 0, err)
        self.assertIn("| 1/1 [", out)
        record = strict_json(metrics)
        self.assertEqual(record["epochs"][0]["test_total"], 20)
        self.assertEqual(record["config"]["recompute_images"], 8)   # the one training batch

    def test_recomputing_batchnorm_statistics_changes_the_test_and_not_the_training(self):
        def run(*flags):
            metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
            code, out, err = run_main(self.args("--augment", "--metrics", str(metrics),
                                                "--save-model", str(weights), *flags))
            self.assertEqual(code, 0, err)
            return out, json.loads(metrics.read_text()), torch.load(weights)
        plain_out, plain, plain_weights = run("--no-recompute-bn")
        out, recomputed, weights = run()   # Model 3's recipe recomputes them
        self.assertFalse(plain["config"]["recompute_bn"])
        self.assertTrue(recomputed["config"]["recompute_bn"])
        for before, after in zip(plain["epochs"], recomputed["epochs"]):
            for key in ("train_loss", "train_accuracy", "lr"):
                self.assertEqual(before[key], after[key], key)
            self.assertEqual(before["test_correct"], after["test_correct_trained_statistics"])
            self.assertEqual(before["test_loss"], after["test_loss_trained_statistics"])
            self.assertNotIn("test_accuracy_trained_statistics", before)
        self.assertNotEqual([e["test_loss"] for e in plain["epochs"]],
                            [e["test_loss"] for e in recomputed["epochs"]])
        statistics = [name for name in weights if "running" in name]
        for name, value in plain_weights.items():   # the same weights; other running statistics
            if name not in statistics and "num_batches" not in name:
                self.assertTrue(torch.equal(value, weights[name]), name)
        self.assertTrue(
            any(not torch.equal(plain_weights[name], weights[name]) for name in statistics)
        )
        self.assertEqual(recomputed["result"]["target_met_trained_statistics"], False)
        self.assertIn("Test set, BatchNorm statistics as trained: Average loss:", out)
        self.assertNotIn("BatchNorm statistics as trained", plain_out)

    def test_the_test_does_not_depend_on_the_test_batch_size(self):
        def tested(size):
            metrics = self.tmp / f"m{size}.json"
            code, _, err = run_main(
                self.args("--epochs", "1", "--test-batch-size", size, "--metrics", str(metrics))
            )
            self.assertEqual(code, 0, err)
            return json.loads(metrics.read_text())["epochs"][0]
        one, many = tested("160"), tested("7")   # 7 leaves a last batch of 6
        for key in ("test_correct", "test_correct_trained_statistics"):
            self.assertEqual(one[key], many[key], key)
        self.assertAlmostEqual(one["test_loss"], many["test_loss"], places=5)

    def test_evaluate_matches_a_plain_forward_pass_and_leaves_the_model_alone(self):
        torch.manual_seed(0)
        model = MODELS[3]()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):   # statistics away from the defaults
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        pixels, labels = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
        loss, correct, total = train.evaluate(model, data.test_batches(pixels, labels, 128))
        with torch.no_grad():
            output = model.eval()(data.normalize(pixels))
        self.assertEqual(total, 300)
        self.assertEqual(correct, (output.argmax(dim=1) == labels).sum().item())
        self.assertAlmostEqual(loss, torch.nn.functional.nll_loss(output, labels).item(), places=5)
        self.assertTrue(all(p.is_contiguous() for p in model.parameters()))

    def test_recomputed_statistics_are_those_of_the_images_with_dropout_off_however_batched(self):
        torch.manual_seed(0)
        model = MODELS[3]().train()
        model.convblock2.eval()                      # a mixed mode, to be kept as it is
        modes = [m.training for m in model.modules()]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        images = torch.randn(150, 1, 28, 28)
        fresh = train.recompute_batchnorm_statistics(copy.deepcopy(model), [(images, None)])
        self.assertEqual([m.training for m in model.modules()], modes)
        self.assertEqual([m.training for m in fresh.modules()], modes)
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, state[name]), name)
        for name, value in fresh.state_dict().items():
            if "running" not in name and "num_batches" not in name:
                self.assertTrue(torch.equal(value, state[name]), name)
        norms = lambda m: [n for n in m.modules() if isinstance(n, nn.BatchNorm2d)]
        self.assertEqual([n.momentum for n in norms(fresh)], [n.momentum for n in norms(model)])
        # Over one batch, the copy in eval mode normalizes as BatchNorm in training does over that
        # batch with Dropout off (up to the unbiased variance it keeps: a factor of 600/599 at 2x2).
        no_dropout = copy.deepcopy(model).train()
        for m in no_dropout.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                fresh.eval()(images), no_dropout(images), atol=1e-2, rtol=1e-2
            )
            self.assertFalse(torch.allclose(model.eval()(images), fresh(images), atol=1e-1))
        # Each image counts the same, however the images are batched: a last batch of one image
        # moves the means by its own share.
        split = train.recompute_batchnorm_statistics(copy.deepcopy(model), [(images[:149], None),
                                                                       (images[149:], None)])
        for whole, parts in zip(norms(fresh), norms(split)):
            torch.testing.assert_close(parts.running_mean, whole.running_mean, atol=2e-3, rtol=1e-2)

    def test_a_diverging_run_stops_with_one_line_and_exit_1(self):
        for extra in (
            ["--model", "1", "--lr", "1e6"],  # the training loss runs away
            ["--lr", "1e30", "--dry-run", "--epochs", "1"],  # the weights do, in one step
            ["--lr", "1e3", "--dry-run", "--epochs", "3"],
        ):  # the test as trained does
            with self.subTest(args=extra):
                metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
                code, out, err = run_main(
                    self.args(*extra, "--metrics", str(metrics), "--save-model", str(weights))
                )
                self.assert_one_line(code, err, 1)
                self.assertIn("--lr", err)
                self.assertNotIn("Target", out)
                self.assertFalse(weights.exists())
                if metrics.exists():
                    strict_json(metrics)

    def test_the_end_says_how_many_last_accuracies_there_are(self):
        for epochs, words in (("1", "Last test accuracy: "), ("2", "Last 2 test accuracies: "),
                              ("4", "Last 3 test accuracies: ")):
            with self.subTest(epochs=epochs):
                code, out, err = run_main(self.args("--dry-run", "--epochs", epochs))
                self.assertEqual(code, 0, err)
                line = next(line for line in out.splitlines() if line.startswith("Last "))
                self.assertTrue(line.startswith(words), line)
                self.assertEqual(line.count("%"), min(int(epochs), 3))
        with contextlib.redirect_stdout(out := io.StringIO()):
            verdict = train.report([], 7788)   # stopped before the first epoch ended
        self.assertNotIn("Last", out.getvalue())
        self.assertFalse(verdict["target_met"])


class TestCommandLine(TinyData):
    """Bad flags stop before training with one line: exit 2 for a flag, 1 for what cannot fit."""

    def test_bad_arguments_exit_2_with_one_line(self):
        cases = [
            ["--model", "9"], ["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"],
            ["--lr", "-1"], ["--gamma", "0"], ["--momentum", "-0.5"], ["--momentum", "1"],
            ["--momentum", "5"], ["--rotation", "0"], ["--rotation", "400"], ["--epochs", "x"],
            ["--device", "tpu"], ["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "inf"],
            ["--seed", "99999999999999999999"], ["--seed", "9" * 400], ["--seed", "-1"],
            ["--no-augment", "--shift", "2"],
            ["--model", "1", "--rotation", "5"],  # unused
            ["--model", "3", "--no-augment", "--rotation", "5"],
            ["--batch-size", "321"],
        ]  # one more than the tiny training set: found after loading it
        for extra in cases:
            with self.subTest(args=extra):
                self.assert_refused(extra)
        self.assertIn(
            "unused with --no-augment", self.assert_refused(["--no-augment", "--rotation", "5"])
        )
        self.assertIn(
            "Model 1's recipe does not augment",
            self.assert_refused(["--model", "1", "--shift", "1"]),
        )

    def test_numbers_beyond_float32_exit_2_with_one_line_also_where_the_schedule_reaches_them(self):
        for extra, words in (
            (["--lr", "1e39"], "float32"), (["--weight-decay", "1e39"], "float32"),
            (["--momentum", "1e39"], "float32"), (["--gamma", "3.5e38"], "float32"),
            (["--gamma", "3e38", "--step-size", "1", "--epochs", "15"], "--gamma"),
            (["--lr", "1e30", "--gamma", "10", "--step-size", "1", "--epochs", "15"], "--gamma"),
        ):
            with self.subTest(args=extra):
                self.assert_refused(extra, words)

    def test_the_test_batch_is_at_most_the_test_set_and_memory_is_checked_for_both_batches(self):
        metrics = self.tmp / "m.json"
        code, _, err = run_main(
            self.args(
                "--dry-run", "--epochs", "1", "--test-batch-size", str(10**9), "--metrics",
                str(metrics),
            )
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(metrics.read_text())["config"]["test_batch_size"], 160)
        split_bytes = (320 + 160) * (28 * 28 * 4 + 8)   # float32 pixels and int64 labels
        per_image, parameters = forward_backward_bytes(MODELS[3]()), 3 * 4 * 7788
        for flags, needed, named in (
            (
                ["--batch-size", "64", "--test-batch-size", "64"],
                per_image * 64 + split_bytes + parameters,
                "--batch-size 64",
            ),
            (
                ["--batch-size", "8"],
                per_image * 160 / 2 + split_bytes + parameters,
                "--test-batch-size 160",
            ),
        ):
            for available, fits in ((needed, True), (needed - 1, False)):
                with self.subTest(flags=flags, fits=fits), unittest.mock.patch.object(
                    harness, "available_memory", return_value=available
                ):
                    code, out, err = run_main(self.args(*flags, "--dry-run", "--epochs", "1"))
                    if fits:
                        self.assertEqual((code, err), (0, ""))
                        self.assertIn("EPOCH: 0", out)
                    else:
                        self.assert_one_line(code, err, 1)
                        self.assertIn(named, err)
                        self.assertIn(f"{available / 1024 ** 3:.1f} GiB", err)
                        self.assertEqual(out, "")

    def test_help_says_which_models_recompute_the_statistics(self):
        code, out, _ = run_main(["--help"])
        self.assertEqual(code, 0)
        self.assertIn("Models 2 and 3", " ".join(out.split()))
        self.assertNotIn("Models 2, 3 and 4", " ".join(out.split()))


class TestFilesAndSignals(TinyData):
    """Every output is written whole, where it was asked, or refused before training; a stop or
    a failure keeps what finished and says so in one line."""

    def test_an_output_path_that_cannot_take_the_file_is_refused_before_training(self):
        (self.tmp / "sub").mkdir()
        os.mkfifo(self.tmp / "fifo")
        labels = self.raw / "train-labels-idx1-ubyte"
        original = labels.read_bytes()
        same = str(self.tmp / "both.out")
        for flag in ("--metrics", "--save-model"):
            cases = [
                [flag, ""], [flag, str(self.tmp / "new") + os.sep],
                [flag, str(self.tmp / "sub") + os.sep], [flag, str(self.tmp)],
                [flag, str(self.tmp / "no-such-folder" / "x")], [flag, str(self.tmp / "fifo")],
                [flag, str(labels)], [flag, str(self.tmp / ("x" * 300))],
                [flag, str(self.tmp / "a\nfolder" / "x")],
            ]
            for extra in cases:
                with self.subTest(args=extra):
                    self.assert_refused(["--dry-run", *extra], flag)
        for extra in (["--metrics", same, "--save-model", same],
                      ["--metrics", same, "--save-model", str(self.tmp / "." / "both.out")]):
            with self.subTest(args=extra):
                self.assert_refused(["--dry-run", *extra], "--metrics")
        self.assertFalse((self.tmp / "both.out").exists())
        self.assertEqual(labels.read_bytes(), original)
        self.assertFalse((self.tmp / "fifo").is_file())

    def test_no_output_replaces_the_file_this_scripts_output_goes_to_nor_its_mode(self):
        log, errors = self.tmp / "run.log", self.tmp / "err.log"
        for flag, stream, path in (
            ("--metrics", "/dev/stdout", log),
            ("--save-model", "/dev/stderr", errors),
        ):
            with self.subTest(flag=flag), open(log, "w") as out, open(errors, "w") as err:
                result = subprocess.run([sys.executable, str(HERE / "train.py"),
                                         *self.args("--dry-run", flag, stream)], stdout=out,
                                        stderr=err, timeout=900)
                self.assertEqual(result.returncode, 2)
                self.assertIn(f"{flag}: cannot write {stream}", errors.read_text())
                self.assertTrue(path.is_file())   # still the log, not a file renamed over it
        private = self.tmp / "private.json"
        private.write_text("{}")
        private.chmod(0o600)
        code, _, err = run_main(self.args("--dry-run", "--epochs", "1", "--metrics", str(private)))
        self.assertEqual(code, 0, err)
        self.assertEqual(private.stat().st_mode & 0o777, 0o600)   # the mode it had, kept

    def test_a_signal_while_the_verdict_is_printed_waits_for_the_files(self):
        metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
        report = train.report
        def terminated_while_reporting(history, parameters):
            os.kill(os.getpid(), signal.SIGTERM)
            return report(history, parameters)
        with unittest.mock.patch.object(train, "report", terminated_while_reporting):
            code, out, err = run_main(self.args("--dry-run", "--metrics", str(metrics),
                                                "--save-model", str(weights)))
        self.assert_one_line(code, err, 128 + signal.SIGTERM)
        self.assertIn("after training finished", err)
        self.assertEqual(out.count("Target ("), 1)
        self.assertTrue(weights.is_file())
        self.assertNotIn("interrupted", strict_json(metrics))

    def test_an_output_through_a_symbolic_link_is_written_to_its_target(self):
        target, link = self.tmp / "sub" / "m.json", self.tmp / "m.json"
        target.parent.mkdir()
        link.symlink_to(target)
        code, _, err = run_main(self.args("--dry-run", "--epochs", "1", "--metrics", str(link)))
        self.assertEqual(code, 0, err)
        self.assertTrue(link.is_symlink())
        self.assertEqual(strict_json(target)["config"]["epochs"], 1)

    def test_written_files_get_the_mode_of_an_ordinary_file(self):
        for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            with self.subTest(umask=oct(umask)):
                metrics, weights = self.tmp / f"m{umask}.json", self.tmp / f"m{umask}.pt"
                previous = os.umask(umask)
                try:
                    code, _, err = run_main(
                        self.args(
                            "--dry-run", "--epochs", "1", "--metrics", str(metrics), "--save-model",
                            str(weights),
                        )
                    )
                finally:
                    os.umask(previous)
                self.assertEqual(code, 0, err)
                for path in (metrics, weights):
                    self.assertEqual(path.stat().st_mode & 0o777, mode, path)

    def test_a_file_that_cannot_be_written_after_training_is_named_and_the_other_is_still_written(
        self,
    ):
        metrics, weights = self.tmp / "m.json", self.tmp / "out" / "m.pt"
        weights.parent.mkdir()
        save_json = harness.save_json
        def disk_full_at_the_end(path, obj):
            if "result" in obj:
                raise OSError(28, "No space left on device", path)
            save_json(path, obj)
        with unittest.mock.patch.object(harness, "save_json", disk_full_at_the_end):
            code, _, err = run_main(
                self.args("--dry-run", "--metrics", str(metrics), "--save-model", str(weights))
            )
        self.assert_one_line(code, err, 1)
        self.assertIn(f"{metrics}: No space left on device", err)
        self.assertTrue(weights.is_file())            # the model, written all the same
        self.assertEqual(len(strict_json(metrics)["epochs"]), 2)
        start = harness.RunLog.start
        def folder_removed_during_the_run(log, *args):
            start(log, *args)
            shutil.rmtree(weights.parent)
        with unittest.mock.patch.object(harness.RunLog, "start", folder_removed_during_the_run):
            code, _, err = run_main(
                self.args("--dry-run", "--metrics", str(metrics), "--save-model", str(weights))
            )
        self.assert_one_line(code, err, 1)
        self.assertIn(str(weights), err)
        self.assertIn("result", strict_json(metrics))   # the metrics, written all the same

    def test_ctrl_c_and_sigterm_keep_the_finished_epochs_and_leave_no_temporary_file(self):
        for name, signum, words, then in (
            ("SIGINT", signal.SIGINT, "Interrupted", signal.SIGINT),
            ("SIGTERM", signal.SIGTERM, "Stopped by SIGTERM", signal.SIGTERM),
            ("both", signal.SIGINT, "Interrupted", signal.SIGTERM),
        ):
            with self.subTest(signal=name):
                metrics = self.tmp / f"{name}.json"
                # A shell that starts a job in the background (`nohup ... &`) hands it SIGINT
                # ignored; the child gets Ctrl-C's default back, as it has from a terminal.
                child = start_training(
                    self.tmp,
                    metrics,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                )
                self.assertTrue(metrics.exists(), "no epoch finished")
                child.send_signal(signum)
                time.sleep(0.05 if name != "both" else 0)
                child.send_signal(then)   # a second one, while the first is being handled
                out, err = child.communicate(timeout=900)
                self.assertEqual(child.returncode, 128 + signum, err)
                self.assertNotIn("Traceback", err)
                self.assertNotIn("Exception ignored", err)
                self.assertNotIn("race condition", err)
                record = strict_json(metrics)
                self.assertTrue(record["interrupted"])
                self.assertIn("result", record)
                self.assertIn(f"{words}: {len(record['epochs'])} finished epoch(s)", out)
                self.assertIn(
                    "Target (>= 99.40% test accuracy in each of the last 3 epochs): not met", out
                )
                self.assertEqual(
                    [p.name for p in self.tmp.iterdir() if p.name.startswith(".tmp-")], []
                )

    def test_a_signal_once_training_has_finished_waits_until_the_model_and_metrics_are_written(
        self,
    ):
        metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
        finish = harness.RunLog.finish
        def terminated_while_saving(log, verdict, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            finish(log, verdict, **kwargs)
        with unittest.mock.patch.object(harness.RunLog, "finish", terminated_while_saving):
            code, out, err = run_main(
                self.args("--dry-run", "--metrics", str(metrics), "--save-model", str(weights))
            )
        self.assert_one_line(code, err, 128 + signal.SIGTERM)
        self.assertIn("after training finished", err)
        self.assertTrue(weights.is_file())
        self.assertTrue(strict_json(metrics)["result"])
        self.assertNotIn("interrupted", strict_json(metrics))

    def test_ctrl_c_while_torch_loads_ends_the_script_without_a_traceback(self):
        slow = self.tmp / "slow"
        (slow / "torch").mkdir(
            parents=True
        )  # a torch that takes its time to load, and says when it starts
        (slow / "torch" / "__init__.py").write_text(
            f"import time\nopen({str(self.tmp / 'loading')!r}, 'w').close()\ntime.sleep(60)\n")
        child = subprocess.Popen(
            [sys.executable, str(HERE / "train.py"), "--dry-run"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(slow)),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 900
        while (
            not (self.tmp / "loading").exists()
            and time.monotonic() < deadline
            and child.poll() is None
        ):
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=900)
        self.assertEqual(
            child.returncode, -signal.SIGINT, err
        )  # ended by the signal, as a shell reports 130
        self.assertEqual(err, "")

    def test_a_closed_or_full_output_stream_ends_with_one_line_and_keeps_the_metrics(self):
        metrics = self.tmp / "m.json"
        argv = [sys.executable, str(HERE / "train.py"), *self.args("--dry-run", "--epochs", "400",
                                                                  "--metrics", str(metrics))]
        with open("/dev/full", "w") as full:
            full_run = subprocess.run(
                argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=900
            )
        reader = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not reader.stdout.readline().startswith(
            "EPOCH: 1"
        ):  # epoch 0 is finished and written
            pass
        reader.stdout.close()                  # as `| head` does
        closed_err = reader.stderr.read()
        reader.stderr.close()
        reader.wait(timeout=900)
        for name, code, err in (("full", full_run.returncode, full_run.stderr),
                                ("closed", reader.returncode, closed_err)):
            with self.subTest(stream=name):
                self.assert_one_line(code, err, 1)
                self.assertNotIn("Exception ignored", err)
        self.assertIn(str(metrics), closed_err)   # where the finished epochs are
        self.assertGreater(len(strict_json(metrics)["epochs"]), 0)

    def test_every_script_ends_a_broken_pipe_or_a_closed_stdout_with_one_line(self):
        weights, metrics = self.tmp / "modèle.pt", self.tmp / "m.json"
        env = dict(os.environ, PYTHONIOENCODING="ascii")
        result = subprocess.run([sys.executable, str(HERE / "train.py"),
                                 *self.args("--dry-run", "--save-model", str(weights))],
                                capture_output=True, env=env, timeout=900)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertIn(b"mod\\xe8le.pt", result.stdout)   # an ASCII console gets an escape
        closed = subprocess.run([sys.executable, str(HERE / "train.py"),
                                 *self.args("--dry-run", "--metrics", str(metrics))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900,
                                preexec_fn=lambda: os.close(1))
        self.assertEqual((closed.returncode, closed.stderr), (0, b""))
        self.assertIn("result", strict_json(metrics))
        run = self.tmp / "run.json"
        shutil.copy(HERE / "results" / "model5" / "seed1.json", run)
        for script in (["models.py"], ["plot.py", str(run)]):   # the lab's share the boundary
            with self.subTest(script=script):
                reader, writer = os.pipe()
                os.close(reader)   # a reader that has gone, as `| head -1` leaves it
                result = subprocess.run([sys.executable, *script], cwd=HERE, stdout=writer,
                                        stderr=subprocess.PIPE, text=True, timeout=900)
                os.close(writer)
                self.assert_one_line(result.returncode, result.stderr, 1)

    def test_a_stream_that_cannot_encode_the_bar_gets_ascii(self):
        result = subprocess.run(
            [sys.executable, str(HERE / "train.py"), *self.args("--dry-run", "--epochs", "1")],
            capture_output=True, env=dict(os.environ, PYTHONIOENCODING="ascii"), timeout=900)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"|##########| 1/1", result.stdout)
        self.assertNotIn(b"Traceback", result.stderr)


class TestErrorsPicture(unittest.TestCase):
    """plot.py: the misclassified test digits and the confusion matrix of a saved model."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        write_tiny_mnist(cls.tmp / "data")
        cls.weights = cls.tmp / "m.pt"
        code, _, err = run_main(
            [
                "--model", "1", "--epochs", "1", "--data-dir", str(cls.tmp / "data"),
                "--save-model", str(cls.weights),
            ]
        )  # a few steps: some right, some wrong
        assert code == 0, err
        _, (cls.pixels, cls.labels) = data.load_splits(cls.tmp / "data")
        cls.model = plot.load_model(cls.weights, 1, torch.device("cpu"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def draw(self, *extra):
        return run_main([*extra, "--data-dir", str(self.tmp / "data")], main=plot.main)

    def test_the_digits_drawn_are_the_errors_that_evaluate_counts_with_the_models_own_labels(self):
        _, correct, total = train.evaluate(
            self.model, data.test_batches(self.pixels, self.labels, 50)
        )
        predicted, probability = plot.predictions(self.model, self.pixels, self.labels)
        svg = plot.draw(self.pixels, self.labels, predicted, probability, "test")
        captions = [tuple(map(int, pair)) for pair in re.findall(r">(\d) → (\d)</text>", svg)]
        self.assertGreater(total - correct, 0)
        self.assertEqual(svg.count("<image "), total - correct)
        self.assertEqual(len(captions), total - correct)
        with torch.no_grad():
            own = self.model.eval()(data.normalize(self.pixels)).argmax(dim=1)
        wrong = [
            (self.labels[i].item(), own[i].item()) for i in range(total) if own[i] != self.labels[i]
        ]
        self.assertEqual(sorted(captions), sorted(wrong))
        self.assertEqual([t for t, _ in captions], sorted(t for t, _ in captions))   # by true class

    def test_the_confusion_matrix_sums_to_the_test_set_and_its_diagonal_to_the_correct_count(self):
        _, correct, total = train.evaluate(
            self.model, data.test_batches(self.pixels, self.labels, 50)
        )
        predicted, _ = plot.predictions(self.model, self.pixels, self.labels)
        matrix = plot.confusion_matrix(self.labels, predicted)
        self.assertEqual(tuple(matrix.shape), (10, 10))
        self.assertEqual(matrix.sum().item(), total)
        self.assertEqual(matrix.diag().sum().item(), correct)
        self.assertEqual(
            matrix.sum(dim=1).tolist(), torch.bincount(self.labels, minlength=10).tolist()
        )

    def test_a_model_without_errors_draws_an_empty_grid_that_says_so(self):
        svg = plot.draw(
            self.pixels, self.labels, self.labels.clone(), torch.ones(len(self.labels)), "perfect"
        )
        self.assertEqual(svg.count("<image "), 0)
        self.assertIn("No test digit is misclassified.", svg)
        self.assertIn("100.00%", svg)

    def test_the_command_writes_the_picture_of_the_model_it_is_told(self):
        out_svg = self.tmp / "e.svg"
        code, out, err = self.draw(str(self.weights), "--model", "1", "--out", str(out_svg))
        self.assertEqual(code, 0, err)
        self.assertTrue(out_svg.read_text(encoding="utf-8").startswith("<svg"))
        self.assertIn("Model 1, m.pt", out_svg.read_text(encoding="utf-8"))
        self.assertIn("test digits misclassified", out)
        code, _, err = self.draw(
            str(self.weights), "--out", str(out_svg)
        )  # which model: it must be said
        self.assertEqual(code, 2)
        self.assertIn("--model", err)

    def test_bad_weights_or_a_bad_output_exit_2_with_one_line_and_touch_nothing(self):
        text, module = self.tmp / "notes.txt", self.tmp / "module.pt"
        text.write_text("not a model\n")
        torch.save(MODELS[1](), module)            # a whole pickled module, not a state_dict
        before = self.weights.read_bytes()
        cases = [
            [str(self.weights), "--model", "3"], [str(text), "--model", "1"],
            [str(module), "--model", "1"],
            [str(self.weights), "--model", "1", "--out", str(self.tmp / "no" / "e.svg")],
            [str(self.weights), "--model", "1", "--out", str(self.weights)],
            [str(self.weights), "--model", "1", "--out", ""],
        ]
        for argv in cases:
            with self.subTest(args=argv):
                code, _, err = self.draw(*argv)
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertNotIn("Traceback", err)
                self.assertNotIn("\x1b", err)   # no terminal escapes from torch's own message
        for argv in cases[1:3]:
            self.assertIn("is not a state_dict", self.draw(*argv)[2])
        self.assertEqual(self.weights.read_bytes(), before)

    def test_weights_of_another_model_name_the_models_they_fit(self):
        fourth = self.tmp / "model4.pt"
        torch.save(MODELS[4]().state_dict(), fourth)
        code, _, err = self.draw(str(fourth), "--model", "5")
        self.assertEqual(code, 2, err)
        self.assertIn("they fit Models 3 and 4: use --model 3 or 4", err)   # the same tensors
        code, _, err = self.draw(str(self.weights), "--model", "3")
        self.assertIn("they fit Model 1: use --model 1", err)
        torch.save({"weight": torch.zeros(3)}, fourth)
        self.assertIn("they fit none of Models 1 to 5", self.draw(str(fourth), "--model", "1")[2])

    def test_weights_that_are_not_finite_or_cannot_be_read_exit_2_with_one_line(self):
        broken, hidden = self.tmp / "nan.pt", self.tmp / "hidden.pt"
        state = torch.load(self.weights)
        state["fc.weight"][0, 0] = float("nan")
        torch.save(state, broken)
        shutil.copy(self.weights, hidden)
        hidden.chmod(0)
        cases = [(broken, "NaN or infinite")] + [(self.tmp, "cannot read")] * 2
        if os.geteuid() != 0:   # root reads whatever the mode says
            cases.append((hidden, "cannot read"))
        for path, words in cases:
            with self.subTest(path=path):
                code, out, err = self.draw(
                    str(path), "--model", "1", "--out", str(self.tmp / "x.svg")
                )
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(words, err)
                self.assertNotIn("correct", out)
        self.assertFalse((self.tmp / "x.svg").exists())

    def test_any_name_gives_a_picture_that_is_well_formed_xml(self):
        odd = self.tmp / "a&b<c>\"d'.pt"
        shutil.copy(self.weights, odd)
        code, _, err = self.draw(str(odd), "--model", "1")
        self.assertEqual(code, 0, err)
        root = ElementTree.parse(self.tmp / "a&b<c>\"d'.svg").getroot()
        self.assertIn("a&b<c>\"d'.pt", "".join(root.itertext()))

    def test_the_curves_drawn_are_the_runs_numbers(self):
        run = strict_json(HERE / "results" / "model5" / "seed1.json")
        path = self.tmp / "run.json"
        path.write_text(json.dumps(run))
        code, out, err = self.draw(str(path))
        self.assertEqual(code, 0, err)
        self.assertIn("15 epoch(s)", out)
        root = ElementTree.parse(self.tmp / "run.svg").getroot()   # well-formed, or it raises
        svg = "{http://www.w3.org/2000/svg}"
        lines = root.findall(f".//{svg}polyline")
        labels = {}   # each panel's axis labels, by their x
        for text in root.iter(f"{svg}text"):
            if text.get("text-anchor") == "end":
                labels.setdefault(text.get("x"), []).append(text)
        panels = list(zip((lines[:2], lines[2:]), labels.values()))
        keys = [("train_accuracy", "test_accuracy"), ("train_loss", "test_loss")]
        for (drawn, ticks), names in zip(panels, keys):
            (y0, v0), (y1, v1) = [
                (float(t.get("y")) - 4, float(t.text)) for t in (ticks[0], ticks[-1])
            ]
            value = lambda y: v0 + (float(y) - y0) * (v1 - v0) / (y1 - y0)   # the axis, read back
            for line, name in zip(drawn, names):
                points = [point.split(",") for point in line.get("points").split()]
                expected = [e[name] for e in run["epochs"]]
                self.assertEqual(len(points), len(expected))
                for (_, y), number in zip(points[1:], expected[1:]):   # epoch 0 may be at the edge
                    self.assertAlmostEqual(value(y), number, delta=abs(v1 - v0) / 300, msg=name)
        self.assertIn("target met", "".join(root.itertext()))
        self.assertIn("99.40%", "".join(root.itertext()))

    def test_an_ascii_locale_writes_the_picture_whole(self):
        out_svg = self.tmp / "ascii.svg"
        result = subprocess.run(
            [
                sys.executable, str(HERE / "plot.py"), str(self.weights), "--model", "1",
                "--data-dir", str(self.tmp / "data"), "--out", str(out_svg),
            ],
            capture_output=True,
            env=dict(os.environ, LC_ALL="C", LANG="C", PYTHONIOENCODING="ascii", PYTHONUTF8="0"),
            timeout=900,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(out_svg.read_text(encoding="utf-8").rstrip().endswith("</svg>"))
