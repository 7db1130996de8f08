"""The tables and pictures that README.md shows, and the tables of the screen still open, made from
the metrics files that train.py wrote under results/:

    python -m lab.tables            # prints them, and names each run that no table counts
    python -m lab.tables --write    # and puts each table in its README and redraws results/
                                    # accuracy.svg, reliability.svg and curves.svg

A table counts only finished runs (every epoch asked for, not a dry run, not interrupted). The
tables of the closed screens are text in results/README.md, with the command and commit that made
them. Unit tests check that the READMEs hold these tables and the pictures are what this file
draws, so that neither drifts from the runs.
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
ACCURACY = RESULTS / "accuracy.svg"   # every run of Models 3 to 5, epoch by epoch
RELIABILITY = RESULTS / "reliability.svg"   # what reliability costs in parameters
CURVES = RESULTS / "curves.svg"   # plot.py's picture of one committed run
CURVES_RUN = RESULTS / "model5" / "seed1.json"
SIZES = (3000, 3500, 4000, 4500)   # the sizes the screen at 4,500 parameters or fewer looked at
PUBLIC = "f3762-shift2"   # the smallest public design claiming 99.4%: its layers, Model 4's recipe
FRONTIER, SCREEN_4500 = RESULTS / "frontier", RESULTS / "screen-4500"   # designs below Model 5
LEVERS = RESULTS / "screen-levers"   # a teacher, an average of weights, clean statistics
CONFIRM_LEVERS = RESULTS / "confirm-levers"   # the levers screen's choice on fresh seeds
CONFIRMED = (RESULTS / "confirm-5000", RESULTS / "confirm-4500", CONFIRM_LEVERS)   # fresh seeds
ALONE = {"s4462": (SCREEN_4500, "q4462-batch128"),   # each design of LEVERS trained alone
         "s3786": (FRONTIER, "f3786-bnrelu-batch64-shift1")}
FRESH_SEEDS = {3: range(11, 51), 4: range(11, 51), 5: range(11, 51)}   # seeds that chose nothing


def read_run(path):
    """One metrics file, or None where it is not a whole one of train.py's (half written, another
    program's, a field missing, a number that is not finite)."""
    def refuse(token):
        raise ValueError(token)
    try:
        run = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
        numbers = [run["config"][k] for k in ("model", "seed", "epochs")]
        numbers += [e[k] for e in run["epochs"] for k in ("test_accuracy", "train_accuracy")]
        if all(type(n) in (int, float) for n in numbers):
            return run
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        pass
    return None


def test_accuracies(run, key="test_accuracy"):
    """Per epoch: the run's test accuracy, or with key="test_accuracy_trained_statistics", the one
    with BatchNorm's statistics as trained (recorded where the run recomputed them)."""
    return [epoch[key] for epoch in run["epochs"]]


def as_trained(run):
    """Test accuracies with the statistics as trained: the run's own where it did not recompute."""
    recomputed = run["config"].get("recompute_bn", False)
    return test_accuracies(run, "test_accuracy" + "_trained_statistics" * recomputed)


def level(tests):   # a run's level: the mean of its last TARGET_EPOCHS test accuracies
    return statistics.mean(tests[-TARGET_EPOCHS:])


def why_not_counted(run, path):
    """Why a run's numbers are not a result, or "" where they are."""
    if run is None:
        return "not a metrics file of train.py (half written, or another program's)"
    config, done = run["config"], f"{len(run['epochs'])} of {run['config']['epochs']} epochs"
    if config.get("dry_run"):
        return "a --dry-run"
    if run.get("interrupted"):
        return f"interrupted ({done})"
    if len(run["epochs"]) != config["epochs"]:
        return f"unfinished ({done})"
    if "result" not in run:
        return f"no verdict ({done}): stopped after its last epoch"
    if not re.search(rf"(^|[-_])seed{config['seed']}$", path.stem):   # seedS, NAME_seedS
        return f"its name does not say its seed ({config['seed']}): a copy of another run?"
    return ""


