// make_bench_model OUT.pt: writes a small real TorchScript model (a seeded small CNN for 1x28x28 inputs, 10 classes,
// with its edgesweep/meta.json) for the benchmark runner's tests, so the test executable itself needs no LibTorch.
#include <iostream>

#include <torch/torch.h>

#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/zoo.h"

int main(int argc, char** argv) {
  using namespace edgesweep;
  if (argc != 2) {
    std::cerr << "usage: make_bench_model OUT.pt\n";
    return 2;
  }
  try {
    torch::manual_seed(5);
    GraphModule model(build_zoo_model("small-cnn", Shape{1, 28, 28, false}, 10, 0.25));
    model->eval();
    const Json metadata{{"input_shape", {1, 28, 28}}, {"mean", {0.3}}, {"std", {0.35}},
                        {"quantized_engine", "none"}, {"precision", "fp32"}};
    save_torchscript(model, metadata, argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
