"""Training throughput of the same small CNN in Python PyTorch (Debian's python3-torch).

The network mirrors edgesweep's zoo "small-cnn": conv3x3(32, no bias)-BN-ReLU-maxpool2, conv3x3(64, no bias)-BN-ReLU-
maxpool2, flatten, linear(128)-ReLU-dropout(0.25), linear(10). Prints one JSON line per batch size.
"""
import argparse
import json
import time

import torch
from torch import nn


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, action="append")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for batch in args.batch or [8, 64]:
        model = small_cnn().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        inputs = torch.randn(batch, 1, 28, 28)
        labels = torch.randint(0, 10, (batch,))

        def step():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()

        for _ in range(20):
            step()
        steps = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < args.seconds:
            step()
            steps += 1
            elapsed = time.perf_counter() - start
        print(json.dumps({"impl": "python-pytorch", "batch": batch, "threads": args.threads, "steps": steps,
                          "seconds": elapsed, "images_per_second": steps * batch / elapsed}), flush=True)


if __name__ == "__main__":
    main()
