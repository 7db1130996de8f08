"""The lab's tests: its tables, the screen of candidates, and the runs committed under results/
with the tables and pictures made from them. Found by `python -m unittest` from the project's root.
"""

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import unittest
import unittest.mock
from pathlib import Path

import torch
import torch.nn.functional as F

import train
from lab import screen, tables
from models import MODELS, count_parameters

HERE = Path(__file__).resolve().parent.parent


def metrics(seed, last=(99.5, 99.5, 99.5), epochs=15, **config):
    """A metrics file's content as train.py writes it, the last epochs' test accuracies given."""
    tests = [99.0] * (epochs - len(last)) + list(last)
    return {"config": dict(model=4, seed=seed, epochs=epochs, device="cpu", **config),
            "epochs": [{"test_accuracy": t, "train_accuracy": 99.0} for t in tests],
            "result": {"target_met": train.target_met(tests)}}


class TestTables(unittest.TestCase):
    def test_a_run_that_is_not_a_whole_one_of_train_py_is_never_counted_and_is_named(self):
        files = {
            "seed1": metrics(1), "seed2": dict(metrics(2), interrupted=True),
            "seed3": metrics(3, dry_run=True), "seed4": metrics(4, epochs=2) | {"epochs": []},
            "seed5": {k: v for k, v in metrics(5).items() if k != "result"},
            "seed6copy": metrics(6), "seed7": metrics(7, last=(float("nan"),) * 3),
            "seed8": dict(metrics(8), config={"seed": "8"}),
        }
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model4").mkdir()
            for name, content in files.items():
                (Path(tmp) / "model4" / f"{name}.json").write_text(json.dumps(content))
            (Path(tmp) / "model4" / "seed9.json").write_text('{"config": {"model": 4, "ep')
            with unittest.mock.patch.object(tables, "RESULTS", Path(tmp)):
                self.assertEqual([r["config"]["seed"] for r in tables.model_runs(4)], [1])
                why = {p.stem: why for p, why in tables.not_counted(Path(tmp))}
        self.assertEqual(why, {
            "seed2": "interrupted (15 of 15 epochs)", "seed3": "a --dry-run",
            "seed4": "unfinished (0 of 2 epochs)",
            "seed5": "no verdict (15 of 15 epochs): stopped after its last epoch",
            "seed6copy": "its name does not say its seed (6): a copy of another run?",
            **{f"seed{s}": "not a metrics file of train.py (half written, or another program's)"
               for s in (7, 8, 9)}})

    def test_the_levers_table_gives_each_its_gain_over_its_design_alone_on_the_same_seeds(self):
        with tempfile.TemporaryDirectory() as tmp:
            for folder, name, seed, last in (("alone", "a", 1, (99.4,) * 3),
                                             ("alone", "a", 2, (99.3,) * 3),
                                             ("alone", "a", 3, (99.9,) * 3),   # no lever on it
                                             ("levers", "s1-x", 1, (99.5,) * 3),
                                             ("levers", "s1-x", 2, (99.4, 99.3, 99.5))):
                (Path(tmp) / folder).mkdir(exist_ok=True)
                (Path(tmp) / folder / f"{name}_seed{seed}.json").write_text(json.dumps(
                    metrics(seed, last, candidate=name, parameters=4000)))
            table = tables.levers_table(Path(tmp) / "levers", {"s1": (Path(tmp) / "alone", "a")})
        self.assertEqual(table.splitlines()[2],
                         "| `s1-x` | 4,000 | 1–2 | 1/2 | 99.45 | 0.07 | 99.30 | +0.100 |")

    def test_the_confirmation_gives_the_lever_and_its_design_alone_from_the_same_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            for seed, lever, alone in ((1, (99.5,) * 3, (99.4,) * 3), (2, (99.4, 99.3, 99.5),
                                                                        (99.4,) * 3)):
                run = metrics(seed, lever, candidate="s1-clean", parameters=4000, recompute_bn=True)
                for epoch, test in zip(run["epochs"], [99.0] * 12 + list(alone)):
                    epoch["test_accuracy_trained_statistics"] = test
                (Path(tmp) / f"s1-clean_seed{seed}.json").write_text(json.dumps(run))
            table = tables.confirmation_table(Path(tmp))
        self.assertEqual(table.splitlines()[2:], [
            "| `s1-clean` | 4,000 | 1–2 | 1/2 | 99.45 | 0.07 | 99.30 | +0.050 |",
            "| `s1-clean`, statistics as trained (the design alone) | 4,000 | 1–2 | 2/2 | 99.40 "
            "| 0.00 | 99.40 | — |"])

    def test_the_command_changes_no_file_but_with_write_and_refuses_what_it_does_not_know(self):
        for argv in (["--wirte"], ["results"]):
            with self.subTest(argv=argv), contextlib.redirect_stderr(err := io.StringIO()):
                with self.assertRaises(SystemExit) as stop:
                    tables.main(argv)
            self.assertEqual((stop.exception.code, err.getvalue().count("\n")), (2, 1))
        quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        with unittest.mock.patch.object(train, "write_whole") as write, quiet[0], quiet[1]:
            self.assertEqual(tables.main([]), 0)
        write.assert_not_called()
        result = subprocess.run([sys.executable, "lab/tables.py", "--help"], cwd=HERE,
                                capture_output=True, text=True, timeout=900)
        self.assertEqual((result.returncode, result.stderr), (0, ""))


