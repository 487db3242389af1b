// Tasks of a tiny custom network on a fake Fashion-MNIST folder, for tests that run whole baselines and trials.
#pragma once

#include <filesystem>
#include <vector>

#include "edgesweep/common/json.h"
#include "edgesweep/common/task.h"

namespace edgesweep {

/// Inline layers of a tiny network: conv (`channels`) + batch norm + relu + pool, a hidden linear layer and the head.
inline Json tiny_layers(int64_t classes, int64_t channels = 4) {
  Json layers = Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 4}, {"op": "batchnorm", "name": "bn1"}, {"op": "relu", "name": "relu1"},
    {"op": "maxpool", "name": "pool"}, {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc1", "out": 8}, {"op": "relu", "name": "fc1_relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])");
  layers[0]["out"] = channels;
  layers.back()["out"] = classes;
  return layers;
}

/// A baseline task of the tiny network on the fake Fashion-MNIST folder `data`.
inline Task baseline_task(const std::filesystem::path& data, const std::filesystem::path& results,
                          std::vector<int64_t> classes, int64_t epochs) {
  Task task;
  task.kind = "baseline";
  task.trial_id = 1;
  task.config.seed = 5;
  task.config.data.path = data.string();
  task.config.data.val_fraction = 0.1;
  task.config.data.classes = classes;
  task.config.model.arch = "custom";
  task.config.model.layers = tiny_layers(static_cast<int64_t>(classes.size()));
  task.config.baseline.epochs = epochs;
  task.config.baseline.batch_size = 16;
  task.results_dir = results.string();
  task.latency_seconds = 0;
  return task;
}

}  // namespace edgesweep
