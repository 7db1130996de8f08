"""What a trained model gets wrong: every misclassified test digit and the confusion matrix, as one
picture.

    python train.py --model 3 --seed 21 --save-model m3.pt     # any run, any device
    python errors.py m3.pt --model 3 --out errors.svg          # draws it, prints the matrix

It reads a `--save-model` file rather than being a flag of train.py, so that a committed model
can be drawn again without training it again, and train.py stays the lesson. `--model` is required:
a state_dict does not say which model it is, and Models 3 and 4 hold the same tensors (Dropout has
none), so Model 4's weights load into Model 3 as well. The picture is SVG
written as text, as lab/tables.py writes `accuracy.svg`: each digit is its own 28x28 PNG
(torchvision.io.encode_png) inside it, under a caption "true → predicted" and the model's
probability for what it predicted; the digits are ordered by their true class and, within one,
from the most confident mistake to the least. The confusion matrix below counts test digits by
true class (rows) and prediction (columns), the diagonal set apart, with each class's accuracy.
"""
import base64
import os
import sys

import torch
from torchvision.io import encode_png

import data
from models import MODELS
from train import ArgumentParser, one_line, pick_device, unwritable, write_atomically

SCALE = 2                    # each image pixel drawn as SCALE x SCALE
CELL_W, CELL_H = 64, 92      # one misclassified digit with its caption
COLUMNS = 15


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
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)


def mistakes(labels, predicted, probability):
    """Indices of the misclassified images, by true class, then most confident first."""
    wrong = (predicted != labels).nonzero().flatten().tolist()
    return sorted(wrong, key=lambda i: (labels[i].item(), -probability[i].item()))


def png_uri(image):
    """A data: URI of one image in [0, 1], as an 8-bit grey PNG."""
    grey = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return "data:image/png;base64," + base64.b64encode(encode_png(grey).numpy().tobytes()).decode()


