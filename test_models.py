"""The tests of the lesson and what a user of its scripts meets: `python -m unittest`.

Grouped by what they protect: the models and their tables, the data, the lesson's training and
testing, the command line and its bad input, the files and the stops, the pictures (plot.py), and
the suite itself. The lab's tests (its tables, the screen, the committed results) are in
lab/test_lab.py. Training runs on a tiny MNIST that the tests write themselves in the IDX format;
a test that needs the real data set runs only where $MNIST_DIR names it (as .ci/run sets it).
Nothing here needs the network; a test runs the whole suite without it to show so."""
import contextlib
import copy
import errno
import inspect
import io
import json
import os
import re
import shlex
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
import models
import plot
import train
from models import MODELS, count_parameters, summary

HERE = Path(__file__).resolve().parent

# The write-up's tables of Models 1-3 (results/write-up.md, as received), rule to rule.
WRITE_UP_TABLES = re.findall(r"^-{64}\n +Layer \(type\).*?"
                             r"^Estimated Total Size \(MB\): [\d.]+\n-{64}$",
                             (HERE / "results" / "write-up.md").read_text(encoding="utf-8"),
                             re.M | re.S)

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
    """A script's main in this process: (exit status, stdout, stderr). sys.exit's message is
    printed as the interpreter prints it, with status 1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return code, out.getvalue(), err.getvalue()


def strict_json(path):
    """The file's JSON, refusing the bare NaN and Infinity tokens that strict readers reject."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def start_training(tmp, *flags):
    """train.py in a child process on the tiny data, Model 1 for many epochs, once its first
    epoch is written to tmp/m.json (waiting up to 15 minutes: a safety net, not a speed limit).
    A shell's `nohup ... &` hands a child SIGINT ignored; this one gets Ctrl-C's default back."""
    child = subprocess.Popen([sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs",
                              "100000", "--data-dir", str(tmp / "data"), "--metrics",
                              str(tmp / "m.json"), *flags],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 900
    while not (tmp / "m.json").exists() and time.monotonic() < deadline and child.poll() is None:
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

    def temporary_files(self):
        return [p.name for p in self.tmp.rglob("*.tmp")]


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

    def test_summary_equals_the_write_ups_tables_and_our_models_own(self):
        self.assertEqual(len(WRITE_UP_TABLES), 3)
        for number, golden in enumerate([*WRITE_UP_TABLES, GOLDEN_MODEL4, GOLDEN_MODEL5], start=1):
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

    def test_the_tables_end_quietly_in_a_pipe_closed_by_head(self):
        result = subprocess.run(f"{shlex.quote(sys.executable)} models.py | head -n 1",
                                shell=True, cwd=HERE, capture_output=True, text=True, timeout=900)
        self.assertEqual(result.stderr, "")   # no traceback for the lines head did not take
        self.assertEqual(len(result.stdout.splitlines()), 1)
        self.assertTrue(result.stdout.startswith("Model 1: Target:"))


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
        self.assertGreater(far(data.random_rotation(pixels, 45, torch.Generator().manual_seed(0))),
                           0.5)
        unrotated = data.random_rotation(pixels, 0.0, torch.Generator().manual_seed(0))
        torch.testing.assert_close(unrotated, pixels, atol=1e-5, rtol=0)

    def test_shift_moves_each_image_within_its_range_and_brings_in_background(self):
        point = torch.zeros(256, 1, 28, 28)
        point[:, :, 14, 14] = 1.0
        shifted = data.random_rotation(point, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(shifted.flatten(1).sum(dim=1), torch.ones(256)))   # not blurred
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

    @unittest.skipUnless(os.environ.get("MNIST_DIR"), "set MNIST_DIR to the folder of MNIST/raw")
    def test_real_mnist_loads_and_normalizes(self):
        (train_pixels, train_labels), (_, test_labels) = data.load_splits(os.environ["MNIST_DIR"])
        self.assertEqual(tuple(train_pixels.shape), (60000, 1, 28, 28))
        self.assertEqual(len(test_labels), 10000)
        self.assertEqual(train_labels.unique().tolist(), list(range(10)))
        normalized = data.normalize(train_pixels)
        self.assertAlmostEqual(normalized.mean().item(), 0.0, delta=0.01)
        self.assertAlmostEqual(normalized.std().item(), 1.0, delta=0.01)

    def test_missing_data_that_cannot_be_downloaded_exits_1_naming_the_folder(self):
        empty = self.tmp / "empty"
        with unittest.mock.patch.object(data.datasets, "MNIST", side_effect=OSError("offline")):
            code, _, err = run_main(["--data-dir", str(empty), "--dry-run", "--epochs", "1"])
        self.assert_one_line(code, err, 1)
        self.assertIn(str(empty / "MNIST" / "raw"), err)
        self.assertIn("train-images-idx3-ubyte", err)
        self.assertFalse(empty.exists())   # the folders the download made are gone with it

    def test_a_partial_data_folder_names_the_missing_files(self):
        (self.raw / "t10k-labels-idx1-ubyte").unlink()
        with unittest.mock.patch.object(data.datasets, "MNIST", side_effect=OSError("offline")):
            code, _, err = run_main(self.args("--dry-run"))
        self.assert_one_line(code, err, 1)
        self.assertIn("t10k-labels-idx1-ubyte of MNIST are not in", err)
        self.assertNotIn("train-images-idx3-ubyte of", err)

    def test_data_files_that_are_wrong_inside_exit_1_naming_the_file(self):
        files = {name: (self.raw / name).read_bytes() for name in data.RAW_FILES}
        train_images, train_labels, test_images, test_labels = (self.raw / name
                                                                for name in data.RAW_FILES)
        images, labels = files[data.RAW_FILES[2]], files[data.RAW_FILES[3]]   # the test set's
        labels_of = lambda value: labels[:8] + bytes([value]) * (len(labels) - 8)
        images_of = lambda n, rows, columns: (bytes([0, 0, 8, 3]) + b"".join(
            d.to_bytes(4, "big") for d in (n, rows, columns)) + bytes(n * rows * columns))
        test_set = torch.frombuffer(bytearray(images[16:]), dtype=torch.uint8).view(-1, 28, 28)
        write_idx(self.tmp / "superset", torch.cat([torch.zeros(200, 28, 28, dtype=torch.uint8),
                                                    test_set]))
        write_idx(self.tmp / "superset-labels", torch.zeros(200 + len(test_set), dtype=torch.uint8))
        for replaced, named in (   # the files replaced, with what; the file the line must name
            ({test_labels: labels_of(255)}, test_labels),
            ({test_labels: labels[:-5]}, test_labels),   # truncated
            ({train_images: images}, train_labels),   # the test images in its place
            ({train_labels: labels}, train_labels),   # the test labels in its place
            ({train_images: images_of(320, 14, 56)}, train_images),
            ({test_labels: images}, test_labels),   # images where labels belong
            ({test_images: images_of(0, 28, 28), test_labels: labels[:4] + bytes(4)}, test_images),
            ({train_images: images, train_labels: labels}, train_images),
            ({train_images: (self.tmp / "superset").read_bytes(),
              train_labels: (self.tmp / "superset-labels").read_bytes()}, train_images),
        ):
            with self.subTest(files=[p.name for p in replaced], named=named.name):
                for name, original in files.items():
                    (self.raw / name).write_bytes(original)
                for path, contents in replaced.items():
                    path.write_bytes(contents)
                code, out, err = run_main(self.args("--dry-run"))
                self.assert_one_line(code, err, 1)
                self.assertIn(str(named), err)
                self.assertNotIn("EPOCH", out)
        self.assertIn(f"holds 160 of the 160 test images of {test_images.name}", err)

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
            torch.save((torch.zeros(7, 28, 28, dtype=torch.uint8), torch.zeros(7).long()),
                       processed / name)
        for data_dir in (self.tmp / "data", self.raw):   # the folder of MNIST/raw, or that folder
            with self.subTest(data_dir=data_dir):
                metrics = self.tmp / "m.json"
                code, _, err = run_main(["--model", "1", "--epochs", "1", "--data-dir",
                                         str(data_dir), "--metrics", str(metrics)])
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
        result = subprocess.run([sys.executable, str(HERE / "train.py"), *self.args(
            "--metrics", str(metrics), "--save-model", str(self.tmp / "m.pt"))],
            capture_output=True, text=True, timeout=900)   # a safety net, not a speed limit
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

    def test_the_readmes_notebook_cell_trains_and_tests_with_torch_alone(self):
        """The README's cell taken as it says, its imports and then the definitions it names,
        in a fresh file run with torch alone: Model 5 trains on a DataLoader and tests, with the
        numbers the modules' own functions give."""
        readme = (HERE / "README.md").read_text(encoding="utf-8")
        cell = readme.split("### The lesson in a notebook")[1].split("\n\n    ")[1].split("\n\n")[0]
        lines = [line.removeprefix("    ") for line in cell.splitlines()]
        pasted = [line for line in lines if line.startswith("import ")]
        for module, names in (re.fullmatch(r"# from (\w+)\.py: (.+)", line).groups()
                              for line in lines if line.startswith("# from ")):
            pasted += [inspect.getsource(getattr(sys.modules[module], name))
                       for name in names.split(", ")]
        driver = """
torch.manual_seed(0)
pixels, labels = torch.rand(96, 1, 28, 28), torch.randint(0, 10, (96,))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=32)
model = Model5()
optimizer = torch.optim.SGD(model.parameters(), lr=0.04, momentum=0.9)
trained, tested = train_epoch(model, loader, optimizer), evaluate(model, loader)
print(repr((trained, tested, evaluate(recompute_batchnorm_statistics(model, loader), loader))))
"""
        (self.tmp / "cell.py").write_text("\n".join(pasted) + driver)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = subprocess.run([sys.executable, "cell.py"], cwd=self.tmp, env=env,
                               capture_output=True, text=True, timeout=900)
        self.assertEqual(child.returncode, 0, child.stderr)
        own = vars(models) | vars(train)
        names = ("torch", "Model5", "train_epoch", "evaluate", "recompute_batchnorm_statistics")
        with contextlib.redirect_stdout(out := io.StringIO()):
            exec(driver, {name: own[name] for name in names})
        self.assertEqual(child.stdout, out.getvalue())
        self.assertIn(", 96)", child.stdout)   # all 96 digits tested

    def test_same_seed_same_numbers(self):
        def numbers(seed):
            path = self.tmp / f"seed{seed}.json"
            # --augment: the random rotations, too, must come from the seed
            code, _, err = run_main(self.args("--seed", str(seed), "--augment", "--metrics",
                                              str(path)))
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
        self.assertTrue(any(not torch.equal(plain_weights[n], weights[n]) for n in statistics))
        self.assertEqual(recomputed["result"]["target_met_trained_statistics"], False)
        self.assertIn("Test set, BatchNorm statistics as trained: Average loss:", out)
        self.assertNotIn("BatchNorm statistics as trained", plain_out)

    def test_the_test_does_not_depend_on_the_test_batch_size(self):
        def tested(size):
            metrics = self.tmp / f"m{size}.json"
            code, _, err = run_main(self.args("--epochs", "1", "--test-batch-size", size,
                                              "--metrics", str(metrics)))
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
            torch.testing.assert_close(fresh.eval()(images), no_dropout(images), atol=1e-2,
                                       rtol=1e-2)
            self.assertFalse(torch.allclose(model.eval()(images), fresh(images), atol=1e-1))
        # Each image counts the same, however the images are batched: a last batch of one image
        # moves the means by its own share.
        split = train.recompute_batchnorm_statistics(copy.deepcopy(model), [(images[:149], None),
                                                                       (images[149:], None)])
        for whole, parts in zip(norms(fresh), norms(split)):
            torch.testing.assert_close(parts.running_mean, whole.running_mean, atol=2e-3, rtol=1e-2)

    def test_a_diverging_run_stops_with_one_line_naming_the_epoch_and_keeps_those_before(self):
        for extra, finished in (
            (["--model", "1", "--lr", "1e6"], 0),   # the training loss runs away
            (["--lr", "1e30", "--dry-run", "--epochs", "1"], 0),   # the weights do, in one step
            (["--model", "1", "--step-size", "1", "--gamma", "1e30"], 1),   # the second epoch's
        ):
            with self.subTest(args=extra):
                metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
                code, out, err = run_main(
                    self.args(*extra, "--metrics", str(metrics), "--save-model", str(weights)))
                self.assert_one_line(code, err, 1)
                self.assertIn(f"NaN or infinite in epoch {finished}; try an --lr below", err)
                self.assertNotIn("Target", out)
                self.assertEqual(len(strict_json(metrics)["epochs"]) if finished else 0, finished)
                self.assertEqual(weights.exists(), bool(finished))
                if finished:
                    plot.load_model(weights, 1)   # the finished epoch's model, whole
                metrics.unlink(missing_ok=True)
                weights.unlink(missing_ok=True)

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
    """A bad flag stops before the data load with one line and exit 2."""

    def assert_refused_before_the_data(self, extra, words):
        with unittest.mock.patch.object(data, "load_splits") as load:
            self.assertIn(words, self.assert_refused(extra))
        load.assert_not_called()

    def test_a_number_out_of_its_range_or_not_a_number(self):
        for extra in (["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--lr", "-1"],
                      ["--gamma", "0"], ["--momentum", "-0.5"], ["--momentum", "1"],
                      ["--rotation", "-1"], ["--rotation", "400"], ["--shift", "14"],
                      ["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "inf"],
                      ["--seed", "99999999999999999999"], ["--seed", "-1"]):
            with self.subTest(args=extra):
                self.assert_refused_before_the_data(extra, f"argument {extra[0]}: must be in")
        self.assert_refused_before_the_data(["--epochs", "x"], "--epochs: invalid int value: 'x'")

    def test_an_unknown_flag_model_or_device(self):
        for extra, words in ((["--no-such-flag"], "unrecognized arguments"),
                             (["--model", "9"], "--model: invalid choice"),
                             (["--device", "tpu"], "--device: invalid choice")):
            self.assert_refused_before_the_data(extra, words)
        with unittest.mock.patch.object(torch.cuda, "is_available", return_value=False):
            self.assert_refused_before_the_data(["--device", "cuda"], "invalid choice: 'cuda'")

    def test_a_rotation_or_shift_without_augment(self):
        for extra in (["--no-augment", "--shift", "2"], ["--model", "1", "--rotation", "5"]):
            self.assert_refused_before_the_data(extra, "unused without --augment")

    def test_a_rotation_of_0_is_a_shift_alone(self):
        metrics = self.tmp / "m.json"
        code, _, err = run_main(self.args("--augment", "--rotation", "0", "--shift", "2",
                                          "--dry-run", "--epochs", "1", "--metrics", str(metrics)))
        self.assertEqual(code, 0, err)
        config = strict_json(metrics)["config"]
        self.assertEqual((config["rotation_degrees"], config["shift_pixels"]), (0.0, 2.0))

    def test_out_of_memory_ends_with_one_line_suggesting_a_smaller_batch(self):
        for message in ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes",
                        "CUDA out of memory. Tried to allocate 2.00 GiB"):
            with self.subTest(message=message), unittest.mock.patch.object(
                    train, "train_epoch", side_effect=RuntimeError(message)):
                code, _, err = run_main(self.args("--dry-run"))
            self.assert_one_line(code, err, 1)
            self.assertIn("try a smaller --batch-size", err)
        with unittest.mock.patch.object(train, "train_epoch", side_effect=RuntimeError("a bug")):
            self.assertRaises(RuntimeError, run_main, self.args("--dry-run"))   # not hidden

    def test_the_readmes_flags_are_those_of_help(self):
        table = (HERE / "README.md").read_text(encoding="utf-8").split("## Flags")[1]
        documented = {flag for row in re.findall(r"^\| `--.*", table, re.M)
                      for flag in re.findall(r"`(--[a-z-]+)", row.split("|")[1])}
        _, help_text, _ = run_main(["--help"])
        offered = {flag for flags in re.findall(r"^  (--[a-z-]+(?:, --[a-z-]+)?)", help_text, re.M)
                   for flag in flags.split(", ")}
        self.assertEqual(documented, offered)


class TestFilesAndStops(TinyData):
    """Every output is checked before training and written whole; a stop keeps what finished."""

    def test_an_output_that_is_a_folder_or_in_none_is_refused_before_training(self):
        (self.tmp / "sub").mkdir()
        for flag in ("--metrics", "--save-model"):
            for path in ("", str(self.tmp / "new") + os.sep, str(self.tmp / "sub"),
                         str(self.tmp / "no-such-folder" / "x")):
                with self.subTest(flag=flag, path=path):
                    self.assert_refused(["--dry-run", flag, path], f"argument {flag}: cannot write")

    def test_an_output_that_is_an_input_or_the_other_output_is_refused_before_training(self):
        labels = self.raw / "train-labels-idx1-ubyte"
        original, same = labels.read_bytes(), str(self.tmp / "both.out")
        self.assert_refused(["--save-model", str(labels)], "it is an MNIST file")
        for other in (same, str(self.tmp / "." / "both.out")):
            self.assert_refused(["--metrics", same, "--save-model", other], "--save-model file")
        self.assertEqual((labels.read_bytes(), list(self.tmp.glob("both.out"))), (original, []))

    def test_files_are_written_through_links_with_the_mode_they_had_or_an_ordinary_files(self):
        target, link, private = self.tmp / "sub" / "m.json", self.tmp / "m.json", self.tmp / "p.pt"
        target.parent.mkdir()
        link.symlink_to(target)
        private.write_bytes(b"")
        private.chmod(0o600)
        previous = os.umask(0o022)
        try:
            code, _, err = run_main(self.args("--dry-run", "--epochs", "1", "--metrics", str(link),
                                              "--save-model", str(private)))
        finally:
            os.umask(previous)
        self.assertEqual(code, 0, err)
        self.assertTrue(link.is_symlink())
        self.assertEqual(strict_json(target)["config"]["epochs"], 1)
        self.assertEqual((target.stat().st_mode & 0o777, private.stat().st_mode & 0o777),
                         (0o644, 0o600))
        self.assertEqual(self.temporary_files(), [])

    def test_a_full_disk_ends_with_one_line_and_keeps_the_finished_epochs_whole(self):
        metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
        replace, calls = os.replace, []
        def full_at_the_second_epoch(source, target):   # model, metrics, then epoch 1's model
            calls.append(target)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            replace(source, target)
        with unittest.mock.patch.object(os, "replace", full_at_the_second_epoch):
            code, _, err = run_main(self.args("--model", "1", "--metrics", str(metrics),
                                              "--save-model", str(weights)))
        self.assert_one_line(code, err, 1)
        self.assertIn(f"cannot write {weights}: No space left on device", err)
        self.assertEqual(len(strict_json(metrics)["epochs"]), 1)
        plot.load_model(weights, 1)   # epoch 0's model, whole
        self.assertEqual(self.temporary_files(), [])

    def assert_stopped_by(self, signum, words):
        """The signal sent once an epoch has finished: the report of the finished epochs, and
        their metrics and model (the last one's) in the files."""
        child = start_training(self.tmp, "--save-model", str(self.tmp / "m.pt"))
        self.assertTrue((self.tmp / "m.json").exists(), "no epoch finished")
        child.send_signal(signum)
        out, err = child.communicate(timeout=900)
        self.assertEqual((child.returncode, err), (128 + signum, ""))
        record = strict_json(self.tmp / "m.json")
        self.assertTrue(record["interrupted"])
        self.assertIn(f"{words}: {len(record['epochs'])} finished epoch(s)", out)
        self.assertIn("Target (>= 99.40% test accuracy in each of the last 3 epochs): not met", out)
        model = plot.load_model(self.tmp / "m.pt", 1)
        _, test_split = data.load_splits(self.tmp / "data")
        _, correct, _ = train.evaluate(model, data.test_batches(*test_split, 160))
        self.assertEqual(correct, record["epochs"][-1]["test_correct"])
        self.assertEqual(self.temporary_files(), [])

    def test_ctrl_c_reports_the_finished_epochs_and_keeps_them_and_their_model(self):
        self.assert_stopped_by(signal.SIGINT, "Interrupted")

    def test_sigterm_reports_the_finished_epochs_and_keeps_them_and_their_model(self):
        self.assert_stopped_by(signal.SIGTERM, "Stopped by SIGTERM")

    def test_a_pipe_closed_by_head_ends_the_run_quietly_with_its_finished_epochs_kept(self):
        command = [sys.executable, str(HERE / "train.py"), *self.args(
            "--dry-run", "--epochs", "100000", "--metrics", str(self.tmp / "m.json"))]
        result = subprocess.run(f"{shlex.join(command)} | head -n 60", shell=True,
                                capture_output=True, text=True, timeout=900)
        self.assertEqual((len(result.stdout.splitlines()), result.stderr), (60, ""))
        self.assertGreater(len(strict_json(self.tmp / "m.json")["epochs"]), 0)

    def progress_lines(self, stream):
        """What the progress line of a 60-step epoch writes to the stream."""
        with contextlib.redirect_stdout(stream):
            show = train.progress(60)
            for step in range(1, 61):
                show(torch.tensor(0.5), torch.tensor(16 * step), 32 * step)
        self.assertRegex(stream.getvalue(), r"Loss=0\.5000 Batch_id=59 Accuracy=50\.00: 100%\|"
                                            r"██████████\| 60/60 \[00:00<00:00, [\d.]+it/s\]\n$")
        return stream.getvalue()

    def test_the_progress_line_is_redrawn_on_a_terminal(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True
        lines = self.progress_lines(Terminal())
        self.assertEqual((lines.count("\r"), lines.count("Loss=")), (3, 3))   # 25, 50 and 60

    def test_the_progress_line_is_printed_once_to_a_file_or_pipe(self):
        lines = self.progress_lines(io.StringIO())
        self.assertEqual((lines.count("\r"), lines.count("Loss=")), (0, 1))

    def test_a_console_that_cannot_encode_the_bar_gets_tqdms_ascii_one(self):
        console = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")   # Windows', redirected
        with contextlib.redirect_stdout(console):
            self.assertEqual(train.main(self.args("--dry-run", "--epochs", "1")), 0)
            console.flush()
        self.assertIn(b"|##########| 1/1", console.buffer.getvalue())


class TestPictures(unittest.TestCase):
    """plot.py: a run's curves, and the misclassified test digits of a saved model."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        write_tiny_mnist(cls.tmp / "data")
        cls.weights = cls.tmp / "m.pt"
        code, _, err = run_main(["--model", "1", "--epochs", "1", "--data-dir",
                                 str(cls.tmp / "data"), "--save-model", str(cls.weights)])
        assert code == 0, err   # a few steps: some digits right, some wrong
        _, (cls.pixels, cls.labels) = data.load_splits(cls.tmp / "data")
        cls.model = plot.load_model(cls.weights, 1)
        _, cls.correct, cls.total = train.evaluate(cls.model, data.test_batches(cls.pixels,
                                                                                cls.labels, 50))
        cls.predicted, cls.probability = plot.predictions(cls.model, cls.pixels, cls.labels)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def draw(self, *extra):
        return run_main([*extra, "--data-dir", str(self.tmp / "data")], main=plot.main)

    def assert_refused(self, argv, status, words):
        code, _, err = self.draw(*argv, "--out", str(self.tmp / "x.svg"))
        self.assertEqual((code, len(err.strip().splitlines())), (status, 1), err)
        self.assertIn(words, err)
        self.assertFalse((self.tmp / "x.svg").exists())

    def test_the_digits_drawn_are_the_errors_that_evaluate_counts(self):
        svg = plot.draw(self.pixels, self.labels, self.predicted, self.probability, "test")
        captions = [tuple(map(int, pair)) for pair in re.findall(r">(\d) → (\d)</text>", svg)]
        with torch.no_grad():
            own = self.model.eval()(data.normalize(self.pixels)).argmax(dim=1)
        wrong = [(t, p) for t, p in zip(self.labels.tolist(), own.tolist()) if t != p]
        self.assertEqual(svg.count("<image "), self.total - self.correct)
        self.assertEqual(sorted(captions), sorted(wrong))
        self.assertEqual([t for t, _ in captions], sorted(t for t, _ in captions))   # by class

    def test_the_confusion_matrix_adds_up_to_the_test_set_and_the_correct_digits(self):
        matrix = plot.confusion_matrix(self.labels, self.predicted)
        self.assertEqual((matrix.sum().item(), matrix.diag().sum().item()),
                         (self.total, self.correct))
        self.assertEqual(matrix.sum(dim=1).tolist(),
                         torch.bincount(self.labels, minlength=10).tolist())

    def test_a_model_without_errors_draws_no_digit_and_says_so(self):
        svg = plot.draw(self.pixels, self.labels, self.labels, torch.ones(self.total), "perfect")
        self.assertEqual(svg.count("<image "), 0)
        self.assertIn("No test digit is misclassified.", svg)

    def test_the_command_draws_the_model_it_is_told(self):
        code, out, err = self.draw(str(self.weights), "--model", "1", "--out",
                                   str(self.tmp / "e.svg"))
        self.assertEqual(code, 0, err)
        self.assertIn("Model 1, m.pt", (self.tmp / "e.svg").read_text(encoding="utf-8"))
        self.assertIn(f"{self.total - self.correct} misclassified test digits", out)

    def test_no_picture_is_replaced_unless_out_names_it(self):
        shutil.copy(self.weights, self.tmp / "f.pt")
        (self.tmp / "f.svg").write_text("a picture")
        code, _, err = self.draw(str(self.tmp / "f.pt"), "--model", "1")
        self.assertEqual((code, (self.tmp / "f.svg").read_text()), (2, "a picture"))
        self.assertIn("name it with --out", err)

    def test_a_file_that_is_not_a_state_dict_exits_with_one_line(self):
        (self.tmp / "notes.txt").write_text("not a model\n")
        torch.save(MODELS[1](), self.tmp / "module.pt")   # a whole pickled module
        for name in ("notes.txt", "module.pt"):
            self.assert_refused([str(self.tmp / name), "--model", "1"], 1, "is not a state_dict")

    def test_weights_of_another_model_name_the_models_they_fit(self):
        torch.save(MODELS[4]().state_dict(), self.tmp / "4.pt")
        self.assert_refused([str(self.tmp / "4.pt"), "--model", "5"], 1, "use --model 3 or 4")
        self.assert_refused([str(self.weights), "--model", "3"], 1, "use --model 1")
        self.assert_refused([str(self.weights)], 2, "--model: required")

    def test_a_missing_file_or_an_output_in_no_folder_exits_2_with_one_line(self):
        self.assert_refused([str(self.tmp / "none.pt"), "--model", "1"], 2, "is not a file")
        code, _, err = self.draw(str(self.weights), "--model", "1", "--out",
                                 str(self.tmp / "no" / "e.svg"))
        self.assertEqual((code, len(err.strip().splitlines())), (2, 1), err)

    def test_any_name_gives_a_picture_that_is_well_formed_xml(self):
        odd = self.tmp / "a&b<c>\"d'.pt"
        shutil.copy(self.weights, odd)
        code, _, err = self.draw(str(odd), "--model", "1")
        self.assertEqual(code, 0, err)
        root = ElementTree.parse(self.tmp / "a&b<c>\"d'.svg").getroot()
        self.assertIn("a&b<c>\"d'.pt", "".join(root.itertext()))

    def curves(self):
        """The picture of results/model5/seed1.json as plot.py draws it: the run, its SVG."""
        run = strict_json(HERE / "results" / "model5" / "seed1.json")
        path = self.tmp / "run.json"
        path.write_text(json.dumps(run))
        code, out, err = self.draw(str(path), "--out", str(self.tmp / "run.svg"))
        self.assertEqual((code, out), (0, f"Drew 15 epoch(s) in {self.tmp / 'run.svg'}\n"), err)
        return run, ElementTree.parse(self.tmp / "run.svg").getroot()   # well-formed, or it raises

    def test_the_curves_drawn_are_the_runs_numbers(self):
        run, root = self.curves()
        svg, labels = "{http://www.w3.org/2000/svg}", {}   # each panel's axis labels, by their x
        for text in root.iter(f"{svg}text"):
            if text.get("text-anchor") == "end":
                labels.setdefault(text.get("x"), []).append(text)
        lines, ticks = root.findall(f".//{svg}polyline"), list(labels.values())
        for drawn, ticks, names in ((lines[:2], ticks[0], ("train_accuracy", "test_accuracy")),
                                    (lines[2:], ticks[1], ("train_loss", "test_loss"))):
            (y0, v0), (y1, v1) = [(float(t.get("y")) - 4, float(t.text)) for t in (ticks[0],
                                                                                   ticks[-1])]
            value = lambda y: v0 + (float(y) - y0) * (v1 - v0) / (y1 - y0)   # the axis, read back
            for line, name in zip(drawn, names):
                points = [point.split(",") for point in line.get("points").split()]
                self.assertEqual(len(points), len(run["epochs"]))
                for (_, y), epoch in zip(points, run["epochs"]):
                    if epoch[name] >= min(v0, v1):   # below the axis: at its floor, marked
                        self.assertAlmostEqual(value(y), epoch[name], delta=abs(v1 - v0) / 300)
        self.assertIn("target met", "".join(root.itertext()))

    def test_a_value_below_the_curves_axis_is_marked_with_its_number(self):
        run, root = self.curves()
        below = [e["train_accuracy"] for e in run["epochs"] if e["train_accuracy"] < 97.5]
        self.assertEqual(len(below), 1)   # epoch 0's, 94.28
        self.assertEqual([t.text for t in root.iter() if t.text and "↓" in t.text],
                         [f"↓ {a:.2f}" for a in below])


class TestTheSuite(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("MNIST_DIR") and not os.environ.get("TINYCNN_SUITE_INSIDE"),
                         "runs where MNIST_DIR is set, as .ci/run sets it: this run has no MNIST")
    def test_the_suite_needs_no_network_and_no_mnist_and_downloads_nothing(self):
        """The whole suite again, with no MNIST_DIR and every network connection refused (and
        counted), in an empty folder: it passes, skipping what needs MNIST, asks the network
        nothing and writes no data/ folder."""
        with tempfile.TemporaryDirectory() as tmp:
            asked = Path(tmp) / "asked"
            Path(tmp, "sitecustomize.py").write_text(
                "import socket\n"
                "def refuse(*args, **kwargs):\n"
                f"    open({str(asked)!r}, 'a').write(repr(args) + '\\n')\n"
                "    raise OSError('no network in the tests')\n"
                "socket.socket.connect = socket.socket.connect_ex = socket.getaddrinfo = refuse\n")
            env = {k: v for k, v in os.environ.items() if k != "MNIST_DIR"}
            env.update(PYTHONPATH=tmp, TINYCNN_SUITE_INSIDE="1")
            result = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", str(HERE),
                                     "-t", str(HERE)], cwd=tmp, env=env, capture_output=True,
                                    text=True, timeout=3600)
            self.assertEqual(result.returncode, 0, result.stderr[-3000:])
            self.assertRegex(result.stderr, r"OK \(skipped=\d+\)")
            self.assertFalse(asked.exists(), asked.exists() and asked.read_text())
            self.assertFalse((Path(tmp) / "data").exists())
