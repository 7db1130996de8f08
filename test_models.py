"""Tests for models.py, data.py and train.py: `python -m unittest` (under a minute on 2 cores).

Training runs on a tiny MNIST that the tests write themselves in the IDX format; the tests that
need the real data set run only when $MNIST_DIR points at it (as .ci/run sets it)."""
import contextlib
import io
import json
import os
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
import results
import train
from models import MODELS, count_parameters, summary

HERE = Path(__file__).resolve().parent

# The write-up's tables (../shared/reference/seed-models.md), from the first dashed rule to the last.
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
            Conv2d-4           [-1, 10, 28, 28]             720
              ReLU-5           [-1, 10, 28, 28]               0
       BatchNorm2d-6           [-1, 10, 28, 28]              20
         MaxPool2d-7           [-1, 10, 14, 14]               0
            Conv2d-8           [-1, 10, 14, 14]             900
              ReLU-9           [-1, 10, 14, 14]               0
      BatchNorm2d-10           [-1, 10, 14, 14]              20
           Conv2d-11           [-1, 12, 12, 12]           1,080
             ReLU-12           [-1, 12, 12, 12]               0
      BatchNorm2d-13           [-1, 12, 12, 12]              24
        MaxPool2d-14             [-1, 12, 6, 6]               0
           Conv2d-15             [-1, 10, 4, 4]           1,080
             ReLU-16             [-1, 10, 4, 4]               0
      BatchNorm2d-17             [-1, 10, 4, 4]              20
           Conv2d-18             [-1, 10, 2, 2]             900
             ReLU-19             [-1, 10, 2, 2]               0
      BatchNorm2d-20             [-1, 10, 2, 2]              20
AdaptiveAvgPool2d-21             [-1, 10, 1, 1]               0
           Linear-22                   [-1, 10]             100
================================================================
Total params: 4,972
Trainable params: 4,972
Non-trainable params: 0
----------------------------------------------------------------
Input size (MB): 0.00
Forward/backward pass size (MB): 0.43
Params size (MB): 0.02
Estimated Total Size (MB): 0.45
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
        expected = {1: 9746, 2: 9914, 3: 7788, 4: 4972}
        self.assertEqual(sorted(MODELS), sorted(expected))
        for number, count in expected.items():
            self.assertEqual(count_parameters(MODELS[number]()), (count, count))
        self.assertLess(count_parameters(MODELS[3]())[0], 8000)
        self.assertLessEqual(count_parameters(MODELS[4]())[0], 5000)

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
            capture_output=True, text=True, timeout=120)
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
                 ["--lr", "-1"], ["--gamma", "0"], ["--momentum", "-0.5"], ["--epochs", "x"],
                 ["--device", "tpu"]]
        for extra in cases:
            with self.subTest(args=extra):
                code, out, err = run_main(self.args(*extra))
                self.assertEqual(code, 2)
                self.assertEqual(out, "")
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn("error:", err)

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
        child = subprocess.Popen(
            [sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs", "100000",
             "--data-dir", str(self.tmp / "data"), "--metrics", str(metrics)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not metrics.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        self.assertEqual(child.returncode, 130, err)
        self.assertNotIn("Traceback", err)
        record = json.loads(metrics.read_text())
        self.assertTrue(record["interrupted"])
        finished = len(record["epochs"])
        self.assertGreaterEqual(finished, 1)
        self.assertIn(f"Interrupted: {finished} finished epoch(s)", out)
        self.assertIn("Target (>= 99.40% test accuracy in each of the last 3 epochs): not met", out)



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


class TestRecipeSummary(unittest.TestCase):
    def test_groups_the_seeds_of_a_recipe_and_skips_unfinished_runs(self):
        def run(seed, tests, epochs=4):
            return {"config": {"model": 3, "seed": seed, "epochs": epochs},
                    "epochs": [{"test_accuracy": t} for t in tests]}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "trials"
            folder.mkdir()
            for name, metrics in (("a_seed1", run(1, [99.0, 99.4, 99.5, 99.6])),
                                  ("a_seed2", run(2, [99.0, 99.3, 99.4, 99.5])),
                                  ("a_seed3", run(3, [99.0, 99.5, 99.5], epochs=4)),  # stopped early
                                  ("b_seed1", run(1, [99.0, 99.5, 99.5, 99.5]))):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            lines = results.recipe_summary([folder], fewest=2).splitlines()
        self.assertEqual(len(lines), 3)   # header, rule, recipe a; b has one seed
        self.assertEqual(lines[2], "| `trials/a` | 3 | 2 | 1/2 | 99.45 | 0.07 | 99.30 |")


class TestCommittedResults(unittest.TestCase):
    """The runs under results/ (made by train.py with each model's recipe) and the README's
    tables made from them, so that the README cannot drift from the runs."""

    def setUp(self):
        self.runs = results.load_runs()

    def test_models_3_and_4_cover_seeds_1_to_5_and_models_1_and_2_seeds_1_to_3(self):
        for model, seeds in ((1, [1, 2, 3]), (2, [1, 2, 3]), (3, [1, 2, 3, 4, 5]), (4, [1, 2, 3, 4, 5])):
            self.assertEqual([run["config"]["seed"] for run in self.runs.get(model, [])], seeds, model)

    def assert_complete_with_the_right_verdict(self, run, model):
        config = run["config"]
        self.assertEqual(config["parameters"], count_parameters(MODELS[model]())[0])
        self.assertFalse(config["dry_run"])
        self.assertNotIn("interrupted", run)
        self.assertEqual(len(run["epochs"]), config["epochs"])
        self.assertEqual(run["result"]["target_met"], train.target_met(results.test_accuracies(run)))

    def test_runs_are_complete_follow_their_recipe_and_record_the_right_verdict(self):
        more_seeds = results.load_runs(results.RESULTS / "more-seeds")
        for model, runs in list(self.runs.items()) + list(more_seeds.items()):
            for run in runs:
                config = run["config"]
                with self.subTest(model=model, seed=config["seed"]):
                    self.assert_complete_with_the_right_verdict(run, model)
                    recipe = train.RECIPES[model]
                    for key in ("batch_size", "lr", "momentum", "step_size", "gamma", "augment"):
                        self.assertEqual(config[key], recipe[key], key)
                    self.assertEqual(config["weight_decay"], recipe["weight_decay"])
                    self.assertEqual(config["rotation_degrees"], recipe["rotation"] if recipe["augment"] else 0.0)

    def test_gpu_runs_are_complete_model_4_runs_on_cuda_with_the_right_verdict(self):
        gpu_runs = results.load_runs(results.RESULTS / "gpu-h200")
        self.assertEqual(list(gpu_runs), [4])
        for run in gpu_runs[4]:
            config = run["config"]
            with self.subTest(seed=config["seed"], rotation=config["rotation_degrees"]):
                self.assertEqual(config["device"], "cuda")
                self.assert_complete_with_the_right_verdict(run, 4)

    def test_readme_tables_are_made_from_the_results(self):
        readme = (HERE / "README.md").read_text()
        self.assertIn(results.table(), readme)
        self.assertIn(results.search_table(), readme)
        self.assertIn(results.recipe_summary(), readme)
