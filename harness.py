"""What train.py's lesson runs in: the command line, the data and memory checks, the progress
line, the files, the signals, and one error boundary that makes every failure one line and an
exit status. The lesson calls it at two points, `log.progress()` and `log.epoch(...)`; plot.py,
models.py and the lab share its boundary and its writer.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import stat
import sys
import tempfile
import time

import torch
import torchvision

import data
from models import count_parameters, forward_backward_bytes

FLOAT32_MAX = torch.finfo(torch.float32).max   # a number flag beyond it is infinite in training
CHECK_EVERY = 25                               # steps between reads of the loss (a GPU sync)
STOPS = (signal.SIGINT, signal.SIGTERM)
RECIPE = "the model's recipe"                  # the default of the flags the recipes set


class Failure(Exception):
    """What cannot be done, as one line; status 2 for a bad argument, else 1."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Stopped(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, raised where the run is."""

    def __str__(self):
        return "Stopped by SIGTERM" if self.args[0] == signal.SIGTERM else "Interrupted"


def boundary(work, kept=lambda: ""):
    """work()'s exit status, every failure one line on stderr: 2 for a bad argument, 1 for what
    cannot be done, 128 + the signal for a stop. A closed stream writes nowhere, and a character
    it cannot encode is escaped; `kept()` tells where finished work is if the output breaks."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:   # started with the stream closed (`>&-`)
            setattr(sys, name, open(os.devnull, "w"))
        getattr(getattr(sys, name), "reconfigure", lambda **how: None)(errors="backslashreplace")
    try:
        return work()
    except (Failure, data.DataError) as e:
        status = getattr(e, "status", 1)
        prog = os.path.basename(sys.argv[0]) + ": " if status == 2 else ""
        return say(f"{prog}error: {e}", status)
    except OSError as e:
        if e.filename is not None:
            return say(f"error: cannot write {e.filename}: {e.strerror}", 1)
        with contextlib.suppress(OSError, ValueError):   # nothing more to the broken stream
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return say(f"error: the output stream failed ({e.strerror or e}){kept()}", 1)
    except KeyboardInterrupt as e:
        return say(f"{e or 'Interrupted'}.", 128 + (e.args[0] if e.args else signal.SIGINT))


def say(line, status):
    """Print one line on stderr, whatever it holds; return the status."""
    with contextlib.suppress(OSError, ValueError):
        print(str(line).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)
    return status


def main(argv, run, report, models, recipes, record=None):
    """train.py's command line: the flags, the data, run(args, model_class, train_split,
    test_split, log), its files; the exit status."""
    log = RunLog(record)

    def train():
        args = parse_args(argv, models, recipes)
        with stoppable(log) as came:
            try:
                splits = load_data(args, models[args.model])
                log.start(args, count_parameters(models[args.model]())[0], len(splits[0][1]))
                log.finish(run(args, models[args.model], *splits, log))
            except Stopped as stopped:
                if log.config is None:
                    return say(f"{stopped} before training started.", 128 + came[0])
                print(f"\n{stopped}: {len(log.history)} finished epoch(s) reported below.")
                log.finish(report(log.history, log.config["parameters"]), interrupted=True)
        if came and not log.interrupted:
            say(f"{Stopped(came[0])} after training finished; the model and metrics are written.",
                0)
        return 128 + came[0] if came else 0
    return boundary(train, kept=log.kept)


@contextlib.contextmanager
def stoppable(log):
    """The first SIGINT or SIGTERM raises Stopped where the run is, unless every epoch has
    finished: then it waits for the files. Either way it is listed in what this yields, and the
    signals after it go unheard."""
    came, block = [], getattr(signal, "pthread_sigmask", lambda how, signals: None)

    def stop(signum, frame):
        came.append(signum)
        block(signal.SIG_BLOCK, STOPS)   # the next ones wait, undelivered, until the end
        if len(came) == 1 and not (log.config and len(log.history) == log.config["epochs"]):
            raise Stopped(signum)
    previous = [signal.signal(s, stop) for s in STOPS]
    try:
        yield came
    finally:   # after a signal, SIG_IGN: it outlives the interpreter's end, where handlers do not
        for s, handler in zip(STOPS, [signal.SIG_IGN] * 2 if came else previous):
            signal.signal(s, handler)
        block(signal.SIG_UNBLOCK, STOPS)


# The command line: the flags, their ranges, the recipes' defaults.
class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(say(f"{self.prog}: error: {message}", 2))


def bounded(kind, low=0, high=None, low_in=False, high_in=False):
    """An argparse type: a finite `kind` between low and high (an end excluded unless `_in`)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:   # trained in float32
            raise argparse.ArgumentTypeError(
                f"must be a finite number, at most {FLOAT32_MAX:.4g} (float32), got {text}")
        if (value < low if low_in else value <= low) or high is not None and (
                value > high if high_in else value >= high):
            wanted = (f"in {'(['[low_in]}{low}, {high}{')]'[high_in]}" if high is not None
                      else f"{low} or more" if low_in else f"greater than {low}")
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


