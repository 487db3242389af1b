// A baseline that starts from an archive's weights: the archive's graph checked against the one [model] builds, every
// tensor copied except a classifier head whose outputs changed.
#include "edgesweep/workers/baseline_init.h"

#include <set>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/workers/import_torchscript.h"
#include "edgesweep/workers/torchscript.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

/// How one layer's JSON form in the archive differs from the built one's ("" when equal): name, operator and inputs
/// first, then the first other attribute (in key order).
std::string first_difference(const Json& archive, const Json& built) {
  const auto show = [](const Json& layer, const std::string& key) {
    return layer.contains(key) ? layer.at(key).dump() : std::string("absent");
  };
  std::vector<std::string> keys = {"name", "op", "inputs"};
  for (auto it = archive.begin(); it != archive.end(); ++it) keys.push_back(it.key());
  for (auto it = built.begin(); it != built.end(); ++it) keys.push_back(it.key());
  for (const std::string& key : keys) {
    if (archive.value(key, Json()) != built.value(key, Json())) {
      return fmt::format("{} is {} in the archive and {} in the model [model] builds", key, show(archive, key),
                         show(built, key));
    }
  }
  return "";
}

/// Checks that the archive's layers are the built model's, but for the outputs of layer `head`.
void check_same_network(const Graph& archive, const Graph& built, int head, const std::string& where) {
  const Json archive_layers = Json(archive).at("nodes");
  const Json built_layers = Json(built).at("nodes");
  const size_t common = std::min(archive_layers.size(), built_layers.size());
  for (size_t i = 0; i < common; ++i) {
    Json a = archive_layers[i];
    Json b = built_layers[i];
    if (static_cast<int>(i) == head) {
      a.erase("out");
      b.erase("out");
    }
    const std::string difference = first_difference(a, b);
    check_input(difference.empty(),
                "{} holds another network than [model] builds: layer {} ('{}') differs: {}\nhint: [model] arch, width "
                "(or layers) must be those the archive was trained with; only the outputs of the last linear layer "
                "may differ (a new head for other classes)",
                where, i, built_layers[i].at("name").get<std::string>(), difference);
  }
  check_input(archive_layers.size() == built_layers.size(),
              "{} holds another network than [model] builds: {} layers in the archive, {} in the model [model] "
              "builds (the first {} are equal)",
              where, archive_layers.size(), built_layers.size(), common);
}

}  // namespace

int classifier_head(const Graph& graph) {
  for (int i = static_cast<int>(graph.nodes.size()) - 1; i > 0; --i) {
    if (graph.nodes[i].op == OpKind::Linear) return i;
  }
  return -1;
}

void initialize_from_archive(GraphModule& model, const fs::path& path, const std::string& expected_sha256,
                             const std::vector<std::string>& class_names) {
  const std::string where = fmt::format("[baseline] 'init' = \"{}\"", path.string());
  std::error_code error;
  check_input(fs::is_regular_file(path, error), "{} is not an existing file (an edgesweep float archive)", where);
  if (!expected_sha256.empty()) {
    const std::string sha = sha256_file(path);
    check_input(sha == expected_sha256,
                "{} has sha256 {} now, but {} when the experiment was read: the file changed; run the experiment "
                "again so that its baseline hash names this file",
                where, sha, expected_sha256);
  }
  Json metadata;
  try {
    metadata = read_archive_metadata(path);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{} is not an edgesweep archive: {}", where, e.what()));
  }
  const std::string precision = metadata.value("precision", "fp32");
  check_input(precision == "fp32",
              "{} is an {} model (its {} says so); a baseline starts from a float archive: a baseline or a trial's "
              "artifact without a quantize stage",
              where, precision, kMetadataFile);
  const Graph& built = model->graph();
  LoadedModel loaded;
  try {
    loaded = load_or_import(path, built.input().shape);  // an edgesweep archive, or any network that imports
  } catch (const std::exception& e) {
    throw InputError(fmt::format("{} is neither an edgesweep archive nor a network that imports: {}", where, e.what()));
  }

  const int head = classifier_head(built);
  check_same_network(loaded.model->graph(), built, head, where);
  // A head with other outputs, or whose outputs meant other classes, keeps the built model's (seeded)
  // initialisation; everything else is the archive's.
  const Json archive_classes = metadata.value("class_names", Json());
  const bool other_classes = !class_names.empty() && archive_classes.is_array() && archive_classes != Json(class_names);
  std::set<std::string> fresh;
  if (head >= 0 && (other_classes || loaded.model->graph().nodes[head].out != built.nodes[head].out)) {
    fresh = {GraphModuleImpl::tensor_name(built.nodes[head], "weight"),
             GraphModuleImpl::tensor_name(built.nodes[head], "bias")};
  }
  const auto source_parameters = loaded.model->named_parameters(/*recurse=*/false);
  const auto source_buffers = loaded.model->named_buffers(/*recurse=*/false);
  torch::NoGradGuard no_grad;
  const auto copy_from = [&](const torch::OrderedDict<std::string, torch::Tensor>& source, const std::string& name,
                             torch::Tensor& target) {
    if (fresh.count(name) > 0) return;
    const torch::Tensor* found = source.find(name);
    EDGESWEEP_ASSERT(found != nullptr && found->sizes() == target.sizes());  // equal graphs hold equal tensors
    target.copy_(*found);
  };
  for (auto& p : model->named_parameters(/*recurse=*/false)) copy_from(source_parameters, p.key(), p.value());
  for (auto& b : model->named_buffers(/*recurse=*/false)) copy_from(source_buffers, b.key(), b.value());
}

}  // namespace edgesweep
