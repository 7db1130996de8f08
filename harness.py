"""The harness around train.py's lesson: everything where outside things enter.

The command line (flags, their ranges, the recipe's defaults, the device), the data and memory
checks, the progress line, the run's files, the signals, and one error boundary that turns every
failure into one line and an exit status. The lesson calls it at three points: `main` runs it,
`RunLog.progress` draws an epoch's progress line, `RunLog.epoch` keeps a finished epoch.
plot.py, models.py and the lab share its writer and its boundary.
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

SEED_LIMIT = 2 ** 64 - 1                       # the largest seed torch.manual_seed takes
FLOAT32_MAX = torch.finfo(torch.float32).max   # a number flag beyond it is infinite in training
CHECK_EVERY = 25                               # steps between reads of the loss (a GPU sync)
STOPS = (signal.SIGINT, signal.SIGTERM)


class Failure(Exception):
    """What cannot be done, as one line: status 2 for a bad argument, 1 for the rest."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Diverged(Exception):
    """The loss or the weights are no longer finite numbers: the run stops at once."""


class Stopped(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (kill, a job scheduler), raised where the run is."""

    def __str__(self):
        return "Stopped by SIGTERM" if self.args[0] == signal.SIGTERM else "Interrupted"


# The one error boundary of every script.
def boundary(work, kept=lambda: ""):
    """Run work() and return its exit status. Whatever fails ends as one line on stderr and a
    status that is not 0: 2 for a bad argument, 1 for what cannot be done, 128 + the signal for a
    stop. A closed stream takes the output nowhere; one that cannot encode a character gets an
    escape for it. `kept` says where finished work is, should the output stream fail."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:   # started with the stream closed (`>&-`)
            setattr(sys, name, open(os.devnull, "w"))
        elif hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    prog = os.path.basename(sys.argv[0])
    try:
        return work()
    except (Failure, data.DataError) as e:
        status = getattr(e, "status", 1)
        return say(f"{prog + ': ' if status == 2 else ''}error: {e}", status)
    except OSError as e:   # a file that could not be written, or an output stream that broke
        if e.filename is not None:
            return say(f"error: cannot write {e.filename}: {e.strerror}", 1)
        with contextlib.suppress(OSError, ValueError):   # nothing more goes to the broken stream
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return say(f"error: the output stream failed ({e.strerror or e}){kept()}", 1)
    except KeyboardInterrupt as e:
        return say(f"{e or 'Interrupted'}.", 128 + (e.args[0] if e.args else signal.SIGINT))


def say(line, status):
    """One line on stderr, whatever it holds; the status, for `return say(...)`."""
    with contextlib.suppress(OSError, ValueError):
        print(str(line).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)
    return status


# train.py's command line: the flags, the data, the run, its files.
def main(argv, run, report, models, recipes, record=None):
    """Parse the flags with the models' recipes as defaults, load and check the data, then
    run(args, model_class, train_split, test_split, log) and write its files; the exit status."""
    log = RunLog(report, record)

    def train():
        args = parse_args(argv, models, recipes)
        with stoppable(log) as came:
            try:
                splits = load_data(args, models[args.model])
                log.start(args, count_parameters(models[args.model]())[0], len(splits[0][1]))
                log.finish(run(args, models[args.model], *splits, log))
            except Diverged:
                raise Failure(f"the loss or the weights became NaN or infinite in epoch "
                              f"{len(log.history)}; try a lower --lr (this run used {args.lr:g})")
            except Stopped as stopped:
                if log.config is None:
                    return say(f"\n{stopped} before training started.", 128 + stopped.args[0])
                print(f"\n{stopped}: {len(log.history)} finished epoch(s) reported below.")
                log.finish(report(log.history, log.config["parameters"]), interrupted=True)
                return 128 + stopped.args[0]
        if came:
            return say(f"{Stopped(came[0])} after training finished; the model and metrics are "
                       "written.", 128 + came[0])
        return 0
    return boundary(train, kept=log.kept)


@contextlib.contextmanager
def stoppable(log):
    """While it lasts, the first SIGINT or SIGTERM raises Stopped where the run is; once every
    epoch has finished, it only waits for the files to be written. Either way it is listed (the
    list this yields, which sets the exit status), and the signals after it go unheard."""
    came = []
    block = getattr(signal, "pthread_sigmask", lambda how, signals: None)

    def stop(signum, frame):
        came.append(signum)
        block(signal.SIG_BLOCK, STOPS)   # the next ones wait, undelivered, until the end
        if len(came) == 1 and not (log.config and len(log.history) == log.config["epochs"]):
            raise Stopped(signum)
    previous = [signal.signal(s, stop) for s in STOPS]
    try:
        yield came
    finally:   # after a signal, the rest are ignored (SIG_IGN outlives the interpreter's end)
        for s, handler in zip(STOPS, [signal.SIG_IGN] * 2 if came else previous):
            signal.signal(s, handler)
        block(signal.SIG_UNBLOCK, STOPS)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument costs one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(say(f"{self.prog}: error: {message}", 2))


def bounded(kind, low=0, high=None, low_allowed=False, high_allowed=False):
    """An argparse type: a finite number of `kind` between low and high (each end excluded
    unless allowed; high None: no upper end), else a one-line error that names the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:   # trained in float32
            raise argparse.ArgumentTypeError(
                f"must be a finite number, at most {FLOAT32_MAX:.4g} (float32), got {text}")
        if not ((value >= low if low_allowed else value > low)
                and (high is None or (value <= high if high_allowed else value < high))):
            wanted = (f"in {'[(' [not low_allowed]}{low}, {high}{'])' [not high_allowed]}"
                      if high is not None else f"{low} or more" if low_allowed
                      else f"greater than {low}")
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


def recipes_say(recipes, key):
    """What the recipes set, for --help: "32; 64 for Model 5", or for a switch which models
    have it on: "Models 2 and 3"."""
    models = {}
    for number, recipe in recipes.items():
        models.setdefault(recipe[key], []).append(number)
    if all(isinstance(value, bool) for value in models):
        return which(models.get(True, []))
    usual = max(models, key=lambda value: len(models[value]))
    return "; ".join([f"{usual:g}"] + [f"{v:g} for {which(m)}" for v, m in models.items() if v != usual])


def which(numbers):
    """[5] -> "Model 5", [2, 3] -> "Models 2 and 3", [3, 4, 5] -> "Models 3 to 5"."""
    if len(numbers) == 1:
        return f"Model {numbers[0]}"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"Models {numbers[0]} to {numbers[-1]}"
    return f"Models {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def build_parser(models, recipes):
    p = ArgumentParser(description="Train a tiny CNN on MNIST (SGD + StepLR).")
    recipe = lambda what, key: f"{what} (default: the recipe's: {recipes_say(recipes, key)})"
    number = lambda flag, kind, what, key, *limits, **more: p.add_argument(
        flag, type=bounded(kind, *limits), help=recipe(what, key), **more)
    p.add_argument("--model", type=int, choices=sorted(models), default=3,
                   help="which model (default: 3)")
    p.add_argument("--epochs", type=bounded(int), default=15, help="epochs to train (default: 15)")
    number("--batch-size", int, "training batch size", "batch_size")
    p.add_argument("--test-batch-size", type=bounded(int), default=250,
                   help="test batch size; one larger than the test set is all of it (default: 250)")
    number("--lr", float, "learning rate", "lr")
    number("--momentum", float, "SGD momentum, in [0, 1)", "momentum", 0, 1, True)
    number("--weight-decay", float, "SGD weight decay", "weight_decay", 0, None, True)
    number("--step-size", int, "StepLR: epochs between decays", "step_size")
    number("--gamma", float, "StepLR: factor at each decay", "gamma")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help=recipe("rotate (and --shift) the training images", "augment"))
    number("--rotation", float, "with --augment, the largest angle of rotation, in (0, 180]",
           "rotation", 0, 180, False, True, metavar="DEGREES")
    number("--shift", float, "with --augment, the largest shift along each axis, in [0, 14)",
           "shift", 0, 14, True, metavar="PIXELS")
    p.add_argument("--recompute-bn", action=argparse.BooleanOptionalAction, help=recipe(
        "test with BatchNorm statistics recomputed without Dropout, and as trained beside them",
        "recompute_bn"))
    p.add_argument("--seed", type=bounded(int, 0, SEED_LIMIT, True, True), default=1,
                   help=f"random seed, in [0, {SEED_LIMIT}] (default: 1)")
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
    parser = build_parser(models, recipes)
    args = parser.parse_args(argv)
    given = {name for name, value in vars(args).items() if value is not None}
    vars(args).update({k: v for k, v in recipes[args.model].items() if k not in given})
    if not args.augment and given & {"rotation", "shift"}:
        parser.error("argument --rotation/--shift: unused " + (
            "with --no-augment" if "augment" in given else
            f"without --augment (Model {args.model}'s recipe does not augment)"))
    decays = (args.epochs - 1) // args.step_size
    if args.gamma > 1 and math.log(args.lr) + decays * math.log(args.gamma) > math.log(FLOAT32_MAX):
        parser.error(f"argument --gamma: {decays} decays by {args.gamma:g} take lr {args.lr:g} "
                     "past float32")
    args.data_dir = os.path.expanduser(args.data_dir)
    inputs = [data.raw_folder(args.data_dir) / name for name in data.RAW_FILES]
    for flag in ("--save-model", "--metrics"):
        name = flag[2:].replace("-", "_")
        path = getattr(args, name) and os.path.expanduser(getattr(args, name))
        setattr(args, name, path)
        if path is not None and (problem := unwritable(path, inputs)):
            parser.error(f"argument {flag}: cannot write {path}: {problem}")
    if args.save_model and args.metrics and os.path.realpath(args.save_model) == \
            os.path.realpath(args.metrics):
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


# The data, once the batches fit it and the memory.
def load_data(args, model_class):
    """The splits on the device, once the batch sizes fit the data and the memory (the model is
    sized before the seed is set, drawing no random number the run would); a --dry-run keeps
    one batch of each."""
    available = available_memory(args.device)
    train_split, test_split = data.load_splits(args.data_dir, device=args.device)
    if args.batch_size > len(train_split[1]):   # a test batch larger than the test set is all of it
        raise Failure(f"argument --batch-size: {args.batch_size:,} is more than the "
                      f"{len(train_split[1]):,} training images", status=2)
    args.test_batch_size = min(args.test_batch_size, len(test_split[1]))
    split_bytes = sum(t.nbytes for t in (*train_split, *test_split))
    check_memory(model_class(), args, split_bytes, available)
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


def check_memory(model, args, data_bytes, available):
    """Refuse a batch that cannot fit: a training batch's activations and gradients (the
    summary's per-image figure) or a test batch's activations (half as much, no gradients), the
    data, and the parameters with their gradients and momentum."""
    flag, batch = "--batch-size", args.batch_size
    if args.test_batch_size > 2 * args.batch_size:
        flag, batch = "--test-batch-size", args.test_batch_size
    needed = (forward_backward_bytes(model) * max(args.batch_size, args.test_batch_size / 2)
              + data_bytes + 3 * 4 * count_parameters(model)[0])
    if available is not None and needed > available:
        step, gib = "a training step" if flag == "--batch-size" else "a test pass", 1024 ** 3
        raise Failure(f"{step} at {flag} {batch:,} needs about {needed / gib:.1f} GiB but "
                      f"{args.device} has {available / gib:.1f} GiB available; use a smaller {flag}")


class Progress:
    """tqdm's line (loss, batch, accuracy, bar, elapsed<remaining, it/s), redrawn on a terminal
    and written once to a file or pipe; it reads the device's sums every CHECK_EVERY steps."""

    def __init__(self, total, stream=None):
        self.total, self.stream = total, stream or sys.stdout
        self.live = self.stream.isatty()
        try:   # a stream of str without an encoding (StringIO) takes any text
            self.block = "█".encode(getattr(self.stream, "encoding", None) or "utf-8") and "█"
        except (UnicodeEncodeError, LookupError):
            self.block = "#"   # an ASCII console gets tqdm's #
        self.start = self.drawn = time.perf_counter()
        self.done = self.seen = 0

    def __call__(self, loss, correct, seen):
        """After a step: the loss, and the running count of correct predictions and of images."""
        self.done, self.correct, self.seen = self.done + 1, correct, seen
        if self.done % CHECK_EVERY and self.done != self.total:
            return
        self.loss = loss.item()
        if not math.isfinite(self.loss):
            self.stream.write("\n")
            raise Diverged
        if self.done == self.total:   # the finished line
            self.seconds = time.perf_counter() - self.start
            self.stream.write(("\r" if self.live else "") + self.line() + "\n")
            self.stream.flush()
        elif self.live and time.perf_counter() - self.drawn >= 0.1:
            self.stream.write("\r" + self.line())
            self.stream.flush()
            self.drawn = time.perf_counter()

    def line(self):
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else 0.0
        clock = lambda seconds: "%02d:%02d" % divmod(int(seconds), 60)
        return (f"Loss={self.loss:.4f} Batch_id={self.done - 1} "
                f"Accuracy={100 * self.correct.item() / self.seen:.2f}: "
                f"{100 * self.done // self.total:3d}%|{(self.block * (self.done * 10 // self.total)):10}| "
                f"{self.done}/{self.total} [{clock(elapsed)}<{clock(remaining)}, {rate:.2f}it/s]")


class RunLog:
    """The run's record: its configuration and every finished epoch, in --metrics after each
    epoch; at the end the verdict, and the model as last tested in --save-model."""

    def __init__(self, report, record=None):
        self.report, self.record = report, record or {}
        self.args = self.config = self.tested = self.bar = None
        self.history = []

    def start(self, args, parameters, train_images):
        self.args, self.steps = args, math.ceil(train_images / args.batch_size)
        self.config = {
            "model": args.model, "parameters": parameters, "epochs": args.epochs,
            "batch_size": args.batch_size, "test_batch_size": args.test_batch_size,
            "optimizer": "SGD", "lr": args.lr, "momentum": args.momentum,
            "weight_decay": args.weight_decay, "scheduler": "StepLR",
            "step_size": args.step_size, "gamma": args.gamma, "augment": args.augment,
            "rotation_degrees": args.rotation if args.augment else 0.0,
            "shift_pixels": args.shift if args.augment else 0.0,
            "recompute_bn": args.recompute_bn, "recompute_images": args.recompute_images,
            "seed": args.seed, "device": str(args.device), "dry_run": args.dry_run,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, **self.record}
        self.metrics = {"config": self.config, "epochs": self.history}

    def progress(self):
        """The progress line of the epoch that starts now."""
        self.bar = Progress(self.steps)
        return self.bar

    def epoch(self, epoch, lr, train_loss, train_accuracy, tests, tested):
        """Keep a finished epoch (its test fields, the model as tested), print its times and
        rewrite --metrics; Diverged if a number in it or a weight is not finite."""
        train_seconds = self.bar.seconds
        test_seconds = time.perf_counter() - self.bar.start - train_seconds
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
                  "train_accuracy": train_accuracy,
                  "test_accuracy": 100 * tests["test_correct"] / tests["test_total"], **tests,
                  "seconds": train_seconds + test_seconds, "train_seconds": train_seconds,
                  "test_seconds": test_seconds,
                  "train_images_per_second": self.bar.seen / train_seconds}
        numbers = [n for n in record.values() if isinstance(n, float)]
        if not all(map(math.isfinite, numbers + [p.sum().item() for p in tested.parameters()])):
            raise Diverged
        recomputing = (f", {tests['recompute_seconds']:.2f} s of it recomputing BatchNorm "
                       "statistics" if "recompute_seconds" in tests else "")
        print(f"Epoch time: {record['seconds']:.1f} s (train {train_seconds:.1f} s, "
              f"{record['train_images_per_second']:,.0f} images/s; test {test_seconds:.2f} s"
              f"{recomputing})")
        self.tested = tested
        self.history.append(record)   # from here on, once the last epoch, a signal waits
        self.save_metrics()

    def save_metrics(self):
        if self.args.metrics:
            save_json(self.args.metrics, self.metrics)

    def finish(self, verdict, interrupted=False):
        """Write the verdict, and the model unless the run was stopped: each even if the other
        cannot be written."""
        self.metrics.update(result=verdict, **({"interrupted": True} if interrupted else {}))
        try:
            self.save_metrics()
        finally:
            if self.args.save_model and self.tested is not None and not interrupted:
                state = self.tested.state_dict()
                write_atomically(self.args.save_model, lambda f: torch.save(state, f))
                print(f"Saved the model's state_dict to {self.args.save_model}")

    def kept(self):
        """Where the finished epochs are, for a message about a failed output stream."""
        if self.args and self.args.metrics and self.history:
            return f"; {len(self.history)} finished epoch(s) are in {self.args.metrics}"
        return ""


# Files: one writer for every output, its path checked before any work, never half written.
def unwritable(path, inputs=()):
    """Why a file cannot be written at path, or None. A symbolic link is written through to its
    target; a folder, a device, one of the `inputs` or the file that this script's output or
    errors go to is refused."""
    if not path:
        return "the path is empty"
    target = os.path.realpath(path)
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or os.path.isdir(target):
        return "it names a folder, not a file"
    if target in [os.path.realpath(p) for p in inputs]:
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
    """Call write(file) on a temporary file beside path's target, then rename it over the target,
    so that no reader (nor a run that dies) sees half a file. The file keeps the mode it had, or
    gets the one open() would give it. An OSError names the path."""
    target, tmp = os.path.realpath(path), None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            write(f)
        if os.path.exists(target):
            mode = stat.S_IMODE(os.stat(target).st_mode)
        else:
            mask = os.umask(0o022)   # the umask is only read by setting it: put it back
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(tmp, mode)
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
