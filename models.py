"""The tiny MNIST networks of the write-up, a parameter counter and a torchsummary-style table.

Models 1-3 are the three steps of the write-up "Train a tiny CNN model with less than 8000
parameters and hit 99.4% accuracy constantly in last 3 epochs", layer for layer: run
`python models.py` to print their tables, which match the write-up's byte for byte. Models 4 and 5
are our own steps: Model 3's layers meeting its target on far more seeds, and the same with fewer
than 6,000 parameters.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """The forward pass the write-up's models share: two conv blocks, a max-pool, two conv blocks,
    a max-pool, two conv blocks, global average pooling and a linear layer to the 10 digits.
    Subclasses build the layers; log-probabilities come out, as `F.nll_loss` expects."""

    def forward(self, x):
        x = self.convblock1(x)
        x = self.convblock2(x)
        x = self.pool1(x)
        x = self.convblock3(x)
        x = self.convblock4(x)
        x = self.pool2(x)
        x = self.convblock5(x)
        x = self.convblock6(x)
        x = self.gap(x)
        x = x.flatten(1)
        x = self.fc(x)
        return F.log_softmax(x, dim=-1)


def conv_relu(in_channels, out_channels, padding):
    """A 3x3 convolution without bias, then ReLU: Model 1's block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=(3, 3), padding=padding, bias=False),
        nn.ReLU(),
    )


def conv_relu_bn(in_channels, out_channels, padding):
    """A 3x3 convolution without bias, ReLU and BatchNorm: every block of Model 4, which has no
    Dropout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=(3, 3), padding=padding, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(out_channels),
    )


def conv_bn_relu(in_channels, out_channels, padding):
    """A 3x3 convolution without bias, BatchNorm, then ReLU: every block of Model 5, where the
    ReLU sees normalized inputs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=(3, 3), padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def conv_relu_bn_dropout(in_channels, out_channels, padding):
    """conv_relu_bn, then Dropout(0.1): every block of Models 2 and 3 (Model 4 has no Dropout)."""
    return nn.Sequential(*conv_relu_bn(in_channels, out_channels, padding), nn.Dropout(0.1))


class Model1(Net):
    """Target: have the basic skeleton set up with less than 10K parameters (9,746)."""

    def __init__(self):
        super().__init__()
        self.convblock1 = conv_relu(1, 8, padding=1)     # 28x28, receptive field 3
        self.convblock2 = conv_relu(8, 12, padding=1)    # 28x28, RF 5
        self.pool1 = nn.MaxPool2d(2, 2)                  # 14x14, RF 6
        self.convblock3 = conv_relu(12, 16, padding=1)   # 14x14, RF 10
        self.convblock4 = conv_relu(16, 16, padding=0)   # 12x12, RF 14
        self.pool2 = nn.MaxPool2d(2, 2)                  # 6x6,   RF 16
        self.convblock5 = conv_relu(16, 16, padding=0)   # 4x4,   RF 24
        self.convblock6 = conv_relu(16, 16, padding=0)   # 2x2,   RF 32
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)


class Model2(Net):
    """Target: add regularization (BatchNorm and Dropout) to remove overfitting and raise the
    train and test accuracy of Model 1 (9,914 parameters)."""

    def __init__(self):
        super().__init__()
        self.convblock1 = conv_relu_bn_dropout(1, 8, padding=1)
        self.convblock2 = conv_relu_bn_dropout(8, 12, padding=1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.convblock3 = conv_relu_bn_dropout(12, 16, padding=1)
        self.convblock4 = conv_relu_bn_dropout(16, 16, padding=0)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.convblock5 = conv_relu_bn_dropout(16, 16, padding=0)
        self.convblock6 = conv_relu_bn_dropout(16, 16, padding=0)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)


class Model3(Net):
    """Target: fewer than 8,000 parameters (7,788), with data augmentation (rotation): 99.4% test
    accuracy in each of the last 3 of 15 epochs.

    The write-up adds the rotation against overfitting; with BatchNorm, Dropout and the rotation
    these layers underfit (training accuracy below test accuracy), which is where Model 4 starts."""

    def __init__(self):
        super().__init__()
        self.convblock1 = conv_relu_bn_dropout(1, 8, padding=1)
        self.convblock2 = conv_relu_bn_dropout(8, 12, padding=1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.convblock3 = conv_relu_bn_dropout(12, 16, padding=1)
        self.convblock4 = conv_relu_bn_dropout(16, 16, padding=0)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.convblock5 = conv_relu_bn_dropout(16, 11, padding=0)
        self.convblock6 = conv_relu_bn_dropout(11, 10, padding=0)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 10, bias=False)


