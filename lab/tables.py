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
import os
import re
import statistics
import sys
from pathlib import Path

import train
from train import TARGET_ACCURACY, TARGET_EPOCHS, target_met

RESULTS = Path(__file__).resolve().parent.parent / "results"
SVG = RESULTS / "accuracy.svg"
FRONTIER = RESULTS / "frontier"   # designs smaller than Models 4 and 5, run by lab/screen.py
SCREEN_6000 = RESULTS / "screen-6000"   # the screen for the promise at 6,000 parameters or fewer
CONFIRM_6000 = RESULTS / "confirm-6000"   # its choice on fresh seeds, which choose nothing
CONFIRM_5000 = RESULTS / "confirm-5000"   # the frontier's best below 5,000 parameters on fresh seeds
EPOCHS = 15   # a result is a run of the write-up's 15 epochs
LAYERS = {4: "8p1 12p1 M 16p1 16p0 M 11p0 10p0",   # models.Model4 and Model5 in lab/screen.py's notation
          5: "8p1 12p1 M 12p1 12p0 M 11p0 10p0"}
FRESH_SEEDS = {3: range(11, 51), 4: range(11, 51), 5: range(11, 51)}   # seeds that chose nothing


def read_run(path):
    """One metrics file, or None where the file is not one (half written, or another program's).
    Files written before --weight-decay existed have none: it was 0."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        run["config"].setdefault("weight_decay", 0.0)
        len(run["epochs"])
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
    return test_accuracies(run, "test_accuracy_trained_statistics" if recomputed else "test_accuracy")


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
    folder = re.fullmatch(r"model(\d+)", path.parent.name) if path and path.parent.parent == RESULTS else None
    if folder and int(folder[1]) in train.RECIPES:
        model = int(folder[1])
        if config["model"] != model or not trained_as(config, train.RECIPES[model]) or config["epochs"] != EPOCHS:
            return f"not Model {model}'s recipe of {EPOCHS} epochs"
    if "candidate" in config and config["epochs"] != EPOCHS:
        return f"{config['epochs']} epochs, not {EPOCHS}"
    return ""


def metrics_files(folder, pattern="*.json"):
    """(path, run) for every file of the pattern in the folder, sorted; run None where unreadable."""
    return [(path, read_run(path)) for path in sorted(folder.glob(pattern))]


def model_runs(model):
    """The finished runs of model M's recipe, results/modelM/seedS.json, by seed."""
    runs = [run for path, run in metrics_files(RESULTS / f"model{model}", "seed*.json") if finished(run, path)]
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
    return [(path.relative_to(folder), why_not_counted(run, path)) for path, run in runs if why_not_counted(run, path)]


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


def headline_table(fresh=FRESH_SEEDS):
    """Per model: the seeds run, how many met the target, and the level averaged over seeds, as
    the recipe tests, and for Models 2 and 3, which test with BatchNorm statistics recomputed, with
    the statistics as trained too (the write-up's way; Models 1, 4 and 5 test so already). For the
    models in `fresh`, also how many of its fresh seeds met it: seeds that played no part in
    choosing the layers or the recipe."""
    lines = ["| Model | Parameters | Seeds | Target met | Level % | Target met, fresh seeds "
             "| Target met, statistics as trained | Level as trained % |",
             "|---|---|---|---|---|---|---|---|"]
    for model, runs in models_with_runs():
        met, level_ = met_and_level(runs, test_accuracies)
        trained_met, trained_level = met_and_level(runs, as_trained) if train.RECIPES[model]["recompute_bn"] else ("—", "—")
        confirmed = [run for run in runs if run["config"]["seed"] in fresh.get(model, ())]
        confirmed_met = f"{met_and_level(confirmed, test_accuracies)[0]} ({seeds(confirmed)})" if confirmed else "—"
        lines.append(f"| {model} | {runs[0]['config']['parameters']:,} | {seeds(runs)} | {met} | {level_} "
                     f"| {confirmed_met} | {trained_met} | {trained_level} |")
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
        lines.append(f"| {model} | {runs[0]['config']['parameters']:,} | {recipe(runs[0]['config'])} | "
                     f"{seeds(runs)} | {devices(runs)} | {statistics.mean(best):.2f} ({min(best):.2f}–{max(best):.2f}) | "
                     f"{lowest:.2f} | {met}/{len(runs)} |")
    return "\n".join(lines)