def metrics_files(folder, pattern="*.json"):
    """(path, run) for every file of the pattern in the folder, sorted; run None if unreadable."""
    return [(path, read_run(path)) for path in sorted(folder.glob(pattern))]


def not_counted(folder=RESULTS):
    """(path, why) for every metrics file under results/ that no table counts as a result."""
    return [(path.relative_to(folder), why) for path, run in metrics_files(folder, "**/*.json")
            if (why := why_not_counted(run, path))]


def model_runs(model):
    """The finished runs of model M's recipe, results/modelM/seedS.json, by seed."""
    runs = [run for path, run in metrics_files(RESULTS / f"model{model}", "seed*.json")
            if not why_not_counted(run, path)]
    return sorted(runs, key=lambda run: run["config"]["seed"])


def candidate_runs(folder):
    """The finished runs of each candidate of lab/screen.py in a folder, by name, in seed order."""
    groups = {}
    for path, run in metrics_files(folder):
        if not why_not_counted(run, path):
            groups.setdefault(run["config"]["candidate"], []).append(run)
    return {name: sorted(runs, key=lambda run: run["config"]["seed"])
            for name, runs in groups.items()}


def row(*cells):   # of a Markdown table
    return "| " + " | ".join(map(str, cells)) + " |"


def seeds(runs):
    """The runs' seeds in order, each stretch of consecutive ones as a range: "1–10, 31–50"."""
    stretches = []
    for seed in (run["config"]["seed"] for run in runs):
        if stretches and seed == stretches[-1][-1] + 1:
            stretches[-1].append(seed)
        else:
            stretches.append([seed])
    return ", ".join(f"{s[0]}–{s[-1]}" if len(s) > 1 else f"{s[0]}" for s in stretches)


def met_and_level(runs, accuracies=test_accuracies):
    """How many of the runs met the target, of how many, and their level averaged over seeds."""
    tests = [accuracies(run) for run in runs]
    return sum(map(target_met, tests)), len(runs), statistics.mean(map(level, tests))


def models_table():
    """Per model, for the README's opening: its parameters and the share of its seeds that met
    the target."""
    lines = [row("Model", "Parameters", "Seeds that met the target"), "|---|---|---|"]
    for model in train.RECIPES:
        if runs := model_runs(model):
            met, n, _ = met_and_level(runs)
            lines.append(row(model, f"{runs[0]['config']['parameters']:,}",
                             f"{met} of {n} ({100 * met / n:.0f}%)"))
    return "\n".join(lines)


def headline_table(fresh=FRESH_SEEDS):
    """Per model: the seeds run and the devices they ran on, how many met the target and the level
    over seeds, as its recipe tests; on its fresh seeds (which played no part in choosing it); and
    for Models 2 and 3, which recompute BatchNorm statistics, with the statistics as trained."""
    lines = [row("Model", "Parameters", "Seeds", "Devices", "Target met", "Level %",
                 "Target met, fresh seeds", "Target met, statistics as trained",
                 "Level as trained %"), "|---|---|---|---|---|---|---|---|---|"]
    for model in train.RECIPES:
        if not (runs := model_runs(model)):
            continue
        devices = collections.Counter(run["config"]["device"] for run in runs)
        met, n, mean = met_and_level(runs)
        confirmed = [run for run in runs if run["config"]["seed"] in fresh.get(model, ())]
        on_fresh = "—"
        if confirmed:
            on_fresh = f"{met_and_level(confirmed)[0]}/{len(confirmed)} ({seeds(confirmed)})"
        trained = "— | —"
        if train.RECIPES[model]["recompute_bn"]:
            trained_met, _, trained_level = met_and_level(runs, as_trained)
            trained = f"{trained_met}/{n} | {trained_level:.2f}"
        lines.append(row(model, f"{runs[0]['config']['parameters']:,}", seeds(runs),
                         ", ".join(f"{device} ×{k}" for device, k in devices.items()),
                         f"{met}/{n}", f"{mean:.2f}", on_fresh, trained))
    return "\n".join(lines)


