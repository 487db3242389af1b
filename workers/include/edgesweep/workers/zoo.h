// The model zoo, written in the layer-graph IR: small CNN, VGG-style, ResNet-8/20 (CIFAR-style) and
// MobileNetV2-style, for any input channels and size.
#pragma once

#include <string>
#include <vector>

#include "edgesweep/common/trial_config.h"
#include "edgesweep/workers/graph.h"

namespace edgesweep {

/// Names of the zoo architectures.
const std::vector<std::string>& zoo_names();

/// Builds a zoo architecture scaled by `width` (channel multiplier) for `input` and `num_classes`.
/// Throws InputError for an unknown name or an input too small for the architecture.
Graph build_zoo_model(const std::string& arch, const Shape& input, int64_t num_classes, double width);

/// Builds the model a trial asks for: a zoo architecture or the inline layers of arch = "custom".
Graph build_model(const ModelConfig& config, const Shape& input, int64_t num_classes);

}  // namespace edgesweep
