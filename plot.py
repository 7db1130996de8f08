"""Pictures of a run: its curves from a --metrics file, or what its model gets wrong.

    python train.py --model 5 --metrics run.json --save-model m5.pt
    python plot.py run.json                    # accuracy and loss per epoch -> run.svg
    python plot.py m5.pt --model 5             # the misclassified test digits -> m5-mistakes.svg

A .json file is a run's metrics, any other a state_dict, which needs --model: it does not say
which model it is (Models 3 and 4 hold the same tensors). The picture, an SVG with each digit a
PNG inside, goes beside the file if no picture is there yet, or where --out says (never over the
file it reads).
"""
import base64
import json
import math
import os
import struct
import sys
import zlib
from xml.sax.saxutils import escape, quoteattr

import torch

import data
import train
from models import MODELS

SCALE = 2                    # each image pixel drawn as SCALE x SCALE
CELL_W, CELL_H = 64, 92      # one misclassified digit with its caption
COLUMNS = 15
BLUE, GREY = "#3465a4", "#555"


# SVG as text: the helpers every picture of the project is drawn with.
def document(width, height, elements):
    """An SVG document of the elements on a white page."""
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
                      f'<rect width="{width}" height="{height}" fill="white"/>', *elements,
                      "</svg>"]) + "\n"


def element(name, content=None, **attributes):
    """<name a="v" .../>, or <name ...>content</name> (escaped); stroke_width= is stroke-width."""
    pairs = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(str(v))}"
                    for k, v in attributes.items())
    if content is None:
        return f"<{name}{pairs}/>"
    return f"<{name}{pairs}>{escape(str(content))}</{name}>"


def panel(left, top, width, height, title, series, low, high, step, shaded=3, target=None,
          show_outside=False):
    """One chart of values per epoch at (left, top), as SVG elements: the title, grid lines
    `step` apart, the last `shaded` epochs shaded, the target dashed, each series (values, colour,
    width, opacity) a line; a value beyond [low, high] at the edge, and marked if `show_outside`."""
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
        for e, v in enumerate(values if show_outside else []):
            if not low <= v <= high:   # below the bottom edge, or above the top one
                out.append(element("text", f"{'↓' if v < low else '↑'} {v:.2f}", fill=colour,
                                   x=f"{x(e) + 4:.1f}", y=f"{y(v) + (-4 if v < low else 12):.1f}"))
    if target is not None:
        out.append(element("line", x1=x0, x2=x0 + inner_w, y1=f"{y(target):.1f}",
                           y2=f"{y(target):.1f}", stroke="black", stroke_dasharray="4 3"))
        out.append(element("text", f"{target:.2f}%", x=x0 + 4, y=f"{y(target) - 4:.1f}"))
    return out


def curves(run, name):
    """The SVG of a run's metrics: accuracy, and loss, per epoch, training and test; the target
    its verdict records dashed, its last epochs shaded (a file from before the verdict recorded
    them as numbers: train.py's), a value below the axis marked."""
    epochs, result = run["epochs"], run.get("result", {})
    accuracy = [[e[k] for e in epochs] for k in ("train_accuracy", "test_accuracy")]
    loss = [[e[k] for e in epochs] for k in ("train_loss", "test_loss")]
    level = result.get("target_accuracy", train.TARGET_ACCURACY if result else None)
    last = result.get("target_epochs", train.TARGET_EPOCHS if result else 0)
    lowest = min(98.5, *([a for values in accuracy for a in values[1:]] or accuracy[1]))
    every = next(s for s in (0.5, 1, 2, 5, 10, 20) if (100 - lowest) / s <= 8)   # grid lines
    low = every * math.floor(lowest / every)   # epoch 0 may start far below: marked at the edge
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
                      (accuracy[1], BLUE, 1.5, 1)], low, 100, every, last, level, True)
    elements += panel(370, 20, 370, 280, "loss", [(loss[0], GREY, 1.5, 1), (loss[1], BLUE, 1.5, 1)],
                      0, top, step, last, show_outside=True)
    return document(740, 300, elements)


def read_metrics(path):
    """A --metrics file of train.py with at least one epoch, or the one line that says why not."""
    try:
        with open(path, "rb") as f:
            run = json.load(f)
        numbers = [float(e[k]) for e in run["epochs"] for k in
                   ("train_accuracy", "test_accuracy", "train_loss", "test_loss")]
        [run["config"][k] for k in ("model", "seed", "epochs")]   # the title's
    except (ValueError, KeyError, TypeError, IndexError):
        sys.exit(f"error: {path} is not a --metrics file of train.py")
    if not numbers or not all(map(math.isfinite, numbers)):
        sys.exit(f"error: {path} holds no finished epoch, or numbers that are not finite")
    return run