class TestScreen(unittest.TestCase):
    def test_models_4_and_5_are_the_closed_screens_choices_weight_for_weight(self):
        """So the screens' runs of m3-nodrop-shift2 and p5936-bnrelu-batch64-shift1, which its
        committed runs define, are Models 4 and 5 with their recipes."""
        weights = lambda model: [t for t in model.state_dict().values() if t.is_floating_point()]
        for number, name in ((4, "m3-nodrop-shift2"), (5, "p5936-bnrelu-batch64-shift1")):
            with self.subTest(model=number):
                self.assertEqual(dict(train.RECIPES[3], **screen.candidate(name)["recipe"]),
                                 train.RECIPES[number])
                torch.manual_seed(0)
                model = MODELS[number]()
                torch.manual_seed(0)
                ours = screen.model_class(name)()
                self.assertEqual(len(weights(model)), len(weights(ours)))
                for a, b in zip(weights(model), weights(ours)):
                    self.assertTrue(torch.equal(a, b))

    def test_a_taught_candidate_trains_on_the_distillation_loss_and_tests_alone(self):
        torch.manual_seed(0)
        model, (temperature, weight) = screen.model_class("s3786-kd4")(), (4.0, 0.9)
        images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        own = torch.nn.Sequential.forward(model.train(), images)
        with torch.no_grad():
            taught = model.teacher[0](images)
        soft = lambda logits: F.log_softmax(logits / temperature, dim=1)
        expected = (1 - weight) * F.nll_loss(own, labels) + weight * temperature ** 2 * F.kl_div(
            soft(own), soft(taught), reduction="batchmean", log_target=True)
        torch.testing.assert_close(F.nll_loss(model(images), labels), expected)
        self.assertTrue(torch.equal(model(images).argmax(1), own.argmax(1)))
        self.assertTrue(torch.equal(model.eval()(images), torch.nn.Sequential.forward(model,
                                                                                      images)))
        self.assertEqual(count_parameters(model)[0], 3786)   # the teacher's are not its own

    def test_an_averaged_candidate_tests_with_the_average_of_its_weights(self):
        torch.manual_seed(0)
        model = screen.model_class("s3786-ema")()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        weights = [[p.detach().clone() for p in model.parameters()]]
        for _ in range(2):   # each step's forward pass first moves the average to the weights
            optimizer.zero_grad()
            F.nll_loss(model.train()(images), labels).backward()
            optimizer.step()
            weights.append([p.detach().clone() for p in model.parameters()])
        for i, (first, second) in enumerate(zip(weights[0], weights[1])):
            torch.testing.assert_close(getattr(model, f"average{i}"),
                                       0.999 * first + 0.001 * second)
        self.assertFalse(torch.equal(model.eval()(images), model(images, averaged=False)))

    def test_an_unknown_candidate_or_a_model_exits_2_with_one_line(self):
        for argv in (["no-such-design", "--seed", "1"], ["s4462-ema", "--model", "3"],
                     ["s4462-ema", "--model=3"]):
            with self.subTest(args=argv), contextlib.redirect_stderr(err := io.StringIO()):
                with self.assertRaises(SystemExit) as stop:
                    screen.main(argv)
            self.assertEqual((stop.exception.code, err.getvalue().count("\n")), (2, 1))

    def test_the_screen_gives_train_main_the_candidate_as_model_4_and_changes_no_global(self):
        before = (dict(train.MODELS), {k: dict(v) for k, v in train.RECIPES.items()})
        for name, parameters, lr in (("s4462-clean", 4462, 0.08), ("p5936-lr04", 5936, 0.04)):
            with unittest.mock.patch.object(train, "main", return_value=0) as main:
                self.assertEqual(screen.main([name, "--dry-run"]), 0)
            (argv,), given = main.call_args
            self.assertEqual(argv, ["--dry-run", "--model", "4"])
            self.assertEqual(count_parameters(given["models"][4]())[0], parameters)
            self.assertEqual((given["recipes"][4]["lr"], given["extra"]["candidate"]), (lr, name))
        self.assertTrue(given["recipes"][4]["recompute_bn"] is False)
        self.assertEqual((dict(train.MODELS), {k: dict(v) for k, v in train.RECIPES.items()}),
                         before)


