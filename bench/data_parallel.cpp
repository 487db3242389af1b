// Data-parallel training on this machine: the world of ranks under mpirun is one worker group, training through
// edgesweep's own train_model (its data pipeline, its bucketed gradient exchange) as a data-parallel trial does.
// Rank 0 prints one JSON line per measurement.
// Usage: mpirun -np R bench_data_parallel MODE ...
//   allreduce                                     the group's all-reduce: time and bandwidth per message size
//   equivalence TRAIN_IMAGES EPOCHS BATCH         a network without batch norm: rank 0 trains it alone, then the
//                                                 group trains it from the same start; the weights' largest gap
//   train ARCH TRAIN_IMAGES EPOCHS BATCH SEED THREADS
//                                                 trains ARCH (zoo) on Fashion-MNIST: images/s of the epochs after
//                                                 the first, and the test accuracy the leader measures
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/common/allocator.h"
#include "edgesweep/common/collective.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/mpi_session.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"

using namespace edgesweep;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

DataSplits fashion_mnist(int64_t train_images) {
  DataConfig config;
  config.dataset = "fashion-mnist";
  config.train_subset = train_images;
  config.val_fraction = 0;
  return load_data(config, 1);
}

TrainConfig train_config(int64_t epochs, int64_t batch) {
  TrainConfig config;
  config.epochs = epochs;
  config.batch_size = batch;
  config.lr = 0.05;
  config.lr_schedule = "cosine";
  return config;
}

void report(const Collective& group, Json line) {
  if (group.rank() != 0) return;
  line["ranks"] = group.size();
  std::cout << line.dump() << std::endl;
}

void bench_allreduce(Collective& group) {
  for (const size_t bytes : {size_t{4} << 10, size_t{64} << 10, size_t{1} << 20, size_t{8} << 20, size_t{64} << 20}) {
    std::vector<float> values(bytes / sizeof(float), 1.0f);
    for (int i = 0; i < 3; ++i) group.allreduce_sum(values.data(), values.size());  // warm-up
    int calls = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    // About a second per size, the same number of calls on every rank (rank 0 decides when to stop).
    while (true) {
      group.allreduce_sum(values.data(), values.size());
      ++calls;
      elapsed = seconds_since(start);
      int stop = group.rank() == 0 && elapsed > 1.0 ? 1 : 0;
      group.broadcast(&stop, sizeof stop, 0);
      if (stop) break;
    }
    const double per_call = elapsed / calls;
    const double algorithm_bandwidth = static_cast<double>(bytes) / per_call;
    const double n = group.size();
    report(group, Json{{"mode", "allreduce"},
                       {"bytes", bytes},
                       {"calls", calls},
                       {"microseconds", per_call * 1e6},
                       {"algorithm_gb_per_s", algorithm_bandwidth / 1e9},
                       // NCCL's "bus bandwidth": what each link carried, comparable across group sizes.
                       {"bus_gb_per_s", n > 1 ? algorithm_bandwidth * 2 * (n - 1) / n / 1e9 : 0.0}});
  }
}

/// conv, relu, max-pool, linear: no batch norm, no dropout.
Graph batch_norm_free_graph() {
  ModelConfig config;
  config.arch = "custom";
  config.layers = Json::parse(R"([{"op": "conv", "out": 16}, {"op": "relu"}, {"op": "maxpool"}, {"op": "flatten"},
                                  {"op": "linear", "out": 10}])");
  return build_model(config, Shape{1, 28, 28, false}, 10);
}

void bench_equivalence(Collective& group, int64_t train_images, int64_t epochs, int64_t batch) {
  torch::set_num_threads(1);
  const DataSplits data = fashion_mnist(train_images);
  const TrainConfig config = train_config(epochs, batch);
  torch::manual_seed(3);
  GraphModule alone(batch_norm_free_graph());
  GraphModule grouped = clone_graph_module(alone);
  double alone_seconds = 0;
  if (group.rank() == 0) {
    const task_group::Scope none(nullptr);
    const auto start = Clock::now();
    train_model(alone, data, config, false, 5);
    alone_seconds = seconds_since(start);
  }
  const task_group::Scope scope(&group);
  const auto start = Clock::now();
  train_model(grouped, data, config, false, 5);
  const double group_seconds = seconds_since(start);
  if (group.rank() != 0) return;
  const task_group::Scope none(nullptr);  // rank 0 alone from here
  double gap = 0, largest = 0;
  const auto a = alone->parameters();
  const auto b = grouped->parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    gap = std::max(gap, (a[i] - b[i]).abs().max().item<double>());
    largest = std::max(largest, a[i].abs().max().item<double>());
  }
  const double accuracy_alone = evaluate_accuracy(alone, data.test, data.mean, data.std, 500);
  const double accuracy_grouped = evaluate_accuracy(grouped, data.test, data.mean, data.std, 500);
  report(group, Json{{"mode", "equivalence"},
                     {"train_images", train_images},
                     {"epochs", epochs},
                     {"batch", batch},
                     {"steps", epochs * ((train_images + batch - 1) / batch)},
                     {"largest_weight_gap", gap},
                     {"largest_weight", largest},
                     {"test_accuracy_alone", accuracy_alone},
                     {"test_accuracy_group", accuracy_grouped},
                     {"seconds_alone", alone_seconds},
                     {"seconds_group", group_seconds}});
}

void bench_train(Collective& group, const std::string& arch, int64_t train_images, int64_t epochs, int64_t batch,
                 uint64_t seed, int threads) {
  torch::set_num_threads(threads);
  const DataSplits data = fashion_mnist(train_images);
  torch::manual_seed(seed);
  GraphModule model(build_zoo_model(arch, data.input_shape, 10, 1.0));
  const task_group::Scope scope(&group);
  const auto start = Clock::now();
  const std::vector<EpochRecord> records = train_model(model, data, train_config(epochs, batch), true, seed);
  const double wall = seconds_since(start);
  double images = 0, seconds = 0;
  for (size_t i = records.size() > 1 ? 1 : 0; i < records.size(); ++i) {
    images += records[i].images_per_second * records[i].seconds;
    seconds += records[i].seconds;
  }
  const double accuracy = evaluate_accuracy(model, data.test, data.mean, data.std, 500);
  report(group, Json{{"mode", "train"},
                     {"arch", arch},
                     {"train_images", train_images},
                     {"epochs", epochs},
                     {"batch", batch},
                     {"seed", seed},
                     {"threads", threads},
                     {"images_per_second", images / std::max(seconds, 1e-9)},
                     {"train_seconds", wall},
                     {"test_accuracy", accuracy}});
}

}  // namespace

int main(int argc, char** argv) {
  configure_allocator();
  MpiSession session(&argc, &argv);
  const std::unique_ptr<Collective> group = session.split(0, session.rank());
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 1 && args[0] == "allreduce") {
      bench_allreduce(*group);
    } else if (args.size() == 4 && args[0] == "equivalence") {
      bench_equivalence(*group, std::stoll(args[1]), std::stoll(args[2]), std::stoll(args[3]));
    } else if (args.size() == 7 && args[0] == "train") {
      bench_train(*group, args[1], std::stoll(args[2]), std::stoll(args[3]), std::stoll(args[4]),
                  std::stoull(args[5]), std::stoi(args[6]));
    } else {
      std::cerr << "usage: bench_data_parallel allreduce | equivalence TRAIN_IMAGES EPOCHS BATCH | train ARCH "
                   "TRAIN_IMAGES EPOCHS BATCH SEED THREADS\n";
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_data_parallel (rank " << session.rank() << "): " << e.what() << "\n";
    session.abort(1);
  }
  return 0;
}
