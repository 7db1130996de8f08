"""The lab's tests: its tables, the screen of candidates, and the runs committed under results/
with the tables and picture made from them. Found by `python -m unittest` from the project's root.
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

import plot
import train
from lab import screen, tables
from models import MODELS, count_parameters, summary

HERE = Path(__file__).resolve().parent.parent
# A run's configuration as train.py writes it for Model 3's recipe (the keys the tables read).
MODEL3_CONFIG = dict(
    train.RECIPES[3], model=3, rotation_degrees=7.0, shift_pixels=0.0, dry_run=False
)
VERDICT = {"best_train_accuracy": 99.0}   # the verdict's field that the tables read


class TestTables(unittest.TestCase):
    def test_the_recipe_summary_groups_the_seeds_of_a_recipe_and_skips_unfinished_runs(self):
        def run(seed, tests, epochs=15, trained=None):   # the first epochs of each at 99.0
            config = dict(MODEL3_CONFIG, seed=seed, epochs=epochs, recompute_bn=trained is not None)
            padding = epochs - 4
            epochs_ = [{"test_accuracy": t} for t in [99.0] * padding + tests]
            for epoch, t in zip(epochs_, [99.0] * padding + (trained or [])):
                epoch["test_accuracy_trained_statistics"] = t
            return {"config": config, "epochs": epochs_, "result": VERDICT}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "trials"
            (folder / "model3").mkdir(parents=True)
            for name, metrics in (
                ("a_seed1", run(1, [99.0, 99.4, 99.5, 99.6])),
                ("a_seed2", run(2, [99.0, 99.3, 99.4, 99.5])),
                ("a_seed3", run(3, [99.0, 99.5, 99.5])),  # stopped early: 14 of 15
                ("b_seed1", run(1, [99.0, 99.5, 99.5, 99.5])),
                ("model3/seed1", run(1, [99.0, 99.5, 99.5, 99.5], trained=[99, 99.4, 99.4, 99.3])),
                ("model3/seed2", run(2, [99.0, 99.4, 99.5, 99.6], trained=[99, 99.4, 99.4, 99.4])),
            ):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            lines = tables.recipe_summary(folder, fewest=2).splitlines()
        self.assertEqual(len(lines), 4)   # header, rule, model3/ and recipe a; b has one seed
        self.assertEqual(
            lines[2], "| `model3` | 3 | 2 | 2/2 | 99.50 | 0.00 | 99.40 | 1/2 | 99.38 |"
        )
        self.assertEqual(lines[3], "| `a` | 3 | 2 | 1/2 | 99.45 | 0.07 | 99.30 | — | — |")

    def test_the_frontier_shows_per_recipe_and_size_the_best_design_beside_its_model(self):
        def run(name, seed, tests, parameters=5000, model=4, **changes):
            recipe = train.RECIPES[model]
            config = dict(
                recipe, candidate=name, model=4, seed=seed, epochs=15, parameters=parameters,
                layers="8p1 M 10p0", rotation_degrees=recipe["rotation"],
                shift_pixels=recipe["shift"],
            )
            config.update(changes)
            return {"config": config, "result": VERDICT,
                    "epochs": [{"test_accuracy": t} for t in [99.0] * 11 + tests]}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in (1, 2):
                for metrics in (
                    run("a-worse", seed, [99.0, 99.4, 99.4, 99.4]),
                    run("better", seed, [99.0, 99.5, 99.5, 99.4]),
                    run("best-but-other-recipe", seed, [99.6] * 4, weight_decay=0.0),
                    run("best-but-other-shift", seed, [99.6] * 4, shift_pixels=3.0),
                    run("small", seed, [99.0, 99.3, 99.3, 99.3], parameters=3000, conv_bias=True),
                    run(
                        "on-model5s", seed, [99.0, 99.6, 99.5, 99.4], parameters=4000, model=5,
                        order="conv-bn-relu",
                    ),
                ):
                    (Path(tmp) / f"{metrics['config']['candidate']}_seed{seed}.json").write_text(
                        json.dumps(metrics)
                    )
            lines = tables.frontier_table(Path(tmp)).splitlines()
        self.assertEqual(
            len(lines), 7
        )  # header, rule, Model 4 and its two sizes, Model 5 and its one
        self.assertTrue(
            lines[2].startswith("| Model 4's | 7,788 |")
            and "(Model 4)" in lines[2]
            and "| 1–2 |" in lines[2]
        )
        self.assertEqual(lines[3], "| Model 4's | 5,000 | 8 / 10 | — | 1–2 | 2/2 | 99.47 |")
        self.assertEqual(lines[4], "| Model 4's | 3,000 | 8 / 10 | biases | 1–2 | 0/2 | 99.30 |")
        self.assertTrue(
            lines[5].startswith("| Model 5's | 5,936 |")
            and "(Model 5)" in lines[5]
            and "| 1–2 |" in lines[5]
        )
        self.assertEqual(
            lines[6], "| Model 5's | 4,000 | 8 / 10 | BatchNorm before ReLU | 1–2 | 2/2 | 99.50 |"
        )

    def test_a_run_is_trained_as_a_recipe_only_with_its_optimizer_schedule_batch_and_augmentation(
        self,
    ):
        recipe = train.RECIPES[4]
        config = dict(recipe, rotation_degrees=7.0, shift_pixels=2.0, recompute_bn=True)
        self.assertTrue(tables.trained_as(config, recipe))          # testing differently is allowed
        for change in (dict(lr=0.05), dict(momentum=0.8), dict(batch_size=64), dict(step_size=8),
                       dict(rotation_degrees=10.0), dict(shift_pixels=0.0)):
            with self.subTest(change=change):
                self.assertFalse(tables.trained_as(dict(config, **change), recipe))
        self.assertTrue(
            tables.trained_as(dict(train.RECIPES[1], rotation_degrees=0.0), train.RECIPES[1])
        )

    def test_a_layer_string_reads_as_channels_per_stage(self):
        self.assertEqual(
            tables.channels("8p1 12p1 M 16p1 16p0 M 11p0 10p0"), "8, 12 / 16, 16 / 11, 10"
        )
        self.assertEqual(
            tables.channels("8p1 12p1 M 32s1 32s0 M 44s1 44s0"), "8, 12 / 32, 32 / 44, 44"
        )
        self.assertEqual(tables.channels("4p1 4p1 4p1"), "4, 4, 4")

    def test_seeds_read_as_ranges_of_consecutive_ones(self):
        runs = [{"config": {"seed": seed}} for seed in (1, 2, 3, 5, 31, 32, 33, 40)]
        self.assertEqual(tables.seeds(runs), "1–3, 5, 31–33, 40")
        self.assertEqual(tables.seeds(runs[3:4]), "5")

    def test_a_dry_run_or_an_unfinished_run_is_never_counted_and_is_named(self):
        def run(seed, dry_run=False, interrupted=False, epochs=15):
            config = dict(MODEL3_CONFIG, seed=seed, epochs=15, dry_run=dry_run, recompute_bn=False)
            record = {"config": config, "epochs": [{"test_accuracy": 42.73}] * epochs}
            return dict(record, interrupted=True) if interrupted else dict(record, result=VERDICT)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model3"
            folder.mkdir()
            for name, metrics in (
                ("seed1", run(1)), ("seed2", run(2)), ("seed3", run(3, dry_run=True)),
                ("seed4", run(4, interrupted=True)), ("seed5", run(5, epochs=2)),
                ("seed6", {k: v for k, v in run(6).items() if k != "result"}),   # no verdict
            ):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            lines = tables.recipe_summary(Path(tmp), fewest=2).splitlines()
            skipped = tables.not_counted(Path(tmp))
        self.assertEqual(lines[2].split(" | ")[2], "2")   # seeds 1 and 2 only
        self.assertEqual(
            [(p.as_posix(), why) for p, why in skipped],
            [
                ("model3/seed3.json", "a --dry-run"),
                ("model3/seed4.json", "interrupted (15 of 15 epochs)"),
                ("model3/seed5.json", "unfinished (2 of 15 epochs)"),
                ("model3/seed6.json", "no verdict (15 of 15 epochs): stopped after its last epoch"),
            ],
        )

    def test_a_run_of_another_recipe_or_length_or_not_a_run_is_not_counted_and_is_named(self):
        def run(seed, epochs=15, **change):
            config = dict(MODEL3_CONFIG, seed=seed, epochs=epochs, **change)
            return {"config": config, "epochs": [{"test_accuracy": 99.5}] * epochs,
                    "result": VERDICT}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model3"
            folder.mkdir()
            for name, metrics in (
                ("seed1", run(1)),
                ("seed2", run(2, epochs=1)),
                ("seed3", run(3, lr=1e30)),
            ):
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            (folder / "seed4.json").write_text('{"config": {"model": 3, "ep')   # half written
            (folder / "seed5.json").write_text('[1, 2, 3]')                     # another program's
            with unittest.mock.patch.object(tables, "RESULTS", Path(tmp)):
                self.assertEqual([r["config"]["seed"] for r in tables.model_runs(3)], [1])
                skipped = dict((p.as_posix(), why) for p, why in tables.not_counted(Path(tmp)))
        self.assertEqual(sorted(skipped), [f"model3/seed{s}.json" for s in (2, 3, 4, 5)])
        self.assertIn("recipe of 15 epochs", skipped["model3/seed2.json"])
        self.assertIn("recipe of 15 epochs", skipped["model3/seed3.json"])
        self.assertIn("not a metrics file", skipped["model3/seed4.json"])
        self.assertIn("not a metrics file", skipped["model3/seed5.json"])

    def test_a_copy_or_a_run_with_a_field_missing_or_not_a_number_is_not_counted_and_is_named(self):
        run = lambda seed, **epoch: {"config": dict(MODEL3_CONFIG, seed=seed, epochs=15),
                                     "epochs": [dict({"test_accuracy": 99.5}, **epoch)] * 15,
                                     "result": VERDICT}
        broken = {
            "seed21copy": run(21),
            "seed22": dict(run(22), epochs=[None] * 15),
            "seed23": dict(run(23), config=dict(MODEL3_CONFIG, seed="23", epochs=15)),
            "seed24": run(24, test_accuracy=float("nan")),
            "seed25": {"config": MODEL3_CONFIG},
        }
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model3"
            folder.mkdir()
            for name, metrics in {"seed21": run(21), **broken}.items():
                (folder / f"{name}.json").write_text(json.dumps(metrics))
            with unittest.mock.patch.object(tables, "RESULTS", Path(tmp)):
                self.assertEqual([r["config"]["seed"] for r in tables.model_runs(3)], [21])
                skipped = dict((p.stem, why) for p, why in tables.not_counted(Path(tmp)))
        self.assertEqual(sorted(skipped), sorted(broken))
        self.assertIn("a copy of another run", skipped["seed21copy"])

    def test_the_command_refuses_a_flag_it_does_not_know_and_runs_by_its_path(self):
        for argv in (["--wirte"], ["results"]):
            with self.subTest(argv=argv), contextlib.redirect_stderr(err := io.StringIO()):
                with self.assertRaises(SystemExit) as stop:
                    tables.main(argv)
            self.assertEqual(stop.exception.code, 2)
            self.assertEqual(len(err.getvalue().strip().splitlines()), 1)
        result = subprocess.run([sys.executable, "lab/tables.py", "--help"], cwd=HERE,
                                capture_output=True, text=True, timeout=900)
        self.assertEqual((result.returncode, result.stderr), (0, ""))


def screened(argv):
    """lab.screen's exit status for argv, and what it wrote on stderr."""
    with contextlib.redirect_stderr(err := io.StringIO()):
        try:
            return screen.main(argv), err.getvalue()
        except SystemExit as stop:   # argparse's, for a bad argument
            return stop.code, err.getvalue()


