// TorchScript artifacts: a GraphModule exported as generated TorchScript source plus its parameters, with the
// IR and metadata as extra files; loadable by any LibTorch or Python's torch.jit.load without edgesweep.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <torch/script.h>

#include "edgesweep/common/json.h"
#include "edgesweep/workers/graph_module.h"

namespace edgesweep {

/// Extra files stored inside every exported archive.
inline constexpr const char* kGraphFile = "edgesweep/graph.json";
inline constexpr const char* kMetadataFile = "edgesweep/meta.json";

/// The TorchScript expression of `node`'s fp32 inference operator applied to `inputs` (value names, one per node
/// input); `tensor(role)` spells the node's tensors ("weight", "bias", "running_mean", "running_var").
std::string float_expression(const Graph& graph, const Node& node, const std::vector<std::string>& inputs,
                             const std::function<std::string(const char*)>& tensor);

/// The generated TorchScript source of a graph's inference forward pass.
std::string torchscript_source(const Graph& graph);

/// Builds an inference-only TorchScript module holding copies of `model`'s parameters and buffers.
torch::jit::Module export_torchscript(const GraphModule& model);

/// Exports and saves `model` to `path` with its graph and `metadata` (input shape, normalisation, classes, ...).
void save_torchscript(const GraphModule& model, const Json& metadata, const std::filesystem::path& path);

/// A model loaded back from an archive written by save_torchscript.
struct LoadedModel {
  GraphModule model{nullptr};
  Json metadata;
};

/// The `edgesweep/meta.json` of an archive, read without loading the module (so quantized archives too); an empty
/// object when it has none. Throws InputError naming the file when it is not a TorchScript archive or the JSON is
/// malformed.
Json read_archive_metadata(const std::filesystem::path& path);

/// Loads an archive written by save_torchscript into a trainable GraphModule (parameters copied).
/// Throws Error naming the file when it is not an edgesweep archive.
LoadedModel load_graph_module(const std::filesystem::path& path);

}  // namespace edgesweep
