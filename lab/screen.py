"""Candidates for a model, each trained by train.py itself, in Model 4's place:

    python -m lab.screen NAME [train.py flags]     # e.g. m3-nodrop --seed 1 --metrics out.json
    python -m lab.screen --list                    # every candidate's table and recipe
    python -m lab.screen --choose [FOLDER]         # a screen's choice from its runs in results/

A candidate is a layer string read left to right, as `sweep.py` (the GPU sweep, results/README.md)
writes it: `OUTpPAD` is a 3x3 convolution to OUT channels with padding PAD (`OUTkKpPAD` a KxK one:
`8k1p0` is a 1x1 convolution to 8 channels), `OUTsPAD` a separable one (a 3x3 convolution of each
channel on its own, then a 1x1 convolution to OUT channels: far fewer parameters for the width), `M`
a 2x2 max-pool; after the last token come global average pooling and a linear layer to the 10
digits. A block is conv, ReLU, BatchNorm (the write-up's order) or conv, BatchNorm, ReLU, then
Dropout where the candidate has it. Its recipe is Model 3's with the changes it names. The run is
train.main's, given the candidate and its recipe as Model 4 (its models= and recipes=), and the
metrics file records the candidate's name and layers beside the rest. The results and the
rules that chose among them are in results/README.md: `m3-...` and the others without a prefix
were the candidates for Model 4 (results/screen/), `f...` its frontier (results/frontier/),
`p...` the screen at 6,000 parameters or fewer (results/screen-6000/), `q...` the screen at
4,500 or fewer (results/screen-4500/).
"""
import re
import signal
import statistics
import sys
from pathlib import Path

if not __package__:   # run by its path (python lab/screen.py): the project's modules are one up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
import torch.nn as nn
import torch.nn.functional as F

import train
from models import Model4, summary

SCREENS = Path(__file__).resolve().parent.parent / "results"
TEACHER = SCREENS / "teacher" / "model4-seed1.pt"   # Model 4, seed 1 (results/README.md)

MODEL3_LAYERS = "8p1 12p1 M 16p1 16p0 M 11p0 10p0"
F5936 = "8p1 12p1 M 12p1 12p0 M 11p0 10p0"   # the frontier's best design under 6,000 parameters
NO_DROPOUT = dict(recompute_bn=False)   # nothing to recompute the statistics for: test as trained
MODEL5_RECIPE = dict(NO_DROPOUT, shift=1.0, rotation=5.0, batch_size=64, lr=0.04)
Q4462 = "8p1 8p1 M 10p1 11p0 M 10p0 10p0"   # f4644 with 11 channels where it has 12


def on_model5s(layers, **change):
    """A candidate in Model 5's block order (conv, BatchNorm, ReLU) and recipe, but for `change`."""
    return dict(layers=layers, order="conv-bn-relu", recipe=dict(MODEL5_RECIPE, **change))