def build_parser(models):
    p = ArgumentParser(description="Train a tiny CNN on MNIST (SGD + StepLR).",
                       epilog="A flag whose default is the model's recipe overrides that model's "
                              "entry in train.py's RECIPES.")
    flag = lambda name, kind, what, *limits, default=None, **more: p.add_argument(
        name, type=bounded(kind, *limits), default=default,
        help=f"{what} (default: {RECIPE if default is None else default})", **more)
    p.add_argument("--model", type=int, choices=sorted(models), default=3,
                   help="which model (default: 3)")
    flag("--epochs", int, "epochs to train", default=15)
    flag("--batch-size", int, "training batch size")
    flag("--test-batch-size", int, "test batch size; one larger than the test set is all of it",
         default=250)
    flag("--lr", float, "learning rate")
    flag("--momentum", float, "SGD momentum, in [0, 1)", 0, 1, True)
    flag("--weight-decay", float, "SGD weight decay", 0, None, True)
    flag("--step-size", int, "StepLR: epochs between decays")
    flag("--gamma", float, "StepLR: factor at each decay")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="rotate (and --shift) the training images (default: the model's recipe)")
    flag("--rotation", float, "with --augment, the largest angle of rotation, in (0, 180]",
         0, 180, False, True, metavar="DEGREES")
    flag("--shift", float, "with --augment, the largest shift along each axis, in [0, 14)",
         0, 14, True, metavar="PIXELS")
    p.add_argument("--recompute-bn", action=argparse.BooleanOptionalAction,
                   help="test with BatchNorm statistics recomputed without Dropout, and as trained "
                        "beside them (default: the model's recipe: Models 2 and 3, which have "
                        "Dropout)")
    flag("--seed", int, f"random seed, in [0, {2 ** 64 - 1}]", 0, 2 ** 64 - 1, True, True,
         default=1)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(),
                   help="the folder that holds MNIST/raw (default: $MNIST_DIR, else ./data)")
    p.add_argument("--save-model", metavar="PATH",
                   help="write the final state_dict here, as last tested")
    p.add_argument("--metrics", metavar="PATH",
                   help="write the configuration and per-epoch metrics here (JSON)")
    p.add_argument("--dry-run", action="store_true",
                   help="one batch of training and of testing per epoch")
    return p


def parse_args(argv, models, recipes):
    """The flags, the model's recipe filling in the rest; refused before any work: augmentation
    flags without --augment, a schedule beyond float32, an output that cannot be written."""
    parser = build_parser(models)
    args = parser.parse_args(argv)
    given = {name for name, value in vars(args).items() if value is not None}
    vars(args).update({k: v for k, v in recipes[args.model].items() if k not in given})
    if not args.augment and given & {"rotation", "shift"}:
        parser.error("argument --rotation/--shift: unused " + (
            "with --no-augment" if "augment" in given
            else f"without --augment (Model {args.model}'s recipe does not augment)"))
    decays = (args.epochs - 1) // args.step_size
    if args.gamma > 1 and math.log(args.lr) + decays * math.log(args.gamma) > math.log(FLOAT32_MAX):
        parser.error(f"argument --gamma: {decays} decays by {args.gamma:g} take lr {args.lr:g} "
                     "past float32")
    args.data_dir = os.path.expanduser(args.data_dir)
    inputs = [data.raw_folder(args.data_dir) / name for name in data.RAW_FILES]
    for flag in ("--save-model", "--metrics"):
        path = getattr(args, flag[2:].replace("-", "_"))
        if path is not None:
            setattr(args, flag[2:].replace("-", "_"), path := os.path.expanduser(path))
            if problem := unwritable(path, inputs):
                parser.error(f"argument {flag}: cannot write {path}: {problem}")
    if args.metrics and args.save_model and \
            os.path.realpath(args.metrics) == os.path.realpath(args.save_model):
        parser.error(f"argument --metrics: {args.metrics} is the --save-model file too; "
                     "give each its own")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        parser.error(f"argument --device: {e}")
    return args


