"""Train one of the tiny MNIST models with SGD and StepLR: `python train.py --model 3 --epochs 15`.

Top to bottom: the lesson (the recipes, an epoch of training, the test, the run, the verdict),
torch alone; the plumbing (the flags, the data, the progress line, the files); `main`, calling them
in that order and turning each way a run can fail into one line.
"""
import argparse
import contextlib
import copy
import io
import itertools
import json
import math
import os
import signal
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import data
from models import MODELS, count_parameters, summary

# Each model's recipe, its step of the story; a flag overrides it. Models 3-5 rotate (4 and 5 shift
# too), the rate cut tenfold at epochs 6 and 12; 2 and 3 have Dropout: they recompute statistics.
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
RECOMPUTE_IMAGES = 10000  # the first training images, over which BatchNorm statistics are
RECOMPUTE_BATCH = 250     # recomputed, in batches of 250 whatever --test-batch-size is


def train_epoch(model, batches, optimizer, show=None):
    """One pass over the batches, moved to the model's device; (mean loss, correct, seen). The sums
    stay on the device; show(loss, correct, seen), if given, sees them each step (progress)."""
    device = next(model.parameters()).device
    model.train()
    loss_sum, correct, seen = 0, 0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        loss = F.nll_loss(output, labels)
        loss.backward()
        optimizer.step()
        loss_sum = loss_sum + loss.detach() * len(labels)
        correct = correct + (output.argmax(dim=1) == labels).sum()
        seen += len(labels)
        if show:
            show(loss, correct, seen)
    return loss_sum.item() / seen, correct.item(), seen


