#!/usr/bin/python3
"""Writes the TorchScript archives the import tests read: small members of every torchvision classification family
(ResNet basic and bottleneck, VGG with and without batch norm, MobileNetV2 and V3, EfficientNet-B0, SqueezeNet,
ShuffleNetV2, DenseNet) and a hand-written network of the operators users' own code has, each scripted and traced,
with random weights and batch-norm statistics (so that no batch norm is an identity).

Usage: make_torchvision_models.py FOLDER

Also unsupported-op.pt (aten::pow on activations) and two-outputs.pt (a tuple of two tensors), for the errors.
FOLDER/manifest.json lists {"name", "archive", "input": [C, H, W], "classes", "params"} per archive ("params": the
module's parameter count). Nothing is downloaded. Exits 2 with a message when torch or torchvision is missing.
"""

import json
import pathlib
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    from torchvision.models import resnet, vgg
except ImportError as error:
    print(f"make_torchvision_models: {sys.executable} cannot import torch and torchvision ({error}): "
          "install python3-torchvision", file=sys.stderr)
    sys.exit(2)

CLASSES = 10


class UserNet(nn.Module):
    """What a hand-written network has: grouped and dilated convolutions, pools with padding and ceil mode,
    squeeze-excitation gates written with mean and broadcasting and with linear layers and view, several activations,
    view to 2-D, addmm, dropout."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.dilated = nn.Conv2d(16, 24, 3, padding=2, dilation=2)
        self.gate = nn.Conv2d(24, 24, 1)
        self.side = nn.Conv2d(16, 24, 1)
        self.squeeze = nn.Linear(24, 8)
        self.excite = nn.Linear(8, 24)
        self.fc_weight = nn.Parameter(torch.randn(32, 24 * 5 * 5) * 0.05)
        self.fc_bias = nn.Parameter(torch.randn(32) * 0.1)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)        # 16 -> 8 (from 15 with ceil)
        y = F.leaky_relu(self.grouped(x), 0.2)
        z = torch.tanh(self.dilated(y))
        s = torch.sigmoid(self.gate(z.mean([2, 3], keepdim=True)))  # [N, 24, 1, 1]
        z = z * s + self.side(x)
        z = F.gelu(z)
        g = torch.sigmoid(self.excite(torch.relu(self.squeeze(F.adaptive_avg_pool2d(z, 1).flatten(1)))))
        z = z * g.view(g.size(0), -1, 1, 1)                          # a gate made by linear layers
        z = F.avg_pool2d(z, 3, 2, padding=1, count_include_pad=False)
        z = z.view(z.size(0), -1)
        z = F.dropout(z, 0.3, self.training)
        z = torch.addmm(self.fc_bias, z, self.fc_weight.t())
        return self.head(torch.relu(z))


class PowerNet(nn.Module):
    """Squares its activations: aten::pow, which the import does not map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x):
        x = self.conv(x).pow(2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TwoOutputs(nn.Module):
    """Returns scores and features: several outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x):
        features = torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1)
        return self.fc(features), features


def small_vgg(batch_norm):
    features = vgg.make_layers([8, "M", 16, "M", 32, 32, "M", 64, "M"], batch_norm=batch_norm)
    model = vgg.VGG(features, num_classes=CLASSES, init_weights=True)
    model.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, CLASSES))
    return model


MODELS = {
    # name: (builder, input [C, H, W])
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=CLASSES), [3, 32, 32]),
    "resnet-bottleneck": (lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=CLASSES), [3, 32, 32]),
    "vgg": (lambda: small_vgg(False), [3, 32, 32]),
    "vgg-bn": (lambda: small_vgg(True), [3, 32, 32]),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=0.5), [3, 32, 32]),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES), [3, 32, 32]),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=CLASSES), [3, 32, 32]),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(num_classes=CLASSES), [3, 48, 48]),
    "shufflenet_v2": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=CLASSES), [3, 32, 32]),
    "densenet": (lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16,
                                                     bn_size=2, num_classes=CLASSES), [3, 32, 32]),
    "user-net": (UserNet, [3, 16, 16]),
}


def randomise(model):
    """Batch norms that are not identities: random affine parameters and running statistics."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    folder = pathlib.Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for index, (name, (build, shape)) in enumerate(MODELS.items()):
        torch.manual_seed(1000 + index)
        model = build()
        randomise(model)
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        example = torch.randn(1, *shape)
        for form in ("scripted", "traced"):
            with torch.no_grad():
                module = torch.jit.script(model) if form == "scripted" else torch.jit.trace(model, example)
            archive = f"{name}-{form}.pt"
            module.save(str(folder / archive))
            manifest.append({"name": f"{name}-{form}", "archive": archive, "input": shape, "classes": CLASSES,
                             "params": params})
    for name, module in (("unsupported-op", PowerNet()), ("two-outputs", TwoOutputs())):
        torch.jit.script(module.eval()).save(str(folder / f"{name}.pt"))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"make_torchvision_models: {len(manifest)} archives in {folder}")


if __name__ == "__main__":
    main()