def pick_device(name):
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "cpu": True}
    name = next(d for d in available if available[d]) if name == "auto" else name
    if not available[name]:
        raise ValueError(f"{name} is not available on this machine")
    return torch.device(name)


def load_data(args, model_class):
    """The splits on the device, once the batches fit the data and the memory: a training batch's
    activations and gradients (the summary's per-image figure) or a test batch's (half as much),
    the data, and the parameters with their gradients and momentum. A --dry-run keeps a batch."""
    available = available_memory(args.device)
    train_split, test_split = data.load_splits(args.data_dir, device=args.device)
    if args.batch_size > len(train_split[1]):
        raise Failure(f"argument --batch-size: {args.batch_size:,} is more than the "
                      f"{len(train_split[1]):,} training images", 2)
    args.test_batch_size = min(args.test_batch_size, len(test_split[1]))   # all of it at most
    model = model_class()   # sized before the seed is set: it draws no number the run would
    needed = (forward_backward_bytes(model) * max(args.batch_size, args.test_batch_size / 2)
              + sum(t.nbytes for t in (*train_split, *test_split))
              + 12 * count_parameters(model)[0])
    if available is not None and needed > available:
        flag, batch = ("--batch-size", args.batch_size)
        if args.test_batch_size > 2 * args.batch_size:
            flag, batch = ("--test-batch-size", args.test_batch_size)
        raise Failure(f"{'a training step' if flag == '--batch-size' else 'a test pass'} at {flag} "
                      f"{batch:,} needs about {needed / 2 ** 30:.1f} GiB but {args.device} has "
                      f"{available / 2 ** 30:.1f} GiB available; use a smaller {flag}")
    if args.dry_run:
        train_split = [t[:args.batch_size] for t in train_split]
        test_split = [t[:args.test_batch_size] for t in test_split]
    args.recompute_images = min(10000, len(train_split[1])) if args.recompute_bn else 0
    return train_split, test_split


