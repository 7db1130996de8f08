"""The tables of both READMEs and results/accuracy.svg, made from the metrics files that train.py
wrote under results/:

    python -m lab.tables            # prints the tables and rewrites results/accuracy.svg
    python -m lab.tables --write    # and puts each table in its place in both READMEs

results/modelM/seedS.json are the runs of each model's recipe as it is now; results/earlier/,
results/more-seeds/, results/gpu-h200/ and results/recipe-search/ hold the runs that chose the
recipes and those of earlier recipes (results/README.md says which is which); results/screen/,
results/frontier/ and results/screen-6000/ the runs of lab/screen.py's candidates. A table counts
only finished runs (every epoch asked for, not a dry run, not interrupted), and the command names
each file it leaves out. Unit tests check that the READMEs hold exactly these tables and that the
picture is what this file draws, so neither can drift from the runs.
"""
import collections
import json
import re
import statistics
import sys
from pathlib import Path

if not __package__:   # run by its path (python lab/tables.py): the project's modules are one up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import plot
import train
from train import TARGET_ACCURACY, TARGET_EPOCHS, target_met

RESULTS = Path(__file__).resolve().parent.parent / "results"
SVG = RESULTS / "accuracy.svg"
RELIABILITY = RESULTS / "reliability.svg"   # what reliability costs in parameters
SIZES = (3000, 3500, 4000, 4500)   # the sizes the screen at 4,500 parameters or fewer looked at
PUBLIC = "f3762-shift2"   # the smallest public design claiming 99.4%: its layers, Model 4's recipe
CURVES = RESULTS / "curves.svg"   # plot.py's picture of one committed run, shown in README.md
CURVES_RUN = RESULTS / "model5" / "seed1.json"
FRONTIER = RESULTS / "frontier"   # designs smaller than Models 4 and 5, run by lab/screen.py
SCREEN_6000 = RESULTS / "screen-6000"   # the screen for the promise at 6,000 parameters or fewer
CONFIRM_6000 = RESULTS / "confirm-6000"   # its choice on fresh seeds, which choose nothing
CONFIRM_5000 = RESULTS / "confirm-5000"  # the frontier's best below 5,000 parameters on fresh seeds
SCREEN_4500 = RESULTS / "screen-4500"   # the screen for the promise at 4,500 parameters or fewer
CONFIRM_4500 = RESULTS / "confirm-4500"   # its choice on fresh seeds, 71-90
EPOCHS = 15   # a result is a run of the write-up's 15 epochs
LAYERS = {
    4: "8p1 12p1 M 16p1 16p0 M 11p0 10p0",  # models.Model4 and Model5 in lab/screen.py's notation
    5: "8p1 12p1 M 12p1 12p0 M 11p0 10p0",
}
FRESH_SEEDS = {3: range(11, 51), 4: range(11, 51), 5: range(11, 51)}   # seeds that chose nothing


def read_run(path):
    """One metrics file, or None where the file is not a whole one of train.py's (half written,
    another program's, a field missing or of another kind, a number that is not finite).
    Files written before --weight-decay existed have none: it was 0."""
    def refuse(token):
        raise ValueError(token)
    try:
        run = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
        config, epochs = run["config"], run["epochs"]
        config.setdefault("weight_decay", 0.0)
        whole = all(type(config[k]) is int for k in ("model", "seed", "epochs"))
        whole = whole and type(config.get("parameters", 0)) is int
        accuracies = [e["test_accuracy"] for e in epochs] + [
            e.get("train_accuracy", 0) for e in epochs
        ]
        accuracies += [run["result"]["best_train_accuracy"]] if "result" in run else []
        if not whole or not all(type(a) in (int, float) for a in accuracies):
            return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return run


def test_accuracies(run, key="test_accuracy"):
    """Per epoch: the run's test accuracy, or with key="test_accuracy_trained_statistics", the one
    with BatchNorm's statistics as trained (recorded where the run recomputed them)."""
    return [epoch[key] for epoch in run["epochs"]]


