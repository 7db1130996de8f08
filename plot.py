"""Pictures of a run: its curves from a --metrics file, or what its model gets wrong.

    python train.py --model 5 --metrics run.json --save-model m5.pt
    python plot.py run.json                    # train and test accuracy and loss -> run.svg
    python plot.py m5.pt --model 5             # the misclassified digits -> m5.svg

Curves: accuracy and loss per epoch, training and test, the last 3 epochs shaded and the target's
99.40% dashed, as results/accuracy.svg draws the committed runs (lab/tables.py draws it with
`panel` below). Mistakes: every misclassified test digit, ordered by true class and within one from
the most confident mistake, under "true -> predicted" and the model's probability for it, then the
confusion matrix (rows true, columns predicted) with each class's accuracy. `--model` is required
for weights: a state_dict does not say which model it is, and Models 3 and 4 hold the same tensors.
The SVG is text, each digit a 28x28 PNG inside it.
"""
import base64
import json
import math
import os
import re
import struct
import sys
import zlib
from xml.sax.saxutils import escape, quoteattr

import torch

import data
import harness
from models import MODELS

SCALE = 2                    # each image pixel drawn as SCALE x SCALE
CELL_W, CELL_H = 64, 92      # one misclassified digit with its caption
COLUMNS = 15
BLUE, RED, GREY = "#3465a4", "#cc0000", "#555"


# SVG as text: the helpers every picture of the project is drawn with.
def document(width, height, elements):
    """An SVG document of the elements on a white page."""
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
                      f'<rect width="{width}" height="{height}" fill="white"/>', *elements,
                      "</svg>"]) + "\n"


def element(name, content=None, **attributes):
    """<name a="v" .../>, or with content (text, escaped) <name ...>content</name>; an
    attribute's _ stands for - (stroke_width="2" is stroke-width="2")."""
    pairs = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(str(v))}"
                    for k, v in attributes.items())
    if content is None:
        return f"<{name}{pairs}/>"
    return f"<{name}{pairs}>{escape(str(content))}</{name}>"


def panel(left, top, width, height, title, series, low, high, step, shaded=3, target=None):
    """One chart of values per epoch at (left, top), as SVG elements: the title, a grid line
    every `step` between low and high, the last `shaded` epochs shaded, the target dashed where
    given, and each series (values, colour, width, opacity) a line; a value outside [low, high]
    is drawn at the edge. The axes take 44 px at the left and 34 below."""
    epochs = max(len(values) for values, *_ in series)
    inner_w, inner_h, x0, y0 = width - 54, height - 64, left + 44, top + 30
    x = lambda epoch: x0 + inner_w * epoch / max(1, epochs - 1)
    y = lambda value: y0 + inner_h * (high - max(low, min(high, value))) / (high - low)
    out = [element("text", title, x=x0, y=top + 16, font_size=13)]
    if epochs >= shaded:
        out.append(element("rect", x=f"{x(epochs - shaded) - 4:.1f}", y=y0, height=inner_h,
                           width=f"{x(epochs - 1) - x(epochs - shaded) + 8:.1f}", fill="#eef3fb"))
    for k in range(int((high - low) / step + 1e-9) + 1):
        value = low + k * step
        out.append(element("line", x1=x0, x2=x0 + inner_w, y1=f"{y(value):.1f}",
                           y2=f"{y(value):.1f}", stroke="#ddd"))
        out.append(element("text", f"{value:.{max(0, -int(f'{step:e}'.split('e')[1]))}f}",
                           x=x0 - 4, y=f"{y(value) + 4:.1f}", text_anchor="end"))
    for epoch in range(0, epochs, 2):
        out.append(element("text", epoch, x=f"{x(epoch):.1f}", y=y0 + inner_h + 16,
                           text_anchor="middle"))
    out.append(element("text", "epoch", x=f"{x0 + inner_w / 2:.1f}", y=y0 + inner_h + 30,
                       text_anchor="middle"))
    for values, colour, line_width, opacity in series:
        points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in enumerate(values))
        out.append(element("polyline", points=points, fill="none", stroke=colour,
                           stroke_width=line_width, stroke_opacity=opacity))
    if target is not None:
        out.append(element("line", x1=x0, x2=x0 + inner_w, y1=f"{y(target):.1f}",
                           y2=f"{y(target):.1f}", stroke="black", stroke_dasharray="4 3"))
        out.append(element("text", f"{target:.2f}%", x=x0 + 4, y=f"{y(target) - 4:.1f}"))
    return out