def evaluate(model, batches):
    """(mean loss, correct, total) over the batches, moved to the model's device, in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            output = model(images)
            loss_sum += F.nll_loss(output, labels, reduction="sum").item()
            correct += (output.argmax(dim=1) == labels).sum().item()
            total += len(labels)
    return loss_sum / total, correct, total


def recompute_batchnorm_statistics(model, batches):
    """Measure the model's BatchNorm statistics afresh over `batches` of training images with
    Dropout off, in place (give it a copy: training goes on with its own); return the model.
    Dropout scales what it keeps by 1/0.9 in training, so the running variance is not the one the
    test sees, with Dropout off: the "variance shift" (Li et al., CVPR 2019)."""
    device = next(model.parameters()).device
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes, momenta, seen = [m.training for m in model.modules()], [m.momentum for m in norms], 0
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.train()
    with torch.no_grad():
        for images, _ in batches:
            for m in norms:
                m.momentum = len(images) / (seen + len(images))   # each image counts the same
            model(images.to(device))
            seen += len(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m, training in zip(model.modules(), modes):
        m.training = training
    return model


def score(model, test_split, args, what=""):
    """Test the model, print its line, return its figures; on a CPU a channels_last copy (1.3-2.9x
    faster)."""
    if args.device.type == "cpu":
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    loss, correct, total = evaluate(model, data.test_batches(*test_split, args.test_batch_size))
    print(f"Test set{what}: Average loss: {loss:.4f}, Accuracy: {correct}/{total} "
          f"({100 * correct / total:.2f}%)")
    return {"test_accuracy": 100 * correct / total, "test_loss": loss, "test_correct": correct,
            "test_total": total}


def test(model, train_split, test_split, args):
    """The test after an epoch: with args.recompute_bn, of a copy whose BatchNorm statistics are
    recomputed, then of the model as trained. Return the figures and the model tested."""
    print()
    if not args.recompute_bn:
        return score(model, test_split, args), model
    start = time.perf_counter()
    first = data.test_batches(*(t[:RECOMPUTE_IMAGES] for t in train_split), RECOMPUTE_BATCH)
    recomputed = recompute_batchnorm_statistics(copy.deepcopy(model), first)
    seconds = time.perf_counter() - start
    figures = score(recomputed, test_split, args)
    as_trained = score(model, test_split, args, ", BatchNorm statistics as trained")
    figures.update({f"{key}_trained_statistics": as_trained[key] for key in
                    ("test_loss", "test_correct", "test_accuracy")}, recompute_seconds=seconds)
    return figures, recomputed


def run(args, model_class, train_split, test_split, progress=lambda steps: None):
    """The lesson's loop: train as args say, testing after every epoch; yield each epoch's numbers
    and the model tested. progress(steps) is train_epoch's show; a NaN ends the run with a
    FloatingPointError."""
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    model = model_class().to(args.device)
    print(f"{summary(model)}\nDevice: {args.device}")
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.step_size, gamma=args.gamma)
    rotation, shift = (args.rotation, args.shift) if args.augment else (0.0, 0.0)
    images = len(train_split[1])
    for epoch in range(args.epochs):
        print(f"\nEPOCH: {epoch}")
        start = time.perf_counter()
        batches = data.train_batches(*train_split, args.batch_size, generator, rotation, shift)
        train_loss, correct, seen = train_epoch(model, batches, optimizer,
                                                progress(math.ceil(images / args.batch_size)))
        train_seconds = time.perf_counter() - start
        figures, tested = test(model, train_split, test_split, args)
        seconds = time.perf_counter() - start
        numbers = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "train_accuracy": 100 * correct / seen, **figures, "seconds": seconds,
                   "train_seconds": train_seconds, "test_seconds": seconds - train_seconds,
                   "train_images_per_second": images / train_seconds}
        if not all(math.isfinite(v) for v in numbers.values() if isinstance(v, float)):
            raise FloatingPointError(f"the loss became NaN or infinite in epoch {epoch}")
        recomputing = (f", {numbers['recompute_seconds']:.2f} s of it recomputing BatchNorm "
                       "statistics" if args.recompute_bn else "")
        print("Epoch time: {seconds:.1f} s (train {train_seconds:.1f} s, {train_images_per_second:"
              ",.0f} images/s; test {test_seconds:.2f} s".format(**numbers) + recomputing + ")")
        yield numbers, tested
        scheduler.step()


def target_met(test_accuracies):
    last = test_accuracies[-TARGET_EPOCHS:]
    return len(last) == TARGET_EPOCHS and all(a >= TARGET_ACCURACY for a in last)


def report(history, parameters):
    """Print the end of the run; return the verdict (as trained too, where the run recomputed)."""
    tests = [e["test_accuracy"] for e in history]
    as_trained = [e["test_accuracy_trained_statistics"] for e in history
                  if "test_accuracy_trained_statistics" in e]
    target = f">= {TARGET_ACCURACY:.2f}% test accuracy in each of the last {TARGET_EPOCHS} epochs"
    verdict = {"best_train_accuracy": max((e["train_accuracy"] for e in history), default=None),
               "best_test_accuracy": max(tests, default=None), "target": target,
               "target_accuracy": TARGET_ACCURACY, "target_epochs": TARGET_EPOCHS,
               "last_test_accuracies": tests[-TARGET_EPOCHS:], "target_met": target_met(tests)}
    percents = lambda accuracies: ", ".join(f"{a:.2f}%" for a in accuracies[-TARGET_EPOCHS:])
    met = lambda accuracies: "met" if target_met(accuracies) else "not met"
    print()
    if history:
        print(f"Best train accuracy: {verdict['best_train_accuracy']:.2f}%\n"
              f"Best test accuracy: {max(tests):.2f}%")
    print(f"Total parameters: {parameters:,}")
    if tests:
        last = len(tests[-TARGET_EPOCHS:])
        print(f"Last {'test accuracy' if last == 1 else f'{last} test accuracies'}: "
              f"{percents(tests)}")
    if as_trained:
        print(f"  with BatchNorm statistics as trained: {percents(as_trained)}")
    print(f"Target ({target}): {met(tests)}")
    if as_trained:
        verdict.update(last_test_accuracies_trained_statistics=as_trained[-TARGET_EPOCHS:],
                       target_met_trained_statistics=target_met(as_trained))
        print(f"  with BatchNorm statistics as trained: {met(as_trained)}")
    return verdict


# The plumbing, in the order main calls it: the flags, the data, the progress line, the files.
def parser(**settings):
    """argparse's parser, but a bad argument costs one line (no usage block) and exit 2."""
    p = argparse.ArgumentParser(**settings)
    p.error = lambda message: p.exit(2, f"{p.prog}: error: {message}\n")
    return p


