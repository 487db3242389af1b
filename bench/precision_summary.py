#!/usr/bin/env python3
"""Summary of bench/run_precision_accuracy: one experiment run in fp32 and in bf16 under the same seeds.
Usage: precision_summary.py NAME OUTPUT.md PRECISION:SEED:STORE.db [...]"""
import datetime
import json
import sqlite3
import statistics
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from seeds_summary import describe  # noqa: E402  (the trials' descriptions of the seeds summaries)


def seconds(started, finished):
    parse = lambda text: datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parse(finished) - parse(started)).total_seconds()


def read(store):
    """description -> (test accuracy, seconds) for each done trial of the store's one experiment."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    rows = {}
    for trial_id, kind, config, started, finished in db.execute(
            "SELECT id, kind, config_json, started, finished FROM trials WHERE status = 'done' ORDER BY id"):
        config = json.loads(config)
        # The precision is what is compared: the descriptions leave it out, so both runs' trials meet.
        label = describe({"kind": kind, "config": config})
        accuracy = db.execute("SELECT value FROM metrics WHERE trial_id = ? AND step = -1 AND name = 'test_accuracy'",
                              (trial_id,)).fetchone()
        cached = db.execute("SELECT value FROM metrics WHERE trial_id = ? AND step = -1 AND name = 'cached'",
                            (trial_id,)).fetchone()
        rows[label] = (accuracy[0] if accuracy else None, seconds(started, finished), bool(cached and cached[0]))
    return rows


def cell(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main():
    name, output, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
    results = {}  # (precision, label) -> list of (seed, accuracy, seconds)
    labels, seeds = [], []
    cached_labels = set()  # (precision, label) of baselines taken from the cache in some seed
    for run in runs:
        precision, seed, store = run.split(":", 2)
        if seed not in seeds:
            seeds.append(seed)
        for label, (accuracy, took, cached) in read(store).items():
            if label not in labels:
                labels.append(label)
            results.setdefault((precision, label), []).append((seed, accuracy, took))
            if cached:
                cached_labels.add((precision, label))
    with open(output, "w") as f:
        w = f.write
        w(f"# {name}: fp32 against bf16 training, same seeds\n\n")
        w(f"Written by `bench/run_precision_accuracy` on {datetime.date.today()}: the experiment with `[run] precision` "
          f"set to fp32 and to bf16 (every training: baseline, pruning's fine-tuning, distillation, QAT), seeds "
          f"{', '.join(seeds)}. Test accuracy in percent, mean ± sample standard deviation over the seeds; time is "
          f"each task's wall time (finished - started), summed over the seeds.\n\n")
        w("| trial | fp32 accuracy | bf16 accuracy | bf16 - fp32 | fp32 time (s) | bf16 time (s) | speed-up |\n")
        w("|---|---:|---:|---:|---:|---:|---:|\n")
        total = {"fp32": 0.0, "bf16": 0.0}
        for label in labels:
            cells = {}
            for precision in ["fp32", "bf16"]:
                entries = results.get((precision, label), [])
                accuracies = [a for _, a, _ in entries if a is not None]
                took = sum(t for _, _, t in entries)
                total[precision] += took
                cells[precision] = (accuracies, took)
            (a32, t32), (a16, t16) = cells["fp32"], cells["bf16"]
            diff = f"{statistics.mean(a16) - statistics.mean(a32):+.2f}" if a32 and a16 else "-"
            speed = f"{t32 / t16:.2f}x" if t16 > 0 else "-"
            mark = lambda precision, took: f"{took:.0f}" + (" (cached)" if (precision, label) in cached_labels else "")
            w(f"| {label} | {cell(a32)} | {cell(a16)} | {diff} | {mark('fp32', t32)} | {mark('bf16', t16)} | {speed} |\n")
        w(f"| all tasks | | | | {total['fp32']:.0f} | {total['bf16']:.0f} | "
          f"{total['fp32'] / total['bf16']:.2f}x |\n")
    print(open(output).read())


if __name__ == "__main__":
    main()