# The run's curves.
def curves(run, name):
    """The SVG of a run's metrics: accuracy, and loss, per epoch, training and test; the target
    (the one its result states) dashed, its last epochs shaded."""
    epochs, result = run["epochs"], run.get("result", {})
    accuracy = [[e[k] for e in epochs] for k in ("train_accuracy", "test_accuracy")]
    loss = [[e[k] for e in epochs] for k in ("train_loss", "test_loss")]
    target = re.search(r"([\d.]+)% test accuracy in each of the last (\d+) epochs",
                       str(result.get("target")))
    level, last = (float(target[1]), int(target[2])) if target else (None, 0)
    lowest = min(98.5, *([a for values in accuracy for a in values[1:]] or accuracy[1]))
    every = next(s for s in (0.5, 1, 2, 5, 10, 20) if (100 - lowest) / s <= 8)   # grid lines
    low = every * math.floor(lowest / every)   # epoch 0 may start far below: drawn at the edge
    biggest = max(v for values in loss for v in values)
    step = next((s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5) if 5 * s >= biggest), 10)
    top = min(50, step * math.ceil(biggest / step))   # a loss beyond 50 is drawn at 50
    config = run["config"]
    verdict = {True: "; target met", False: "; target not met"}.get(result.get("target_met"), "")
    title = (f"{name}: Model {config['model']}, seed {config['seed']}, {len(epochs)} of "
             f"{config['epochs']} epochs{verdict}")
    elements = [element("text", title, x=10, y=16, font_size=13),
                element("text", "— test", x=600, y=16, fill=BLUE),
                element("text", "— training", x=650, y=16, fill=GREY)]
    elements += panel(0, 20, 370, 280, "accuracy %", [(accuracy[0], GREY, 1.5, 1),
                      (accuracy[1], BLUE, 1.5, 1)], low, 100, every, last, level)
    elements += panel(370, 20, 370, 280, "loss", [(loss[0], GREY, 1.5, 1), (loss[1], BLUE, 1.5, 1)],
                      0, top, step, last)
    return document(740, 300, elements)


def read_metrics(path):
    """A --metrics file of train.py with at least one epoch; a Failure says what it is not."""
    try:
        with open(path, "rb") as f:
            run = json.loads(f.read())
        numbers = [float(e[k]) for e in run["epochs"] for k in
                   ("train_accuracy", "test_accuracy", "train_loss", "test_loss")]
        [run["config"][k] for k in ("model", "seed", "epochs")]
    except OSError as e:
        raise harness.Failure(f"cannot read {path}: {e.strerror}", 2) from None
    except (ValueError, KeyError, TypeError, IndexError):
        raise harness.Failure(f"{path} is not a --metrics file of train.py", 2) from None
    if not numbers or not all(map(math.isfinite, numbers)):
        raise harness.Failure(f"{path} holds no finished epoch, or numbers that are not finite", 2)
    return run


