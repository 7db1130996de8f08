"""Train one of the tiny MNIST models with SGD and StepLR: `python train.py --model 3 --epochs 15`.

Per epoch it prints a progress line and the test result; at the end whether the target was met: at
least 99.40% test accuracy in each of the last 3 epochs. The lesson reads top to bottom (recipes,
an epoch of training, testing, the run, the verdict); the plumbing (flags, files, signals) follows.
"""
import copy
import math
import signal

if __name__ == "__main__":   # Ctrl-C while torch loads ends the script at once, without a traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
from models import summary

# Each model's recipe, its step of the story; every flag overrides it. Models 1 and 2 train as the
# write-up first did; Models 3-5 rotate (4 and 5 shift too), the rate cut tenfold after epochs 6 and
# 12. Models 2 and 3 have Dropout: they test with statistics recomputed without it (results/README.md).
RECIPES = {
    1: dict(batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0, step_size=15, gamma=1.0,
            augment=False, rotation=7.0, shift=0.0, recompute_bn=False),
    2: dict(batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0, step_size=15, gamma=1.0,
            augment=False, rotation=7.0, shift=0.0, recompute_bn=True),
    3: dict(batch_size=32, lr=0.02, momentum=0.9, weight_decay=5e-4, step_size=6, gamma=0.1,
            augment=True, rotation=7.0, shift=0.0, recompute_bn=True),
    4: dict(batch_size=32, lr=0.02, momentum=0.9, weight_decay=5e-4, step_size=6, gamma=0.1,
            augment=True, rotation=7.0, shift=2.0, recompute_bn=False),
    5: dict(batch_size=64, lr=0.04, momentum=0.9, weight_decay=5e-4, step_size=6, gamma=0.1,
            augment=True, rotation=5.0, shift=1.0, recompute_bn=False),
}
TARGET_ACCURACY = 99.40   # percent of the test set, in each of the last TARGET_EPOCHS epochs
TARGET_EPOCHS = 3
RECOMPUTE_IMAGES = 10000  # the first training images, over which BatchNorm statistics are recomputed,
RECOMPUTE_BATCH = 250     # in batches of 250 whatever --test-batch-size is


def train_epoch(model, batches, optimizer, progress):
    """One pass over the batches; `progress` draws the line, sums up and returns (mean loss, accuracy %)."""
    model.train()
    for images, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        loss = F.nll_loss(output, labels)
        loss.backward()
        optimizer.step()
        progress.update(loss, output, labels)
    return progress.close()


def evaluate(model, batches):
    """(mean loss, correct, total) over the test batches, the model in eval mode."""
    model.eval()
    model, layout = fast_test_copy(model)
    loss_sum, correct, total = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in batches:
            output = model(images.contiguous(memory_format=layout))
            loss_sum += F.nll_loss(output, labels, reduction="sum").item()
            correct += (output.argmax(dim=1) == labels).sum().item()
            total += len(labels)
    return loss_sum / total, correct, total


