"""Train one of the tiny MNIST models: `python train.py --model 3 --epochs 15`.

Plain SGD with momentum and a StepLR schedule, one model per run. It prints the model's table,
a progress line and the test result for every epoch, and at the end whether the target was met:
at least 99.40% test accuracy in each of the last 3 epochs. Run `python train.py --help` for flags.

It reads top to bottom as the lesson: the recipes, one epoch of training, testing, an epoch and a
run, the verdict. The plumbing that keeps a run robust (the command line and its checks, files,
the progress line) comes after it, and `main` last.
"""
import argparse
import copy
import json
import math
import os
import signal
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import data
from models import MODELS, count_parameters, forward_backward_bytes, summary

# Each model's recipe: the defaults that tell its step of the story. Every flag overrides them.
# Models 1 and 2 train as the write-up first trained them: no augmentation and a constant rate
# (gamma 1.0 leaves it unchanged). Models 3 and 4 rotate by up to the write-up's 7 degrees, with
# lr 0.02 cut tenfold after epochs 6 and 12 and weight decay 5e-4, chosen in full 15-epoch runs
# (results/README.md). In Models 2-4 Dropout feeds BatchNorm during training, so they test with
# BatchNorm statistics recomputed without it (recompute_batchnorm_statistics).
RECIPES = {
    1: dict(batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0, step_size=15, gamma=1.0,
            augment=False, rotation=7.0, shift=0.0, recompute_bn=False),
    2: dict(batch_size=32, lr=0.01, momentum=0.9, weight_decay=0.0, step_size=15, gamma=1.0,
            augment=False, rotation=7.0, shift=0.0, recompute_bn=True),
    3: dict(batch_size=32, lr=0.02, momentum=0.9, weight_decay=5e-4, step_size=6, gamma=0.1,
            augment=True, rotation=7.0, shift=0.0, recompute_bn=True),
    4: dict(batch_size=32, lr=0.02, momentum=0.9, weight_decay=5e-4, step_size=6, gamma=0.1,
            augment=True, rotation=7.0, shift=2.0, recompute_bn=False),
}
TARGET_ACCURACY = 99.40   # percent of the test set, in each of the last TARGET_EPOCHS epochs
TARGET_EPOCHS = 3
CHECK_EVERY = 25          # steps between reads of the running loss (a host sync on a GPU)
RECOMPUTE_IMAGES = 10000  # the first training images, over which BatchNorm statistics are recomputed
SEED_LIMIT = 2 ** 64 - 1  # the largest seed torch.manual_seed takes
FLOAT32_MAX = torch.finfo(torch.float32).max   # a number flag beyond it is infinite in training


