"""train.py: the lesson (an epoch, the test, the run, the verdict) on any device, its command line,
and what a user of it meets: bad flags, outputs and stops, each ending in one line with what
finished kept. Training runs on the tiny MNIST of test_data.py, never on the real one."""
import contextlib
import copy
import errno
import inspect
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import unittest
import unittest.mock

import torch
import torch.nn as nn

import data
import models
import plot
import train
from models import MODELS
from test_data import HERE, TinyData, run_main, strict_json


class TestTraining(TinyData):
    """The lesson: a run trains, tests and gives its verdict; its numbers come from the seed."""

    def test_the_readmes_notebook_cell_trains_and_tests_with_torch_alone(self):
        """The README's cell taken as it says, its imports and then the definitions it names,
        in a fresh file run with torch alone: Model 5 trains on a DataLoader and tests (on a GPU
        where there is one, its batches moved there), with the modules' own numbers."""
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
pixels, labels = torch.rand(96, 1, 28, 28), torch.randint(0, 10, (96,))   # batches on the CPU
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pixels, labels), batch_size=32)
model = Model5().to("cuda" if torch.cuda.is_available() else "cpu")
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
        def numbers(seed):   # Model 3's recipe moves the digits: the moves, too, are the seed's
            self.assertEqual(run_main(self.args("--seed", str(seed), "--metrics", str(path)))[0], 0)
            return [{k: v for k, v in e.items() if "second" not in k}
                    for e in json.loads(path.read_text())["epochs"]]
        path = self.tmp / "m.json"
        self.assertEqual(numbers(1), numbers(1))
        self.assertNotEqual(numbers(1), numbers(2))

    def test_a_dry_run_is_one_batch_each_way_and_records_what_ran(self):
        metrics = self.tmp / "m.json"
        code, out, err = run_main(self.args("--dry-run", "--epochs", "1", "--batch-size", "8",
                                            "--test-batch-size", "20", "--metrics", str(metrics),
                                            "--rotation", "0", "--shift", "2"))   # a shift alone
        self.assertEqual((code, err), (0, ""))
        self.assertIn("| 1/1 [", out)
        record, config = strict_json(metrics), strict_json(metrics)["config"]
        self.assertEqual((record["epochs"][0]["test_total"], config["recompute_images"],
                          config["rotation_degrees"], config["shift_pixels"]), (20, 8, 0.0, 2.0))

    def test_recomputing_batchnorm_statistics_changes_the_test_and_not_the_training(self):
        def run(*flags):
            metrics, weights = self.tmp / "m.json", self.tmp / "m.pt"
            code, out, err = run_main(self.args("--augment", "--metrics", str(metrics),
                                                "--save-model", str(weights), *flags))
            self.assertEqual(code, 0, err)
            return out, json.loads(metrics.read_text()), torch.load(weights)
        plain_out, plain, plain_weights = run("--no-recompute-bn")
        out, recomputed, weights = run()   # Model 3's recipe recomputes them
        for before, after in zip(plain["epochs"], recomputed["epochs"]):
            for key in ("train_loss", "train_accuracy", "lr"):
                self.assertEqual(before[key], after[key], key)
            self.assertEqual((before["test_correct"], before["test_loss"]),
                             (after["test_correct_trained_statistics"],
                              after["test_loss_trained_statistics"]))
        self.assertNotEqual([e["test_loss"] for e in plain["epochs"]],
                            [e["test_loss"] for e in recomputed["epochs"]])
        for name, value in plain_weights.items():   # the same weights, other running statistics
            self.assertEqual(torch.equal(value, weights[name]), "running" not in name
                             and "num_batches" not in name, name)
        self.assertIn("Test set, BatchNorm statistics as trained: Average loss:", out)
        self.assertNotIn("BatchNorm statistics as trained", plain_out)

    def test_the_test_does_not_depend_on_the_test_batch_size(self):
        def tested(size):
            argv = self.args("--epochs", "1", "--test-batch-size", size, "--metrics", str(metrics))
            self.assertEqual(run_main(argv)[0], 0)
            return json.loads(metrics.read_text())["epochs"][0]
        metrics = self.tmp / "m.json"
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

    def test_recomputed_statistics_are_those_of_the_images_with_dropout_off_however_batched(self):
        torch.manual_seed(0)
        model = MODELS[3]().train()
        model.convblock2.eval()                      # a mixed mode, to be kept as it is
        modes = [m.training for m in model.modules()]
        images = torch.randn(150, 1, 28, 28)
        fresh = train.recompute_batchnorm_statistics(copy.deepcopy(model), [(images, None)])
        self.assertEqual([m.training for m in fresh.modules()], modes)
        for (name, value), original in zip(fresh.state_dict().items(), model.state_dict().values()):
            self.assertEqual(torch.equal(value, original), "running" not in name
                             and "num_batches" not in name, name)
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
        for extra in (["--no-augment", "--shift", "2"], ["--model", "1", "--rotation", "5"]):
            self.assert_refused_before_the_data(extra, "unused without --augment")

    def test_an_unknown_flag_model_or_device(self):
        for extra, words in ((["--no-such-flag"], "unrecognized arguments"),
                             (["--model", "9"], "--model: invalid choice"),
                             (["--device", "tpu"], "--device: invalid choice")):
            self.assert_refused_before_the_data(extra, words)
        with unittest.mock.patch.object(torch.cuda, "is_available", return_value=False):
            self.assert_refused_before_the_data(["--device", "cuda"], "invalid choice: 'cuda'")

    def test_out_of_memory_ends_with_one_line_suggesting_a_smaller_batch(self):
        for where, failure in (
            (train, RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")),
            (train, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")),
            (data, MemoryError()),   # while the data load, as read_idx's bytearray can
        ):
            name = "train_epoch" if where is train else "load_splits"
            with self.subTest(failure=failure), unittest.mock.patch.object(
                    where, name, side_effect=failure):
                code, _, err = run_main(self.args("--dry-run"))
            self.assert_one_line(code, err, 1)
            self.assertIn("out of memory on cpu; try a smaller --batch-size", err)
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

    def start(self, *command, first_epoch=None):
        """A child process, killed at the test's end whatever happens; where first_epoch names a
        metrics file, once its first epoch is there (waiting up to 15 minutes: a safety net). A
        shell's `nohup ... &` hands a child SIGINT ignored; this one gets Ctrl-C's default back."""
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.addCleanup(lambda: (child.kill(), child.communicate()))
        deadline = time.monotonic() + 900
        while first_epoch and not first_epoch.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return child

    def training(self, *flags):
        """train.py's command for Model 1 on the tiny data, epochs without end."""
        return [sys.executable, str(HERE / "train.py"), "--model", "1", "--epochs", "100000",
                "--data-dir", str(self.tmp / "data"), *flags]

    def test_an_output_that_is_a_folder_in_none_an_input_or_the_other_is_refused_first(self):
        (self.tmp / "sub").mkdir()
        for flag in ("--metrics", "--save-model"):
            for path in ("", str(self.tmp / "new") + os.sep, str(self.tmp / "sub"),
                         str(self.tmp / "no-such-folder" / "x")):
                with self.subTest(flag=flag, path=path):
                    self.assert_refused(["--dry-run", flag, path], f"argument {flag}: cannot write")
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
        metrics, weights = self.tmp / f"{signum}.json", self.tmp / f"{signum}.pt"
        child = self.start(*self.training("--metrics", str(metrics), "--save-model", str(weights)),
                           first_epoch=metrics)
        child.send_signal(signum)
        out, err = child.communicate(timeout=900)
        self.assertEqual((child.returncode, err), (128 + signum, b""))
        record = strict_json(metrics)
        self.assertTrue(record["interrupted"])
        self.assertIn(f"{words}: {len(record['epochs'])} finished epoch(s)", out.decode())
        self.assertFalse(record["result"]["target_met"])
        _, test_split = data.load_splits(self.tmp / "data")
        _, correct, _ = train.evaluate(plot.load_model(weights, 1), data.test_batches(*test_split,
                                                                                     160))
        self.assertEqual(correct, record["epochs"][-1]["test_correct"])
        self.assertEqual(self.temporary_files(), [])

    def test_ctrl_c_and_sigterm_report_the_finished_epochs_and_keep_them_and_their_model(self):
        for signum, words in ((signal.SIGINT, "Interrupted"),
                              (signal.SIGTERM, "Stopped by SIGTERM")):
            with self.subTest(signal=signum):
                self.assert_stopped_by(signum, words)

    def test_a_stop_during_the_verdict_or_the_last_writes_waits_for_them(self):
        """The signal comes while report prints, or while the last metrics are written: the run
        ends as any stopped run does, its files whole and marked interrupted."""
        report, write_whole = train.report, train.write_whole
        for signum in (signal.SIGINT, signal.SIGTERM):
            for moment in ("report", "write_whole"):
                reported = []
                def reporting(*args, moment=moment):
                    reported.append(os.kill(os.getpid(), signum) if moment == "report" else 1)
                    return report(*args)
                def writing(path, content):   # the metrics after the verdict
                    if reported and path.endswith(".json"):
                        os.kill(os.getpid(), signum)
                    write_whole(path, content)
                with self.subTest(signal=signum, moment=moment), \
                        unittest.mock.patch.object(train, "report", reporting), \
                        unittest.mock.patch.object(train, "write_whole", writing):
                    code, out, err = run_main(self.args("--dry-run", "--epochs", "1", "--metrics",
                                                        str(self.tmp / "m.json")))
                    self.assertEqual((code, err), (128 + signum, ""))
                    self.assertIn("Target (", out)
                    record = strict_json(self.tmp / "m.json")
                    self.assertEqual((len(record["epochs"]), record["interrupted"]), (1, True))
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_a_pipe_closed_by_head_ends_the_run_quietly_with_its_finished_epochs_kept(self):
        run = self.start(*self.training("--dry-run", "--metrics", str(self.tmp / "m.json")))
        head = subprocess.run(["head", "-n", "60"], stdin=run.stdout, capture_output=True,
                              timeout=900)
        run.stdout.close()
        self.assertEqual(run.wait(timeout=900), -signal.SIGPIPE)   # as a shell tool ends
        self.assertEqual((len(head.stdout.splitlines()), run.stderr.read()), (60, b""))
        self.assertGreater(len(strict_json(self.tmp / "m.json")["epochs"]), 0)

    def test_a_device_or_pipe_is_written_into_and_a_users_files_are_never_taken(self):
        """A file that is not a regular one (here a FIFO) is written into, not renamed over; the
        temporary file is this process's own, never a user's m.json.tmp or a folder of that name."""
        fifo, read = self.tmp / "fifo", []
        os.mkfifo(fifo)
        reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()), daemon=True)
        reader.start()
        self.addCleanup(lambda: reader.is_alive() and os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        train.write_whole(str(fifo), b"epochs")
        reader.join(timeout=60)
        self.assertEqual((read, stat.S_ISFIFO(os.stat(fifo).st_mode)), ([b"epochs"], True))
        (self.tmp / "m.json.tmp").write_text("mine")
        (self.tmp / "m.pt.tmp").mkdir()
        code, _, err = run_main(self.args("--dry-run", "--metrics", str(self.tmp / "m.json"),
                                          "--save-model", str(self.tmp / "m.pt")))
        self.assertEqual(code, 0, err)
        self.assertEqual((self.tmp / "m.json.tmp").read_text(), "mine")
        self.assertEqual(sorted(self.temporary_files()), ["m.json.tmp", "m.pt.tmp"])

    def progress_lines(self, stream):
        """What the progress line of a 60-step epoch writes to the stream."""
        with contextlib.redirect_stdout(stream):
            show = train.progress(60)
            for step in range(1, 61):
                show(torch.tensor(0.5), torch.tensor(16 * step), 32 * step)
        self.assertRegex(stream.getvalue(), r"Loss=0\.5000 Batch_id=59 Accuracy=50\.00: 100%\|█"
                                            r"{10}\| 60/60 \[00:00<00:00, [\d.]+it/s\]\n$")
        return stream.getvalue()

    def test_the_progress_line_is_redrawn_on_a_terminal_and_printed_once_elsewhere(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True
        for stream, redrawn in ((Terminal(), 3), (io.StringIO(), 0)):   # at 25, 50 and 60
            lines = self.progress_lines(stream)
            self.assertEqual((lines.count("\r"), lines.count("Loss=")), (redrawn, redrawn or 1))
        console = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")   # Windows', redirected
        with contextlib.redirect_stdout(console):
            self.assertEqual(train.main(self.args("--dry-run", "--epochs", "1")), 0)
            console.flush()
        self.assertIn(b"|##########| 1/1", console.buffer.getvalue())   # tqdm's ASCII bar

