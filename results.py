"""The README's tables of results, made from the metrics files that train.py wrote under results/:
the chosen recipes (results/), the recipe search (results/recipe-search/) and how each recipe
did over seeds (these folders, results/more-seeds/ and results/gpu-h200/, runs on a lent GPU).

    python results.py            # prints the three tables; paste them into the README

A unit test checks that the README holds exactly these tables, so the README cannot drift from
the committed runs.
"""
import json
import re
import statistics
from pathlib import Path

from train import TARGET_ACCURACY, TARGET_EPOCHS, target_met

RESULTS = Path(__file__).resolve().parent / "results"


def read_run(path):
    """One metrics file. Files written before --weight-decay existed have none: it was 0."""
    run = json.loads(path.read_text())
    run["config"].setdefault("weight_decay", 0.0)
    return run


def test_accuracies(run):
    return [epoch["test_accuracy"] for epoch in run["epochs"]]


def load_runs(folder=RESULTS):
    """{model number: [metrics of each run, by seed]} for every results/*.json."""
    runs = {}
    for path in sorted(folder.glob("*.json")):
        run = read_run(path)
        runs.setdefault(run["config"]["model"], []).append(run)
    for model_runs in runs.values():
        model_runs.sort(key=lambda run: run["config"]["seed"])
    return dict(sorted(runs.items()))


def recipe(config):
    text = f"SGD lr {config['lr']:g} momentum {config['momentum']:g}"
    if config["weight_decay"]:
        text += f" weight decay {config['weight_decay']:g}"
    text += f", StepLR {config['step_size']}/{config['gamma']:g}, batch {config['batch_size']}"
    if config["augment"]:
        text += f", rotation ±{config['rotation_degrees']:g}°"
    return text


def seeds(runs):
    numbers = [run["config"]["seed"] for run in runs]
    contiguous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    return f"{numbers[0]}–{numbers[-1]}" if contiguous and len(numbers) > 1 else ", ".join(map(str, numbers))


def row(model, runs):
    tests = [test_accuracies(run) for run in runs]
    best = [max(t) for t in tests]
    lowest_last = min(min(t[-TARGET_EPOCHS:]) for t in tests)
    met = sum(target_met(t) for t in tests)
    config = runs[0]["config"]
    return (f"| {model} | {config['parameters']:,} | {recipe(config)} | {seeds(runs)} | "
            f"{sum(best) / len(best):.2f} ({min(best):.2f}–{max(best):.2f}) | {lowest_last:.2f} | "
            f"{met}/{len(runs)} |")


def table(folder=RESULTS):
    lines = [
        f"| Model | Params | Recipe | Seeds | Best test acc. %, mean (min–max) "
        f"| Lowest of last {TARGET_EPOCHS} epochs % | Target met (≥ {TARGET_ACCURACY:.2f}% in each of the last {TARGET_EPOCHS}) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [row(model, runs) for model, runs in load_runs(folder).items()]
    return "\n".join(lines)


def search_table(folder=RESULTS / "recipe-search"):
    """The runs that chose the recipes of Models 3 and 4: one row per file, named after its
    settings (the rotation's sampling, bilinear or nearest, is in the name only)."""
    lines = [f"| run (results/recipe-search/) | model | batch | lr | weight decay | StepLR step / gamma "
             f"| rotation | seed | test accuracy %, last {TARGET_EPOCHS} epochs run | target met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        run = read_run(path)
        config, tests = run["config"], test_accuracies(run)
        last = ", ".join(f"{t:.2f}" for t in tests[-TARGET_EPOCHS:])
        epochs = f"epochs {len(tests) - TARGET_EPOCHS}–{len(tests) - 1}"
        rotation = f"±{config['rotation_degrees']:g}°" if config["augment"] else "none"
        verdict = ("yes" if target_met(tests) else "no") if len(tests) == config["epochs"] else "stopped early"
        lines.append(f"| {path.stem} | {config['model']} | {config['batch_size']} | {config['lr']:g} | "
                     f"{config['weight_decay']:g} | {config['step_size']} / {config['gamma']:g} | "
                     f"{rotation} | {config['seed']} | {last} ({epochs}) | {verdict} |")
    return "\n".join(lines)


SUMMARY_FOLDERS = (RESULTS, RESULTS / "recipe-search", RESULTS / "more-seeds", RESULTS / "gpu-h200")


def recipe_summary(folders=SUMMARY_FOLDERS, fewest=3):
    """Every recipe run to the end on at least `fewest` seeds, best level first within a model:
    how often it met the target, and where it ends. A seed's level is the mean of its last
    TARGET_EPOCHS test accuracies; the spread is their standard deviation over seeds."""
    groups = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            run = read_run(path)
            tests = test_accuracies(run)
            if len(tests) == run["config"]["epochs"]:   # runs stopped early are left out
                recipe = folder.name + "/" + re.sub(r"[-_]seed\d+$", "", path.stem)
                groups.setdefault((run["config"]["model"], recipe), []).append(tests)
    rows = []
    for (model, recipe), runs in groups.items():
        if len(runs) < fewest:
            continue
        levels = [statistics.mean(t[-TARGET_EPOCHS:]) for t in runs]
        level, spread = statistics.mean(levels), statistics.stdev(levels)
        met = sum(target_met(t) for t in runs)
        lowest = min(min(t[-TARGET_EPOCHS:]) for t in runs)
        rows.append((model, -level, f"| `{recipe}` | {model} | {len(runs)} | {met}/{len(runs)} | "
                                    f"{level:.2f} | {spread:.2f} | {lowest:.2f} |"))
    lines = [f"| runs (seed files) | model | seeds | target met | level %, mean over seeds "
             f"| spread over seeds | lowest of last {TARGET_EPOCHS} % |",
             "|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [line for _, _, line in sorted(rows)])


if __name__ == "__main__":
    print(table())
    print()
    print(search_table())
    print()
    print(recipe_summary())