# Training: one pass over the training images.
def train_epoch(model, batches, steps, optimizer):
    """One pass over the training batches; returns (mean loss, accuracy %).

    Loss and correct counts add up on the device and are read every CHECK_EVERY steps, to draw
    the progress line and to stop at once if the loss is no longer a finite number."""
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    progress = Progress(steps)
    for step, (images, labels) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        loss = F.nll_loss(output, labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        correct += (output.argmax(dim=1) == labels).sum()
        seen += len(labels)
        if step % CHECK_EVERY == 0 or step == steps:
            last_loss = loss.item()
            if not math.isfinite(last_loss):
                progress.stream.write("\n")
                raise Diverged
            progress.update(step, last_loss, 100 * correct.item() / seen)
        if step == steps:
            break
    accuracy = 100 * correct.item() / seen
    progress.close(step, last_loss, accuracy)
    return loss_sum.item() / seen, accuracy


# Testing: as trained, and with BatchNorm statistics recomputed.
def evaluate(model, batches, steps):
    """(mean loss, correct, total) over the test batches (a host sync per batch: a few a pass).

    On the CPU the pass runs on a copy of the model in the channels_last memory layout: there the
    forward pass over the test set ran 1.3-2.9x faster (results/README.md, "Speed"; in training it was
    slower), and the outputs agreed with the plain layout's to 2.4e-7."""
    model.eval()
    layout = torch.contiguous_format
    if next(model.parameters()).device.type == "cpu":
        layout = torch.channels_last
        model = copy.deepcopy(model).to(memory_format=layout)
    loss_sum, correct, total = 0.0, 0, 0
    with torch.inference_mode():
        for step, (images, labels) in enumerate(batches, start=1):
            output = model(images.contiguous(memory_format=layout))
            loss_sum += F.nll_loss(output, labels, reduction="sum").item()
            correct += (output.argmax(dim=1) == labels).sum().item()
            total += len(labels)
            if step == steps:
                break
    return loss_sum / total, correct, total


def recompute_batchnorm_statistics(model, batches):
    """A copy of the model whose BatchNorm layers hold statistics measured afresh over `batches`
    of training images with Dropout off, for testing; the model itself is left as it was.

    In training, each block's Dropout zeroes a tenth of the activations and scales the rest by
    1/0.9, and the next BatchNorm gathers its running mean and variance from those. At test time
    Dropout is off, the activations vary less, and BatchNorm divides by a variance they no longer
    have: the "variance shift" of Li, Chen, Hu and Yang (CVPR 2019). A cumulative average
    (momentum None) over the batches gives each BatchNorm the statistics that test time will see.
    Training never reads the running statistics (it normalizes with each batch's own), so this
    changes the test and nothing else."""
    fresh = copy.deepcopy(model)
    norms = [m for m in fresh.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    fresh.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for images, _ in batches:
            fresh(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for copied, original in zip(fresh.modules(), model.modules()):
        copied.training = original.training
    return fresh


def test_epoch(model, train_split, test_split, args):
    """Test the model; with args.recompute_bn, test a copy with recomputed BatchNorm statistics
    as well. Returns the test's fields of the epoch's record (those of the copy where there is
    one, and the statistics as trained beside them) and the model as tested."""
    steps = 1 if args.dry_run else math.ceil(len(test_split[1]) / args.test_batch_size)
    test = lambda m: evaluate(m, data.test_batches(*test_split, args.test_batch_size), steps)
    loss, correct, total = test(model)
    if not args.recompute_bn:
        return {"test_loss": loss, "test_correct": correct, "test_total": total}, model
    start = time.perf_counter()
    images = args.test_batch_size if args.dry_run else RECOMPUTE_IMAGES
    pixels, labels = (t[:images] for t in train_split)
    tested = recompute_batchnorm_statistics(model, data.test_batches(pixels, labels, args.test_batch_size))
    seconds = time.perf_counter() - start
    recomputed_loss, recomputed_correct, _ = test(tested)
    return {"test_loss": recomputed_loss, "test_correct": recomputed_correct, "test_total": total,
            "test_loss_trained_statistics": loss, "test_correct_trained_statistics": correct,
            "test_accuracy_trained_statistics": 100 * correct / total, "recompute_seconds": seconds}, tested


def test_line(label, loss, correct, total):
    return f"{label}: Average loss: {loss:.4f}, Accuracy: {correct}/{total} ({100 * correct / total:.2f}%)"


# An epoch, and a whole run.
def run_epoch(epoch, model, optimizer, train_split, test_split, generator, args):
    """Train one epoch, test, print the epoch's lines; return its record for the metrics and the
    model as tested (test_epoch)."""
    print(f"\nEPOCH: {epoch}")
    lr = optimizer.param_groups[0]["lr"]
    train_steps = 1 if args.dry_run else math.ceil(len(train_split[1]) / args.batch_size)
    rotation, shift = (args.rotation, args.shift) if args.augment else (0.0, 0.0)
    start = time.perf_counter()
    batches = data.train_batches(*train_split, args.batch_size, generator, rotation, shift)
    train_loss, train_accuracy = train_epoch(model, batches, train_steps, optimizer)
    train_seconds = time.perf_counter() - start
    tests, tested = test_epoch(model, train_split, test_split, args)
    test_seconds = time.perf_counter() - start - train_seconds
    images_per_second = min(train_steps * args.batch_size, len(train_split[1])) / train_seconds
    print()
    print(test_line("Test set", tests["test_loss"], tests["test_correct"], tests["test_total"]))
    recomputing = ""
    if args.recompute_bn:
        print(test_line("Test set, BatchNorm statistics as trained", tests["test_loss_trained_statistics"],
                        tests["test_correct_trained_statistics"], tests["test_total"]))
        recomputing = f", {tests['recompute_seconds']:.2f} s of it recomputing BatchNorm statistics"
    print(f"Epoch time: {train_seconds + test_seconds:.1f} s (train {train_seconds:.1f} s, "
          f"{images_per_second:,.0f} images/s; test {test_seconds:.2f} s{recomputing})")
    return {
        "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_accuracy": train_accuracy,
        "test_accuracy": 100 * tests["test_correct"] / tests["test_total"], **tests,
        "seconds": train_seconds + test_seconds, "train_seconds": train_seconds,
        "test_seconds": test_seconds, "train_images_per_second": images_per_second,
    }, tested


def run(args):
    """Train as args say; the exit status: 0 done, 1 diverged, 130 interrupted by Ctrl-C, 143
    stopped by SIGTERM (a finished epoch is never lost: the metrics say how far it got)."""
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    available = available_memory(args.device)
    train_split, test_split = data.load_splits(args.data_dir, device=args.device)
    check_batch_size(args, train_split)
    args.test_batch_size = min(args.test_batch_size, len(test_split[1]))   # all of it, at most

    model = MODELS[args.model]().to(args.device)
    check_memory(model, args, sum(t.nbytes for t in (*train_split, *test_split)), available)
    parameters, _ = count_parameters(model)
    print(summary(model))
    print(f"Device: {args.device}")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
    metrics = {"config": configuration(args, parameters), "epochs": []}
    history = metrics["epochs"]
    tested = model
    try:
        for epoch in range(args.epochs):
            record, tested = run_epoch(epoch, model, optimizer, train_split, test_split, generator, args)
            history.append(record)
            scheduler.step()
            if args.metrics:
                save_json(args.metrics, metrics)
    except KeyboardInterrupt as stop:
        print(f"\n{stop_name(stop)}: {len(history)} finished epoch(s) reported below.")
        metrics["interrupted"] = True
        status = exit_status(stop)
    except Diverged:
        print(f"error: the loss became NaN or infinite in epoch {len(history)}; try a lower --lr "
              f"(this run used {args.lr:g})", file=sys.stderr)
        return 1
    metrics["result"] = report(history, parameters)
    if args.metrics:
        save_json(args.metrics, metrics)
    if metrics.get("interrupted"):
        return status
    if args.save_model:   # the model as last tested: with recomputed statistics where it was so tested
        write_atomically(args.save_model, lambda f: torch.save(tested.state_dict(), f))
        print(f"Saved the model's state_dict to {args.save_model}")
    return 0


# The verdict, and what the metrics file records.
def target_met(test_accuracies):
    last = test_accuracies[-TARGET_EPOCHS:]
    return len(last) == TARGET_EPOCHS and all(a >= TARGET_ACCURACY for a in last)


def report(history, parameters):
    """The end-of-run lines, and the verdict as a dict for the metrics file. Where the run also
    tested BatchNorm's statistics as trained, their verdict is there too."""
    tests = [e["test_accuracy"] for e in history]
    verdict = {
        "best_train_accuracy": max((e["train_accuracy"] for e in history), default=None),
        "best_test_accuracy": max(tests, default=None),
        "last_test_accuracies": tests[-TARGET_EPOCHS:],
        "target": f">= {TARGET_ACCURACY:.2f}% test accuracy in each of the last {TARGET_EPOCHS} epochs",
        "target_met": target_met(tests),
    }
    as_trained = [e["test_accuracy_trained_statistics"] for e in history if "test_accuracy_trained_statistics" in e]
    if as_trained:
        verdict["last_test_accuracies_trained_statistics"] = as_trained[-TARGET_EPOCHS:]
        verdict["target_met_trained_statistics"] = target_met(as_trained)
    print()
    if history:
        print(f"Best train accuracy: {verdict['best_train_accuracy']:.2f}%")
        print(f"Best test accuracy: {verdict['best_test_accuracy']:.2f}%")
    print(f"Total parameters: {parameters:,}")
    last = verdict["last_test_accuracies"]
    what = "Last test accuracy" if len(last) == 1 else f"Last {len(last)} test accuracies"
    print(f"{what}: " + ", ".join(f"{a:.2f}%" for a in last))
    if as_trained:
        print("  with BatchNorm statistics as trained: " + ", ".join(f"{a:.2f}%" for a in as_trained[-TARGET_EPOCHS:]))
    print(f"Target ({verdict['target']}): {'met' if verdict['target_met'] else 'not met'}")
    if as_trained:
        print(f"  with BatchNorm statistics as trained: {'met' if verdict['target_met_trained_statistics'] else 'not met'}")
    return verdict


def configuration(args, parameters):
    return {
        "model": args.model, "parameters": parameters, "epochs": args.epochs,
        "batch_size": args.batch_size, "test_batch_size": args.test_batch_size,
        "optimizer": "SGD", "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
        "scheduler": "StepLR", "step_size": args.step_size, "gamma": args.gamma,
        "augment": args.augment, "rotation_degrees": args.rotation if args.augment else 0.0,
        "shift_pixels": args.shift if args.augment else 0.0,
        "recompute_bn": args.recompute_bn, "recompute_images": RECOMPUTE_IMAGES if args.recompute_bn else 0,
        "seed": args.seed, "device": str(args.device), "dry_run": args.dry_run,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
    }


# --------------------------------------------------------------------------------------------------
# The lesson ends here; the rest is plumbing. The command line: flags, their ranges, the device.
class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def bounded(kind, low=0, high=None, low_allowed=False, high_allowed=False):
    """An argparse type: a finite number of `kind` between low and high (each end excluded
    unless allowed; high None: no upper end), else a one-line error that names the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):   # ints are exact, however long
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:    # training holds it in float32
            raise argparse.ArgumentTypeError(f"must be at most {FLOAT32_MAX:.4g} (float32), got {text}")
        above = value >= low if low_allowed else value > low
        below = high is None or (value <= high if high_allowed else value < high)
        if not (above and below):
            if high is None:
                wanted = f"{low} or more" if low_allowed else f"greater than {low}"
            else:
                wanted = f"in {'[' if low_allowed else '('}{low}, {high}{']' if high_allowed else ')'}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


def build_parser():
    p = ArgumentParser(description="Train a tiny CNN on MNIST (SGD + StepLR).")
    p.add_argument("--model", type=int, choices=sorted(MODELS), default=3, help="which model (default: 3)")
    p.add_argument("--epochs", type=bounded(int), default=15, help="epochs to train (default: 15)")
    p.add_argument("--batch-size", type=bounded(int),
                   help="training batch size, at most the training images (default: the recipe's, 32)")
    p.add_argument("--test-batch-size", type=bounded(int), default=250,
                   help="test batch size; a larger one than the test set tests it in one batch (default: 250)")
    p.add_argument("--lr", type=bounded(float), help="learning rate (default: the recipe's)")
    p.add_argument("--momentum", type=bounded(float, 0, 1, low_allowed=True),
                   help="SGD momentum, in [0, 1) (default: the recipe's, 0.9)")
    p.add_argument("--weight-decay", type=bounded(float, low_allowed=True), help="SGD weight decay (default: the recipe's: 0, 5e-4 for Models 3 and 4)")
    p.add_argument("--step-size", type=bounded(int), help="StepLR: epochs between decays (default: the recipe's)")
    p.add_argument("--gamma", type=bounded(float), help="StepLR: factor at each decay (default: the recipe's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random rotation (and --shift) of training images (default: the recipe's: Models 3 and 4)")
    p.add_argument("--rotation", type=bounded(float, 0, 180, high_allowed=True), metavar="DEGREES",
                   help="with --augment, the largest angle of rotation, in (0, 180] (default: 7)")
    p.add_argument("--shift", type=bounded(float, 0, 14, low_allowed=True), metavar="PIXELS",
                   help="with --augment, the largest shift along each axis, in [0, 14) "
                        "(default: the recipe's: 2 for Model 4, else 0)")
    p.add_argument("--recompute-bn", action=argparse.BooleanOptionalAction,
                   help="test with BatchNorm statistics recomputed over training images with Dropout off, "
                        "and report the statistics as trained beside them; --no-recompute-bn tests as "
                        "the write-up did (default: the recipe's: Models 2, 3 and 4)")
    p.add_argument("--seed", type=bounded(int, 0, SEED_LIMIT, low_allowed=True, high_allowed=True), default=1,
                   help=f"random seed, in [0, {SEED_LIMIT}] (default: 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(),
                   help="folder holding MNIST/raw (default: $MNIST_DIR, else ./data)")
    p.add_argument("--save-model", metavar="PATH", help="write the final state_dict here, as last tested")
    p.add_argument("--metrics", metavar="PATH", help="write the configuration and per-epoch metrics here (JSON)")
    p.add_argument("--dry-run", action="store_true", help="one batch of training and of testing per epoch")
    return p


def parse_args(argv=None):
    """The flags, with the model's recipe filling in what was not given; paths checked writable."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in RECIPES[args.model].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.data_dir = os.path.expanduser(args.data_dir)
    for flag, name in (("--save-model", "save_model"), ("--metrics", "metrics")):
        path = getattr(args, name) and os.path.expanduser(getattr(args, name))
        setattr(args, name, path)
        problem = path and unwritable(path)
        if problem:
            parser.error(f"argument {flag}: cannot write {path}: {problem}")
    if args.save_model and args.metrics and os.path.realpath(args.save_model) == os.path.realpath(args.metrics):
        parser.error(f"argument --metrics: {args.metrics} is the --save-model file too; give each its own")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        parser.error(f"argument --device: {e}")
    return args


def pick_device(name):
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise ValueError(f"{name} is not available on this machine")
    return torch.device(name)


# Checks before the first step: what only the loaded data shows, and memory.
class BadArgument(Exception):
    """A flag's value that only the loaded data shows to be wrong; the message names the flag."""


class TooLarge(Exception):
    """A training step that would not fit in the device's memory; the message is one line."""


def available_memory(device):
    """Bytes this run can still take on the device, or None where that is not known: the GPU's
    free memory, or the machine's available memory (Linux's MemAvailable) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def check_batch_size(args, train_split):
    """A training batch larger than the training set is a mistake (the test batch is not: one
    larger than the test set is simply all of it)."""
    if args.batch_size > len(train_split[1]):
        raise BadArgument(f"argument --batch-size: {args.batch_size:,} is more than the "
                          f"{len(train_split[1]):,} training images")


def check_memory(model, args, data_bytes, available):
    """Refuse, before the first step, a batch that cannot fit: the activations and their gradients
    for a training batch (the summary's per-image figure times the batch size), or the activations
    alone for a test batch, whichever is more; the data set; the parameters with their gradients
    and momentum; against what the device had free."""
    if available is None:
        return
    parameter_bytes = 3 * 4 * count_parameters(model)[0]
    per_image = forward_backward_bytes(model)
    flag, batch = "--batch-size", args.batch_size
    if args.test_batch_size > 2 * args.batch_size:   # a test pass keeps no gradients: half as much
        flag, batch = "--test-batch-size", args.test_batch_size
    needed = per_image * max(args.batch_size, args.test_batch_size / 2) + data_bytes + parameter_bytes
    if needed > available:
        gib = 1024 ** 3
        step = "a training step" if flag == "--batch-size" else "a test pass"
        raise TooLarge(f"{step} at {flag} {batch:,} needs about {needed / gib:.1f} GiB "
                       f"(activations, data and parameters) but {args.device} has {available / gib:.1f} GiB "
                       f"available; use a smaller {flag}")


# Files: checked writable before training, never left half written.
def unwritable(path):
    """Why a file cannot be written at path, or None: checked before training, not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a folder"
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        return "it ends in a separator, so it names a folder, not a file"
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def write_atomically(path, write):
    """Call write(file) on a temporary file beside path, then rename it over path, so that a
    reader (or a run that dies) never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())   # the mode open() would give it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_json(path, obj):
    write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


# The progress line, and the loss that stops a run.
class Progress:
    """A tqdm-like line: loss, batch index, running accuracy, bar, elapsed<remaining, it/s.
    Redrawn in place on a terminal; written once, when the epoch ends, to a file or a pipe."""

    def __init__(self, total, stream=None):
        self.total, self.stream = total, stream or sys.stdout
        self.live = self.stream.isatty()
        self.block = "█" if can_encode(self.stream, "█") else "#"   # an ASCII console gets tqdm's #
        self.start = self.drawn = time.perf_counter()

    def line(self, done, loss, accuracy):
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - done) / rate if rate > 0 else 0.0
        filled = done * 10 // self.total
        bar = self.block * filled + " " * (10 - filled)
        return (f"Loss={loss:.4f} Batch_id={done - 1} Accuracy={accuracy:.2f}: "
                f"{100 * done // self.total:3d}%|{bar}| {done}/{self.total} "
                f"[{clock(elapsed)}<{clock(remaining)}, {rate:.2f}it/s]")

    def update(self, done, loss, accuracy):
        now = time.perf_counter()
        if self.live and now - self.drawn >= 0.1:
            self.stream.write("\r" + self.line(done, loss, accuracy))
            self.stream.flush()
            self.drawn = now

    def close(self, done, loss, accuracy):
        self.stream.write(("\r" if self.live else "") + self.line(done, loss, accuracy) + "\n")
        self.stream.flush()


def can_encode(stream, text):
    """Whether the stream can write text: a stream of str without an encoding (StringIO) can."""
    encoding = getattr(stream, "encoding", None)
    try:
        encoding and text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


class Diverged(Exception):
    """The training loss is no longer a finite number: train_epoch stops the run at once."""


# Stopping: Ctrl-C and SIGTERM end a run the same way, its finished epochs kept.
class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler, a container stop), raised where the run is, as Ctrl-C is."""


def raise_terminated(signum, frame):
    raise Terminated


def stop_name(stop):
    return "Stopped by SIGTERM" if isinstance(stop, Terminated) else "Interrupted"


def exit_status(stop):
    """The shell's convention: 128 plus the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


# The script.
def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return run(args)
    except BadArgument as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        return 2
    except (data.DataError, TooLarge) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"\n{stop_name(stop)} before training started.", file=sys.stderr)
        return exit_status(stop)


if __name__ == "__main__":
    sys.exit(main())