def recompute_batchnorm_statistics(model, batches):
    """A copy of the model whose BatchNorm layers hold statistics measured afresh over `batches`
    of training images with Dropout off, for testing; the model itself is left as it was.

    In training, Dropout zeroes a tenth of each block's activations and scales the rest by 1/0.9, so
    BatchNorm's running variance is not the one test time sees, with Dropout off: the "variance
    shift" (Li et al., CVPR 2019). Training never reads these statistics: only the test changes."""
    fresh, seen = copy.deepcopy(model), 0
    norms = [m for m in fresh.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    fresh.eval()
    for m in norms:
        m.reset_running_stats()
        m.train()
    with torch.no_grad():
        for images, _ in batches:
            for m in norms:
                m.momentum = len(images) / (seen + len(images))   # each image counts the same
            fresh(images)
            seen += len(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for copied, original in zip(fresh.modules(), model.modules()):
        copied.training = original.training
    return fresh


def test_epoch(model, train_split, test_split, args):
    """Test the model, and with args.recompute_bn a copy with recomputed BatchNorm statistics; return
    the test's fields (the copy's, with those as trained beside them) and the model as tested."""
    test = lambda m: evaluate(m, data.test_batches(*test_split, args.test_batch_size))
    loss, correct, total = test(model)
    if not args.recompute_bn:
        return {"test_loss": loss, "test_correct": correct, "test_total": total}, model
    batches = data.test_batches(*(t[:RECOMPUTE_IMAGES] for t in train_split), RECOMPUTE_BATCH)
    tested, seconds = timed(recompute_batchnorm_statistics, model, batches)
    recomputed_loss, recomputed_correct, _ = test(tested)
    return {"test_loss": recomputed_loss, "test_correct": recomputed_correct, "test_total": total,
            "test_loss_trained_statistics": loss, "test_correct_trained_statistics": correct,
            "test_accuracy_trained_statistics": 100 * correct / total, "recompute_seconds": seconds}, tested


def run_epoch(epoch, model, optimizer, train_split, test_split, generator, args):
    """Train one epoch and test; return its record (epoch_record prints it) and the model as tested."""
    print(f"\nEPOCH: {epoch}")
    rotation, shift = (args.rotation, args.shift) if args.augment else (0.0, 0.0)
    batches = data.train_batches(*train_split, args.batch_size, generator, rotation, shift)
    progress = Progress(math.ceil(len(train_split[1]) / args.batch_size))
    train_loss, train_accuracy = train_epoch(model, batches, optimizer, progress)
    tests, tested = test_epoch(model, train_split, test_split, args)
    return epoch_record(epoch, optimizer, progress, train_loss, train_accuracy, tests), tested


def run(args, model_class, log):
    """Train as args say; return the verdict. `log` (a RunLog) keeps every finished epoch."""
    train_split, test_split = load_data(args, model_class)
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    model = model_class().to(args.device)
    print(f"{summary(model)}\nDevice: {args.device}")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
    log.start(model)
    for epoch in range(args.epochs):
        log.epoch(*run_epoch(epoch, model, optimizer, train_split, test_split, generator, args))
        scheduler.step()
    return report(log.history, log.parameters)


def target_met(test_accuracies):
    last = test_accuracies[-TARGET_EPOCHS:]
    return len(last) == TARGET_EPOCHS and all(a >= TARGET_ACCURACY for a in last)


def report(history, parameters):
    """Print the end of the run; return the verdict (as trained too, where the run recomputed)."""
    tests = [e["test_accuracy"] for e in history]
    as_trained = [e["test_accuracy_trained_statistics"] for e in history if "test_accuracy_trained_statistics" in e]
    target = f">= {TARGET_ACCURACY:.2f}% test accuracy in each of the last {TARGET_EPOCHS} epochs"
    verdict = {"best_train_accuracy": max((e["train_accuracy"] for e in history), default=None),
               "best_test_accuracy": max(tests, default=None), "last_test_accuracies": tests[-TARGET_EPOCHS:],
               "target": target, "target_met": target_met(tests)}
    percents = lambda accuracies: ", ".join(f"{a:.2f}%" for a in accuracies[-TARGET_EPOCHS:])
    print()
    if history:
        print(f"Best train accuracy: {verdict['best_train_accuracy']:.2f}%\nBest test accuracy: {max(tests):.2f}%")
    print(f"Total parameters: {parameters:,}")
    if tests:
        print(("Last test accuracy" if len(tests) == 1 else f"Last {len(tests[-TARGET_EPOCHS:])} test accuracies")
              + f": {percents(tests)}")
    if as_trained:
        print(f"  with BatchNorm statistics as trained: {percents(as_trained)}")
    print(f"Target ({target}): {'met' if verdict['target_met'] else 'not met'}")
    if as_trained:
        verdict["last_test_accuracies_trained_statistics"] = as_trained[-TARGET_EPOCHS:]
        verdict["target_met_trained_statistics"] = target_met(as_trained)
        print(f"  with BatchNorm statistics as trained: {'met' if target_met(as_trained) else 'not met'}")
    return verdict


# --------------------------------------------------------------------------------------------------
# The lesson ends here; the rest is plumbing: what the lesson calls (the data and its checks, an
# epoch's record, the progress line), then the command line, the files, the signals, `main`.
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import torchvision

from models import MODELS, count_parameters, forward_backward_bytes

SEED_LIMIT = 2 ** 64 - 1  # the largest seed torch.manual_seed takes
FLOAT32_MAX = torch.finfo(torch.float32).max   # a number flag beyond it is infinite in training
CHECK_EVERY = 25          # steps between reads of the running loss (a host sync on a GPU)


class Refused(Exception):
    """What the loaded data shows wrong before the first step: a flag (status 2), or memory (1)."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class Diverged(Exception):
    """The loss or the weights are no longer finite numbers: the run stops at once (exit 1)."""


def load_data(args, model_class):
    """The splits on the device, once the batch sizes fit the data and the memory (the model is sized
    before the seed is set, drawing no random number the run would); a --dry-run keeps one batch."""
    available = available_memory(args.device)
    train_split, test_split = data.load_splits(args.data_dir, device=args.device)
    if args.batch_size > len(train_split[1]):   # a test batch larger than the test set is all of it
        raise Refused(f"argument --batch-size: {args.batch_size:,} is more than the {len(train_split[1]):,} "
                      "training images")
    args.test_batch_size = min(args.test_batch_size, len(test_split[1]))
    check_memory(model_class(), args, sum(t.nbytes for t in (*train_split, *test_split)), available)
    if args.dry_run:   # one batch of each
        train_split = [t[:args.batch_size] for t in train_split]
        test_split = [t[:args.test_batch_size] for t in test_split]
    args.recompute_images = min(RECOMPUTE_IMAGES, len(train_split[1])) if args.recompute_bn else 0
    return train_split, test_split


def fast_test_copy(model):
    """(model, memory layout) for a test pass: on the CPU a channels_last copy, 1.3-2.9x faster there
    (results/README.md, "Speed"; slower in training), its outputs the plain layout's to 2.4e-7."""
    if next(model.parameters()).device.type != "cpu":
        return model, torch.contiguous_format
    return copy.deepcopy(model).to(memory_format=torch.channels_last), torch.channels_last


def timed(function, *args):
    start = time.perf_counter()
    return function(*args), time.perf_counter() - start


def epoch_record(epoch, optimizer, progress, train_loss, train_accuracy, tests):
    """Print the epoch's test lines and times; return its record for the metrics file."""
    train_seconds = progress.seconds
    test_seconds = time.perf_counter() - progress.start - train_seconds
    line = lambda what, loss, ok, n: f"{what}: Average loss: {loss:.4f}, Accuracy: {ok}/{n} ({100 * ok / n:.2f}%)"
    print(f"\n{line('Test set', tests['test_loss'], tests['test_correct'], tests['test_total'])}")
    recomputing = ""
    if "recompute_seconds" in tests:
        print(line("Test set, BatchNorm statistics as trained", tests["test_loss_trained_statistics"],
                   tests["test_correct_trained_statistics"], tests["test_total"]))
        recomputing = f", {tests['recompute_seconds']:.2f} s of it recomputing BatchNorm statistics"
    print(f"Epoch time: {train_seconds + test_seconds:.1f} s (train {train_seconds:.1f} s, "
          f"{progress.images / train_seconds:,.0f} images/s; test {test_seconds:.2f} s{recomputing})")
    return {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
            "train_accuracy": train_accuracy, "test_accuracy": 100 * tests["test_correct"] / tests["test_total"],
            **tests, "seconds": train_seconds + test_seconds, "train_seconds": train_seconds,
            "test_seconds": test_seconds, "train_images_per_second": progress.images / train_seconds}


class Progress:
    """tqdm's line (loss, batch, accuracy, bar, elapsed<remaining, it/s), redrawn on a terminal and
    written once to a file or pipe; the sums stay on the device, read every CHECK_EVERY steps."""

    def __init__(self, total, stream=None):
        self.total, self.stream = total, stream or sys.stdout
        self.live = self.stream.isatty()
        try:   # a stream of str without an encoding (StringIO) takes any text
            self.block = "█".encode(getattr(self.stream, "encoding", None) or "utf-8") and "█"
        except (UnicodeEncodeError, LookupError):
            self.block = "#"   # an ASCII console gets tqdm's #
        self.start = self.drawn = time.perf_counter()
        self.done = self.images = self.loss_sum = self.correct = 0   # the sums become tensors on the device

    def update(self, loss, output, labels):
        self.loss_sum = self.loss_sum + loss.detach() * len(labels)
        self.correct = self.correct + (output.argmax(dim=1) == labels).sum()
        self.done, self.images = self.done + 1, self.images + len(labels)
        if self.done % CHECK_EVERY == 0 or self.done == self.total:
            self.last_loss = loss.item()
            if not math.isfinite(self.last_loss):
                self.stream.write("\n")
                raise Diverged
            if self.live and time.perf_counter() - self.drawn >= 0.1:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self.drawn = time.perf_counter()

    def close(self):   # the finished line; (mean loss, accuracy %)
        self.seconds = time.perf_counter() - self.start
        self.stream.write(("\r" if self.live else "") + self.line() + "\n")
        self.stream.flush()
        return self.loss_sum.item() / self.images, 100 * self.correct.item() / self.images

    def line(self):
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = (self.block * (self.done * 10 // self.total)).ljust(10)
        clock = lambda seconds: "%02d:%02d" % divmod(int(seconds), 60)
        return (f"Loss={self.last_loss:.4f} Batch_id={self.done - 1} "
                f"Accuracy={100 * self.correct.item() / self.images:.2f}: "
                f"{100 * self.done // self.total:3d}%|{bar}| {self.done}/{self.total} "
                f"[{clock(elapsed)}<{clock(remaining)}, {rate:.2f}it/s]")


# The command line: flags, their ranges, the recipe's defaults, the device.
class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(message):   # a message as one line, whatever a path in it holds
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def bounded(kind, low=0, high=None, low_allowed=False, high_allowed=False):
    """An argparse type: a finite number of `kind` between low and high (each end excluded
    unless allowed; high None: no upper end), else a one-line error that names the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:   # training holds it in float32
            raise argparse.ArgumentTypeError(f"must be a finite number, at most {FLOAT32_MAX:.4g} (float32), "
                                             f"got {text}")
        if not ((value >= low if low_allowed else value > low)
                and (high is None or (value <= high if high_allowed else value < high))):
            wanted = (f"in {'[' if low_allowed else '('}{low}, {high}{']' if high_allowed else ')'}" if high is not None
                      else f"{low} or more" if low_allowed else f"greater than {low}")
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


def build_parser(models=MODELS):
    p = ArgumentParser(description="Train a tiny CNN on MNIST (SGD + StepLR).")
    recipe = lambda what, which="": f"{what} (default: the recipe's{': ' + which if which else ''})"
    p.add_argument("--model", type=int, choices=sorted(models), default=3, help="which model (default: 3)")
    p.add_argument("--epochs", type=bounded(int), default=15, help="epochs to train (default: 15)")
    p.add_argument("--batch-size", type=bounded(int), help=recipe("training batch size", "32, 64 for Model 5"))
    p.add_argument("--test-batch-size", type=bounded(int), default=250,
                   help="test batch size; one larger than the test set is all of it (default: 250)")
    p.add_argument("--lr", type=bounded(float), help=recipe("learning rate"))
    p.add_argument("--momentum", type=bounded(float, 0, 1, low_allowed=True),
                   help=recipe("SGD momentum, in [0, 1)", "0.9"))
    p.add_argument("--weight-decay", type=bounded(float, low_allowed=True),
                   help=recipe("SGD weight decay", "0, 5e-4 for Models 3 to 5"))
    p.add_argument("--step-size", type=bounded(int), help=recipe("StepLR: epochs between decays"))
    p.add_argument("--gamma", type=bounded(float), help=recipe("StepLR: factor at each decay"))
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help=recipe("rotate (and --shift) the training images", "Models 3 to 5"))
    p.add_argument("--rotation", type=bounded(float, 0, 180, high_allowed=True), metavar="DEGREES",
                   help=recipe("with --augment, the largest angle of rotation, in (0, 180]", "7, 5 for Model 5"))
    p.add_argument("--shift", type=bounded(float, 0, 14, low_allowed=True), metavar="PIXELS",
                   help=recipe("with --augment, the largest shift along each axis, in [0, 14)",
                               "2 for Model 4, 1 for Model 5, else 0"))
    p.add_argument("--recompute-bn", action=argparse.BooleanOptionalAction, help=recipe(
        "test with BatchNorm statistics recomputed without Dropout, and as trained beside them", "Models 2 and 3"))
    p.add_argument("--seed", type=bounded(int, 0, SEED_LIMIT, low_allowed=True, high_allowed=True), default=1,
                   help=f"random seed, in [0, {SEED_LIMIT}] (default: 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(), help="MNIST/raw's folder ($MNIST_DIR, else ./data)")
    p.add_argument("--save-model", metavar="PATH", help="write the final state_dict here, as last tested")
    p.add_argument("--metrics", metavar="PATH", help="write the configuration and per-epoch metrics here (JSON)")
    p.add_argument("--dry-run", action="store_true", help="one batch of training and of testing per epoch")
    return p


def parse_args(argv=None, models=MODELS, recipes=RECIPES):
    """The flags, the model's recipe filling in the rest; refused before any work: augmentation
    flags without --augment, a schedule beyond float32, an output that cannot be written."""
    parser = build_parser(models)
    args = parser.parse_args(argv)
    given = {name for name, value in vars(args).items() if value is not None}
    vars(args).update({name: value for name, value in recipes[args.model].items() if name not in given})
    if not args.augment and given & {"rotation", "shift"}:
        parser.error("argument --rotation/--shift: unused without --augment (this model's recipe has none)")
    decays = (args.epochs - 1) // args.step_size
    if args.gamma > 1 and math.log(args.lr) + decays * math.log(args.gamma) > math.log(FLOAT32_MAX):
        parser.error(f"argument --gamma: {decays} decays by {args.gamma:g} take lr {args.lr:g} past float32")
    args.data_dir = os.path.expanduser(args.data_dir)
    inputs = [data.raw_folder(args.data_dir) / name for name in data.RAW_FILES]
    for flag, name in (("--save-model", "save_model"), ("--metrics", "metrics")):
        path = getattr(args, name) and os.path.expanduser(getattr(args, name))
        setattr(args, name, path)
        if path is not None and (problem := unwritable(path, inputs)):
            parser.error(f"argument {flag}: cannot write {path}: {problem}")
    if args.save_model and args.metrics and os.path.realpath(args.save_model) == os.path.realpath(args.metrics):
        parser.error(f"argument --metrics: {args.metrics} is the --save-model file too; give each its own")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        parser.error(f"argument --device: {e}")
    return args


def pick_device(name):
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    name = next(d for d in ("cuda", "mps", "cpu") if available[d]) if name == "auto" else name
    if not available[name]:
        raise ValueError(f"{name} is not available on this machine")
    return torch.device(name)


def available_memory(device):
    """Bytes free on the device: the GPU's, or Linux's MemAvailable; None where it is not known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            return 1024 * int(next(line for line in f if line.startswith("MemAvailable:")).split()[1])
    return None


def check_memory(model, args, data_bytes, available):
    """Refuse a batch that cannot fit: a training batch's activations and gradients (the summary's
    per-image figure) or a test batch's activations, the data, the parameters, gradients, momentum."""
    flag, batch = "--batch-size", args.batch_size
    if args.test_batch_size > 2 * args.batch_size:   # a test pass keeps no gradients: half as much
        flag, batch = "--test-batch-size", args.test_batch_size
    needed = (forward_backward_bytes(model) * max(args.batch_size, args.test_batch_size / 2) + data_bytes
              + 3 * 4 * count_parameters(model)[0])
    if available is not None and needed > available:
        step, gib = "a training step" if flag == "--batch-size" else "a test pass", 1024 ** 3
        raise Refused(f"{step} at {flag} {batch:,} needs about {needed / gib:.1f} GiB but {args.device} has "
                      f"{available / gib:.1f} GiB available; use a smaller {flag}", status=1)


# Files: one writer for every output, its path checked before any work, never left half written.
def unwritable(path, inputs=()):
    """Why a file cannot be written at path, or None. A symbolic link is written through to its
    target; anything there but a regular file, and any of the `inputs`, is refused."""
    if not path:
        return "the path is empty"
    target = os.path.realpath(path)
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or os.path.isdir(target):
        return "it names a folder, not a file"
    if target in [os.path.realpath(p) for p in inputs]:
        return "it is one of the input files"
    if os.path.lexists(target) and not os.path.isfile(target):
        return "it is not a regular file"
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(target)):   # the folder takes the temporary file
            pass
        if not os.path.exists(target):   # and the name itself is allowed (its length, its bytes)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(target)
    except OSError as e:
        return e.strerror or str(e)
    return None


def write_atomically(path, write):
    """Call write(file) on a temporary file beside path's target, then rename it over the target,
    so that a reader (or a run that dies) never sees half a file. An OSError names the path."""
    target, tmp = os.path.realpath(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0o022)   # read it (it is only had by setting it), then put it back
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)   # the mode open() would give it, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError, TypeError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, path) from None
        raise


def save_json(path, obj):
    """Strict JSON (a NaN is refused, never written as a bare NaN token), written whole."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()))


class RunLog:
    """The configuration and every finished epoch, in --metrics; at the end the verdict and the model."""

    def __init__(self, args, record=None):
        self.args, self.record, self.parameters, self.tested, self.history = args, record or {}, None, None, []
        self.metrics = {"config": None, "epochs": self.history}   # the finished epochs are its list

    def start(self, model):
        args, self.parameters = self.args, count_parameters(model)[0]
        self.metrics["config"] = {
            "model": args.model, "parameters": self.parameters, "epochs": args.epochs,
            "batch_size": args.batch_size, "test_batch_size": args.test_batch_size,
            "optimizer": "SGD", "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
            "scheduler": "StepLR", "step_size": args.step_size, "gamma": args.gamma,
            "augment": args.augment, "rotation_degrees": args.rotation if args.augment else 0.0,
            "shift_pixels": args.shift if args.augment else 0.0,
            "recompute_bn": args.recompute_bn, "recompute_images": args.recompute_images,
            "seed": args.seed, "device": str(args.device), "dry_run": args.dry_run, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, **self.record}

    def epoch(self, record, tested):   # a finished epoch, unless a number in it or a weight is not finite
        numbers = [n for n in record.values() if isinstance(n, float)] + [p.sum().item() for p in tested.parameters()]
        if not all(math.isfinite(n) for n in numbers):
            raise Diverged
        self.history.append(record)
        self.tested = tested
        self.save_metrics()

    def save_metrics(self):
        if self.args.metrics and self.metrics["config"] is not None:
            save_json(self.args.metrics, self.metrics)

    def finish(self, verdict, interrupted=False):
        """Write the verdict, and the model unless the run was stopped: each even if the other fails."""
        self.metrics.update(result=verdict, **({"interrupted": True} if interrupted else {}))
        model = self.args.save_model and self.tested is not None and not interrupted
        try:
            self.save_metrics()
        finally:   # the model is written even where the metrics cannot be
            if model:
                self.save_model()

    def save_model(self):   # the model as last tested: with recomputed statistics where it was so tested
        write_atomically(self.args.save_model, lambda f: torch.save(self.tested.state_dict(), f))
        print(f"Saved the model's state_dict to {self.args.save_model}")


# Stopping: Ctrl-C and SIGTERM end a run the same way, its finished epochs kept.
STOPS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (kill, a job scheduler, a container stop), raised where the run is."""

    def __str__(self):
        return "Stopped by SIGTERM" if self.args[0] == signal.SIGTERM else "Interrupted"


def stop(signum, frame):
    """The first signal stops the run; another while it is being stopped changes nothing."""
    for s in STOPS:
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


# The script: one error boundary, where every failure becomes one line and an exit status.
def main(argv=None, models=MODELS, recipes=RECIPES, record=None):
    """`models`, `recipes` and `record` let the lab's screen (lab/screen.py) train a candidate in a
    model's place: the model classes and recipes by number, and what the metrics record of it."""
    args = parse_args(argv, models, recipes)
    log, prog = RunLog(args, record), os.path.basename(sys.argv[0])
    previous, came = [signal.signal(s, stop) for s in STOPS], []
    try:
        verdict = run(args, models[args.model], log)
        for s in STOPS:   # training has finished: its files are written whatever signal comes
            signal.signal(s, lambda signum, frame: came.append(signum))
        log.finish(verdict)
        if came:
            print(f"{Stopped(came[0])} after training finished; the model and metrics are written.", file=sys.stderr)
        return 128 + came[0] if came else 0
    except Stopped as stopped:
        previous = [signal.SIG_IGN] * 2   # as stop() left them: the run is ending, whatever comes
        if log.parameters is None:
            print(f"\n{stopped} before training started.", file=sys.stderr)
        else:
            print(f"\n{stopped}: {len(log.history)} finished epoch(s) reported below.")
            log.finish(report(log.history, log.parameters), interrupted=True)
        return 128 + stopped.args[0]   # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    except (Refused, data.DataError) as e:   # a flag's value (2), or what cannot be had (1)
        status = getattr(e, "status", 1)
        print(f"{prog + ': ' if status == 2 else ''}error: {one_line(e)}", file=sys.stderr)
        return status
    except Diverged:
        print(f"error: the loss or the weights became NaN or infinite in epoch {len(log.history)}; "
              f"try a lower --lr (this run used {args.lr:g})", file=sys.stderr)
        return 1
    except OSError as e:   # a file that could not be written, or an output stream that broke
        if e.filename is not None:
            print(f"error: cannot write {one_line(e.filename)}: {e.strerror}", file=sys.stderr)
            return 1
        with contextlib.suppress(OSError, ValueError):   # so that nothing more is written to it at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        kept = f"; {len(log.history)} finished epoch(s) are in {args.metrics}" if args.metrics and log.history else ""
        print(f"error: the output stream failed ({e.strerror or e}){kept}", file=sys.stderr)
        return 1
    finally:
        for s, handler in zip(STOPS, previous):
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