def draw(pixels, labels, predicted, probability, title):
    """The SVG: the misclassified digits in a grid, then the confusion matrix."""
    wrong = mistakes(labels, predicted, probability)
    matrix = confusion_matrix(labels, predicted)
    rows = max(1, -(-len(wrong) // COLUMNS))
    width = COLUMNS * CELL_W + 20
    grid_top, matrix_top = 40, 40 + rows * CELL_H + 50
    cell = 34
    height = matrix_top + 12 * cell + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="14">{title}: {len(wrong)} of {len(labels):,} test digits '
           f'misclassified (true → predicted, the model\'s probability for it)</text>']
    if not wrong:
        out.append(f'<text x="10" y="{grid_top + 20}">No test digit is misclassified.</text>')
    for k, i in enumerate(wrong):
        x, y = 10 + (k % COLUMNS) * CELL_W, grid_top + (k // COLUMNS) * CELL_H
        out.append(f'<image x="{x}" y="{y}" width="{28 * SCALE}" height="{28 * SCALE}" '
                   f'style="image-rendering:pixelated" href="{png_uri(pixels[i])}"/>')
        out.append(f'<text x="{x + 28 * SCALE / 2}" y="{y + 28 * SCALE + 14}" text-anchor="middle">'
                   f'{labels[i].item()} → {predicted[i].item()}</text>')
        out.append(f'<text x="{x + 28 * SCALE / 2}" y="{y + 28 * SCALE + 27}" text-anchor="middle" '
                   f'fill="#555">{100 * probability[i].item():.0f}%</text>')
    out += matrix_svg(matrix, 10, matrix_top, cell)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def matrix_svg(matrix, left, top, cell):
    """The confusion matrix as SVG elements: rows true, columns predicted, the diagonal in blue,
    a mistake's cell redder the more digits it holds, each class's accuracy at the right."""
    largest_off = max(1, (matrix - torch.diag(torch.diag(matrix))).max().item())
    x0, y0 = left + 70, top + 30
    out = [f'<text x="{left}" y="{top}" font-size="13">Confusion matrix: rows are the true digit, '
           f'columns the prediction</text>']
    for j in range(10):
        out.append(f'<text x="{x0 + j * cell + cell / 2}" y="{y0 - 6}" text-anchor="middle">{j}</text>')
    out.append(f'<text x="{x0 + 10 * cell + 8}" y="{y0 - 6}">accuracy</text>')
    for t in range(10):
        y = y0 + t * cell
        out.append(f'<text x="{x0 - 8}" y="{y + cell / 2 + 4}" text-anchor="end">{t}</text>')
        for p in range(10):
            n = matrix[t, p].item()
            if t == p:
                fill = "#d8e4f5"
            elif n:
                fill = f"rgb(255,{int(235 - 160 * n / largest_off)},{int(235 - 160 * n / largest_off)})"
            else:
                fill = "white"
            out.append(f'<rect x="{x0 + p * cell}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                       f'stroke="#ccc"/>')
            if n:
                out.append(f'<text x="{x0 + p * cell + cell / 2}" y="{y + cell / 2 + 4}" '
                           f'text-anchor="middle">{n:,}</text>')
        accuracy = 100 * matrix[t, t].item() / max(1, matrix[t].sum().item())
        out.append(f'<text x="{x0 + 10 * cell + 8}" y="{y + cell / 2 + 4}">{accuracy:.2f}%</text>')
    out.append(f'<text x="{x0 + 5 * cell}" y="{y0 + 10 * cell + 16}" text-anchor="middle">predicted</text>')
    return out


def matrix_text(matrix):
    """The confusion matrix and per-class accuracy as lines of text, for the terminal."""
    lines = ["true\\pred " + "".join(f"{p:>6}" for p in range(10)) + "  accuracy"]
    for t in range(10):
        accuracy = 100 * matrix[t, t].item() / max(1, matrix[t].sum().item())
        lines.append(f"{t:>9} " + "".join(f"{n:>6}" for n in matrix[t].tolist()) + f"  {accuracy:7.2f}%")
    return "\n".join(lines)


def build_parser():
    p = ArgumentParser(description="Draw the test digits a trained model gets wrong, and its confusion matrix.")
    p.add_argument("weights", help="a state_dict written by train.py --save-model")
    p.add_argument("--model", type=int, choices=sorted(MODELS), required=True,
                   help="which model the weights are (required: Models 3 and 4 hold the same tensors)")
    p.add_argument("--out", default="errors.svg", help="the picture to write (default: errors.svg)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--data-dir", default=data.default_data_dir(),
                   help="folder holding MNIST/raw (default: $MNIST_DIR, else ./data)")
    return p


def load_model(path, number, device):
    """Model `number` with the weights of `path`; ValueError with one line if they do not fit."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)   # tensors only, no code
    except FileNotFoundError:
        raise ValueError(f"no file {path}") from None
    except Exception:   # a text file, a whole pickled module: nothing a weights-only load takes
        raise ValueError(f"{path} is not a state_dict (as train.py --save-model writes)") from None
    try:
        model = MODELS[number]().to(device)
        model.load_state_dict(state)
    except Exception as e:   # another model's weights, or a dict of something else
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} does not hold Model {number}'s weights ({first})") from None
    return model


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = os.path.basename(sys.argv[0])
    weights, out = os.path.expanduser(args.weights), os.path.expanduser(args.out)
    inputs = [weights, *(data.raw_folder(args.data_dir) / name for name in data.RAW_FILES)]
    try:
        problem = unwritable(out, inputs)
        if problem:
            raise ValueError(f"argument --out: cannot write {out}: {problem}")
        device = pick_device(args.device)
        model = load_model(weights, args.model, device)
        pixels, labels = data.load_split(args.data_dir, train=False, device=device)
        predicted, probability = predictions(model, pixels, labels)
        svg = draw(pixels, labels, predicted, probability, f"Model {args.model}, {os.path.basename(weights)}")
        write_atomically(out, lambda f: f.write(svg.encode("utf-8")))
    except ValueError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except data.DataError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write {one_line(e.filename or out)}: {e.strerror or e}", file=sys.stderr)
        return 1
    matrix = confusion_matrix(labels, predicted)
    wrong = len(labels) - matrix.diag().sum().item()
    print(matrix_text(matrix))
    print(f"{wrong} of {len(labels):,} test digits misclassified "
          f"({100 * (len(labels) - wrong) / len(labels):.2f}% correct); drawn in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