class TestScreen(unittest.TestCase):
    def test_models_4_and_5_are_the_screens_choices_weight_for_weight(self):
        """So the screen's runs of m3-nodrop-shift2 are Model 4's seeds 1-10, and those of
        p5936-bnrelu-batch64-shift1 Model 5's seeds 1-10 and 31-50."""
        weights = lambda model: [t for t in model.state_dict().values() if t.is_floating_point()]
        for number, name in ((4, "m3-nodrop-shift2"), (5, "p5936-bnrelu-batch64-shift1")):
            with self.subTest(model=number):
                self.assertEqual(
                    dict(train.RECIPES[3], **screen.CANDIDATES[name]["recipe"]),
                    train.RECIPES[number],
                )
                self.assertEqual(screen.CANDIDATES[name]["layers"], tables.LAYERS[number])
                torch.manual_seed(0)
                model = MODELS[number]()
                torch.manual_seed(0)
                candidate = screen.model_class(name)()
                self.assertEqual(len(weights(model)), len(weights(candidate)))
                for ours, theirs in zip(weights(model), weights(candidate)):
                    self.assertTrue(torch.equal(ours, theirs))
                digits = torch.randn(4, 1, 28, 28)
                torch.testing.assert_close(model.eval()(digits), candidate.eval()(digits))

    def test_each_candidates_table_counts_its_parameters(self):
        for name in screen.CANDIDATES:
            with self.subTest(candidate=name):
                model = screen.model_class(name)()
                self.assertIn(f"Total params: {count_parameters(model)[0]:,}", summary(model))
                self.assertEqual(tuple(model.eval()(torch.zeros(2, 1, 28, 28)).shape), (2, 10))

    def test_an_unknown_candidate_or_a_model_exits_2_with_one_line(self):
        for argv in (["no-such-design", "--seed", "1"], ["m3-nodrop", "--model", "3"],
                     ["m3-nodrop", "--model=3"]):
            with self.subTest(args=argv):
                code, err = screened(argv)
                self.assertEqual((code, len(err.strip().splitlines())), (2, 1))
        with contextlib.redirect_stdout(out := io.StringIO()):
            self.assertEqual(screen.main(["--help"]), 0)
        self.assertIn("python -m lab.screen NAME", out.getvalue())

    def test_the_screen_gives_train_main_the_candidate_as_model_4_and_changes_no_global(self):
        before = (dict(train.MODELS), {k: dict(v) for k, v in train.RECIPES.items()})
        with unittest.mock.patch.object(train, "main", return_value=0) as main:
            self.assertEqual(screen.main(["p5936-lr04", "--dry-run"]), 0)
        (argv,), given = main.call_args
        self.assertEqual(argv, ["--dry-run", "--model", "4"])
        self.assertEqual(count_parameters(given["models"][4]())[0], 5936)
        self.assertEqual(given["recipes"][4]["lr"], 0.04)
        self.assertEqual(given["record"]["candidate"], "p5936-lr04")
        self.assertEqual((dict(train.MODELS), {k: dict(v) for k, v in train.RECIPES.items()}),
                         before)