def as_trained(run):
    """Test accuracies with the statistics as trained: the run's own where it did not recompute."""
    recomputed = run["config"].get("recompute_bn", False)
    return test_accuracies(
        run, "test_accuracy_trained_statistics" if recomputed else "test_accuracy"
    )


def level(tests):
    """A run's level: the mean of its last TARGET_EPOCHS test accuracies."""
    return statistics.mean(tests[-TARGET_EPOCHS:])


def finished(run, path=None):
    """A result: a metrics file of every epoch it was asked for, not interrupted, not a --dry-run;
    under results/modelM/, a run of Model M's recipe for EPOCHS epochs; a candidate's, of EPOCHS."""
    return not why_not_counted(run, path)


def why_not_counted(run, path=None):
    """Why a run's numbers are not a result, or "" where they are."""
    if run is None:
        return "not a metrics file of train.py (half written, or another program's)"
    config = run["config"]
    if config.get("dry_run"):
        return "a --dry-run"
    done = f"{len(run['epochs'])} of {config['epochs']} epochs"
    if run.get("interrupted"):
        return f"interrupted ({done})"
    if len(run["epochs"]) != config["epochs"]:
        return f"unfinished ({done})"
    if "result" not in run:
        return f"no verdict ({done}): stopped after its last epoch"
    folder = (
        re.fullmatch(r"model(\d+)", path.parent.name)
        if path and path.parent.parent == RESULTS
        else None
    )
    if folder and int(folder[1]) in train.RECIPES:
        model = int(folder[1])
        if (
            config["model"] != model
            or not trained_as(config, train.RECIPES[model])
            or config["epochs"] != EPOCHS
        ):
            return f"not Model {model}'s recipe of {EPOCHS} epochs"
    if "candidate" in config and config["epochs"] != EPOCHS:
        return f"{config['epochs']} epochs, not {EPOCHS}"
    seed = config["seed"]   # seedS, NAME_seedS or a name ending in seedS: a copy is named otherwise
    named = (
        f"seed{seed}" if folder else config.get("candidate") and f"{config['candidate']}_seed{seed}"
    )
    if path and (
        path.stem != named if named else not re.search(rf"(^|[-_])seed{seed}$", path.stem)
    ):
        return f"its name does not say its seed ({seed}): a copy of another run?"
    return ""


def row(*cells):
    """A row of a Markdown table."""
    return "| " + " | ".join(map(str, cells)) + " |"


def metrics_files(folder, pattern="*.json"):
    """(path, run) for every file of the pattern in the folder, sorted; run None if unreadable."""
    return [(path, read_run(path)) for path in sorted(folder.glob(pattern))]


def model_runs(model):
    """The finished runs of model M's recipe, results/modelM/seedS.json, by seed."""
    runs = [
        run
        for path, run in metrics_files(RESULTS / f"model{model}", "seed*.json")
        if finished(run, path)
    ]
    return sorted(runs, key=lambda run: run["config"]["seed"])


def models_with_runs():
    """(model, its runs) for each model of train.RECIPES that has finished runs of its recipe."""
    for model in sorted(train.RECIPES):
        runs = model_runs(model)
        if runs:
            yield model, runs


def not_counted(folder=RESULTS):
    """(path, why) for every metrics file under results/ that no table counts as a result."""
    runs = metrics_files(folder, "**/*.json")
    return [
        (path.relative_to(folder), why_not_counted(run, path))
        for path, run in runs
        if why_not_counted(run, path)
    ]


def seeds(runs):
    """The runs' seeds in order, each stretch of consecutive ones as a range: "1–10, 31–50"."""
    stretches = []
    for seed in (run["config"]["seed"] for run in runs):
        if stretches and seed == stretches[-1][-1] + 1:
            stretches[-1].append(seed)
        else:
            stretches.append([seed])
    return ", ".join(f"{s[0]}–{s[-1]}" if len(s) > 1 else f"{s[0]}" for s in stretches)