def search_table(folder=RESULTS / "recipe-search"):
    """The runs that chose the recipes of Models 3 and 4: one row per file, named after its
    settings (the rotation's sampling, bilinear or nearest, is in the names of the oldest only)."""
    lines = [f"| run (results/recipe-search/) | model | params | batch | lr | weight decay | StepLR step / gamma "
             f"| rotation | statistics | seed | device | test accuracy %, last {TARGET_EPOCHS} epochs run | target met |",
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
        lines.append(f"| {path.stem} | {config['model']} | {config['parameters']:,} | {config['batch_size']} | "
                     f"{config['lr']:g} | {config['weight_decay']:g} | {config['step_size']} / {config['gamma']:g} | "
                     f"{rotation} | {statistics_} | {config['seed']} | {config['device']} | {last} ({epochs}) | {verdict} |")
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
            name = "/".join(part for part in (path.parent.relative_to(folder).as_posix(), stem) if part not in ("", "."))
            groups.setdefault((run["config"]["model"], name), []).append(run)
    rows = []
    for (model, name), runs in groups.items():
        if len(runs) < fewest:
            continue
        cells = []
        for accuracies in (test_accuracies, as_trained):
            tests = [accuracies(run) for run in runs]
            levels = [level(t) for t in tests]
            cells.append((sum(target_met(t) for t in tests), statistics.mean(levels), statistics.stdev(levels),
                          min(min(t[-TARGET_EPOCHS:]) for t in tests)))
        (met, mean, spread, lowest), (met_trained, mean_trained, _, _) = cells
        trained = (f"{met_trained}/{len(runs)} | {mean_trained:.2f}" if runs[0]["config"].get("recompute_bn")
                   else "— | —")
        rows.append((model, -mean, f"| `{name}` | {model} | {len(runs)} | {met}/{len(runs)} | {mean:.2f} | "
                                   f"{spread:.2f} | {lowest:.2f} | {trained} |"))
    lines = [f"| runs | model | seeds | target met | level %, mean over seeds | spread over seeds "
             f"| lowest of last {TARGET_EPOCHS} % | target met, statistics as trained | level as trained % |",
             "|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [line for _, _, line in sorted(rows)])


def candidate_runs(folder):
    """The finished runs of each candidate of lab/screen.py in a folder, by name, in seed order."""
    groups = {}
    for path, run in metrics_files(folder):
        if finished(run, path):
            groups.setdefault(run["config"]["candidate"], []).append(run)
    return {name: sorted(runs, key=lambda run: run["config"]["seed"]) for name, runs in groups.items()}


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
        rows.append((-statistics.mean(levels), f"| `{name}` | {runs[0]['config']['parameters']:,} | {seeds(runs)} | "
                     f"{sum(target_met(t) for t in tests)}/{len(runs)} | {statistics.mean(levels):.2f} | {spread} | "
                     f"{min(min(t[-TARGET_EPOCHS:]) for t in tests):.2f} | {train:.2f} |"))
    lines = [f"| candidate | parameters | seeds | target met | level % | spread | lowest of last {TARGET_EPOCHS} % "
             f"| best train acc. %, mean |", "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [row for _, row in sorted(rows)])


def channels(layers):
    """A layer string as channels per stage: "8p1 12p1 M 16p1 16p0 M 11p0 10p0" -> "8, 12 / 16, 16 / 11, 10"."""
    stages = " ".join(layers.split()).split(" M ")
    return " / ".join(", ".join(re.split("[ps]", token)[0] for token in stage.split()) for stage in stages)


def differences(config):
    """What a frontier design does otherwise than Model 4, besides its channels, in the README's words."""
    changes = ["biases"] if config.get("conv_bias") else []
    changes += ["BatchNorm before ReLU"] if config.get("order") == "conv-bn-relu" else []
    changes += [f"Dropout {config['dropout']:g}"] if config.get("dropout") else []
    return ", ".join(changes) or "—"


def trained_as(config, recipe):
    """Whether a run trained with a recipe of train.RECIPES: the same optimizer, schedule, batch and
    augmentation (how it tests, with BatchNorm statistics recomputed or not, may differ)."""
    same = all(config.get(key) == recipe[key]
               for key in ("batch_size", "lr", "momentum", "weight_decay", "step_size", "gamma", "augment"))
    augmentation = (config.get("rotation_degrees"), config.get("shift_pixels", 0.0))
    return same and augmentation == ((recipe["rotation"], recipe["shift"]) if recipe["augment"] else (0.0, 0.0))


def frontier_table(folder=FRONTIER, models=(4, 5)):
    """The frontier per recipe and size: for the recipe of Model 4, then of Model 5, the model itself
    on the seeds the frontier ran with its recipe, then at each smaller size the design with the best
    level among those trained with that recipe: parameters, channels per stage, what else differs,
    the seeds run, how many met the target, the level."""
    mean_level = lambda runs: statistics.mean(level(test_accuracies(run)) for run in runs)
    lines = ["| recipe | parameters | channels per stage | what else differs from Model 4 | seeds | target met "
             "| level % |", "|---|---|---|---|---|---|---|"]
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
            lines.append(f"| Model {model}'s | {config['parameters']:,} | {channels(config.get('layers', LAYERS[model]))} "
                         f"| {what} | {seeds(runs)} | {met} | {level_} |")
    return "\n".join(lines)


def accuracy_svg(models=(3, 4, 5), low=98.8, high=99.7):
    """A picture of the target: test accuracy per epoch of every run of Models 3 to 5's recipes, a
    panel for each model with runs, one thin line per seed, the 99.40% line across, the last epochs
    shaded. Accuracies below `low` are drawn at `low`. Standard library only: the SVG is text."""
    models = [model for model in models if model_runs(model)]
    width, height, margin, gap = 360, 260, 44, 24
    epochs = max(len(run["epochs"]) for model in models for run in model_runs(model))
    inner_w, inner_h = width - margin - 10, height - margin - 30
    x = lambda epoch: margin + inner_w * epoch / (epochs - 1)
    y = lambda accuracy: 30 + inner_h * (high - max(low, min(high, accuracy))) / (high - low)
    total = len(models) * width + (len(models) - 1) * gap
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" '
           f'viewBox="0 0 {total} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{total}" height="{height}" fill="white"/>']
    for i, model in enumerate(models):
        runs = model_runs(model)
        met = sum(target_met(test_accuracies(run)) for run in runs)
        out.append(f'<g transform="translate({i * (width + gap)},0)">')
        out.append(f'<text x="{margin}" y="16" font-size="13">Model {model}: target met on {met} of '
                   f'{len(runs)} seeds</text>')
        shade_x = x(epochs - TARGET_EPOCHS) - 4
        out.append(f'<rect x="{shade_x:.1f}" y="30" width="{x(epochs - 1) - shade_x + 4:.1f}" '
                   f'height="{inner_h}" fill="#eef3fb"/>')
        for tick in range(int(round(low * 10)), int(round(high * 10)) + 1, 2):
            value = tick / 10
            out.append(f'<line x1="{margin}" x2="{margin + inner_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                       f'stroke="#ddd"/><text x="{margin - 4}" y="{y(value) + 4:.1f}" text-anchor="end">'
                       f'{value:.1f}</text>')
        for epoch in range(0, epochs, 2):
            out.append(f'<text x="{x(epoch):.1f}" y="{height - 18}" text-anchor="middle">{epoch}</text>')
        out.append(f'<text x="{margin + inner_w / 2:.1f}" y="{height - 4}" text-anchor="middle">epoch</text>')
        for run in runs:
            points = " ".join(f"{x(e):.1f},{y(a):.1f}" for e, a in enumerate(test_accuracies(run)))
            colour = "#3465a4" if target_met(test_accuracies(run)) else "#cc0000"
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="0.8" '
                       f'stroke-opacity="0.6"/>')
        out.append(f'<line x1="{margin}" x2="{margin + inner_w}" y1="{y(TARGET_ACCURACY):.1f}" '
                   f'y2="{y(TARGET_ACCURACY):.1f}" stroke="black" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{margin + 4}" y="{y(TARGET_ACCURACY) - 4:.1f}">{TARGET_ACCURACY:.2f}%</text>')
        out.append('</g>')
    out.append('</svg>')
    return "\n".join(out) + "\n"


def readme_tables():
    """Each README and the tables it holds (a table of no runs yet is not held)."""
    notebook = [runs_table(), search_table(), recipe_summary(), screen_table(), screen_table(FRONTIER),
                frontier_table(), screen_table(SCREEN_6000), screen_table(CONFIRM_6000),
                screen_table(CONFIRM_5000)]
    return {RESULTS.parent / "README.md": [headline_table()],
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
            candidates = [(len(first_cells(rows) & first_cells(lines[a:b])), (a, b)) for a, b in blocks
                          if lines[a] == rows[0] and (a, b) not in replaced]
            if candidates:
                replaced[max(candidates)[1]] = rows
        for (a, b), rows in sorted(replaced.items(), reverse=True):
            lines[a:b] = rows
        train.write_atomically(path, lambda f: f.write("\n".join(lines).encode("utf-8")))


def main(argv):
    for stream in (sys.stdout, sys.stderr):   # an ASCII console gets ? for the tables' dashes
        getattr(stream, "reconfigure", lambda **how: None)(errors="replace")
    for path, why in not_counted():
        print(f"not counted: results/{path.as_posix()}: {why}", file=sys.stderr)
    train.write_atomically(SVG, lambda f: f.write(accuracy_svg().encode("utf-8")))
    if argv == ["--write"]:   # rewrite both READMEs' tables in place, then print them
        rewrite_readmes()
    for title, text in (("headline (README.md)", headline_table()), ("runs of the recipes", runs_table()),
                        ("recipe search", search_table()), ("recipes over seeds", recipe_summary()),
                        ("the screen for Model 4", screen_table()), ("the frontier", screen_table(FRONTIER)),
                        ("the frontier, per size (results/README.md)", frontier_table()),
                        ("the screen at 6,000 parameters or fewer", screen_table(SCREEN_6000)),
                        ("its choice on seeds 31-50", screen_table(CONFIRM_6000)),
                        ("below 5,000 parameters on seeds 51-70", screen_table(CONFIRM_5000))):
        print(f"## {title}\n\n{text}\n")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BrokenPipeError:   # `| head`: the reader has gone; say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
