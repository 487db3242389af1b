// A task the training loop learns in a few steps, for tests of the loop itself (on any device).
#pragma once

#include <torch/torch.h>

#include "edgesweep/workers/dataset.h"

namespace edgesweep {

/// A separable two-class task: dark noise (label 0) against bright noise (label 1), 8x8 grey.
inline DataSplits brightness_task() {
  torch::manual_seed(5);
  const auto make = [](int64_t n) {
    auto labels = torch::arange(n, torch::kInt64).remainder(2);
    auto noise = torch::randint(0, 100, {n, 1, 8, 8}, torch::kInt64);
    auto images = (noise + labels.view({n, 1, 1, 1}) * 155).to(torch::kUInt8);
    return Dataset{images, labels};
  };
  DataSplits data;
  data.train = make(64);
  data.val = make(32);
  data.test = make(32);
  data.class_names = {"dark", "bright"};
  data.input_shape = Shape{1, 8, 8, false};
  data.mean = {0.5};
  data.std = {0.3};
  data.id = "brightness@test";
  return data;
}

}  // namespace edgesweep
