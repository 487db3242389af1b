"""Training throughput of the same networks in Python PyTorch (Debian's python3-torch), the loop a Python user writes.

The networks mirror edgesweep's zoo: "small-cnn" (conv3x3(32, no bias)-BN-ReLU-maxpool2, conv3x3(64)-BN-ReLU-maxpool2,
flatten, linear(128)-ReLU-dropout(0.25), linear(10)) and "resnet20" (3x3 stem of 16, three stages of three basic
blocks of 16, 32, 64 channels, strides 1, 2, 2, 1x1 conv+BN shortcuts where the shape changes, global average pool,
linear). Each step assembles its batch as edgesweep's loop does (uint8 images picked by a shuffled index, scaled and
normalised), then runs forward, loss, backward and an SGD step with momentum; bf16 under torch.autocast, channels-last
by model.to(memory_format=...) and channels-last inputs. One warm-up epoch sizes the measured one to about --seconds.
Prints one JSON line.
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


def conv_bn(cin, cout, kernel, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3, 1)
        self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


def resnet20():
    layers = [conv_bn(1, 16, 3, 1), nn.ReLU()]
    cin = 16
    for stage, cout in enumerate([16, 32, 64]):
        for block in range(3):
            layers.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def epoch(model, optimizer, images, labels, batch, precision, channels_last):
    """Images per second of one epoch over `images` (uint8 N x 1 x 28 x 28)."""
    order = torch.randperm(images.shape[0])
    start = time.perf_counter()
    seen = 0
    for first in range(0, images.shape[0], batch):
        index = order[first:first + batch]
        x = (images.index_select(0, index).float() / 255.0 - 0.286) / 0.353
        y = labels.index_select(0, index)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        optimizer.step()
        seen += index.shape[0]
    return seen / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20", choices=["small-cnn", "resnet20"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--format", default="contiguous", choices=["contiguous", "channels-last"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (small_cnn() if args.model == "small-cnn" else resnet20()).train()
    channels_last = args.format == "channels-last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(7)

    def data(n):
        return (torch.randint(0, 256, (n, 1, 28, 28), generator=generator, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=generator))

    rate = epoch(model, optimizer, *data(8 * args.batch), args.batch, args.precision, channels_last)
    steps = max(8, int(rate * args.seconds / args.batch))
    rate = epoch(model, optimizer, *data(steps * args.batch), args.batch, args.precision, channels_last)
    print(json.dumps({"impl": "python-pytorch", "model": args.model, "batch": args.batch,
                      "precision": args.precision, "format": args.format, "threads": args.threads,
                      "steps": steps, "images_per_second": rate}), flush=True)


if __name__ == "__main__":
    main()