def number(kind, low, high=math.inf, *, above=False):
    """An argparse type: a `kind` from low (or above it) to below high, so never NaN or inf."""
    def parse(text):
        value = kind(text)   # a ValueError: argparse says "invalid <parse.__name__> value"
        if not (low < value < high if above else low <= value < high):
            raise argparse.ArgumentTypeError(f"must be in {'[('[above]}{low}, {high}), got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def writable(path):
    """An argparse type: a file that can be written (through a link, its target), not an input."""
    target = os.path.realpath(path)
    why = ("it is a folder" if os.path.isdir(target) or path.endswith(os.sep)
           else "it is an MNIST file" if os.path.basename(target) in data.RAW_FILES
           else None if os.access(os.path.dirname(target), os.W_OK)
           else "its folder is missing or not writable")
    if why:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {why}")
    return path


def parse_args(argv, models, recipes):
    """The flags, the model's recipe filling in the rest; refused before any work, with one line:
    a bad value, --rotation or --shift without --augment, --metrics and --save-model one file."""
    here = [d for d, m in (("cuda", torch.cuda), ("mps", torch.backends.mps)) if m.is_available()]
    p = parser(description="Train a tiny CNN on MNIST; a flag with no default follows the recipe.")
    flag = lambda name, kind, what, low, default=None, metavar=None, **limits: p.add_argument(
        name, type=number(kind, low, **limits), default=default, metavar=metavar,
        help=what + (f" (default: {default})" if default else ""))
    p.add_argument("--model", type=int, choices=sorted(models), default=3,
                   help="which model (default: 3)")
    flag("--epochs", int, "epochs to train", 1, 15)
    flag("--batch-size", int, "training batch size", 1)
    flag("--test-batch-size", int, "test batch size", 1, 250)
    flag("--lr", float, "learning rate", 0, above=True)
    flag("--momentum", float, "SGD momentum", 0, high=1)
    flag("--weight-decay", float, "SGD weight decay", 0)
    flag("--step-size", int, "StepLR: epochs between decays", 1)
    flag("--gamma", float, "StepLR: factor at each decay", 0, above=True)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="rotate (and --shift) the training images")
    flag("--rotation", float, "with --augment, the largest angle", 0, high=180, metavar="DEGREES")
    flag("--shift", float, "with --augment, the largest shift", 0, high=14, metavar="PIXELS")
    p.add_argument("--recompute-bn", action=argparse.BooleanOptionalAction,
                   help="test with BatchNorm statistics recomputed without Dropout too")
    flag("--seed", int, "random seed", 0, 1, high=2 ** 64)
    p.add_argument("--device", choices=["auto", *here, "cpu"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(),
                   help="the folder that holds MNIST/raw (default: $MNIST_DIR, else ./data)")
    p.add_argument("--save-model", type=writable, metavar="PATH", help="the state_dict, each epoch")
    p.add_argument("--metrics", type=writable, metavar="PATH", help="each epoch's numbers, JSON")
    p.add_argument("--dry-run", action="store_true", help="one batch each way per epoch")
    args = p.parse_args(argv)
    given = {name for name, value in vars(args).items() if value is not None}
    vars(args).update({k: v for k, v in recipes[args.model].items() if k not in given})
    if not args.augment and given & {"rotation", "shift"}:
        p.error("argument --rotation/--shift: unused without --augment (this run has none)")
    if args.metrics and os.path.realpath(args.metrics) == os.path.realpath(args.save_model or ""):
        p.error(f"argument --metrics: {args.metrics} is the --save-model file too")
    args.device = torch.device([*here, "cpu"][0] if args.device == "auto" else args.device)
    return args


def load_data(args):
    """The splits on the device; a --dry-run keeps a batch of each."""
    kept = (args.batch_size, args.test_batch_size) if args.dry_run else (None, None)
    return [[t[:n] for t in split] for split, n in
            zip(data.load_splits(args.data_dir, device=args.device), kept)]


def configuration(args, parameters, train_images, extra):
    """The run's configuration, as --metrics records it: the flags but the files, and more."""
    flags = {k: v for k, v in vars(args).items()
             if k not in ("rotation", "shift", "data_dir", "save_model", "metrics")}
    return {**flags, "parameters": parameters, "optimizer": "SGD", "scheduler": "StepLR",
            "rotation_degrees": args.rotation * args.augment, "device": str(args.device),
            "shift_pixels": args.shift * args.augment,
            "recompute_images": min(RECOMPUTE_IMAGES, train_images) * args.recompute_bn,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, **(extra or {})}


def progress(steps):
    """A show(loss, correct, seen) for train_epoch: tqdm's line, printed at the epoch's end and on
    a terminal redrawn every 25 steps before (reading the device's sums makes a GPU wait)."""
    start, live, steps_done = time.perf_counter(), sys.stdout.isatty(), itertools.count(1)
    bar = "█" if "█".encode(sys.stdout.encoding or "utf-8", "ignore") else "#"   # ASCII: tqdm's
    clock = lambda seconds: "%02d:%02d" % divmod(int(seconds), 60)
    def show(loss, correct, seen):
        step = next(steps_done)
        if step == steps or live and step % 25 == 0:
            elapsed = time.perf_counter() - start
            print(f"{chr(13) * live}Loss={loss.item():.4f} Batch_id={step - 1} Accuracy="
                  f"{100 * correct.item() / seen:.2f}: {100 * step // steps:3d}%|"
                  f"{bar * (10 * step // steps):10}| {step}/{steps} [{clock(elapsed)}<"
                  f"{clock(elapsed / step * (steps - step))}, {step / elapsed:.2f}it/s]",
                  end="\n" if step == steps else "", flush=True)
    return show


def save(args, log=None, model=None):
    """Write what is given, each whole: the model (--save-model), the run so far (--metrics)."""
    if args.save_model and model is not None:
        torch.save(model.state_dict(), weights := io.BytesIO())   # a zip, in memory
        write_whole(args.save_model, weights.getvalue())
    if args.metrics and log and log["config"]:
        write_whole(args.metrics, json.dumps(log, indent=2, allow_nan=False).encode() + b"\n")


def write_whole(path, content):
    """Write the bytes to path's target through a temporary file of this process beside it, renamed
    over it: a reader never sees half a file, a full disk leaves the file as it was, its mode stays.
    What is not a regular file (a device, a pipe) is written into. An OSError names path."""
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        if os.path.exists(target) and not os.path.isfile(target):
            with open(target, "wb") as f:
                return f.write(content)
        f = open(temporary, "xb")   # "x": never a file that is there already
        try:
            with f:
                f.write(content)
            if os.path.exists(target):
                os.chmod(temporary, os.stat(target).st_mode)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


@contextlib.contextmanager
def stops_held():
    """Ctrl-C and SIGTERM wait until the block has ended; the signals that came, in order."""
    stops = []
    handlers = {signum: signal.signal(signum, lambda number, frame: stops.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stops
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def stop(signum, frame):
    """SIGTERM stops the run where it is, as Ctrl-C does; main's exit status tells them apart."""
    raise KeyboardInterrupt("Stopped by SIGTERM")


def main(argv=None, *, models=MODELS, recipes=RECIPES, extra=None):
    """`python train.py --help`; exit 0 for a finished run, 1 for what failed, 2 for a bad argument,
    130 for Ctrl-C, 143 for SIGTERM. lab/screen.py adds models, recipes and `extra` config."""
    args = parse_args(argv, models, recipes)
    log, status = {"config": None, "epochs": []}, 0
    parameters = count_parameters(models[args.model]())[0]
    try:
        try:
            train_split, test_split = load_data(args)
            log["config"] = configuration(args, parameters, len(train_split[1]), extra)
            for numbers, model in run(args, models[args.model], train_split, test_split, progress):
                save(args, model=model)   # the model, then its epoch: a stop between keeps
                log["epochs"].append(numbers)   # the files of one epoch
                save(args, log)
        except KeyboardInterrupt as e:
            status = 128 + (signal.SIGTERM if e.args else signal.SIGINT)
            print(f"\n{str(e) or 'Interrupted'}: {len(log['epochs'])} finished epoch(s) reported "
                  "below.")
        with stops_held() as stops:   # a stop now waits for the verdict and the files
            log["result"] = report(log["epochs"], parameters)
            save(args, dict(log, interrupted=True) if status or stops else log)
            if stops and not status:   # it came while the files were written
                save(args, dict(log, interrupted=True))
            if args.save_model and log["epochs"]:
                print(f"Saved the model's state_dict to {args.save_model}")
    except FloatingPointError as e:
        sys.exit(f"error: {e}; try an --lr below {args.lr:g}")
    except (MemoryError, RuntimeError) as e:
        if not (isinstance(e, MemoryError) or "out of memory" in str(e)
                or "allocate memory" in str(e)):   # the CPU allocator's words, and CUDA's
            raise
        sys.exit(f"error: out of memory on {args.device}; try a smaller --batch-size (this run "
                 f"used {args.batch_size}) or --test-batch-size ({args.test_batch_size})")
    except OSError as e:   # a write: the data's own errors are DataError
        sys.exit(f"error: cannot write {e.filename}: {e.strerror}")
    return status or (128 + stops[0] if stops else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGPIPE"):   # `python train.py | head`: a quiet end, as a shell tool's
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.stdout.reconfigure(errors="replace")   # a name the console cannot spell: "?", no crash
    sys.exit(main())
