// A tiny synthetic classification task for tests that train: dark (label 0) against bright (label 1) noise.
#pragma once

#include <torch/torch.h>

#include "edgesweep/workers/dataset.h"

namespace edgesweep {

/// 64 training, `val_size` validation and 32 test images of 1 x size x size, drawn after seeding with `seed`.
inline DataSplits brightness_task(uint64_t seed, int64_t size = 8, int64_t val_size = 32) {
  torch::manual_seed(seed);
  const auto make = [size](int64_t n) {
    auto labels = torch::arange(n, torch::kInt64).remainder(2);
    auto noise = torch::randint(0, 100, {n, 1, size, size}, torch::kInt64);
    return Dataset{(noise + labels.view({n, 1, 1, 1}) * 155).to(torch::kUInt8), labels};
  };
  DataSplits data;
  data.train = make(64);
  data.val = make(val_size);
  data.test = make(32);
  data.class_names = {"dark", "bright"};
  data.input_shape = Shape{1, size, size, false};
  data.mean = {0.5};
  data.std = {0.3};
  data.id = "brightness@test";
  return data;
}

}  // namespace edgesweep
