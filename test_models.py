"""The models: their shapes, parameter budgets and torchsummary tables, and the README's paste of
each: `python -m unittest`. The other scripts' tests are beside them (test_data.py, test_train.py,
test_plot.py, lab/test_lab.py)."""
import inspect
import re
import subprocess
import sys
import unittest
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import MODELS, count_parameters, summary

HERE = Path(__file__).resolve().parent
TABLE = r"^-{64}\n +Layer \(type\).*?^Estimated Total Size \(MB\): [\d.]+\n-{64}$"


def table_of(path):
    """The first torchsummary table in a file: the write-up's (results/write-up.md, as received)
    hold Models 1-3; a run's log opens with its model's."""
    return re.search(TABLE, (HERE / path).read_text(encoding="utf-8"), re.M | re.S)[0]


class TestModels(unittest.TestCase):
    def test_output_is_log_probabilities_of_10_classes(self):
        for number, model_class in MODELS.items():
            model = model_class().eval()
            for batch in (1, 4):
                with self.subTest(model=number, batch=batch):
                    output = model(torch.randn(batch, 1, 28, 28))
                    self.assertEqual(tuple(output.shape), (batch, 10))
                    torch.testing.assert_close(output.exp().sum(dim=1), torch.ones(batch))

    def test_each_model_keeps_its_parameter_budget(self):   # its exact count: its table's
        budgets = {1: 10000, 2: 10000, 3: 7999, 4: 7999, 5: 6000}   # its story's target
        self.assertEqual(sorted(MODELS), sorted(budgets))
        for number, budget in budgets.items():
            self.assertLessEqual(count_parameters(MODELS[number]())[0], budget, number)

    def test_count_parameters_sees_frozen_ones(self):
        model = MODELS[2]()
        next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight.requires_grad_(False)
        self.assertEqual(count_parameters(model), (9914, 9914 - 72))
        self.assertIn("Non-trainable params: 72", summary(model))

    def test_summary_equals_the_write_ups_tables_and_our_runs_logs(self):
        tables = re.findall(TABLE, (HERE / "results" / "write-up.md").read_text(encoding="utf-8"),
                            re.M | re.S)
        self.assertEqual(len(tables), 3)
        tables += [table_of("results/model4/seed11.log"), table_of("results/model5/seed1.log")]
        for number, table in enumerate(tables, start=1):
            with self.subTest(model=number):
                self.assertEqual(summary(MODELS[number]()), table)

    def test_summary_counts_a_module_called_twice_once(self):
        class Twice(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 3, padding=1)          # 9 weights + 1 bias
                self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

            def forward(self, x):
                return self.head(self.conv(self.conv(x)))

        table = summary(Twice())
        self.assertIn("Conv2d-2", table)             # one row per call ...
        self.assertIn("Linear-4", table)             # ... and nested Sequentials reach their leaves
        self.assertIn("Total params: 7,860", table)  # ... but 10 + 7,850 parameters, counted once

    def test_summary_leaves_the_model_as_it_was(self):
        torch.manual_seed(0)
        model = MODELS[3]().train()
        model.convblock2.eval()
        modes = [m.training for m in model.modules()]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        self.assertEqual(summary(model), summary(model))   # the same table again: no row left over
        self.assertEqual([m.training for m in model.modules()], modes)
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, state[name]), name)  # BatchNorm statistics too
        self.assertTrue(all(p.grad is None for p in model.parameters()))

    def test_the_tables_end_quietly_in_a_pipe_closed_by_head(self):
        tables = subprocess.Popen([sys.executable, "models.py"], cwd=HERE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.addCleanup(tables.kill)
        head = subprocess.run(["head", "-n", "1"], stdin=tables.stdout, capture_output=True,
                              text=True, timeout=900)
        tables.stdout.close()
        _, err = tables.communicate(timeout=900)
        self.assertEqual(err, b"")   # no traceback for the lines head did not take
        self.assertTrue(head.stdout.startswith("Model 1: Target:"))

    def test_the_readmes_paste_of_each_model_builds_it_with_torch_alone(self):
        """Each model's definitions, as the README's notebook section names them, from models.py's
        source into a namespace of torch alone: the model builds, with its parameters."""
        readme = (HERE / "README.md").read_text(encoding="utf-8")
        section = readme.split("### The lesson in a notebook")[1].split("\n#")[0]
        pastes = re.findall(r"`(Net, [\w, ]+)`|# from models\.py: (Net, [\w, ]+)", section)
        pastes = {names.split(", ")[-1]: names.split(", ") for names in map("".join, pastes)}
        self.assertEqual(sorted(pastes), [f"Model{n}" for n in sorted(MODELS)])
        for name, names in pastes.items():
            with self.subTest(model=name):
                pasted = {"torch": torch, "nn": nn, "F": F}
                for definition in names:
                    exec(inspect.getsource(getattr(models, definition)), pasted)
                model = pasted[name]()
                self.assertEqual(count_parameters(model), count_parameters(getattr(models, name)()))
                self.assertEqual(tuple(model.eval()(torch.zeros(2, 1, 28, 28)).shape), (2, 10))