def opening(path):
    """The file's first byte (a --metrics file's is "{"); a Failure where it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(1)
    except FileNotFoundError:
        raise harness.Failure(f"no file {path}", 2) from None
    except OSError as e:   # a folder, a file it may not read
        raise harness.Failure(f"cannot read {path}: {e.strerror}", 2) from None


# What a model gets wrong.
def predictions(model, pixels, labels, batch_size=1000):
    """(predicted class, its probability) for every test image, the model in eval mode."""
    model.eval()
    predicted, probability = [], []
    with torch.inference_mode():
        for images, _ in data.test_batches(pixels, labels, batch_size):
            top = model(images).exp().max(dim=1)
            predicted.append(top.indices)
            probability.append(top.values)
    return torch.cat(predicted), torch.cat(probability)


def confusion_matrix(labels, predicted, classes=10):
    """counts[t, p]: test digits of true class t that the model called p."""
    counts = torch.bincount(labels * classes + predicted, minlength=classes * classes)
    return counts.view(classes, classes)


def mistakes(labels, predicted, probability):
    """Indices of the misclassified images, by true class, then most confident first."""
    wrong = (predicted != labels).nonzero().flatten().tolist()
    return sorted(wrong, key=lambda i: (labels[i].item(), -probability[i].item()))


def png_uri(image):
    """A data: URI of one image in [0, 1] (1 x H x W), as an 8-bit grey PNG."""
    grey = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()[0]
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body
                                + struct.pack(">I", zlib.crc32(kind + body)))
    rows = b"".join(b"\0" + bytes(row) for row in grey.tolist())   # each row unfiltered
    header = struct.pack(">IIBBBBB", *grey.shape[::-1], 8, 0, 0, 0, 0)   # 8-bit grey
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
           + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def draw(pixels, labels, predicted, probability, title):
    """The SVG: the misclassified digits in a grid, then the confusion matrix."""
    wrong = mistakes(labels, predicted, probability)
    rows = max(1, -(-len(wrong) // COLUMNS))
    width, matrix_top, cell = COLUMNS * CELL_W + 20, 40 + rows * CELL_H + 50, 34
    out = [element("text", f"{title}: {len(wrong)} of {len(labels):,} test digits misclassified "
                           "(true → predicted, the model's probability for it)", x=10, y=18,
                   font_size=14)]
    if not wrong:
        out.append(element("text", "No test digit is misclassified.", x=10, y=60))
    for k, i in enumerate(wrong):
        x, y, middle = 10 + (k % COLUMNS) * CELL_W, 40 + (k // COLUMNS) * CELL_H, 14 * SCALE
        out.append(element("image", x=x, y=y, width=28 * SCALE, height=28 * SCALE,
                           style="image-rendering:pixelated", href=png_uri(pixels[i])))
        out.append(element("text", f"{labels[i].item()} → {predicted[i].item()}", x=x + middle,
                           y=y + 28 * SCALE + 14, text_anchor="middle"))
        out.append(element("text", f"{100 * probability[i].item():.0f}%", x=x + middle,
                           y=y + 28 * SCALE + 27, text_anchor="middle", fill=GREY))
    out += matrix_svg(confusion_matrix(labels, predicted), 10, matrix_top, cell)
    return document(width, matrix_top + 12 * cell + 20, out)


def matrix_svg(matrix, left, top, cell):
    """The confusion matrix as SVG elements: rows true, columns predicted, the diagonal in blue,
    a mistake's cell redder the more digits it holds, each class's accuracy at the right."""
    largest_off = max(1, (matrix - torch.diag(torch.diag(matrix))).max().item())
    x0, y0 = left + 70, top + 30
    out = [element("text", "Confusion matrix: rows are the true digit, columns the prediction",
                   x=left, y=top, font_size=13),
           element("text", "accuracy", x=x0 + 10 * cell + 8, y=y0 - 6),
           element("text", "predicted", x=x0 + 5 * cell, y=y0 + 10 * cell + 16,
                   text_anchor="middle")]
    for t in range(10):
        y = y0 + t * cell
        out.append(element("text", t, x=x0 + t * cell + cell / 2, y=y0 - 6, text_anchor="middle"))
        out.append(element("text", t, x=x0 - 8, y=y + cell / 2 + 4, text_anchor="end"))
        for p in range(10):
            n = matrix[t, p].item()
            shade = int(235 - 160 * n / largest_off)
            fill = "#d8e4f5" if t == p else f"rgb(255,{shade},{shade})" if n else "white"
            out.append(element("rect", x=x0 + p * cell, y=y, width=cell, height=cell, fill=fill,
                               stroke="#ccc"))
            if n:
                out.append(element("text", f"{n:,}", x=x0 + p * cell + cell / 2,
                                   y=y + cell / 2 + 4, text_anchor="middle"))
        accuracy = 100 * matrix[t, t].item() / max(1, matrix[t].sum().item())
        out.append(element("text", f"{accuracy:.2f}%", x=x0 + 10 * cell + 8, y=y + cell / 2 + 4))
    return out


def matrix_text(matrix):
    """The confusion matrix and per-class accuracy as lines of text, for the terminal."""
    lines = ["true\\pred " + "".join(f"{p:>6}" for p in range(10)) + "  accuracy"]
    for t in range(10):
        accuracy = 100 * matrix[t, t].item() / max(1, matrix[t].sum().item())
        lines.append(f"{t:>9} " + "".join(f"{n:>6}" for n in matrix[t].tolist())
                     + f"  {accuracy:7.2f}%")
    return "\n".join(lines)


def load_model(path, number, device):
    """Model `number` with the weights of `path`; a Failure, in one line, where they are not
    Model `number`'s (naming the models they fit) or not finite."""
    opening(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)   # tensors, no code
    except Exception:   # a text file, a whole pickled module: nothing a weights-only load takes
        raise harness.Failure(f"{path} is not a state_dict (as train.py --save-model writes)", 2)
    fits = [n for n in MODELS if loads(MODELS[n](), state)]
    if number not in fits:
        they = (f"they fit {which(fits)}: use --model {' or '.join(map(str, fits))}"
                if fits else f"they fit none of {which(list(MODELS))}")
        raise harness.Failure(f"{path} does not hold Model {number}'s weights; {they}", 2)
    model = MODELS[number]().to(device)
    model.load_state_dict(state)
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise harness.Failure(f"{path} holds weights that are NaN or infinite (a run that "
                              "diverged): there is nothing to draw", 2)
    return model