def spread_cells(runs, accuracies=test_accuracies):
    """Of a candidate's runs: its seeds, how many met the target, its level, the spread of levels
    over seeds and the lowest of its last epochs."""
    tests = [accuracies(run) for run in runs]
    levels = [level(t) for t in tests]
    return (seeds(runs), f"{sum(map(target_met, tests))}/{len(runs)}",
            f"{statistics.mean(levels):.2f}",
            f"{statistics.stdev(levels):.2f}" if len(levels) > 1 else "—",
            f"{min(min(t[-TARGET_EPOCHS:]) for t in tests):.2f}")


def levers_table(folder=LEVERS, alone=ALONE):
    """The screen of levers, best level first: each candidate's parameters, seeds, how many met
    the target, its level and spread over seeds, the lowest of its last epochs, and its gain in
    level over its design trained alone (`alone`: its folder and name) on the same seeds."""
    rows = []
    for name, runs in candidate_runs(folder).items():
        levels = [level(test_accuracies(run)) for run in runs]
        home, design = alone[name.split("-")[0]]
        base = {run["config"]["seed"]: level(test_accuracies(run))
                for run in candidate_runs(home)[design]}
        gain = statistics.mean(lv - base[run["config"]["seed"]] for lv, run in zip(levels, runs))
        rows.append((-statistics.mean(levels), row(
            f"`{name}`", f"{runs[0]['config']['parameters']:,}", *spread_cells(runs),
            f"{gain:+.3f}")))
    return "\n".join([row("candidate", "parameters", "seeds", "target met", "level %", "spread",
                          f"lowest of last {TARGET_EPOCHS} %", "gain over alone, same seeds"),
                      "|---|---|---|---|---|---|---|---|", *(line for _, line in sorted(rows))])


