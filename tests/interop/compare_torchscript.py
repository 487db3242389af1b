#!/usr/bin/python3
"""Loads TorchScript archives exported by edgesweep's C++ code with Python's torch.jit.load and compares their
outputs with the outputs C++ computed for the same input.

Usage: compare_torchscript.py FOLDER

FOLDER holds manifest.json:
    {"input": {"file": "input.f32", "shape": [N, C, H, W]},
     "models": [{"name": ..., "archive": "x.pt", "output": "x.out.f32", "output_shape": [N, K]}, ...]}
with raw little-endian float32 files. Every archive must carry the extra files edgesweep/graph.json and
edgesweep/meta.json (valid JSON). A quantized archive's meta.json names its engine (quantized_engine): it is set
as torch.backends.quantized.engine before loading, since the weights are repacked for the engine active at load. For each model the predictions (argmax) must be identical and the largest
absolute difference at most 1e-5; the report says whether the outputs are bit-identical. Exits 0 when all agree,
1 with a message naming each mismatch otherwise.
"""

import array
import json
import math
import pathlib
import sys
import zipfile

TOLERANCE = 1e-5
GRAPH_FILE = "edgesweep/graph.json"
META_FILE = "edgesweep/meta.json"


def fail(message):
    print(f"compare_torchscript: {message}", file=sys.stderr)
    sys.exit(1)


try:
    import torch
except ImportError as error:
    fail(f"{sys.executable} cannot import torch ({error}): install python3-torch")


def read_float32(path, shape):
    """A tensor of `shape` from a raw little-endian float32 file."""
    data = path.read_bytes()
    expected = 4 * math.prod(shape)
    if len(data) != expected:
        fail(f"{path}: {len(data)} bytes, expected {expected} for float32 of shape {shape}")
    values = array.array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return torch.frombuffer(values, dtype=torch.float32).clone().reshape(shape)


def quantized_engine(archive):
    """The engine an archive's meta.json names ("none" for float models), read from the zip before loading."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            if member.endswith("/extra/" + META_FILE):
                return json.loads(zipped.read(member)).get("quantized_engine", "none")
    return "none"


def check_model(folder, entry, inputs):
    """Returns a list of problems with one model (empty when it agrees with C++)."""
    name = entry["name"]
    archive = folder / entry["archive"]
    engine = quantized_engine(archive)
    if engine != "none":
        if engine not in torch.backends.quantized.supported_engines:
            return [f"{name}: engine {engine} is not in this torch ({torch.backends.quantized.supported_engines})"]
        torch.backends.quantized.engine = engine
    extra = {GRAPH_FILE: "", META_FILE: ""}
    try:
        module = torch.jit.load(str(archive), _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError subclasses with long messages
        return [f"{name}: torch.jit.load('{archive}') failed: {error}"]
    problems = []
    parsed = {}
    for key in (GRAPH_FILE, META_FILE):
        if not extra[key]:
            problems.append(f"{name}: {archive} has no extra file {key}")
            continue
        try:
            parsed[key] = json.loads(extra[key])
        except ValueError as error:
            problems.append(f"{name}: extra file {key} of {archive} is not JSON: {error}")
    expected = read_float32(folder / entry["output"], entry["output_shape"])
    graph = parsed.get(GRAPH_FILE)
    if graph is not None and graph.get("num_classes") != expected.shape[1]:
        problems.append(f"{name}: graph.json says {graph.get('num_classes')} classes, output has {expected.shape[1]}")

    module.eval()
    torch.set_num_threads(1)
    # The graph executor profiles the first runs and optimises afterwards: check several.
    for run in range(3):
        with torch.no_grad():
            output = module(inputs)
        if tuple(output.shape) != tuple(expected.shape):
            problems.append(f"{name}: output shape {tuple(output.shape)}, C++ gave {tuple(expected.shape)}")
            break
        diff = (output - expected).abs().max().item()
        same_predictions = torch.equal(output.argmax(1), expected.argmax(1))
        identical = torch.equal(output, expected)
        print(f"{name} run {run + 1}: max abs diff {diff:.3g}, predictions "
              f"{'identical' if same_predictions else 'DIFFER'}, {'bit-identical' if identical else 'not bit-identical'}")
        if not same_predictions:
            problems.append(f"{name} run {run + 1}: predictions {output.argmax(1).tolist()}, "
                            f"C++ gave {expected.argmax(1).tolist()}")
        if not diff <= TOLERANCE:  # also catches NaN
            problems.append(f"{name} run {run + 1}: max abs diff {diff:.3g} exceeds {TOLERANCE}")
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    folder = pathlib.Path(sys.argv[1])
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        fail(f"{manifest_path} does not exist")
    manifest = json.loads(manifest_path.read_text())
    torch.set_num_threads(1)
    inputs = read_float32(folder / manifest["input"]["file"], manifest["input"]["shape"])
    models = manifest["models"]
    if not models:
        fail(f"{manifest_path} lists no models")
    problems = []
    for entry in models:
        problems += check_model(folder, entry, inputs)
    if problems:
        fail(f"{len(problems)} mismatch(es) between C++ and Python (torch {torch.__version__}):\n  "
             + "\n  ".join(problems))
    print(f"all {len(models)} models agree with C++ (torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread)")


if __name__ == "__main__":
    main()