def which(numbers):
    """[5] -> "Model 5", [2, 3] -> "Models 2 and 3", [3, 4, 5] -> "Models 3 to 5"."""
    if len(numbers) == 1:
        return f"Model {numbers[0]}"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"Models {numbers[0]} to {numbers[-1]}"
    return f"Models {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def loads(model, state):
    """Whether the state_dict's tensors are the model's, name for name and shape for shape."""
    own = model.state_dict()
    return isinstance(state, dict) and own.keys() == state.keys() and all(
        isinstance(state[k], torch.Tensor) and state[k].shape == own[k].shape for k in own)


def build_parser():
    p = harness.ArgumentParser(description="Draw a run's curves from its --metrics file, or the "
                                           "test digits a saved model gets wrong.")
    p.add_argument("file", help="a --metrics file, or a state_dict written by --save-model")
    p.add_argument("--model", type=int, choices=sorted(MODELS),
                   help="which model the weights are (required for weights: Models 3 and 4 "
                        "hold the same tensors)")
    p.add_argument("--out", help="the picture to write (default: FILE with .svg for its suffix)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(),
                   help="the folder that holds MNIST/raw (default: $MNIST_DIR, else ./data)")
    return p


def main(argv=None):
    """The command line; the exit status."""
    return harness.boundary(lambda: draw_file(argv))


def draw_file(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    path = os.path.expanduser(args.file)
    out = os.path.splitext(args.file)[0] + ".svg" if args.out is None else args.out
    out = os.path.expanduser(out)
    inputs = [path, *(data.raw_folder(args.data_dir) / name for name in data.RAW_FILES)]
    if problem := harness.unwritable(out, inputs):
        parser.error(f"argument --out: cannot write {out}: {problem}")
    if opening(path) == b"{":
        run = read_metrics(path)
        svg = curves(run, os.path.basename(path))
        harness.write_atomically(out, lambda f: f.write(svg.encode("utf-8")))
        print(f"The curves of {len(run['epochs'])} epoch(s) drawn in {out}")
        return 0
    if args.model is None:
        parser.error("argument --model: required for a model's weights (Models 3 and 4 hold "
                     "the same tensors)")
    try:
        device = harness.pick_device(args.device)
    except ValueError as e:
        parser.error(f"argument --device: {e}")
    model = load_model(path, args.model, device)
    pixels, labels = data.load_split(args.data_dir, train=False, device=device)
    predicted, probability = predictions(model, pixels, labels)
    svg = draw(pixels, labels, predicted, probability,
               f"Model {args.model}, {os.path.basename(path)}")
    harness.write_atomically(out, lambda f: f.write(svg.encode("utf-8")))
    matrix = confusion_matrix(labels, predicted)
    wrong = len(labels) - matrix.diag().sum().item()
    print(matrix_text(matrix))
    print(f"{wrong} of {len(labels):,} test digits misclassified "
          f"({100 * (len(labels) - wrong) / len(labels):.2f}% correct); drawn in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
