// Training throughput of edgesweep's C++ path: the zoo's small CNN as a GraphModule, SGD with momentum,
// images per second at given batch sizes. Prints one JSON line per batch size.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/common/allocator.h"
#include "edgesweep/common/json.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/zoo.h"

using namespace edgesweep;

int main(int argc, char** argv) {
  configure_allocator();  // as every edgesweep process (EDGESWEEP_ALLOCATOR=default for glibc's own)
  int threads = 2;
  double seconds_per_point = 10.0;
  std::vector<int64_t> batch_sizes = {8, 64};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "--threads") threads = std::stoi(argv[i + 1]);
    if (key == "--seconds") seconds_per_point = std::stod(argv[i + 1]);
    if (key == "--batch") batch_sizes = {std::stoll(argv[i + 1])};
  }
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  for (int64_t batch : batch_sizes) {
    GraphModule model(build_zoo_model("small-cnn", Shape{1, 28, 28, false}, 10, 1.0));
    model->train();
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    const auto inputs = torch::randn({batch, 1, 28, 28});
    const auto labels = torch::randint(0, 10, {batch}, torch::kInt64);
    const auto step = [&] {
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(inputs), labels);
      loss.backward();
      optimizer.step();
    };
    for (int i = 0; i < 20; ++i) step();  // warm-up
    int64_t steps = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < seconds_per_point) {
      step();
      ++steps;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::cout << Json{{"impl", "edgesweep-cpp"},
                      {"batch", batch},
                      {"threads", threads},
                      {"allocator", allocator_policy()},
                      {"steps", steps},
                      {"seconds", elapsed},
                      {"images_per_second", static_cast<double>(steps * batch) / elapsed}}
                     .dump()
              << std::endl;
  }
  return 0;
}
