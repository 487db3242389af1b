// Import of a network trained elsewhere: a TorchScript archive (torch.jit.script or torch.jit.trace, from Python
// or C++) mapped operator by operator onto the layer-graph IR, with its weights copied in, and checked against the
// original's outputs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "edgesweep/common/trial_config.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/torchscript.h"

namespace edgesweep {

/// How the imported network compares with the archive it came from, on seeded random inputs.
struct ImportCheck {
  int64_t inputs = 0;               ///< random batches compared
  double max_abs_difference = 0;    ///< largest |imported - original| over every output
  double output_scale = 0;          ///< largest |original| over every output
  /// max_abs_difference / output_scale (0 when the scale is 0 and the outputs agree).
  double relative_difference() const;
};

struct ImportedModel {
  GraphModule model{nullptr};  ///< in eval mode, weights copied from the archive
  ImportCheck check;
};

/// Largest relative difference an import may show before it is refused.
constexpr double kImportTolerance = 1e-4;

/// The aten and prim operators the import maps onto the IR, e.g. "aten::conv2d" (for error messages and docs).
const std::vector<std::string>& importable_operators();

/// Loads `path` in eval mode, freezes and inlines it, walks its graph on an input of `input` shape (batch 2) and
/// builds the IR: control flow that depends on shapes or constants is decided for that input; every operator that
/// reads the network's activations must be one of importable_operators(). Then compares the imported network with
/// the archive on three seeded random batches. `num_classes` > 0 checks the output width. Throws InputError naming
/// the file: not TorchScript, several inputs or outputs, an input shape the network does not take (with the
/// operator that failed), an unsupported operator (its name, schema and source line, and the supported list), or
/// outputs that differ by more than kImportTolerance of their scale.
ImportedModel import_torchscript(const std::filesystem::path& path, const Shape& input, int64_t num_classes = 0);

/// An archive as a trainable model: an edgesweep archive (with its graph) loaded as it is, any other TorchScript
/// archive imported for an input of `input` shape (metadata empty). For `[baseline] init` and distillation teachers.
LoadedModel load_or_import(const std::filesystem::path& path, const Shape& input);

/// What `edgesweep validate` says of an import: layers, parameters, MACs, the check against the archive, the
/// prunable channel groups with their sizes, and the groups left whole with the reason.
std::string describe_import(const std::filesystem::path& path, const ImportedModel& imported);

/// The network of `[model] arch = "torchscript"` for data of `input` shape and `classes` classes: the archive at
/// config.path (checked to be the file the experiment read, by sha256, and to take `input`), imported; when its
/// classifier has another number of outputs, its last linear layer is replaced by a fresh one for `classes`
/// (initialised from LibTorch's global generator: seed it first). Throws InputError naming the file and the keys.
GraphModule import_model(const ModelConfig& config, const Shape& input, int64_t classes);

}  // namespace edgesweep