CANDIDATES = {
    "m3-nodrop": dict(layers=MODEL3_LAYERS, recipe=NO_DROPOUT),
    "m3-nodrop-shift2": dict(layers=MODEL3_LAYERS, recipe=dict(NO_DROPOUT, shift=2.0)),
    "m3-bnrelu-nodrop": dict(layers=MODEL3_LAYERS, order="conv-bn-relu", recipe=NO_DROPOUT),
    "gap16-nodrop": dict(layers="8p1 12p1 M 16p1 16p0 M 16p0", recipe=NO_DROPOUT),
    "late16-nodrop": dict(layers="6p1 8p1 M 12p1 16p0 M 16p1 16p0", recipe=NO_DROPOUT),
    "sep44-nodrop": dict(layers="8p1 12p1 M 32s1 32s0 M 44s1 44s0", recipe=NO_DROPOUT),
    "late16-nodrop-shift2": dict(
        layers="6p1 8p1 M 12p1 16p0 M 16p1 16p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "m3-bnrelu-nodrop-shift2": dict(
        layers=MODEL3_LAYERS, order="conv-bn-relu", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    # The frontier: smaller designs with the screen's recipe, to see how few parameters still
    # meet the target.
    "f5936-nodrop-shift2": dict(
        layers="8p1 12p1 M 12p1 12p0 M 11p0 10p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "f5008-nodrop-shift2": dict(
        layers="8p1 8p1 M 12p1 12p0 M 10p0 10p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "f5808-nodrop-shift2": dict(
        layers="8p1 8p1 M 12p1 16p0 M 10p0 10p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "f5936-nodrop-shift2-wd1e4": dict(
        layers="8p1 12p1 M 12p1 12p0 M 11p0 10p0",
        recipe=dict(NO_DROPOUT, shift=2.0, weight_decay=1e-4),
    ),
    # A public single-run design's layers (3,762 parameters): nine convolutions with bias, conv ->
    # BatchNorm -> ReLU -> Dropout 0.01, so it tests with recomputed statistics, as Model 3 does.
    "f3762-shift2": dict(
        layers="4p1 4p1 4p1 M 8p1 8p1 8p1 M 8p1 8p1 8p1", order="conv-bn-relu", dropout=0.01,
        conv_bias=True, fc_bias=True, recipe=dict(shift=2.0),
    ),
    "f3762-nodrop-shift2": dict(
        layers="4p1 4p1 4p1 M 8p1 8p1 8p1 M 8p1 8p1 8p1", order="conv-bn-relu", conv_bias=True,
        fc_bias=True, recipe=dict(NO_DROPOUT, shift=2.0),
    ),
    "f3786-nodrop-shift2": dict(
        layers="6p1 8p1 M 8p1 10p0 M 10p0 10p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    # The promise at 6,000 parameters or fewer: levers that act on underfitting, on Model 4's
    # recipe.
    "p5936-shift1-rot5": dict(layers=F5936, recipe=dict(NO_DROPOUT, shift=1.0, rotation=5.0)),
    "p5936-shift3-rot10": dict(layers=F5936, recipe=dict(NO_DROPOUT, shift=3.0, rotation=10.0)),
    "p5936-lr04": dict(layers=F5936, recipe=dict(NO_DROPOUT, shift=2.0, lr=0.04)),
    "p5936-step8": dict(layers=F5936, recipe=dict(NO_DROPOUT, shift=2.0, step_size=8)),
    "p5936-batch64": dict(layers=F5936, recipe=dict(NO_DROPOUT, shift=2.0, batch_size=64, lr=0.04)),
    "p5936-bnrelu": dict(layers=F5936, order="conv-bn-relu", recipe=dict(NO_DROPOUT, shift=2.0)),
    "p5968-1x1": dict(
        layers="8p1 12p1 M 8k1p0 12p1 16p0 M 8k1p0 12p0 10p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "p5672-1x1-gap4": dict(
        layers="8p1 16p1 M 8k1p0 12p1 16p0 M 8k1p0 16p0 10k1p0", recipe=dict(NO_DROPOUT, shift=2.0)
    ),
    "p5936-bnrelu-batch64-shift1": on_model5s(F5936),
    "p5936-bnrelu-batch128-shift1": on_model5s(F5936, batch_size=128, lr=0.08),
    # The frontier below Model 5: narrower designs on its order and recipe.
    "f5008-bnrelu-batch64-shift1": on_model5s("8p1 8p1 M 12p1 12p0 M 10p0 10p0"),
    "f4644-bnrelu-batch64-shift1": on_model5s("8p1 8p1 M 10p1 12p0 M 10p0 10p0"),
    "f3786-bnrelu-batch64-shift1": on_model5s("6p1 8p1 M 8p1 10p0 M 10p0 10p0"),
    # The promise at 4,500 parameters or fewer: conv -> BatchNorm -> ReLU on Model 5's recipe, with
    # the layers or the recipe value each name says.
    **{name: on_model5s(layers, **change) for name, layers, change in [
           ("q4462", Q4462, {}),
           ("q4440-late8", "8p1 8p1 M 12p1 12p0 M 8p0 8p0", {}),
           ("q4448-gap4", "8p1 8p1 M 12p1 12p0 M 13p0", {}),
           ("q4324-1x1", "8p1 8p1 M 10p1 12p0 M 14p0 10k1p0", {}),
           ("q4404-pool1", "8p1 M 10p1 10p1 10p0 M 10p0 8p0", {}),
           ("q4462-batch128", Q4462, dict(batch_size=128, lr=0.08)),
           ("q4462-wd1e4", Q4462, dict(weight_decay=1e-4)),
           ("q4462-step7", Q4462, dict(step_size=7)),
           ("q4462-rot3", Q4462, dict(rotation=3.0)),
           ("q4076", "8p1 8p1 M 10p1 10p0 M 10p0 8p0", {}),
           ("q3582", "6p1 8p1 M 8p1 10p0 M 10p0 8p0", {}),
           ("q2998", "6p1 6p1 M 8p1 10p0 M 8p0 8p0", {}),
           ("q4462-batch256", Q4462, dict(batch_size=256, lr=0.16)),   # joined 16:31 UTC
           # The width before the linear layer: 10 channels there rather than 8 lifted 3,582 to
           # 3,786 parameters and 99.33% to 99.43% (results/README.md, 2026-12-06).
           ("r4390-late12", "6p1 8p1 M 8p1 10p0 M 12p0 12p0", {}),
           ("r4194-last14", "6p1 8p1 M 8p1 10p0 M 10p0 14p0", {}),
           ("r4134-late12", "6p1 6p1 M 8p1 10p0 M 12p0 12p0", {}),
           ("r3786-batch128", "6p1 8p1 M 8p1 10p0 M 10p0 10p0", dict(batch_size=128, lr=0.08)),
       ]},
    # What the small network learns from, at the two best designs below 5,000 parameters: a
    # teacher (Model 4's answers at a temperature, with a weight), an average of the weights, or
    # BatchNorm statistics recomputed on clean training digits.
    **{f"{size}-{lever}": dict(on_model5s(layers, **recipe), **how)
       for size, layers, recipe in [("s4462", Q4462, dict(batch_size=128, lr=0.08)),
                                    ("s3786", "6p1 8p1 M 8p1 10p0 M 10p0 10p0", {})]
       for lever, how in [("kd2", dict(temperature=2.0, weight=0.5)),
                          ("kd4", dict(temperature=4.0, weight=0.9)),
                          ("ema", dict(decay=0.999)),
                          ("clean", dict(recipe=dict(on_model5s(layers, **recipe)["recipe"],
                                                     recompute_bn=True)))]},
}


class Candidate(nn.Sequential):
    """The blocks of a layer string, global average pooling, a linear layer, log-probabilities;
    with a `temperature`, taught by Model 4 (TEACHER); with a `decay`, tested with an average of
    its weights."""

    def __init__(self, layers, order="conv-relu-bn", dropout=0.0, conv_bias=False, fc_bias=False,
                 temperature=None, weight=0.0, decay=None):
        blocks, channels = [], 1
        for token in layers.split():
            if token == "M":
                blocks.append(nn.MaxPool2d(2, 2))
                continue
            out, size, kind, padding = re.fullmatch(r"(\d+)(?:k(\d+))?([ps])(\d+)", token).groups()
            out, size, padding = int(out), int(size or 3), int(padding)
            if kind == "p":
                conv = nn.Conv2d(
                    channels, out, kernel_size=(size, size), padding=padding, bias=conv_bias
                )
            else:
                conv = nn.Sequential(
                    nn.Conv2d(
                        channels, channels, kernel_size=(size, size), padding=padding,
                        groups=channels, bias=False,
                    ),
                    nn.Conv2d(channels, out, kernel_size=(1, 1), bias=conv_bias),
                )
            norm = (
                [nn.ReLU(), nn.BatchNorm2d(out)]
                if order == "conv-relu-bn"
                else [nn.BatchNorm2d(out), nn.ReLU()]
            )
            blocks.append(nn.Sequential(conv, *norm, *([nn.Dropout(dropout)] if dropout else [])))
            channels = out
        super().__init__(
            *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10, bias=fc_bias),
            nn.LogSoftmax(dim=-1),
        )
        self.temperature, self.weight, self.decay = temperature, weight, decay
        if temperature:   # in a list, the teacher is no submodule: never trained, counted or saved
            self.teacher = [Model4().eval()]
            self.teacher[0].load_state_dict(torch.load(TEACHER, weights_only=True))
        for i, p in enumerate(self.parameters() if decay else []):   # not in the state_dict
            self.register_buffer(f"average{i}", p.detach().clone(), persistent=False)

    def forward(self, x, averaged=True):
        """In training, with a teacher, (1 - weight) x the log-probabilities - weight x T^2 x
        KL(teacher's || own, both softened by T) per image, so that train.py's nll_loss of it is
        the distillation loss of Hinton et al. (2015) and its argmax the prediction; with a decay,
        each step first moves the average towards the weights. Tested: with the average."""
        if self.decay and not self.training and averaged:
            weights = {name: getattr(self, f"average{i}")
                       for i, (name, _) in enumerate(self.named_parameters())}
            return torch.func.functional_call(self, weights, (x,), {"averaged": False})
        if self.decay and self.training:
            with torch.no_grad():
                for i, p in enumerate(self.parameters()):
                    getattr(self, f"average{i}").lerp_(p, 1 - self.decay)
        output = super().forward(x)
        if not (self.temperature and self.training):
            return output
        with torch.no_grad():
            taught = F.log_softmax(self.teacher[0].to(x.device)(x) / self.temperature, dim=1)
        own = F.log_softmax(output / self.temperature, dim=1)
        divergence = F.kl_div(own, taught, reduction="none", log_target=True).sum(dim=1)
        return (1 - self.weight) * output - self.weight * self.temperature ** 2 * divergence[:, None]


def layers(name):
    """The candidate's Candidate arguments: all of its entry but the recipe."""
    return {k: v for k, v in CANDIDATES[name].items() if k != "recipe"}


def model_class(name):
    return type(
        name, (Candidate,), {"__init__": lambda self: Candidate.__init__(self, **layers(name))}
    )


def choose(folder, seeds=range(1, 11), within=0.02):
    """A screen's choice: among the candidates run on every one of `seeds`, the highest level
    (the mean over seeds of the last three test accuracies); then the design with the fewest
    parameters within `within` point of it. Returns {name: (parameters, level)} and the choice."""
    from lab import tables
    levels = {}
    for name, runs in tables.candidate_runs(folder).items():
        runs = [run for run in runs if run["config"]["seed"] in seeds]
        if len(runs) == len(seeds):
            levels[name] = (runs[0]["config"]["parameters"], statistics.mean(
                tables.level(tables.test_accuracies(run)) for run in runs))
    best = max((level for _, level in levels.values()), default=None)
    near = [(parameters, -level, name) for name, (parameters, level) in levels.items()
            if level >= best - within]
    return levels, min(near)[2] if near else None


def main(argv):
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if argv[:1] == ["--choose"]:
        levels, choice = choose(SCREENS / (argv[1] if len(argv) > 1 else "screen-levers"))
        for name, (parameters, level) in sorted(levels.items(), key=lambda item: -item[1][1]):
            print(f"{name}: {parameters:,} parameters, level {level:.3f}% over seeds 1-10")
        print(f"chosen: {choice}")
        return 0
    if argv[:1] == ["--list"]:
        for name, spec in CANDIDATES.items():
            print(f"{name}: {spec}\n{summary(model_class(name)())}\n")
        return 0
    refuse = train.parser(prog="python -m lab.screen").error   # one line, exit 2
    if not argv or argv[0] not in CANDIDATES:
        refuse(f"the first argument names a candidate: {', '.join(CANDIDATES)}")
    if "--model" in argv or any(a.startswith("--model=") for a in argv):
        refuse("a candidate takes Model 4's place; --model is not one of its flags")
    name = argv[0]
    recipe = dict(train.RECIPES[3], **CANDIDATES[name]["recipe"])
    return train.main([*argv[1:], "--model", "4"], models={**train.MODELS, 4: model_class(name)},
                      recipes={**train.RECIPES, 4: recipe},
                      record=dict(candidate=name, **layers(name)))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, train.stop)
    sys.exit(main(sys.argv[1:]))