def confirmation_table(folder=CONFIRM_LEVERS):
    """The levers' choice on fresh seeds, as tested and with the statistics as trained: a `clean`
    run tested so is its design trained alone, the same training."""
    lines = [row("run", "parameters", "seeds", "target met", "level %", "spread",
                 f"lowest of last {TARGET_EPOCHS} %", "gain over alone, same seeds"),
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in candidate_runs(folder).items():
        parameters = f"{runs[0]['config']['parameters']:,}"
        gain = statistics.mean(level(test_accuracies(run)) - level(as_trained(run)) for run in runs)
        lines += [row(f"`{name}`", parameters, *spread_cells(runs), f"{gain:+.3f}"),
                  row(f"`{name}`, statistics as trained (the design alone)", parameters,
                      *spread_cells(runs, as_trained), "—")]
    return "\n".join(lines)


def accuracy_svg(models=(3, 4, 5), low=98.8, high=99.7):
    """A picture of the target: test accuracy per epoch of every run of Models 3 to 5's recipes,
    a panel for each model, one thin line per seed (red where it missed the target), the 99.40%
    line across, the last epochs shaded; accuracies below `low` are drawn at `low`."""
    width, height, gap, elements = 360, 260, 24, []
    for i, model in enumerate(models):
        runs = [test_accuracies(run) for run in model_runs(model)]
        title = f"Model {model}: target met on {sum(map(target_met, runs))} of {len(runs)} seeds"
        series = [(tests, "#3465a4" if target_met(tests) else "#cc0000", 0.8, 0.6)
                  for tests in runs]
        elements += plot.panel(i * (width + gap), 0, width, height, title, series, low, high, 0.2,
                               TARGET_EPOCHS, TARGET_ACCURACY)
    return plot.document(len(models) * (width + gap) - gap, height, elements)


def reliability_points(fewest=10):
    """(label, parameters, met, seeds, level): Models 3 to 5 over all their seeds; each design
    confirmed on fresh seeds, over all its seeds (a lever's, named); near each of SIZES (within
    250 parameters), the design with the highest level among those run on at least `fewest`
    seeds, where not shown already; and the public 3,762-parameter layers."""
    designs, shown, levers = {}, [], set()
    for folder in (FRONTIER, SCREEN_4500, LEVERS, *CONFIRMED):
        for name, runs in candidate_runs(folder).items():
            designs.setdefault(name, []).extend(runs)
            shown += [name] if folder in CONFIRMED else []
            levers |= {name} if folder == LEVERS else set()
    point = lambda label, runs: (label, runs[0]["config"]["parameters"], *met_and_level(runs))
    points = [point(f"Model {m}", model_runs(m)) for m in (3, 4, 5)]
    for size in SIZES:
        near = [(name, runs) for name, runs in designs.items() if name != PUBLIC
                and len(runs) >= fewest and abs(runs[0]["config"]["parameters"] - size) <= 250]
        shown += [max(near, key=lambda pair: point(*pair)[4])[0]] if near else []
    label = lambda name: f"{designs[name][0]['config']['parameters']:,}" + (
        f" {name.split('-', 1)[1]}" if name in levers else "")   # a lever's name: DESIGN-LEVER
    points += [point(label(name), designs[name]) for name in dict.fromkeys(shown)]
    return points + [point("public 3,762", designs[PUBLIC])]


def reliability_svg(low=2500, high=8000):
    """Parameters across, the share of seeds that met the target up: one point per design of
    reliability_points, labelled with its seeds met (above the point from 95% up, clear of the
    dashed line at 19 seeds in 20; to its left past 6,500 parameters, and for a second point of
    one size)."""
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
    points = reliability_points()
    for i, (label, parameters, met, n, _) in enumerate(points):   # a second at one size: left
        share = met / n
        right = parameters > 6500 or parameters in [p for _, p, *_ in points[:i]]
        out += [plot.element("circle", cx=f"{x(parameters):.1f}", cy=f"{y(share):.1f}", r=4,
                             fill="#3465a4" if share >= 0.95 else "#cc0000"),
                plot.element("text", f"{label}: {met}/{n}", x=f"{x(parameters) + 6 - 12*right:.1f}",
                             y=f"{y(share) + (14 if 0.5 <= share < 0.95 else -8):.1f}",
                             text_anchor="end" if right else "start")]
    return plot.document(width, height, out)


def readme_tables():
    """Each README and the tables it holds (a table of no runs yet is not held)."""
    return {RESULTS.parent / "README.md": [models_table(), headline_table()],
            RESULTS / "README.md": [levers_table()] * bool(candidate_runs(LEVERS))
            + [confirmation_table()] * bool(candidate_runs(CONFIRM_LEVERS))}


def pictures():
    """Each picture under results/ and its SVG, drawn from the runs."""
    return {ACCURACY: accuracy_svg(), RELIABILITY: reliability_svg(),
            CURVES: plot.curves(read_run(CURVES_RUN), CURVES_RUN.name)}


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
            matches = [(len(first_cells(rows) & first_cells(lines[a:b])), (a, b))
                       for a, b in blocks if lines[a] == rows[0] and (a, b) not in replaced]
            if matches:
                replaced[max(matches)[1]] = rows
        for (a, b), rows in sorted(replaced.items(), reverse=True):
            lines[a:b] = rows
        train.write_whole(path, "\n".join(lines).encode("utf-8"))


def main(argv):
    parser = train.parser(prog="python -m lab.tables", description="Print the tables README.md "
                          "shows and the open screen's, made from the runs under results/.")
    parser.add_argument("--write", action="store_true",
                        help="put each table in its README and redraw the pictures")
    args = parser.parse_args(argv)
    for path, why in not_counted():
        print(f"not counted: results/{path.as_posix()}: {why}", file=sys.stderr)
    if args.write:
        rewrite_readmes()
        for path, svg in pictures().items():
            train.write_whole(path, svg.encode("utf-8"))
    for path, tables in readme_tables().items():
        print(f"## {path.relative_to(RESULTS.parent)}\n\n" + "\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
