"""Tests for models.py, data.py and train.py: `python -m unittest` (under a minute on 2 cores).

Training runs on a tiny MNIST that the tests write themselves in the IDX format; the tests that
need the real data set run only when $MNIST_DIR points at it (as .ci/run sets it)."""
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import unittest.mock
from pathlib import Path

import torch
import torch.nn as nn

import data
import train
from results import errors, screen, tables
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
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
        header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.numpy().tobytes())
    return raw


def run_main(argv):
    """train.main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


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


class TestModels(unittest.TestCase):
    def test_output_is_log_probabilities_of_10_classes(self):
        for number, model_class in MODELS.items():
            model = model_class().eval()
            for batch in (1, 4):
                with self.subTest(model=number, batch=batch):
                    output = model(torch.randn(batch, 1, 28, 28))
                    self.assertEqual(tuple(output.shape), (batch, 10))
                    torch.testing.assert_close(output.exp().sum(dim=1), torch.ones(batch))

    def test_parameter_counts(self):
        expected = {1: 9746, 2: 9914, 3: 7788, 4: 7788}
        self.assertEqual(sorted(MODELS), sorted(expected))
        for number, count in expected.items():
            self.assertEqual(count_parameters(MODELS[number]()), (count, count))
        for number in (3, 4):
            self.assertLess(count_parameters(MODELS[number]())[0], 8000)

    def test_count_parameters_agrees_with_numel_and_sees_frozen_ones(self):
        model = MODELS[2]()
        total = sum(p.numel() for p in model.parameters())
        self.assertEqual(count_parameters(model), (total, total))
        for p in model.convblock1.parameters():
            p.requires_grad_(False)
        frozen = 72 + 16
        self.assertEqual(count_parameters(model), (total, total - frozen))
        self.assertIn(f"Non-trainable params: {frozen:,}", summary(model))

    def test_summary_equals_the_write_up_and_model4s_own(self):
        for number, golden in ((1, GOLDEN_MODEL1), (2, GOLDEN_MODEL2), (3, GOLDEN_MODEL3), (4, GOLDEN_MODEL4)):
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
        model = MODELS[3]().train()
        model.convblock2.eval()
        modes = [m.training for m in model.modules()]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        summary(model)
        self.assertEqual([m.training for m in model.modules()], modes)
        for m in model.modules():
            self.assertFalse(m._forward_hooks)
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, state[name]), name)  # BatchNorm statistics too
        self.assertTrue(all(p.grad is None for p in model.parameters()))


class TestData(unittest.TestCase):
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
        self.assertGreater(far(data.random_rotation(pixels, 45.0, torch.Generator().manual_seed(0))), 0.5)
        unrotated = data.random_rotation(pixels, 0.0, torch.Generator().manual_seed(0))
        torch.testing.assert_close(unrotated, pixels, atol=1e-5, rtol=0)

    def test_shift_moves_each_image_within_its_range_and_brings_in_background(self):
        point = torch.zeros(256, 1, 28, 28)
        point[:, :, 14, 14] = 1.0
        shifted = data.random_rotation(point, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(shifted.flatten(1).sum(dim=1), torch.ones(256)))  # moved, not blurred
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

    @unittest.skipUnless(os.environ.get("MNIST_DIR"), "set MNIST_DIR to the folder holding MNIST/raw")
    def test_real_mnist_loads_and_normalizes(self):
        root = os.environ["MNIST_DIR"]
        train_pixels, train_labels = data.load_split(root, train=True)
        test_pixels, test_labels = data.load_split(root, train=False)
        self.assertEqual(tuple(train_pixels.shape), (60000, 1, 28, 28))
        self.assertEqual(len(test_labels), 10000)
        self.assertEqual(train_labels.unique().tolist(), list(range(10)))
        normalized = data.normalize(train_pixels)
        self.assertAlmostEqual(normalized.mean().item(), 0.0, delta=0.01)
        self.assertAlmostEqual(normalized.std().item(), 1.0, delta=0.01)


class TestTrainCommandLine(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.raw = write_tiny_mnist(self.tmp / "data")

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp)

    def args(self, *extra):
        return ["--model", "3", "--epochs", "2", "--data-dir", str(self.tmp / "data"), *extra]

    def test_two_epochs_end_to_end(self):
        metrics = self.tmp / "m.json"
        result = subprocess.run(
            [sys.executable, str(HERE / "train.py"), *self.args("--metrics", str(metrics),
                                                              "--save-model", str(self.tmp / "m.pt"))],
            capture_output=True, text=True, timeout=900)   # a safety net, not a speed limit
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Total params: 7,788", result.stdout)
        self.assertIn("Test set: Average loss:", result.stdout)
        self.assertIn("Target (>= 99.40% test accuracy in each of the last 3 epochs): not met",
                      result.stdout)
        record = json.loads(metrics.read_text())
        self.assertEqual(record["config"]["parameters"], 7788)
        self.assertEqual(record["config"]["seed"], 1)
        self.assertEqual([e["epoch"] for e in record["epochs"]], [0, 1])
        for epoch in record["epochs"]:
            self.assertEqual(epoch["test_total"], 160)
            self.assertGreater(epoch["train_images_per_second"], 0)
        self.assertFalse(record["result"]["target_met"])
        state = torch.load(self.tmp / "m.pt")
        self.assertEqual(sum(v.numel() for k, v in state.items() if "running" not in k
                             and "num_batches" not in k), 7788)

    def test_same_seed_same_numbers(self):
        def numbers(seed):
            path = self.tmp / f"seed{seed}.json"
            # --augment: the random rotations, too, must come from the seed
            code, _, err = run_main(self.args("--seed", str(seed), "--augment", "--metrics", str(path)))
            self.assertEqual(code, 0, err)
            keys = ("train_loss", "train_accuracy", "test_loss", "test_correct", "lr")
            return [[e[k] for k in keys] for e in json.loads(path.read_text())["epochs"]]
        first = numbers(1)
        self.assertEqual(first, numbers(1))
        self.assertNotEqual(first, numbers(2))

    def test_bad_arguments_exit_2_with_one_line(self):
        cases = [["--model", "9"], ["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"],
                 ["--lr", "-1"], ["--gamma", "0"], ["--momentum", "-0.5"], ["--momentum", "1"],
                 ["--momentum", "5"], ["--rotation", "0"], ["--rotation", "400"], ["--epochs", "x"],
                 ["--device", "tpu"], ["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "inf"],
                 ["--seed", "99999999999999999999"], ["--seed", "9" * 400], ["--seed", "-1"],
                 ["--batch-size", "321"]]   # one more than the tiny training set: found after loading it
        for extra in cases:
            with self.subTest(args=extra):
                self.assert_refused_with_one_line(extra, "error:")

    def assert_refused_with_one_line(self, extra, words):
        code, out, err = run_main(self.args(*extra))
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(words, err)

    def test_a_test_batch_larger_than_the_test_set_tests_it_in_one_batch(self):
        metrics = self.tmp / "m.json"
        code, _, err = run_main(self.args("--epochs", "1", "--test-batch-size", "100000", "--metrics", str(metrics)))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(metrics.read_text())["epochs"][0]["test_total"], 160)

    def test_a_batch_too_large_for_memory_stops_before_training_with_one_line(self):
        model = MODELS[3]()
        split_bytes = (320 + 160) * (28 * 28 * 4 + 8)   # float32 pixels and int64 labels
        needed = forward_backward_bytes(model) * 64 + split_bytes + 3 * 4 * 7788
        for available, fits in ((needed, True), (needed - 1, False)):
            with self.subTest(available=available), \
                    unittest.mock.patch.object(train, "available_memory", return_value=available):
                code, out, err = run_main(self.args("--batch-size", "64", "--test-batch-size", "64",
                                                    "--dry-run", "--epochs", "1"))
                if fits:
                    self.assertEqual((code, err), (0, ""))
                    self.assertIn("EPOCH: 0", out)
                else:
                    self.assertEqual(code, 1)
                    self.assertEqual(len(err.strip().splitlines()), 1, err)
                    self.assertIn("--batch-size 64", err)
                    self.assertIn(f"{available / 1024 ** 3:.1f} GiB", err)
                    self.assertEqual(out, "")

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
        for name, value in plain_weights.items():   # the same weights; other running statistics
            if "running" in name or "num_batches" in name:
                continue
            self.assertTrue(torch.equal(value, weights[name]), name)
        self.assertFalse(torch.equal(plain_weights["convblock1.2.running_var"], weights["convblock1.2.running_var"]))
        self.assertEqual(recomputed["result"]["target_met_trained_statistics"], False)
        self.assertIn("Test set, BatchNorm statistics as trained: Average loss:", out)
        self.assertNotIn("BatchNorm statistics as trained", plain_out)

    def test_missing_data_offline_exits_1_naming_the_folder(self):
        empty = self.tmp / "empty"
        offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                   "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": ""}
        with unittest.mock.patch.dict(os.environ, offline):
            code, _, err = run_main(["--data-dir", str(empty), "--dry-run", "--epochs", "1"])
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(str(empty / "MNIST" / "raw"), err)
        self.assertIn("train-images-idx3-ubyte", err)

    def test_truncated_file_exits_1_naming_it(self):
        labels = self.raw / "t10k-labels-idx1-ubyte"
        labels.write_bytes(labels.read_bytes()[:-5])
        code, out, err = run_main(self.args("--dry-run"))
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(str(labels), err)
        self.assertNotIn("EPOCH", out)

    def test_unwritable_output_paths_fail_before_training(self):
        for flag in ("--save-model", "--metrics"):
            for path in (self.tmp / "no-such-folder" / "x", self.tmp):
                with self.subTest(flag=flag, path=path):
                    code, out, err = run_main(self.args(flag, str(path)))
                    self.assertEqual(code, 2)
                    self.assertNotIn("EPOCH", out)
                    self.assertIn(flag, err)

    def test_a_diverging_loss_stops_with_one_line_and_exit_1(self):
        metrics = self.tmp / "m.json"
        code, out, err = run_main(self.args("--model", "1", "--lr", "1e6", "--metrics", str(metrics)))
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("--lr", err)
        self.assertNotIn("Target", out)

    def test_ctrl_c_reports_the_finished_epochs_and_keeps_the_metrics(self):
        metrics = self.tmp / "m.json"
        # A shell that starts a job in the background (`nohup … &`, a script's `&`) hands it SIGINT
        # ignored, and Python then never raises KeyboardInterrupt: the child gets Ctrl-C's default
        # back, as it has when run from a terminal.
        child = subprocess.Popen(
            [sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs", "100000",
             "--data-dir", str(self.tmp / "data"), "--metrics", str(metrics)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Wait for the first finished epoch however long a busy machine takes (up to 15 minutes,
        # a safety net), so that the signal always lands in training.
        deadline = time.monotonic() + 900
        while not metrics.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        self.assertTrue(metrics.exists(), "no epoch finished")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=900)
        self.assertEqual(child.returncode, 130, err)
        self.assertNotIn("Traceback", err)
        record = json.loads(metrics.read_text())
        self.assertTrue(record["interrupted"])
        finished = len(record["epochs"])
        self.assertGreaterEqual(finished, 1)
        self.assertIn(f"Interrupted: {finished} finished epoch(s)", out)
        self.assertIn("Target (>= 99.40% test accuracy in each of the last 3 epochs): not met", out)


    def test_sigterm_ends_a_run_as_ctrl_c_does_and_leaves_no_temporary_file(self):
        metrics = self.tmp / "m.json"
        child = subprocess.Popen(
            [sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs", "100000",
             "--data-dir", str(self.tmp / "data"), "--metrics", str(metrics)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 900   # a safety net for a busy machine, not a speed limit
        while not metrics.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        self.assertTrue(metrics.exists(), "no epoch finished")
        child.terminate()
        out, err = child.communicate(timeout=900)
        self.assertEqual(child.returncode, 128 + signal.SIGTERM, err)
        self.assertNotIn("Traceback", err)
        record = json.loads(metrics.read_text())
        self.assertTrue(record["interrupted"])
        self.assertIn("result", record)
        self.assertIn(f"Stopped by SIGTERM: {len(record['epochs'])} finished epoch(s)", out)
        self.assertEqual([p.name for p in self.tmp.iterdir() if p.name.startswith(".tmp-")], [])

    def test_an_output_path_that_names_a_folder_or_the_other_output_fails_before_training(self):
        folder = str(self.tmp / "new") + os.sep          # a folder that does not exist yet
        existing = str(self.tmp) + os.sep + "sub" + os.sep
        (self.tmp / "sub").mkdir()
        same = str(self.tmp / "both.out")
        cases = [["--save-model", folder], ["--metrics", folder], ["--save-model", existing],
                 ["--metrics", existing], ["--metrics", same, "--save-model", same],
                 ["--metrics", same, "--save-model", str(self.tmp / "." / "both.out")]]
        for extra in cases:
            with self.subTest(args=extra):
                code, out, err = run_main(self.args("--dry-run", *extra))
                self.assertEqual(code, 2)
                self.assertEqual(out, "")
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertFalse((self.tmp / "both.out").exists())

    def test_written_files_get_the_mode_of_an_ordinary_file(self):
        for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            with self.subTest(umask=oct(umask)):
                metrics, weights = self.tmp / f"m{umask}.json", self.tmp / f"m{umask}.pt"
                previous = os.umask(umask)
                try:
                    code, _, err = run_main(self.args("--dry-run", "--epochs", "1", "--metrics", str(metrics),
                                                      "--save-model", str(weights)))
                finally:
                    os.umask(previous)
                self.assertEqual(code, 0, err)
                for path in (metrics, weights):
                    self.assertEqual(path.stat().st_mode & 0o777, mode, path)

    def test_data_whose_headers_are_right_and_whose_contents_are_not_exits_1_naming_the_file(self):
        files = {name: (self.raw / name).read_bytes() for name in data.RAW_FILES}
        train_images, train_labels, test_images, test_labels = (self.raw / name for name in data.RAW_FILES)
        def labels_of(value):
            return files[data.RAW_FILES[3]][:8] + bytes([value]) * (len(files[data.RAW_FILES[3]]) - 8)
        def images_of(n, rows, columns):
            header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, rows, columns))
            return header + bytes(n * rows * columns)
        cases = [  # (the file to replace, its new contents, the file the message must name)
            (test_labels, labels_of(255), test_labels),
            (train_images, files[data.RAW_FILES[2]], train_labels),    # the test images in its place
            (train_labels, files[data.RAW_FILES[3]], train_labels),    # the test labels in its place
            (train_images, images_of(320, 14, 56), train_images),
            (test_labels, files[data.RAW_FILES[2]], test_labels),      # images where labels belong
        ]
        for path, contents, named in cases:
            with self.subTest(file=path.name, named=named.name):
                for name, original in files.items():
                    (self.raw / name).write_bytes(original)
                path.write_bytes(contents)
                code, out, err = run_main(self.args("--dry-run"))
                self.assertEqual(code, 1)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(str(named), err)
                self.assertNotIn("EPOCH", out)
        for name, original in files.items():   # both training files are the test files
            (self.raw / name).write_bytes(original)
        train_images.write_bytes(files[data.RAW_FILES[2]])
        train_labels.write_bytes(files[data.RAW_FILES[3]])
        code, out, err = run_main(self.args("--dry-run"))
        self.assertEqual(code, 1)
        self.assertIn(f"{train_images} holds the same images as {test_images.name}", err)

    def test_a_partial_data_folder_names_the_missing_files(self):
        (self.raw / "t10k-labels-idx1-ubyte").unlink()
        with unittest.mock.patch.object(data.datasets, "MNIST", side_effect=OSError("offline")):   # no download
            code, _, err = run_main(self.args("--dry-run"))
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("t10k-labels-idx1-ubyte of MNIST are not in", err)
        self.assertNotIn("train-images-idx3-ubyte of", err)

    def test_a_data_folder_under_the_home_tilde_is_found(self):
        with unittest.mock.patch.dict(os.environ, {"HOME": str(self.tmp), "MNIST_DIR": "~/data"}):
            for argv in (["--data-dir", "~/data"], []):
                with self.subTest(argv=argv):
                    code, out, err = run_main(["--dry-run", "--epochs", "1", *argv])
                    self.assertEqual(code, 0, err)
                    self.assertIn("EPOCH: 0", out)
        self.assertFalse((Path.cwd() / "~").exists())

    def test_numbers_beyond_float32_exit_2_with_one_line(self):
        for extra in (["--lr", "1e39"], ["--weight-decay", "1e39"], ["--momentum", "1e39"], ["--gamma", "3.5e38"]):
            with self.subTest(args=extra):
                self.assert_refused_with_one_line(extra, "float32")

    def test_a_huge_test_batch_is_the_test_set_and_the_memory_check_covers_it(self):
        metrics = self.tmp / "m.json"
        code, _, err = run_main(self.args("--dry-run", "--epochs", "1", "--test-batch-size", str(10 ** 9),
                                          "--metrics", str(metrics)))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(metrics.read_text())["config"]["test_batch_size"], 160)
        split_bytes = (320 + 160) * (28 * 28 * 4 + 8)
        needed = forward_backward_bytes(MODELS[3]()) * 160 / 2 + split_bytes + 3 * 4 * 7788
        for available, fits in ((needed, True), (needed - 1, False)):
            with self.subTest(available=available), \
                    unittest.mock.patch.object(train, "available_memory", return_value=available):
                code, out, err = run_main(self.args("--batch-size", "8", "--dry-run", "--epochs", "1"))
                self.assertEqual(code, 0 if fits else 1, err)
                if not fits:
                    self.assertIn("--test-batch-size 160", err)
                    self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_a_stream_that_cannot_encode_the_bar_gets_ascii(self):
        result = subprocess.run(
            [sys.executable, str(HERE / "train.py"), *self.args("--dry-run", "--epochs", "1")],
            capture_output=True, env=dict(os.environ, PYTHONIOENCODING="ascii"), timeout=900)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"|##########| 1/1", result.stdout)
        self.assertNotIn(b"Traceback", result.stderr)

    def test_the_end_says_how_many_last_accuracies_there_are(self):
        for epochs, words in (("1", "Last test accuracy: "), ("2", "Last 2 test accuracies: "),
                              ("4", "Last 3 test accuracies: ")):
            with self.subTest(epochs=epochs):
                code, out, err = run_main(self.args("--dry-run", "--epochs", epochs))
                self.assertEqual(code, 0, err)
                line = next(line for line in out.splitlines() if line.startswith("Last "))
                self.assertTrue(line.startswith(words), line)
                self.assertEqual(line.count("%"), min(int(epochs), 3))


class TestEvaluate(unittest.TestCase):
    def test_evaluate_matches_a_plain_forward_pass_and_leaves_the_model_alone(self):
        torch.manual_seed(0)
        model = MODELS[3]()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):   # statistics away from the defaults
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        pixels, labels = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
        loss, correct, total = train.evaluate(model, data.test_batches(pixels, labels, 128), 3)
        with torch.no_grad():
            output = model.eval()(data.normalize(pixels))
        self.assertEqual(total, 300)
        self.assertEqual(correct, (output.argmax(dim=1) == labels).sum().item())
        self.assertAlmostEqual(loss, torch.nn.functional.nll_loss(output, labels).item(), places=5)
        self.assertTrue(all(p.is_contiguous() for p in model.parameters()))


class TestRecomputeBatchNormStatistics(unittest.TestCase):
    def test_the_copy_holds_each_batchs_statistics_averaged_and_the_model_is_left_alone(self):
        torch.manual_seed(0)
        model = MODELS[3]().train()
        model.convblock2.eval()                      # a mixed mode, to be kept as it is
        modes = [m.training for m in model.modules()]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        batches = [(torch.randn(50, 1, 28, 28), None) for _ in range(3)]
        fresh = train.recompute_batchnorm_statistics(model, batches)

        self.assertEqual([m.training for m in model.modules()], modes)
        self.assertEqual([m.training for m in fresh.modules()], modes)
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, state[name]), name)
        for name, value in fresh.state_dict().items():
            if "running" not in name and "num_batches" not in name:
                self.assertTrue(torch.equal(value, state[name]), name)
        self.assertEqual(fresh.convblock1[2].momentum, model.convblock1[2].momentum)
        # The first BatchNorm sees ReLU(conv(x)) with no Dropout before it: its statistics are the
        # mean over the batches of each batch's mean and unbiased variance per channel.
        with torch.no_grad():
            seen = [model.convblock1[1](model.convblock1[0](x)) for x, _ in batches]
        mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in seen]).mean(dim=0)
        var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in seen]).mean(dim=0)
        torch.testing.assert_close(fresh.convblock1[2].running_mean, mean)
        torch.testing.assert_close(fresh.convblock1[2].running_var, var)
        self.assertFalse(torch.allclose(fresh.convblock1[2].running_var, model.convblock1[2].running_var))


class TestTables(unittest.TestCase):
    def test_the_recipe_summary_groups_the_seeds_of_a_recipe_and_skips_unfinished_runs(self):
        def run(seed, tests, epochs=4, trained=None):
            config = {"model": 3, "seed": seed, "epochs": epochs, "recompute_bn": trained is not None}
            epochs_ = [{"test_accuracy": t} for t in tests]
            for epoch, t in zip(epochs_, trained or []):
                epoch["test_accuracy_trained_statistics"] = t
            return {"config": config, "epochs": epochs_}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "trials"
            (folder / "model3").mkdir(parents=True)
            for name, metrics in (("a_seed1", run(1, [99.0, 99.4, 99.5, 99.6])),
                                  ("a_seed2", run(2, [99.0, 99.3, 99.4, 99.5])),
                                  ("a_seed3", run(3, [99.0, 99.5, 99.5], epochs=4)),  # stopped early
                                  ("b_seed1", run(1, [99.0, 99.5, 99.5, 99.5])),
                                  ("model3/seed1", run(1, [99.0, 99.5, 99.5, 99.5], trained=[99, 99.4, 99.4, 99.3])),
                                  ("model3/seed2", run(2, [99.0, 99.4, 99.5, 99.6], trained=[99, 99.4, 99.4, 99.4]))):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            lines = tables.recipe_summary(folder, fewest=2).splitlines()
        self.assertEqual(len(lines), 4)   # header, rule, model3/ and recipe a; b has one seed
        self.assertEqual(lines[2], "| `model3` | 3 | 2 | 2/2 | 99.50 | 0.00 | 99.40 | 1/2 | 99.38 |")
        self.assertEqual(lines[3], "| `a` | 3 | 2 | 1/2 | 99.45 | 0.07 | 99.30 | — | — |")

    def test_the_frontier_shows_per_size_the_best_design_on_model4s_recipe(self):
        def run(name, seed, tests, parameters=5000, **recipe):
            config = dict(train.RECIPES[4], candidate=name, seed=seed, epochs=len(tests), parameters=parameters,
                          layers="8p1 M 10p0", rotation_degrees=7.0, shift_pixels=2.0)
            config.update(recipe)
            return {"config": config, "epochs": [{"test_accuracy": t} for t in tests]}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in (1, 2):
                for metrics in (run("a-worse", seed, [99.0, 99.4, 99.4, 99.4]),
                                run("better", seed, [99.0, 99.5, 99.5, 99.4]),
                                run("best-but-other-recipe", seed, [99.6] * 4, weight_decay=0.0),
                                run("best-but-other-shift", seed, [99.6] * 4, shift_pixels=3.0),
                                run("small", seed, [99.0, 99.3, 99.3, 99.3], parameters=3000, conv_bias=True)):
                    (Path(tmp) / f"{metrics['config']['candidate']}_seed{seed}.json").write_text(json.dumps(metrics))
            lines = tables.frontier_table(Path(tmp)).splitlines()
        self.assertEqual(len(lines), 5)   # header, rule, Model 4, one row per size
        self.assertTrue(lines[2].startswith("| 7,788 |") and "(Model 4)" in lines[2] and "| 1–2 |" in lines[2])
        self.assertEqual(lines[3], "| 5,000 | 8 / 10 | — | 1–2 | 2/2 | 99.47 |")
        self.assertEqual(lines[4], "| 3,000 | 8 / 10 | biases | 1–2 | 0/2 | 99.30 |")

    def test_a_run_is_trained_as_a_recipe_only_with_its_optimizer_schedule_batch_and_augmentation(self):
        recipe = train.RECIPES[4]
        config = dict(recipe, rotation_degrees=7.0, shift_pixels=2.0, recompute_bn=True)
        self.assertTrue(tables.trained_as(config, recipe))          # testing differently is allowed
        for change in (dict(lr=0.05), dict(momentum=0.8), dict(batch_size=64), dict(step_size=8),
                       dict(rotation_degrees=10.0), dict(shift_pixels=0.0)):
            with self.subTest(change=change):
                self.assertFalse(tables.trained_as(dict(config, **change), recipe))
        self.assertTrue(tables.trained_as(dict(train.RECIPES[1], rotation_degrees=0.0), train.RECIPES[1]))

    def test_a_layer_string_reads_as_channels_per_stage(self):
        self.assertEqual(tables.channels("8p1 12p1 M 16p1 16p0 M 11p0 10p0"), "8, 12 / 16, 16 / 11, 10")
        self.assertEqual(tables.channels("8p1 12p1 M 32s1 32s0 M 44s1 44s0"), "8, 12 / 32, 32 / 44, 44")
        self.assertEqual(tables.channels("4p1 4p1 4p1"), "4, 4, 4")

    def test_a_dry_run_or_an_unfinished_run_is_never_counted_and_is_named(self):
        def run(seed, dry_run=False, interrupted=False, epochs=3):
            config = {"model": 3, "seed": seed, "epochs": 3, "dry_run": dry_run}
            record = {"config": config, "epochs": [{"test_accuracy": 42.73}] * epochs}
            return dict(record, interrupted=True) if interrupted else record
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model3"
            folder.mkdir()
            for name, metrics in (("seed1", run(1)), ("seed2", run(2)), ("seed3", run(3, dry_run=True)),
                                  ("seed4", run(4, interrupted=True)), ("seed5", run(5, epochs=2))):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            lines = tables.recipe_summary(Path(tmp), fewest=2).splitlines()
            skipped = tables.not_counted(Path(tmp))
        self.assertEqual(lines[2].split(" | ")[2], "2")   # seeds 1 and 2 only
        self.assertEqual([(p.as_posix(), why) for p, why in skipped],
                         [("model3/seed3.json", "a --dry-run"), ("model3/seed4.json", "interrupted (3 of 3 epochs)"),
                          ("model3/seed5.json", "unfinished (2 of 3 epochs)")])


class TestErrorsPicture(unittest.TestCase):
    """results/errors.py: the misclassified test digits and the confusion matrix of a saved model."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        write_tiny_mnist(cls.tmp / "data")
        cls.weights = cls.tmp / "m.pt"
        code, _, err = run_main(["--model", "1", "--epochs", "1", "--data-dir", str(cls.tmp / "data"),
                                 "--save-model", str(cls.weights)])   # a few steps: some right, some wrong
        assert code == 0, err
        cls.pixels, cls.labels = data.load_split(cls.tmp / "data", train=False)
        cls.model = errors.load_model(cls.weights, 1, torch.device("cpu"))

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp)

    def test_the_digits_drawn_are_the_errors_that_evaluate_counts_with_the_models_own_labels(self):
        _, correct, total = train.evaluate(self.model, data.test_batches(self.pixels, self.labels, 50), 4)
        predicted, probability = errors.predictions(self.model, self.pixels, self.labels)
        svg = errors.draw(self.pixels, self.labels, predicted, probability, "test")
        captions = [tuple(map(int, pair)) for pair in re.findall(r">(\d) → (\d)</text>", svg)]
        self.assertGreater(total - correct, 0)
        self.assertEqual(svg.count("<image "), total - correct)
        self.assertEqual(len(captions), total - correct)
        with torch.no_grad():
            own = self.model.eval()(data.normalize(self.pixels)).argmax(dim=1)
        wrong = [(self.labels[i].item(), own[i].item()) for i in range(total) if own[i] != self.labels[i]]
        self.assertEqual(sorted(captions), sorted(wrong))
        self.assertEqual([t for t, _ in captions], sorted(t for t, _ in captions))   # by true class

    def test_the_confusion_matrix_sums_to_the_test_set_and_its_diagonal_to_the_correct_count(self):
        _, correct, total = train.evaluate(self.model, data.test_batches(self.pixels, self.labels, 50), 4)
        predicted, _ = errors.predictions(self.model, self.pixels, self.labels)
        matrix = errors.confusion_matrix(self.labels, predicted)
        self.assertEqual(tuple(matrix.shape), (10, 10))
        self.assertEqual(matrix.sum().item(), total)
        self.assertEqual(matrix.diag().sum().item(), correct)
        self.assertEqual(matrix.sum(dim=1).tolist(), torch.bincount(self.labels, minlength=10).tolist())

    def test_a_model_without_errors_draws_an_empty_grid_that_says_so(self):
        svg = errors.draw(self.pixels, self.labels, self.labels.clone(), torch.ones(len(self.labels)), "perfect")
        self.assertEqual(svg.count("<image "), 0)
        self.assertIn("No test digit is misclassified.", svg)
        self.assertIn("100.00%", svg)

    def test_the_command_writes_the_picture_and_refuses_weights_of_another_model(self):
        out_svg = self.tmp / "e.svg"
        argv = [str(self.weights), "--model", "1", "--data-dir", str(self.tmp / "data"), "--out", str(out_svg)]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(errors.main(argv), 0)
        self.assertTrue(out_svg.read_text().startswith("<svg"))
        self.assertIn("test digits misclassified", out.getvalue())
        for bad in (["--model", "3"], ["--model", "1", "--out", str(self.tmp / "no" / "e.svg")]):
            with self.subTest(args=bad):
                argv = [str(self.weights), "--data-dir", str(self.tmp / "data"), *bad]
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
                    self.assertEqual(errors.main(argv), 2)
                self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())