def available_memory(device):
    """Bytes free on the device: the GPU's, or Linux's MemAvailable; None where it is not known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
            return 1024 * int(line.split()[1])
    return None


class RunLog:
    """The run's record: its configuration, every finished epoch (in --metrics after each), the
    verdict and the model as last tested (--save-model); and each epoch's progress line."""

    def __init__(self, record=None):
        self.record, self.history, self.interrupted = record or {}, [], False
        self.args = self.config = self.tested = None

    def start(self, args, parameters, train_images):
        self.args, self.steps = args, math.ceil(train_images / args.batch_size)
        augmented = lambda value: value if args.augment else 0.0
        self.config = {
            "model": args.model, "parameters": parameters, "epochs": args.epochs,
            "batch_size": args.batch_size, "test_batch_size": args.test_batch_size,
            "optimizer": "SGD", "lr": args.lr, "momentum": args.momentum,
            "weight_decay": args.weight_decay, "scheduler": "StepLR", "step_size": args.step_size,
            "gamma": args.gamma, "augment": args.augment,
            "rotation_degrees": augmented(args.rotation), "shift_pixels": augmented(args.shift),
            "recompute_bn": args.recompute_bn, "recompute_images": args.recompute_images,
            "seed": args.seed, "device": str(args.device), "dry_run": args.dry_run,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, **self.record}
        self.metrics = {"config": self.config, "epochs": self.history}

    def progress(self):
        """The progress line of the epoch that starts now: a show(loss, correct, seen) for
        train_epoch. It draws tqdm's line (loss, batch, accuracy, bar, time, it/s), redrawn on a
        terminal, once to a file or pipe, reading the device's sums every CHECK_EVERY steps."""
        self.start_time = self.drawn = time.perf_counter()
        self.done, live = 0, sys.stdout.isatty()
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        block = "█" if "█".encode(encoding, "ignore") else "#"   # ASCII gets tqdm's #

        def show(loss, correct, seen):
            self.done += 1
            if self.done % CHECK_EVERY and self.done != self.steps:
                return
            if not math.isfinite(loss := loss.item()):
                print()
                raise self.diverged()
            now, last = time.perf_counter(), self.done == self.steps
            if last or live and now - self.drawn >= 0.1:
                elapsed, self.drawn, self.seen = now - self.start_time, now, seen
                rate = self.done / elapsed if elapsed > 0 else 0.0
                clock = lambda s: "%02d:%02d" % divmod(int(s), 60)
                bar = block * (self.done * 10 // self.steps)
                left = (self.steps - self.done) / rate if rate else 0
                line = (f"Loss={loss:.4f} Batch_id={self.done - 1} "
                        f"Accuracy={100 * correct.item() / seen:.2f}: "
                        f"{100 * self.done // self.steps:3d}%|{bar:10}| {self.done}/{self.steps} "
                        f"[{clock(elapsed)}<{clock(left)}, {rate:.2f}it/s]")
                print(("\r" if live else "") + line, end="\n" if last else "", flush=True)
            if last:
                self.train_seconds = now - self.start_time
        return show

    def epoch(self, epoch, lr, train_loss, train_accuracy, tests, tested):
        """Keep a finished epoch and the model as tested, print its times, rewrite --metrics;
        a Failure if a number in it or a weight is not finite."""
        train_seconds = self.train_seconds
        test_seconds = time.perf_counter() - self.start_time - train_seconds
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
                  "train_accuracy": train_accuracy,
                  "test_accuracy": 100 * tests["test_correct"] / tests["test_total"], **tests,
                  "seconds": train_seconds + test_seconds, "train_seconds": train_seconds,
                  "test_seconds": test_seconds,
                  "train_images_per_second": self.seen / train_seconds}
        numbers = [n for n in record.values() if isinstance(n, float)]
        if not all(map(math.isfinite, numbers + [p.sum().item() for p in tested.parameters()])):
            raise self.diverged()
        recomputing = (f", {tests['recompute_seconds']:.2f} s of it recomputing BatchNorm "
                       "statistics" if "recompute_seconds" in tests else "")
        print(f"Epoch time: {record['seconds']:.1f} s (train {train_seconds:.1f} s, "
              f"{record['train_images_per_second']:,.0f} images/s; test {test_seconds:.2f} s"
              f"{recomputing})")
        self.tested = tested
        self.history.append(record)   # once the last epoch is in, a signal waits for the files
        self.save_metrics()

    def diverged(self):
        return Failure(f"the loss or the weights became NaN or infinite in epoch "
                       f"{len(self.history)}; try a lower --lr (this run used {self.args.lr:g})")

    def save_metrics(self):
        if self.args.metrics:
            save_json(self.args.metrics, self.metrics)

    def finish(self, verdict, interrupted=False):
        """Write the verdict, and the model unless the run was stopped, each even if the other
        cannot be written."""
        self.interrupted = interrupted
        self.metrics.update(result=verdict, **({"interrupted": True} if interrupted else {}))
        try:
            self.save_metrics()
        finally:
            if self.args.save_model and self.tested is not None and not interrupted:
                state = self.tested.state_dict()
                write_atomically(self.args.save_model, lambda f: torch.save(state, f))
                print(f"Saved the model's state_dict to {self.args.save_model}")

    def kept(self):   # where the finished epochs are, should the output stream fail
        metrics = self.args and self.history and self.args.metrics
        return f"; {len(self.history)} finished epoch(s) are in {metrics}" if metrics else ""


# Files: one writer for every output, its path checked before any work, never half written.
def unwritable(path, inputs=()):
    """Why a file cannot be written at path, or None. A symbolic link is written through to its
    target; a folder, a device, an input, the file the script's output goes to are refused."""
    target = os.path.realpath(path)
    if not path:
        return "the path is empty"
    if path.endswith((os.sep, os.altsep or os.sep)) or os.path.isdir(target):
        return "it names a folder, not a file"
    if target in map(os.path.realpath, inputs):
        return "it is one of the input files"
    if os.path.lexists(target) and not os.path.isfile(target):
        return "it is not a regular file"
    for fd, what in ((1, "output"), (2, "error output")):
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(target), os.fstat(fd)):
                return f"it is where this script's {what} goes; name a file of its own"
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(target)):   # the folder takes a file
            pass
        if not os.path.exists(target):   # and the name itself is allowed (its length, its bytes)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(target)
    except OSError as e:
        return e.strerror or str(e)
    return None


def write_atomically(path, write):
    """Call write(file) on a temporary file beside path's target, then rename it over the target:
    no reader sees half a file. It keeps the target's mode, or gets the one open() would give.
    An OSError names the path."""
    target, tmp = os.path.realpath(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            write(f)
        if os.path.exists(target):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        else:
            mask = os.umask(0)   # the umask is read by setting it: put it back
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
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
