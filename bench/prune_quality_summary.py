#!/usr/bin/env python3
"""Summary of bench/run_prune_quality: per prune method, criterion and sparsity, the MACs reduction and the test
accuracy drop against the one baseline, over the seeds.
Usage: prune_quality_summary.py OUTPUT.md EXPORT.json [EXPORT.json ...]
(exports of `edgesweep export --format json`)"""
import json
import statistics
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from precision_summary import cell  # noqa: E402  (mean ± sample standard deviation, as in the precision summary)

# Torch-Pruning 1.3.7 on the same ResNet-20 / Fashion-MNIST setup (one-shot L1 group pruning, 4 epochs of SGD with
# cosine annealing per step to zero on the same 12,000 images, optional Hinton distillation), as the trainer issue
# states them: (MACs reduction, accuracy drop in points, recipe).
PEER = [(2.39, 0.80, "fine-tuning"), (2.39, 0.37, "distillation"), (3.38, 0.72, "distillation")]
# The targets: at most this drop at about this reduction, in the mean over the seeds.
TARGETS = [(2.4, 0.3), (3.4, 0.6)]


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: prune_quality_summary.py OUTPUT.md EXPORT.json [EXPORT.json ...]")
    output, exports = sys.argv[1], sys.argv[2:]
    rows = {}  # (method, criterion, sparsity) -> lists
    seeds, baselines = [], set()
    for path in exports:
        with open(path) as f:
            data = json.load(f)
        for trial in data["trials"]:
            if trial["status"] != "done":
                continue
            metrics = trial["metrics"]
            if trial["kind"] == "baseline":
                baselines.add(round(metrics["test_accuracy"], 4))
                continue
            seed = trial["config"]["seed"]
            if seed not in seeds:
                seeds.append(seed)
            stage = trial["config"]["pipeline"][0]
            key = (stage["method"], stage.get("criterion", "magnitude"), stage["sparsity"])
            entry = rows.setdefault(key, {"reduction": [], "drop": [], "accuracy": [], "seeds": []})
            entry["reduction"].append(metrics["macs_before"] / metrics["macs_after"])
            entry["drop"].append(metrics["accuracy_drop"])
            entry["accuracy"].append(metrics["test_accuracy"])
            entry["seeds"].append(seed)
    w = []
    w.append("# Accuracy after structured pruning: ResNet-20 on Fashion-MNIST")
    w.append("")
    w.append("Made by `bench/run_prune_quality` (`prune_quality_summary.py`) from "
             "`experiments/resnet20-prune-quality.toml` and `experiments/resnet20-prune-quality-filter.toml`: one "
             "baseline (test accuracy {} %), one-shot pruning, 4 epochs of distilled fine-tuning (SGD, lr 0.01, cosine "
             "to zero per step; T = 4, alpha = 0.7) on the same 12,000 images, seeds {}. Drop: baseline minus pruned "
             "test accuracy (10,000 test images), in points; mean ± sample standard deviation over the seeds. MACs "
             "reduction: the baseline's MACs over the pruned network's (the same under every seed)."
             .format(" / ".join(f"{b:.2f}" for b in sorted(baselines)) or "-", ", ".join(str(s) for s in seeds)))
    w.append("")
    w.append("| method | criterion | sparsity | MACs reduction | seeds | test accuracy % | drop (points) |")
    w.append("|---|---|---:|---:|---:|---:|---:|")
    for key in sorted(rows, key=lambda k: (k[0] != "block", k[0], k[1], k[2])):
        e = rows[key]
        w.append("| {} | {} | {:g} | {:.2f}x | {} | {} | {} |".format(
            key[0], key[1] if key[0] == "block" else "(the method's)", key[2], statistics.mean(e["reduction"]),
            len(e["seeds"]), cell(e["accuracy"]), cell(e["drop"])))
    w.append("")
    w.append("## Against the targets")
    w.append("")
    w.append("For each target, the trials within 0.15x of its MACs reduction, the best mean drop first. The peer's "
             "figures (Torch-Pruning 1.3.7, as measured on this setup and given in the trainer issue): " +
             "; ".join(f"{d:.2f} point at {r:.2f}x ({recipe})" for r, d, recipe in PEER) + ".")
    w.append("")
    w.append("| target | method | criterion | sparsity | MACs reduction | mean drop | met |")
    w.append("|---|---|---|---:|---:|---:|---|")
    for reduction, limit in TARGETS:
        near = [(statistics.mean(e["drop"]), k, e) for k, e in rows.items()
                if abs(statistics.mean(e["reduction"]) - reduction) <= 0.15]
        if not near:
            w.append(f"| ≤ {limit} point at {reduction}x | - | - | - | - | - | no trial near this reduction |")
        for drop, key, e in sorted(near, key=lambda t: t[0]):
            w.append("| ≤ {} point at {}x | {} | {} | {:g} | {:.2f}x | {:.2f} | {} |".format(
                limit, reduction, key[0], key[1] if key[0] == "block" else "-", key[2],
                statistics.mean(e["reduction"]), drop, "yes" if drop <= limit else "no"))
    text = "\n".join(w) + "\n"
    with open(output, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