class TestScreen(unittest.TestCase):
    def test_model4_is_the_screens_choice_weight_for_weight(self):
        """So the screen's runs of m3-nodrop-shift2 are Model 4's seeds 1-10."""
        choice = screen.CANDIDATES["m3-nodrop-shift2"]
        self.assertEqual(choice["layers"], tables.MODEL4_LAYERS)
        self.assertEqual(dict(train.RECIPES[3], **choice["recipe"]), train.RECIPES[4])
        torch.manual_seed(0)
        model4 = MODELS[4]()
        torch.manual_seed(0)
        candidate = screen.model_class("m3-nodrop-shift2")()
        weights = lambda model: [t for t in model.state_dict().values() if t.is_floating_point()]
        self.assertEqual(len(weights(model4)), len(weights(candidate)))
        for ours, theirs in zip(weights(model4), weights(candidate)):
            self.assertTrue(torch.equal(ours, theirs))
        digits = torch.randn(4, 1, 28, 28)
        torch.testing.assert_close(model4.eval()(digits), candidate.eval()(digits))

    def test_each_candidates_table_counts_its_parameters(self):
        for name in screen.CANDIDATES:
            with self.subTest(candidate=name):
                model = screen.model_class(name)()
                self.assertIn(f"Total params: {count_parameters(model)[0]:,}", summary(model))
                self.assertEqual(tuple(model.eval()(torch.zeros(2, 1, 28, 28)).shape), (2, 10))

    def test_an_unknown_candidate_exits_2_with_one_line(self):
        with contextlib.redirect_stderr(err := io.StringIO()):
            self.assertEqual(screen.main(["no-such-design", "--seed", "1"]), 2)
        self.assertEqual(len(err.getvalue().strip().splitlines()), 1)