class Model4(Net):
    """Target: 99.4% test accuracy in each of the last 3 of 15 epochs on 19 seeds in 20 or more,
    not on four in five, with Model 3's 7,788 parameters.

    Model 3's layers without Dropout, trained on digits shifted by up to 2 pixels as well as
    rotated. Model 3 underfits (its training accuracy stays below its test accuracy), so Dropout
    costs fit that its narrow blocks cannot spare; yet without Dropout alone these layers stay at
    Model 3's level. The shift lifts it and lowers the training accuracy: it regularizes where
    Dropout did not."""

    def __init__(self):
        super().__init__()
        self.convblock1 = conv_relu_bn(1, 8, padding=1)     # 28x28, receptive field 3
        self.convblock2 = conv_relu_bn(8, 12, padding=1)    # 28x28, RF 5
        self.pool1 = nn.MaxPool2d(2, 2)                     # 14x14, RF 6
        self.convblock3 = conv_relu_bn(12, 16, padding=1)   # 14x14, RF 10
        self.convblock4 = conv_relu_bn(16, 16, padding=0)   # 12x12, RF 14
        self.pool2 = nn.MaxPool2d(2, 2)                     # 6x6,   RF 16
        self.convblock5 = conv_relu_bn(16, 11, padding=0)   # 4x4,   RF 24
        self.convblock6 = conv_relu_bn(11, 10, padding=0)   # 2x2,   RF 32
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 10, bias=False)


class Model5(Net):
    """Target: Model 4's 19 seeds in 20 with fewer than 6,000 parameters (5,936).

    Model 4 with 12 channels where it has 16 underfits on Model 4's recipe. Three changes that
    each lift it a little lift it together: BatchNorm before the ReLU, a batch of 64 at twice the
    rate, and digits moved less (up to 5 degrees and 1 pixel). Its training accuracy rises and so
    does its test accuracy."""

    def __init__(self):
        super().__init__()
        self.convblock1 = conv_bn_relu(1, 8, padding=1)     # 28x28, receptive field 3
        self.convblock2 = conv_bn_relu(8, 12, padding=1)    # 28x28, RF 5
        self.pool1 = nn.MaxPool2d(2, 2)                     # 14x14, RF 6
        self.convblock3 = conv_bn_relu(12, 12, padding=1)   # 14x14, RF 10
        self.convblock4 = conv_bn_relu(12, 12, padding=0)   # 12x12, RF 14
        self.pool2 = nn.MaxPool2d(2, 2)                     # 6x6,   RF 16
        self.convblock5 = conv_bn_relu(12, 11, padding=0)   # 4x4,   RF 24
        self.convblock6 = conv_bn_relu(11, 10, padding=0)   # 2x2,   RF 32
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 10, bias=False)


MODELS = {1: Model1, 2: Model2, 3: Model3, 4: Model4, 5: Model5}


def count_parameters(model):
    """(total, trainable) numbers of parameters; a parameter shared by two layers counts once."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return total, trainable


def _per_sample_shape(output):
    """The output shape with -1 for the batch, as torchsummary writes it (a list per tensor)."""
    if isinstance(output, (list, tuple)):
        return [_per_sample_shape(o) for o in output]
    return [-1] + list(output.shape[1:])


def _per_sample_numel(output):
    if isinstance(output, (list, tuple)):
        return sum(_per_sample_numel(o) for o in output)
    return output[0].numel()


def _trace_leaf_calls(model, input_size):
    """Run one small batch through the model and return a (class name, output, own parameter
    count) row for every call of a leaf module, in the order the calls happen.

    The model runs in eval mode without gradients, so BatchNorm statistics and .grad stay as
    they were; its mode is restored and every hook removed, even if the forward pass fails."""
    rows = []

    def record(module, inputs, output):
        own = sum(p.numel() for p in module.parameters(recurse=False))
        shape, numel = _per_sample_shape(output), _per_sample_numel(output)
        rows.append((type(module).__name__, shape, numel, own))

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *input_size, device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, training in was_training.items():
            m.training = training
    return rows


def summary(model, input_size=(1, 28, 28)):
    """The model's table in torchsummary's format, as a string: one row per call of a leaf module
    (named ClassName-k in the order the calls run), then the parameter totals and the memory
    estimate at 4 bytes a number (every output, and its gradient in the backward pass). Totals
    count each parameter once, however often it is used."""
    rule, double_rule = "-" * 64, "=" * 64
    row = "{:>20}  {:>25} {:>15}".format
    lines = [rule, row("Layer (type)", "Output Shape", "Param #"), double_rule]
    calls = _trace_leaf_calls(model, input_size)
    for k, (name, shape, _, own) in enumerate(calls, start=1):
        lines.append(row(f"{name}-{k}", str(shape), f"{own:,}"))
    total, trainable = count_parameters(model)
    megabytes = 4 / 1024 ** 2
    input_mb = torch.Size(input_size).numel() * megabytes
    activations_mb = 2 * sum(numel for _, _, numel, _ in calls) * megabytes
    params_mb = total * megabytes
    lines += [
        double_rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        rule,
        "Input size (MB): %0.2f" % input_mb,
        "Forward/backward pass size (MB): %0.2f" % activations_mb,
        "Params size (MB): %0.2f" % params_mb,
        "Estimated Total Size (MB): %0.2f" % (input_mb + activations_mb + params_mb),
        rule,
    ]
    return "\n".join(lines)


def print_tables():
    """Every model's target (its docstring's first paragraph) and table: `python models.py`."""
    for number, model_class in MODELS.items():
        target = " ".join(model_class.__doc__.split("\n\n")[0].split())
        print(f"Model {number}: {target}\n{summary(model_class())}\n")


if __name__ == "__main__":
    import signal
    if hasattr(signal, "SIGPIPE"):   # `python models.py | head`: a quiet end, as a shell tool's
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    print_tables()