class TestCommittedResults(unittest.TestCase):
    """The runs under results/ (made by train.py) and the tables and picture made from them, so
    that neither README can drift from the runs."""

    def test_every_committed_run_is_complete_with_the_right_verdict_unless_named_stopped(self):
        paths = sorted(tables.RESULTS.rglob("*.json"))
        self.assertGreater(len(paths), 100)
        for path in paths:
            run = tables.read_run(path)
            self.assertIsNotNone(run, path)
            with self.subTest(run=str(path.relative_to(tables.RESULTS))):
                self.assertFalse(run["config"]["dry_run"])
                self.assertEqual(tables.finished(run, path), not path.stem.endswith("_stopped"))
                if tables.finished(run, path):
                    self.assertEqual(
                        run["result"]["target_met"], train.target_met(tables.test_accuracies(run))
                    )
                if run["config"].get("recompute_bn"):
                    self.assertEqual(run["result"]["target_met_trained_statistics"],
                                     train.target_met(tables.as_trained(run)))

    def test_the_runs_of_each_recipe_follow_it_on_the_seeds_the_readme_names(self):
        expected_seeds = {
            1: [*range(1, 4)],
            2: [*range(1, 4)],
            3: [*range(1, 51)],
            4: [*range(1, 51)],
            5: [*range(1, 51)],
        }
        self.assertEqual(sorted(expected_seeds), sorted(train.RECIPES))
        for model, expected in expected_seeds.items():
            runs = tables.model_runs(model)
            self.assertEqual([run["config"]["seed"] for run in runs], expected, model)
            for run in runs:
                config = run["config"]
                with self.subTest(model=model, seed=config["seed"]):
                    self.assertTrue(
                        (tables.RESULTS / f"model{model}" / f"seed{config['seed']}.log").is_file()
                    )
                    self.assertEqual(config["model"], model)
                    self.assertEqual(config["parameters"], count_parameters(MODELS[model]())[0])
                    recipe = train.RECIPES[model]
                    self.assertTrue(tables.trained_as(config, recipe))
                    self.assertEqual(config.get("recompute_bn", False), recipe["recompute_bn"])
                    self.assertEqual(config.get("recompute_images", 0),
                                     train.RECOMPUTE_IMAGES if recipe["recompute_bn"] else 0)

    def test_model5s_runs_repeat_the_screens_runs_of_its_design_epoch_for_epoch(self):
        """So the screen's choice and its confirmation are Model 5's own numbers
        (results/README.md)."""
        screened = {
            run["config"]["seed"]: run
            for folder in (tables.SCREEN_6000, tables.CONFIRM_6000)
            for _, run in tables.metrics_files(folder, "p5936-bnrelu-batch64-shift1_seed*.json")
        }
        numbers = lambda run: [
            (e["train_loss"], e["train_accuracy"], e["test_loss"], e["test_correct"])
            for e in run["epochs"]
        ]
        runs = [run for run in tables.model_runs(5) if run["config"]["seed"] in screened]
        self.assertEqual([run["config"]["seed"] for run in runs], sorted(screened))
        for run in runs:
            with self.subTest(seed=run["config"]["seed"]):
                self.assertEqual(numbers(run), numbers(screened[run["config"]["seed"]]))

    def test_the_reliability_picture_shows_each_confirmed_design_once_on_ten_seeds_or_more(self):
        points = tables.reliability_points()
        labels = [label for label, *_ in points]
        self.assertEqual(len(labels), len(set(labels)))
        self.assertEqual(labels[:3], ["Model 3", "Model 4", "Model 5"])
        for folder in (tables.CONFIRM_5000, tables.CONFIRM_4500):
            for runs in tables.candidate_runs(folder).values():
                self.assertIn(f"{runs[0]['config']['parameters']:,}", labels)
        for label, parameters, met, seeds, level in points:
            with self.subTest(point=label):
                self.assertGreaterEqual(seeds, 10)
                self.assertLessEqual(met, seeds)
                self.assertTrue(label.endswith(f"{parameters:,}") or label.startswith("Model"))

    def test_the_readmes_hold_the_tables_and_the_picture_is_drawn_from_the_runs(self):
        for path, held in tables.readme_tables().items():
            text = path.read_text(encoding="utf-8")
            for table in held:
                with self.subTest(readme=path.name, table=table.splitlines()[2][:40]):
                    self.assertIn(table, text)
        self.assertIn("results/accuracy.svg", (HERE / "README.md").read_text())
        self.assertEqual(tables.SVG.read_text(), tables.accuracy_svg())
        self.assertEqual(tables.RELIABILITY.read_text(), tables.reliability_svg())
        self.assertIn("results/reliability.svg", (HERE / "README.md").read_text())
        self.assertIn("results/curves.svg", (HERE / "README.md").read_text())   # plot.py's picture
        self.assertEqual(tables.CURVES.read_text(),
                         plot.curves(tables.read_run(tables.CURVES_RUN), tables.CURVES_RUN.name))