class TestCommittedResults(unittest.TestCase):
    """The runs under results/ (made by train.py) and the tables and picture made from them, so
    that neither README can drift from the runs."""

    def test_every_committed_run_is_complete_with_the_right_verdict_unless_named_stopped(self):
        paths = sorted(tables.RESULTS.rglob("*.json"))
        self.assertGreater(len(paths), 100)
        for path in paths:
            run = tables.read_run(path)
            with self.subTest(run=str(path.relative_to(tables.RESULTS))):
                self.assertFalse(run["config"]["dry_run"])
                self.assertEqual(tables.finished(run), not path.stem.endswith("_stopped"))
                if tables.finished(run):
                    self.assertEqual(run["result"]["target_met"], train.target_met(tables.test_accuracies(run)))
                if run["config"].get("recompute_bn"):
                    self.assertEqual(run["result"]["target_met_trained_statistics"],
                                     train.target_met(tables.as_trained(run)))

    def test_the_runs_of_each_recipe_follow_it_on_the_seeds_the_readme_names(self):
        expected_seeds = {1: range(1, 4), 2: range(1, 4), 3: range(1, 31), 4: range(1, 31)}
        for model in (1, 2, 3, 4):
            runs = tables.model_runs(model)
            if model in expected_seeds:
                self.assertEqual([run["config"]["seed"] for run in runs], list(expected_seeds[model]), model)
            for run in runs:
                config = run["config"]
                with self.subTest(model=model, seed=config["seed"]):
                    self.assertTrue((tables.RESULTS / f"model{model}" / f"seed{config['seed']}.log").is_file())
                    self.assertEqual(config["model"], model)
                    self.assertEqual(config["parameters"], count_parameters(MODELS[model]())[0])
                    recipe = train.RECIPES[model]
                    self.assertTrue(tables.trained_as(config, recipe))
                    self.assertEqual(config.get("recompute_bn", False), recipe["recompute_bn"])
                    self.assertEqual(config.get("recompute_images", 0),
                                     train.RECOMPUTE_IMAGES if recipe["recompute_bn"] else 0)

    def test_the_readmes_hold_the_tables_and_the_picture_is_drawn_from_the_runs(self):
        readme = (HERE / "README.md").read_text()
        notebook = (tables.RESULTS / "README.md").read_text()
        self.assertIn(tables.headline_table(), readme)
        self.assertIn(tables.frontier_table(), readme)
        self.assertIn("results/accuracy.svg", readme)
        for table in (tables.runs_table(), tables.search_table(), tables.recipe_summary(), tables.screen_table(),
                      tables.screen_table(tables.FRONTIER)):
            self.assertIn(table, notebook)
        self.assertEqual(tables.SVG.read_text(), tables.accuracy_svg())