def met_and_level(runs, accuracies):
    tests = [accuracies(run) for run in runs]
    met = sum(target_met(t) for t in tests)
    return f"{met}/{len(runs)}", f"{statistics.mean(level(t) for t in tests):.2f}"


def models_table():
    """Per model, for the README's opening: its parameters and the share of its seeds that met
    the target."""
    lines = [row("Model", "Parameters", "Seeds that met the target"), "|---|---|---|"]
    for model, runs in models_with_runs():
        met = sum(target_met(test_accuracies(run)) for run in runs)
        lines.append(row(model, f"{runs[0]['config']['parameters']:,}",
                         f"{met} of {len(runs)} ({100 * met / len(runs):.0f}%)"))
    return "\n".join(lines)


def headline_table(fresh=FRESH_SEEDS):
    """Per model: the seeds run and the devices they ran on, how many met the target, and the
    level averaged over seeds, as the recipe tests, and for Models 2 and 3, which test with
    BatchNorm statistics recomputed, with the statistics as trained too (the write-up's way;
    Models 1, 4 and 5 test so already). For the models in `fresh`, also how many of its fresh
    seeds met it: seeds that played no part in choosing the layers or the recipe."""
    lines = [row("Model", "Parameters", "Seeds", "Devices", "Target met", "Level %",
                 "Target met, fresh seeds", "Target met, statistics as trained",
                 "Level as trained %"), "|---|---|---|---|---|---|---|---|---|"]
    for model, runs in models_with_runs():
        met, level_ = met_and_level(runs, test_accuracies)
        trained_met, trained_level = ("—", "—")
        if train.RECIPES[model]["recompute_bn"]:
            trained_met, trained_level = met_and_level(runs, as_trained)
        confirmed = [run for run in runs if run["config"]["seed"] in fresh.get(model, ())]
        confirmed_met = "—"
        if confirmed:
            confirmed_met = f"{met_and_level(confirmed, test_accuracies)[0]} ({seeds(confirmed)})"
        lines.append(row(model, f"{runs[0]['config']['parameters']:,}", seeds(runs), devices(runs),
                         met, level_, confirmed_met, trained_met, trained_level))
    return "\n".join(lines)


def devices(runs):
    counts = collections.Counter(run["config"]["device"] for run in runs)
    return ", ".join(f"{device} ×{n}" for device, n in counts.items())


def recipe(config):
    text = f"SGD lr {config['lr']:g} momentum {config['momentum']:g}"
    if config["weight_decay"]:
        text += f" weight decay {config['weight_decay']:g}"
    text += f", StepLR {config['step_size']}/{config['gamma']:g}, batch {config['batch_size']}"
    if config["augment"]:
        text += f", rotation ±{config['rotation_degrees']:g}°"
    if config["augment"] and config.get("shift_pixels"):
        text += f", shift ±{config['shift_pixels']:g} px"
    if config.get("recompute_bn"):
        text += ", statistics recomputed"
    return text


def runs_table():
    """The runs of each model's recipe: the recipe, the seeds and devices, the best test accuracy
    and the lowest of the last epochs."""
    lines = [f"| Model | Params | Recipe | Seeds | Devices | Best test acc. %, mean (min–max) "
             f"| Lowest of last {TARGET_EPOCHS} epochs % | Target met |",
             "|---|---|---|---|---|---|---|---|"]
    for model, runs in models_with_runs():
        tests = [test_accuracies(run) for run in runs]
        best = [max(t) for t in tests]
        lowest = min(min(t[-TARGET_EPOCHS:]) for t in tests)
        met = sum(target_met(t) for t in tests)
        spread = f"{statistics.mean(best):.2f} ({min(best):.2f}–{max(best):.2f})"
        lines.append(row(model, f"{runs[0]['config']['parameters']:,}", recipe(runs[0]["config"]),
                         seeds(runs), devices(runs), spread, f"{lowest:.2f}", f"{met}/{len(runs)}"))
    return "\n".join(lines)