# What a model gets wrong.
def load_model(path, number):
    """Model `number` with the weights of `path`, or the one line that says why not: not a
    state_dict, or another model's (naming those it fits)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)   # tensors, no code
    except Exception:   # a text file, a whole pickled module: nothing a weights-only load takes
        sys.exit(f"error: {path} is not a state_dict (as train.py --save-model writes)")
    models = {n: MODELS[n]() for n in MODELS}
    for n, model in list(models.items()):
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError):   # other names or shapes; not a dict
            del models[n]
    if number not in models:
        they = f"use --model {' or '.join(map(str, models))}" if models else "it fits no model"
        sys.exit(f"error: {path} does not hold Model {number}'s weights; {they}")
    return models[number]


def predictions(model, pixels, labels):
    """(predicted class, its probability) for every test image, the model in eval mode."""
    with torch.inference_mode():
        top = torch.cat([model.eval()(images).exp()
                         for images, _ in data.test_batches(pixels, labels, 1000)]).max(dim=1)
    return top.indices, top.values


def confusion_matrix(labels, predicted):
    """counts[t, p]: test digits of true class t that the model called p."""
    return torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10)


def png_uri(image):
    """A data: URI of an image in [0, 1] (1 x H x W), an 8-bit grey PNG written here:
    torchvision deprecates its encode_png (0.29), to be removed."""
    grey = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()[0]
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body
                                + struct.pack(">I", zlib.crc32(kind + body)))
    rows = b"".join(b"\0" + bytes(row) for row in grey.tolist())   # each row unfiltered
    header = struct.pack(">IIBBBBB", *grey.shape[::-1], 8, 0, 0, 0, 0)   # 8-bit grey
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
           + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def draw(pixels, labels, predicted, probability, title):
    """The SVG: the misclassified digits, by true class and the most confident first; the matrix."""
    wrong = (predicted != labels).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: (labels[i].item(), -probability[i].item()))
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
    out = [element("text", "Confusion matrix: rows are the true digit, columns the prediction, "
                           "and at the right each digit's accuracy", x=left, y=top, font_size=13)]
    for t in range(10):
        y, accuracy = y0 + t * cell, 100 * matrix[t, t].item() / max(1, matrix[t].sum().item())
        out += [element("text", t, x=x0 + t * cell + cell / 2, y=y0 - 6, text_anchor="middle"),
                element("text", t, x=x0 - 8, y=y + cell / 2 + 4, text_anchor="end"),
                element("text", f"{accuracy:.2f}%", x=x0 + 10 * cell + 8, y=y + cell / 2 + 4)]
        for p in range(10):
            n = matrix[t, p].item()
            shade = int(235 - 160 * n / largest_off)
            fill = "#d8e4f5" if t == p else f"rgb(255,{shade},{shade})" if n else "white"
            out.append(element("rect", x=x0 + p * cell, y=y, width=cell, height=cell, fill=fill,
                               stroke="#ccc"))
            if n:
                out.append(element("text", f"{n:,}", x=x0 + p * cell + cell / 2,
                                   y=y + cell / 2 + 4, text_anchor="middle"))
    return out


def main(argv=None):
    """The command line; the exit status: 0, 1 for what failed, 2 for a bad argument."""
    p = train.parser(description=__doc__.splitlines()[0])
    p.add_argument("file", help="a --metrics file (.json), or a state_dict of --save-model")
    p.add_argument("--model", type=int, choices=sorted(MODELS), help="which model the weights are")
    p.add_argument("--out", type=train.writable,
                   help="the picture (default, if new: FILE.svg, or FILE-mistakes.svg for weights)")
    p.add_argument("--data-dir", default=data.default_data_dir(), help="as train.py's")
    args = p.parse_args(argv)
    weights = not args.file.endswith(".json")
    if not os.path.isfile(args.file):
        p.error(f"argument file: {args.file} is not a file that can be read")
    if weights and args.model is None:
        p.error("argument --model: required for weights (Models 3 and 4 hold the same tensors)")
    out = args.out or os.path.splitext(args.file)[0] + ("-mistakes.svg" if weights else ".svg")
    if not args.out and os.path.exists(out):
        p.error(f"argument --out: {out} exists; name it with --out to replace it")
    if os.path.realpath(out) == os.path.realpath(args.file):
        p.error(f"argument --out: {out} is the file it draws")
    if not weights:
        run = read_metrics(args.file)
        svg, said = curves(run, os.path.basename(args.file)), f"{len(run['epochs'])} epoch(s)"
    else:
        model = load_model(args.file, args.model)
        pixels, labels = data.load_split(args.data_dir, train=False)
        predicted, probability = predictions(model, pixels, labels)
        svg = draw(pixels, labels, predicted, probability,
                   f"Model {args.model}, {os.path.basename(args.file)}")
        right = (predicted == labels).sum().item()
        said = (f"{len(labels) - right} misclassified test digits of {len(labels):,} "
                f"({100 * right / len(labels):.2f}% correct)")
    try:
        train.write_whole(out, svg.encode("utf-8"))
    except OSError as e:
        sys.exit(f"error: cannot write {e.filename}: {e.strerror}")
    print(f"Drew {said} in {out}")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(errors="replace")   # a name the console cannot spell: "?", no crash
    sys.exit(main())
