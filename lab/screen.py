"""Candidates for a model, each trained by train.py itself, in Model 4's place:

    python -m lab.screen NAME [train.py flags]     # e.g. s4462-kd4 --seed 1 --metrics out.json
    python -m lab.screen --list                    # the open screen's candidates and recipes
    python -m lab.screen --choose [FOLDER]         # a screen's choice, from its runs in results/

A candidate is a layer string read left to right: `OUTpPAD` is a 3x3 convolution to OUT channels
with padding PAD (`OUTkKpPAD` a KxK one: `8k1p0` is a 1x1 convolution to 8 channels), `OUTsPAD` a
separable one (a 3x3 convolution of each channel on its own, then a 1x1 one to OUT channels), `M` a
2x2 max-pool; then global average pooling and a linear layer to the 10 digits. A block is conv,
ReLU, BatchNorm (the write-up's order) or conv, BatchNorm, ReLU, then Dropout where it has one. Its
recipe is Model 3's with the changes it names. The run is train.main's, with the candidate and its
recipe as Model 4, and the metrics file records the candidate's name and layers beside the rest.
CANDIDATES holds the screen still open; a candidate of a closed one runs again as its committed
runs under results/ recorded it. results/README.md has the screens and the rules that chose.
"""
import json
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

RESULTS = Path(__file__).resolve().parent.parent / "results"
TEACHER = RESULTS / "teacher" / "model4-seed1.pt"   # Model 4's seed 1 (results/README.md)
MODEL5_RECIPE = dict(recompute_bn=False, shift=1.0, rotation=5.0, batch_size=64, lr=0.04)
DESIGNS = {   # the best design of each size below 5,000 parameters, on Model 5's order and recipe
    "s4462": dict(layers="8p1 8p1 M 10p1 11p0 M 10p0 10p0", recipe=dict(batch_size=128, lr=0.08)),
    "s3786": dict(layers="6p1 8p1 M 8p1 10p0 M 10p0 10p0", recipe={}),
}
LEVERS = {   # what the small network learns from, or how it is tested
    "kd2": dict(temperature=2.0, weight=0.5),   # a teacher, Model 4, at a temperature
    "kd4": dict(temperature=4.0, weight=0.9),
    "ema": dict(decay=0.999),   # tested with an average of its weights
    "clean": dict(recipe=dict(recompute_bn=True)),   # statistics of digits not moved
    "kd2-clean": dict(temperature=2.0, weight=0.5, recipe=dict(recompute_bn=True)),   # pairs:
    "ema-clean": dict(decay=0.999, recipe=dict(recompute_bn=True)),   # after seeds 1-5
}
CANDIDATES = {f"{design}-{lever}": dict(
    layers=spec["layers"], order="conv-bn-relu", **{k: v for k, v in how.items() if k != "recipe"},
    recipe=dict(MODEL5_RECIPE, **spec["recipe"], **how.get("recipe", {})))
    for design, spec in DESIGNS.items() for lever, how in LEVERS.items()}
RECIPE_KEYS = "batch_size lr momentum weight_decay step_size gamma augment recompute_bn".split()
LAYER_KEYS = "layers order dropout conv_bias fc_bias temperature weight decay".split()


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
                conv = nn.Conv2d(channels, out, (size, size), padding=padding, bias=conv_bias)
            else:
                conv = nn.Sequential(nn.Conv2d(channels, channels, (size, size), padding=padding,
                                               groups=channels, bias=False),
                                     nn.Conv2d(channels, out, (1, 1), bias=conv_bias))
            norm = [nn.ReLU(), nn.BatchNorm2d(out)][::1 if order == "conv-relu-bn" else -1]
            blocks.append(nn.Sequential(conv, *norm, *([nn.Dropout(dropout)] if dropout else [])))
            channels = out
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, 10, bias=fc_bias), nn.LogSoftmax(dim=-1))
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
        return (1 - self.weight) * output - self.weight * self.temperature**2 * divergence[:, None]


def candidate(name):
    """The candidate's entry: in CANDIDATES, or as the first committed run of it recorded it."""
    if name in CANDIDATES:
        return CANDIDATES[name]
    path = min(RESULTS.glob(f"**/{name}_seed*.json"), default=None)
    if path is None:
        return None
    config = json.loads(path.read_text(encoding="utf-8"))["config"]
    recipe = dict(weight_decay=0.0, recompute_bn=False,   # before these were recorded: none
                  rotation=config["rotation_degrees"], shift=config.get("shift_pixels", 0.0))
    return dict({k: config[k] for k in LAYER_KEYS if k in config},
                recipe=dict(recipe, **{k: config[k] for k in RECIPE_KEYS if k in config}))


def model_class(name):
    """A class of the candidate's model, as train.main builds models: with no arguments."""
    arguments = {k: v for k, v in candidate(name).items() if k != "recipe"}
    build = lambda self: Candidate.__init__(self, **arguments)
    return type(name, (Candidate,), {"__init__": build})


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
        levels, choice = choose(RESULTS / (argv[1] if len(argv) > 1 else "screen-levers"))
        for name, (parameters, level) in sorted(levels.items(), key=lambda item: -item[1][1]):
            print(f"{name}: {parameters:,} parameters, level {level:.3f}% over seeds 1-10")
        print(f"chosen: {choice}")
        return 0
    if argv[:1] == ["--list"]:
        for name, spec in CANDIDATES.items():
            print(f"{name}: {spec}\n{summary(model_class(name)())}\n")
        return 0
    refuse = train.parser(prog="python -m lab.screen").error   # one line, exit 2
    if not argv or not candidate(argv[0]):
        refuse(f"the first argument names a candidate: {', '.join(CANDIDATES)}, or one of "
               "results/")
    if "--model" in argv or any(a.startswith("--model=") for a in argv):
        refuse("a candidate takes Model 4's place; --model is not one of its flags")
    name, spec = argv[0], dict(candidate(argv[0]))
    recipe = dict(train.RECIPES[3], **spec.pop("recipe"))
    return train.main([*argv[1:], "--model", "4"], models={**train.MODELS, 4: model_class(name)},
                      recipes={**train.RECIPES, 4: recipe}, extra=dict(candidate=name, **spec))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, train.stop)
    sys.exit(main(sys.argv[1:]))