class TestCommittedResults(unittest.TestCase):
    """The runs under results/ (made by train.py) and the tables and pictures made from them, so
    that neither README can drift from the runs."""

    def test_every_committed_run_is_complete_with_the_right_verdict_unless_named_stopped(self):
        paths = sorted(tables.RESULTS.rglob("*.json"))
        self.assertGreater(len(paths), 100)
        for path in paths:
            run = tables.read_run(path)
            with self.subTest(run=str(path.relative_to(tables.RESULTS))):
                self.assertIsNotNone(run)
                counted = not tables.why_not_counted(run, path)
                self.assertEqual(counted, not path.stem.endswith("_stopped"))
                if counted:
                    self.assertEqual(run["result"]["target_met"],
                                     train.target_met(tables.test_accuracies(run)))
                if counted and run["config"].get("recompute_bn"):
                    self.assertEqual(run["result"]["target_met_trained_statistics"],
                                     train.target_met(tables.as_trained(run)))

    def test_the_runs_of_each_recipe_follow_it_on_the_seeds_the_readme_names(self):
        seeds = {1: range(1, 4), 2: range(1, 4), 3: range(1, 51), 4: range(1, 51), 5: range(1, 51)}
        self.assertEqual(sorted(seeds), sorted(train.RECIPES))
        for model, expected in seeds.items():
            runs = tables.model_runs(model)
            self.assertEqual([run["config"]["seed"] for run in runs], list(expected), model)
            recipe = dict(train.RECIPES[model])
            moved = (recipe.pop("rotation"), recipe.pop("shift"))
            moved = moved if recipe["augment"] else (0, 0)
            for config in (run["config"] for run in runs):
                with self.subTest(model=model, seed=config["seed"]):
                    self.assertEqual((config["model"], config["epochs"]), (model, 15))
                    self.assertEqual(config["parameters"], count_parameters(MODELS[model]())[0])
                    self.assertEqual({k: config.get(k, 0) for k in recipe}, recipe)
                    self.assertEqual((config["rotation_degrees"], config.get("shift_pixels", 0)),
                                     moved)
                    self.assertTrue((tables.RESULTS / f"model{model}" /
                                     f"seed{config['seed']}.log").is_file())

    def test_model5s_runs_repeat_the_screens_runs_of_its_design_epoch_for_epoch(self):
        """So the screen's choice and its confirmation are Model 5's own numbers."""
        screened = {run["config"]["seed"]: run for folder in ("screen-6000", "confirm-6000")
                    for _, run in tables.metrics_files(tables.RESULTS / folder,
                                                       "p5936-bnrelu-batch64-shift1_seed*.json")}
        numbers = lambda run: [(e["train_loss"], e["train_accuracy"], e["test_loss"],
                                e["test_correct"]) for e in run["epochs"]]
        runs = [run for run in tables.model_runs(5) if run["config"]["seed"] in screened]
        self.assertEqual([run["config"]["seed"] for run in runs], sorted(screened))
        for run in runs:
            self.assertEqual(numbers(run), numbers(screened[run["config"]["seed"]]))

    def test_the_reliability_picture_shows_each_confirmed_design_on_ten_seeds_or_more(self):
        labels = [label for label, *_ in tables.reliability_points()]
        self.assertEqual(len(labels), len(set(labels)))
        self.assertEqual(labels[:3], ["Model 3", "Model 4", "Model 5"])
        for folder in tables.CONFIRMED:
            for name, runs in tables.candidate_runs(folder).items():
                lever = f" {name.split('-', 1)[1]}" * (folder == tables.CONFIRM_LEVERS)
                self.assertIn(f"{runs[0]['config']['parameters']:,}{lever}", labels)
        for label, parameters, met, seeds, level in tables.reliability_points():
            self.assertGreaterEqual(seeds, 10, label)

    def test_the_readmes_hold_the_tables_and_the_pictures_are_drawn_from_the_runs(self):
        for path, held in tables.readme_tables().items():
            text = path.read_text(encoding="utf-8")
            for table in held:
                with self.subTest(readme=path.name, table=table.splitlines()[2][:40]):
                    self.assertTrue(table in text, table)
        readme = (HERE / "README.md").read_text(encoding="utf-8")
        for path, svg in tables.pictures().items():
            with self.subTest(picture=path.name):
                self.assertEqual(path.read_text(encoding="utf-8"), svg)
                self.assertIn(f"results/{path.name}", readme)
