// Training throughput of edgesweep's real training loop: train_model (its batch assembly from uint8 images,
// normalisation, autocast, layout and optimizer step) on synthetic 1x28x28 images of 10 classes, for a zoo network
// at one batch size, precision and memory format. One warm-up epoch sizes the measured epoch to about --seconds.
// Prints one JSON line: images per second of the measured epoch, the network's MACs per image and the layout used.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/common/allocator.h"
#include "edgesweep/common/json.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"

using namespace edgesweep;

namespace {

DataSplits synthetic(int64_t images) {
  torch::Generator generator = at::detail::createCPUGenerator(7);
  DataSplits data;
  data.train.images = torch::randint(0, 256, {images, 1, 28, 28}, generator, torch::kInt64).to(torch::kUInt8);
  data.train.labels = torch::randint(0, 10, {images}, generator, torch::kInt64);
  data.input_shape = Shape{1, 28, 28, false};
  data.mean = {0.286};
  data.std = {0.353};
  for (int i = 0; i < 10; ++i) data.class_names.push_back(std::to_string(i));
  data.id = "synthetic";
  return data;
}

}  // namespace

int main(int argc, char** argv) {
  configure_allocator();
  std::string arch = "resnet20";
  std::string precision = "fp32";
  std::string format = "contiguous";
  int64_t threads = 2;
  int64_t batch = 128;
  double seconds = 10.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--model") arch = value;
    else if (key == "--precision") precision = value;
    else if (key == "--format") format = value;
    else if (key == "--threads") threads = std::stoll(value);
    else if (key == "--batch") batch = std::stoll(value);
    else if (key == "--seconds") seconds = std::stod(value);
    else {
      std::cerr << "unknown option " << key << "\n";
      return 2;
    }
  }
  try {
    set_task_threads(threads);
    const task_device::Scope scope(torch::kCPU, format);
    torch::manual_seed(0);
    GraphModule model(build_zoo_model(arch, Shape{1, 28, 28, false}, 10, 1.0));
    TrainConfig config;
    config.epochs = 1;
    config.batch_size = batch;
    config.lr = 0.01;
    config.lr_schedule = "constant";
    config.precision = precision;
    // Warm-up: 8 steps (allocations, oneDNN's kernel choice, the layout probe), which also gives the rate.
    const auto warm = train_model(model, synthetic(8 * batch), config, false, 1);
    const double rate = warm.front().images_per_second;
    const int64_t steps = std::max<int64_t>(8, static_cast<int64_t>(rate * seconds / static_cast<double>(batch)));
    const auto measured = train_model(model, synthetic(steps * batch), config, false, 2);
    const EpochRecord& record = measured.front();
    std::cout << Json{{"impl", "edgesweep-cpp"},
                      {"model", arch},
                      {"batch", batch},
                      {"precision", precision},
                      {"format", format},
                      {"channels_last", record.channels_last},
                      {"threads", threads},
                      {"steps", steps},
                      {"seconds", record.seconds},
                      {"macs", count_macs(model->graph())},
                      {"images_per_second", record.images_per_second}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_train_throughput: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
