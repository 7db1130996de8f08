"""plot.py: a run's curves from its metrics, and a saved model's misclassified test digits, with
the one-line refusals a user meets. On the tiny MNIST of test_data.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from xml.etree import ElementTree

import torch

import data
import plot
import train
from models import MODELS
from test_data import HERE, run_main, strict_json, write_tiny_mnist


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
        matrix = plot.confusion_matrix(self.labels, self.predicted)
        self.assertEqual((matrix.sum().item(), matrix.diag().sum().item()),
                         (self.total, self.correct))
        self.assertEqual(matrix.sum(dim=1).tolist(),
                         torch.bincount(self.labels, minlength=10).tolist())

    def test_no_picture_is_replaced_unless_out_names_it_nor_the_file_it_draws(self):
        shutil.copy(self.weights, self.tmp / "f.pt")
        (self.tmp / "f-mistakes.svg").write_text("a picture")
        code, _, err = self.draw(str(self.tmp / "f.pt"), "--model", "1")
        self.assertEqual((code, (self.tmp / "f-mistakes.svg").read_text()), (2, "a picture"))
        self.assertIn("name it with --out", err)
        (self.tmp / "link.pt").symlink_to(self.tmp / "f.pt")
        for out in ("f.pt", "link.pt"):
            code, _, err = self.draw(str(self.tmp / "f.pt"), "--model", "1", "--out",
                                     str(self.tmp / out))
            self.assertEqual((code, err.count("\n")), (2, 1), err)
            self.assertEqual((self.tmp / "f.pt").read_bytes(), self.weights.read_bytes())

    def test_a_file_that_is_no_state_dict_of_the_model_or_none_at_all_exits_with_one_line(self):
        (self.tmp / "notes.txt").write_text("not a model\n")
        torch.save(MODELS[1](), self.tmp / "module.pt")   # a whole pickled module
        torch.save(MODELS[4]().state_dict(), self.tmp / "4.pt")
        for name, model, status, words in (
                ("notes.txt", "1", 1, "is not a state_dict"), ("module.pt", "1", 1, "state_dict"),
                ("4.pt", "5", 1, "use --model 3 or 4"), ("m.pt", "3", 1, "use --model 1"),
                ("none.pt", "1", 2, "is not a file")):
            self.assert_refused([str(self.tmp / name), "--model", model], status, words)
        code, _, err = self.draw(str(self.weights), "--model", "1", "--out",
                                 str(self.tmp / "no" / "e.svg"))
        self.assertEqual((code, err.count("\n")), (2, 1), err)
        (self.tmp / "m-mistakes.svg").write_text("a picture")   # what is missing comes first
        self.assertIn("--model: required", self.draw(str(self.weights))[2])

    def test_the_command_draws_the_model_it_is_told_as_well_formed_xml_whatever_its_name(self):
        odd = self.tmp / "a&b<c>\"d'.pt"
        shutil.copy(self.weights, odd)
        code, out, err = self.draw(str(odd), "--model", "1")
        self.assertEqual(code, 0, err)
        self.assertIn(f"{self.total - self.correct} misclassified test digits", out)
        root = ElementTree.parse(self.tmp / "a&b<c>\"d'-mistakes.svg").getroot()
        self.assertIn("Model 1, a&b<c>\"d'.pt", "".join(root.itertext()))

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


    def test_a_name_the_console_cannot_spell_ends_no_run_and_no_picture(self):
        """train.py and plot.py on a console of ASCII alone, given names in other letters."""
        env = dict(os.environ, PYTHONIOENCODING="ascii")
        for command in (
            ["train.py", "--model", "1", "--dry-run", "--epochs", "1", "--data-dir",
             str(self.tmp / "data"), "--save-model", str(self.tmp / "modèle.pt"), "--metrics",
             str(self.tmp / "模型.json")],
            ["plot.py", str(self.tmp / "模型.json"), "--out", str(self.tmp / "modèle.svg")],
        ):
            with self.subTest(script=command[0]):
                result = subprocess.run([sys.executable, *command], cwd=HERE, env=env,
                                        capture_output=True, timeout=900)
                self.assertEqual((result.returncode, result.stderr), (0, b""))
                self.assertIn(b"mod?le.", result.stdout)
        self.assertTrue((self.tmp / "modèle.svg").is_file())

    def test_a_run_written_before_the_target_was_recorded_as_numbers_draws_it_still(self):
        run = strict_json(HERE / "results" / "model5" / "seed1.json")
        self.assertNotIn("target_accuracy", run["result"])   # written by an earlier train.py
        newer = dict(run, result=dict(run["result"], target_accuracy=99.4, target_epochs=3))
        self.assertEqual(plot.curves(run, "r"), plot.curves(newer, "r"))
        self.assertNotEqual(plot.curves(run, "r"), plot.curves(dict(newer, result=dict(
            newer["result"], target_accuracy=99.0)), "r"))