def search_table(folder=RESULTS / "recipe-search"):
    """The runs that chose the recipes of Models 3 and 4: one row per file, named after its
    settings (the rotation's sampling, bilinear or nearest, is in the names of the oldest only)."""
    lines = [row("run (results/recipe-search/)", "model", "params", "batch", "lr", "weight decay",
                 "StepLR step / gamma", "rotation", "statistics", "seed", "device",
                 f"test accuracy %, last {TARGET_EPOCHS} epochs run", "target met"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, run in metrics_files(folder):
        if run is None:
            continue
        config, tests = run["config"], test_accuracies(run)
        last = ", ".join(f"{t:.2f}" for t in tests[-TARGET_EPOCHS:])
        epochs = f"epochs {len(tests) - TARGET_EPOCHS}–{len(tests) - 1}"
        rotation = f"±{config['rotation_degrees']:g}°" if config["augment"] else "none"
        statistics_ = "recomputed" if config.get("recompute_bn") else "as trained"
        verdict = ("yes" if target_met(tests) else "no") if finished(run, path) else "stopped early"
        lines.append(row(path.stem, config["model"], f"{config['parameters']:,}",
                         config["batch_size"], f"{config['lr']:g}", f"{config['weight_decay']:g}",
                         f"{config['step_size']} / {config['gamma']:g}", rotation, statistics_,
                         config["seed"], config["device"], f"{last} ({epochs})", verdict))
    return "\n".join(lines)


def recipe_summary(folder=RESULTS, fewest=3):
    """Every recipe run to the end on at least `fewest` seeds, best level first within a model:
    how often it met the target and where it ends, with the statistics the run tested with and,
    where it recomputed them, as trained. A recipe is a folder (results/model3/) or, inside a
    folder, the file names less their seed (results/recipe-search/nearest_lr02_step6_seedS).
    The spread is the standard deviation over seeds of each seed's level."""
    groups = {}
    for path, run in metrics_files(folder, "**/*.json"):
        if finished(run, path):
            stem = re.sub(r"[-_]?seed\d+$", "", path.stem)
            name = "/".join(
                part
                for part in (path.parent.relative_to(folder).as_posix(), stem)
                if part not in ("", ".")
            )
            groups.setdefault((run["config"]["model"], name), []).append(run)
    rows = []
    for (model, name), runs in groups.items():
        if len(runs) < fewest:
            continue
        cells = []
        for accuracies in (test_accuracies, as_trained):
            tests = [accuracies(run) for run in runs]
            levels = [level(t) for t in tests]
            cells.append(
                (
                    sum(target_met(t) for t in tests), statistics.mean(levels),
                    statistics.stdev(levels), min(min(t[-TARGET_EPOCHS:]) for t in tests),
                )
            )
        (met, mean, spread, lowest), (met_trained, mean_trained, _, _) = cells
        trained = (
            f"{met_trained}/{len(runs)} | {mean_trained:.2f}"
            if runs[0]["config"].get("recompute_bn")
            else "— | —"
        )
        rows.append(
            (
                model,
                -mean,
                f"| `{name}` | {model} | {len(runs)} | {met}/{len(runs)} | {mean:.2f} | "
                f"{spread:.2f} | {lowest:.2f} | {trained} |",
            )
        )
    lines = [row("runs", "model", "seeds", "target met", "level %, mean over seeds",
                 "spread over seeds", f"lowest of last {TARGET_EPOCHS} %",
                 "target met, statistics as trained", "level as trained %"),
             "|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [line for _, _, line in sorted(rows)])


def candidate_runs(folder):
    """The finished runs of each candidate of lab/screen.py in a folder, by name, in seed order."""
    groups = {}
    for path, run in metrics_files(folder):
        if finished(run, path):
            groups.setdefault(run["config"]["candidate"], []).append(run)
    return {
        name: sorted(runs, key=lambda run: run["config"]["seed"]) for name, runs in groups.items()
    }


def screen_table(folder=RESULTS / "screen"):
    """The candidates of a screen (lab/screen.py) in one folder of results/, best
    level first: parameters, the seeds run, how many met the target, the level and its spread
    over seeds, the lowest of the last epochs, and the best training accuracy (a candidate that
    fits better trains higher)."""
    rows = []
    for name, runs in candidate_runs(folder).items():
        tests = [test_accuracies(run) for run in runs]
        levels = [level(t) for t in tests]
        spread = f"{statistics.stdev(levels):.2f}" if len(levels) > 1 else "—"
        train = statistics.mean(run["result"]["best_train_accuracy"] for run in runs)
        mean = statistics.mean(levels)
        rows.append((-mean, row(f"`{name}`", f"{runs[0]['config']['parameters']:,}", seeds(runs),
                                f"{sum(target_met(t) for t in tests)}/{len(runs)}", f"{mean:.2f}",
                                spread, f"{min(min(t[-TARGET_EPOCHS:]) for t in tests):.2f}",
                                f"{train:.2f}")))
    lines = [row("candidate", "parameters", "seeds", "target met", "level %", "spread",
                 f"lowest of last {TARGET_EPOCHS} %", "best train acc. %, mean"),
             "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [line for _, line in sorted(rows)])


def channels(layers):
    """A layer string as channels per stage:
    "8p1 12p1 M 16p1 16p0 M 11p0 10p0" -> "8, 12 / 16, 16 / 11, 10"."""
    stages = " ".join(layers.split()).split(" M ")
    return " / ".join(
        ", ".join(re.split("[ps]", token)[0] for token in stage.split()) for stage in stages
    )


def differences(config):
    """What a frontier design does otherwise than Model 4, besides its channels, in the
    README's words."""
    changes = ["biases"] if config.get("conv_bias") else []
    changes += ["BatchNorm before ReLU"] if config.get("order") == "conv-bn-relu" else []
    changes += [f"Dropout {config['dropout']:g}"] if config.get("dropout") else []
    return ", ".join(changes) or "—"


def trained_as(config, recipe):
    """Whether a run trained with a recipe of train.RECIPES: the same optimizer, schedule, batch and
    augmentation (how it tests, with BatchNorm statistics recomputed or not, may differ)."""
    same = all(
        config.get(key) == recipe[key]
        for key in ("batch_size", "lr", "momentum", "weight_decay", "step_size", "gamma", "augment")
    )
    augmentation = (config.get("rotation_degrees"), config.get("shift_pixels", 0.0))
    return same and augmentation == (
        (recipe["rotation"], recipe["shift"]) if recipe["augment"] else (0.0, 0.0)
    )


def frontier_table(folder=FRONTIER, models=(4, 5)):
    """The frontier per recipe and size: for the recipe of Model 4, then of Model 5, the model
    itself on the seeds the frontier ran with its recipe, then at each smaller size the design
    with the best level among those trained with that recipe: parameters, channels per stage,
    what else differs, the seeds run, how many met the target, the level."""
    mean_level = lambda runs: statistics.mean(level(test_accuracies(run)) for run in runs)
    lines = [row("recipe", "parameters", "channels per stage", "what else differs from Model 4",
                 "seeds", "target met", "level %"), "|---|---|---|---|---|---|---|"]
    candidates = candidate_runs(folder).values()
    for model in models:
        best = {}
        for runs in candidates:
            config = runs[0]["config"]
            if trained_as(config, train.RECIPES[model]):
                size = config["parameters"]
                if size not in best or mean_level(runs) > mean_level(best[size]):
                    best[size] = runs
        seeds_run = {run["config"]["seed"] for runs in best.values() for run in runs}
        own = [run for run in model_runs(model) if run["config"]["seed"] in seeds_run]
        for runs in ([own] if own else []) + [best[size] for size in sorted(best, reverse=True)]:
            config = runs[0]["config"]
            what = f"(Model {model})" if runs is own else differences(config)
            met, level_ = met_and_level(runs, test_accuracies)
            lines.append(row(f"Model {model}'s", f"{config['parameters']:,}",
                             channels(config.get("layers", LAYERS[model])), what, seeds(runs), met,
                             level_))
    return "\n".join(lines)


def accuracy_svg(models=(3, 4, 5), low=98.8, high=99.7):
    """A picture of the target: test accuracy per epoch of every run of Models 3 to 5's recipes,
    a panel for each model with runs, one thin line per seed (red where it missed the target),
    the 99.40% line across, the last epochs shaded; accuracies below `low` are drawn at `low`."""
    models = [model for model in models if model_runs(model)]
    width, height, gap = 360, 260, 24
    elements = []
    for i, model in enumerate(models):
        runs = [test_accuracies(run) for run in model_runs(model)]
        title = f"Model {model}: target met on {sum(map(target_met, runs))} of {len(runs)} seeds"
        series = [
            (tests, "#3465a4" if target_met(tests) else "#cc0000", 0.8, 0.6) for tests in runs
        ]
        elements += plot.panel(i * (width + gap), 0, width, height, title, series, low, high, 0.2,
                               TARGET_EPOCHS, TARGET_ACCURACY)
    return plot.document(len(models) * (width + gap) - gap, height, elements)


def reliability_points(fewest=10):
    """(label, parameters, met, seeds, level) for Models 3 to 5 over all their seeds, for each
    design confirmed on fresh seeds, for the best design (highest level) within 250 parameters of
    each of SIZES among the candidates run on at least `fewest` seeds, where no design shown is
    that best already, and for the public 3,762-parameter layers."""
    designs, shown = {}, []
    for folder in (FRONTIER, CONFIRM_5000, SCREEN_4500, CONFIRM_4500):
        for name, runs in candidate_runs(folder).items():
            designs.setdefault(name, []).extend(runs)
            if folder in (CONFIRM_5000, CONFIRM_4500):
                shown.append(name)
    point = lambda label, runs: (label, runs[0]["config"]["parameters"],
                                 sum(target_met(test_accuracies(run)) for run in runs), len(runs),
                                 statistics.mean(level(test_accuracies(run)) for run in runs))
    points = [point(f"Model {m}", model_runs(m)) for m in (3, 4, 5) if model_runs(m)]
    for size in SIZES:
        near = [(name, runs) for name, runs in designs.items() if name != PUBLIC
                and len(runs) >= fewest and abs(runs[0]["config"]["parameters"] - size) <= 250]
        if near:
            shown.append(max(near, key=lambda pair: point(*pair)[4])[0])
    for name in dict.fromkeys(shown):
        points.append(point(f"{designs[name][0]['config']['parameters']:,}", designs[name]))
    if len(designs.get(PUBLIC, [])) >= fewest:
        points.append(point("public 3,762", designs[PUBLIC]))
    return points


def reliability_svg(low=2500, high=8000):
    """Parameters across, the share of seeds that met the target up: one point per design of
    reliability_points, labelled with its seeds met; 19 seeds in 20 dashed."""
    width, height, x0, y0, inner_w, inner_h = 620, 320, 50, 30, 550, 240
    x = lambda parameters: x0 + inner_w * (parameters - low) / (high - low)
    y = lambda share: y0 + inner_h * (1 - share)
    out = [plot.element("text", "What reliability costs: the share of seeds that met the target",
                        x=x0, y=18, font_size=13)]
    for share in (0, 0.25, 0.5, 0.75, 1):
        out += [plot.element("line", x1=x0, x2=x0 + inner_w, y1=y(share), y2=y(share),
                             stroke="#ddd"),
                plot.element("text", f"{share:.0%}", x=x0 - 4, y=y(share) + 4, text_anchor="end")]
    for parameters in range(low, high + 1, 500):
        out.append(plot.element("text", f"{parameters:,}", x=x(parameters), y=y0 + inner_h + 16,
                                text_anchor="middle"))
    out += [plot.element("text", "parameters", x=x0 + inner_w / 2, y=height - 6,
                         text_anchor="middle"),
            plot.element("line", x1=x0, x2=x0 + inner_w, y1=y(0.95), y2=y(0.95), stroke="black",
                         stroke_dasharray="4 3"),
            plot.element("text", "19 seeds in 20", x=x0 + 4, y=y(0.95) - 4)]
    for label, parameters, met, seeds_run, level_ in reliability_points():
        colour = "#3465a4" if met / seeds_run >= 0.95 else "#cc0000"
        out += [plot.element("circle", cx=f"{x(parameters):.1f}", cy=f"{y(met / seeds_run):.1f}",
                             r=4, fill=colour),
                plot.element("text", f"{label}: {met}/{seeds_run}",   # above, near the axis
                             x=f"{x(parameters) + (-6 if parameters > 6500 else 6):.1f}",
                             y=f"{y(met / seeds_run) + (14 if met / seeds_run >= 0.5 else -8):.1f}",
                             text_anchor="end" if parameters > 6500 else "start")]
    return plot.document(width, height, out)


def readme_tables():
    """Each README and the tables it holds (a table of no runs yet is not held)."""
    notebook = [
        runs_table(), search_table(), recipe_summary(), screen_table(), screen_table(FRONTIER),
        frontier_table(), screen_table(SCREEN_6000), screen_table(CONFIRM_6000),
        screen_table(CONFIRM_5000), screen_table(SCREEN_4500), screen_table(CONFIRM_4500),
    ]
    return {RESULTS.parent / "README.md": [models_table(), headline_table()],
            RESULTS / "README.md": [table for table in notebook if len(table.splitlines()) > 2]}


def rewrite_readmes():
    """Put each table in place of the README's table with its header and most of its rows' names."""
    first_cells = lambda block: {line.split("|")[1].strip() for line in block[2:]}
    for path, new_tables in readme_tables().items():
        lines = path.read_text(encoding="utf-8").split("\n")
        blocks, start = [], None
        for i, line in enumerate(lines + [""]):
            if line.startswith("|") and start is None:
                start = i
            elif not line.startswith("|") and start is not None:
                blocks.append((start, i))
                start = None
        replaced = {}
        for table in new_tables:
            rows = table.split("\n")
            candidates = [
                (len(first_cells(rows) & first_cells(lines[a:b])), (a, b))
                for a, b in blocks
                if lines[a] == rows[0] and (a, b) not in replaced
            ]
            if candidates:
                replaced[max(candidates)[1]] = rows
        for (a, b), rows in sorted(replaced.items(), reverse=True):
            lines[a:b] = rows
        train.write_whole(path, "\n".join(lines).encode("utf-8"))


def main(argv):
    parser = train.parser(prog="python -m lab.tables", description=(
        "Print every table of both READMEs from the runs under results/, and redraw "
        "results/accuracy.svg."))
    parser.add_argument("--write", action="store_true", help="put each table in its README too")
    args = parser.parse_args(argv)
    for path, why in not_counted():
        print(f"not counted: results/{path.as_posix()}: {why}", file=sys.stderr)
    train.write_whole(SVG, accuracy_svg().encode("utf-8"))
    train.write_whole(RELIABILITY, reliability_svg().encode("utf-8"))
    train.write_whole(CURVES, plot.curves(read_run(CURVES_RUN), CURVES_RUN.name).encode("utf-8"))
    if args.write:   # rewrite both READMEs' tables in place, then print them
        rewrite_readmes()
    for title, text in (
        ("headline (README.md)", headline_table()), ("runs of the recipes", runs_table()),
        ("recipe search", search_table()), ("recipes over seeds", recipe_summary()),
        ("the screen for Model 4", screen_table()), ("the frontier", screen_table(FRONTIER)),
        ("the frontier, per size (results/README.md)", frontier_table()),
        ("the screen at 6,000 parameters or fewer", screen_table(SCREEN_6000)),
        ("its choice on seeds 31-50", screen_table(CONFIRM_6000)),
        ("below 5,000 parameters on seeds 51-70", screen_table(CONFIRM_5000)),
        ("the screen at 4,500 parameters or fewer", screen_table(SCREEN_4500)),
        ("its choice on seeds 71-90", screen_table(CONFIRM_4500)),
    ):
        print(f"## {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
