#!/usr/bin/env python3
"""Summary of one experiment run under several seeds (see bench/run_seeds): per trial, test accuracy and drop over
the seeds (mean, sample standard deviation, min, max) and the speed-ups of each seed's compression table.
Usage: seeds_summary.py NAME OUTPUT.md EXPORT.json [EXPORT.json ...]   (exports of `edgesweep export --format json`)"""
import json
import os
import re
import statistics
import sys


def describe(trial):
    if trial["kind"] == "baseline":
        return "baseline " + trial["config"]["model"]["arch"]
    parts = []
    for stage in trial["config"]["pipeline"]:
        kind = stage["stage"]
        if kind == "prune":
            text = "prune {} {:g} ({})".format(stage["method"], stage["sparsity"], stage["schedule"])
            if stage.get("distill"):
                text += " +KD"
        elif kind == "distill":
            text = "distill T={:g} α={:g}".format(stage["temperature"], stage["alpha"])
        elif kind == "quantize":
            text = "quantize " + stage["mode"]
        else:
            text = kind
        parts.append(text)
    return " → ".join(parts)


def speedups(table_path):
    """trial id -> (b1 speed-up, b32 speed-up) from a compression table, {} when there is none."""
    result = {}
    if not os.path.exists(table_path):
        return result
    with open(table_path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 13 and re.fullmatch(r"\d+", cells[0]):
                result[int(cells[0])] = (cells[11], cells[12])
    return result


def stats(values):
    if not values:
        return "-", "-", "-", "-"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return "{:.2f}".format(mean), "{:.2f}".format(spread), "{:.2f}".format(min(values)), "{:.2f}".format(max(values))


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: seeds_summary.py NAME OUTPUT.md EXPORT.json [EXPORT.json ...]")
    name, output, exports = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = {}  # description -> list of (seed, trial, speed-ups)
    order = []
    seeds = []
    for path in exports:
        with open(path) as f:
            data = json.load(f)
        variant = data["experiment"]["name"]
        tables = speedups(os.path.join("bench", "results", "compression_{}.md".format(variant)))
        for trial in data["trials"]:
            if trial["status"] != "done":
                continue
            seed = trial["config"]["seed"]
            if seed not in seeds:
                seeds.append(seed)
            key = describe(trial)
            if key not in rows:
                rows[key] = []
                order.append(key)
            rows[key].append((seed, trial, tables.get(trial["id"])))
    lines = [
        "# Seeds: experiment '{}'".format(name),
        "",
        "Made by `bench/run_seeds` (`seeds_summary.py`). The experiment ran once per seed ({}), each run from its own "
        "baseline (the seed also drives the baseline's fine-tuning, data split and head). Test accuracy and drop as "
        "each run recorded them (top-1 on the test split; drop against that seed's baseline): mean, sample standard "
        "deviation, min and max over the seeds. Speed-ups: each seed's `compression_{}-seed<S>.md`, against its "
        "baseline, listed per seed.".format(", ".join(str(s) for s in seeds), name),
        "",
        "| method | seeds | test acc % mean | sd | min | max | drop mean | sd | min | max | MACs | b1 speed-ups | "
        "b32 speed-ups |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for key in order:
        entries = rows[key]
        accuracy = [t["metrics"]["test_accuracy"] for _, t, _ in entries if "test_accuracy" in t["metrics"]]
        drops = [t["metrics"]["accuracy_drop"] for _, t, _ in entries if "accuracy_drop" in t["metrics"]]
        macs = sorted({int(a["macs"]) for _, t, _ in entries for a in t["artifacts"][-1:]})
        b1 = ", ".join(s[0] for _, _, s in entries if s) or "-"
        b32 = ", ".join(s[1] for _, _, s in entries if s) or "-"
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            key, len(entries), *stats(accuracy), *(stats(drops) if drops else ("",) * 4),
            "/".join(str(m) for m in macs), b1, b32))
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
