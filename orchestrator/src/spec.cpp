// Experiment specs: TOML text (TOML++) checked against the parameter schema of params.h and turned into an
// ExperimentSpec with a complete base trial config and its swept dimensions. Every error names file:line:col.
#include "edgesweep/orchestrator/spec.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include <toml++/toml.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/params.h"

namespace edgesweep {
namespace {

bool comes_before(const toml::source_position& a, const toml::source_position& b) {
  return a.line < b.line || (a.line == b.line && a.column < b.column);
}

/// The entries of a table in the order they were written (TOML++ iterates them sorted by name).
std::vector<std::pair<const toml::key*, const toml::node*>> entries_in_file_order(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [key, node] : table) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return comes_before(a.first->source().begin, b.first->source().begin);
  });
  return entries;
}

std::string join(const std::vector<std::string>& items) {
  std::string joined;
  for (const std::string& item : items) joined += (joined.empty() ? "" : ", ") + item;
  return joined;
}

std::vector<std::string> param_names(const SectionSpec& spec) {
  std::vector<std::string> names;
  for (const ParamSpec& p : spec.params) names.push_back(p.name);
  return names;
}

/// What a value of `type` looks like, for "must be ..." messages.
const char* expected_text(ParamType type) {
  switch (type) {
    case ParamType::Integer: return "an integer";
    case ParamType::Float: return "a finite number";
    case ParamType::String: return "a string";
    case ParamType::Boolean: return "true or false";
    case ParamType::StringList: return "an array of strings";
    case ParamType::FloatList: return "an array of numbers";
    case ParamType::IntegerList: return "an array of integers";
    case ParamType::TableList: return "an array of tables";
  }
  return "a value";
}

/// Converts a TOML scalar to JSON. Returns false and describes the node in `kind` when it has no JSON scalar form
/// (tables, arrays, dates and times, infinities and NaN).
bool scalar_to_json(const toml::node& node, Json& out, std::string& kind) {
  switch (node.type()) {
    case toml::node_type::string: out = std::string(*node.value<std::string_view>()); return true;
    case toml::node_type::integer: out = *node.value<int64_t>(); return true;
    case toml::node_type::boolean: out = *node.value<bool>(); return true;
    case toml::node_type::floating_point: {
      const double x = *node.value<double>();
      if (std::isfinite(x)) {
        out = x;
        return true;
      }
      kind = std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf");
      return false;
    }
    case toml::node_type::table: kind = "a table"; return false;
    case toml::node_type::array: kind = "an array"; return false;
    case toml::node_type::date: kind = "a date"; return false;
    case toml::node_type::time: kind = "a time"; return false;
    case toml::node_type::date_time: kind = "a date-time"; return false;
    case toml::node_type::none: break;
  }
  kind = "an unknown value";
  return false;
}

/// A swept key as found in the file; `position` keeps the dimensions in file order.
struct FoundDimension {
  toml::source_position position;
  SweepDimension dimension;
};

/// One pass over a spec's TOML; collects swept dimensions while it fills in every setting.
class SpecParser {
 public:
  explicit SpecParser(std::string source_name) : source_name_(std::move(source_name)) {}

  ExperimentSpec parse(const std::string& text);

 private:
  ObjectiveSettings read_objectives(const toml::table& table) const;
  std::vector<DeviceSpec> read_devices(const toml::node& node);

 private:
  [[noreturn]] void fail(const toml::source_position& where, const std::string& message) const {
    throw InputError(fmt::format("{}:{}:{}: {}", source_name_, where.line, where.column, message));
  }

  Json read_table(const toml::table& table, const SectionSpec& spec, const std::string& context,
                  const std::string& pointer, const std::string& label, const std::vector<std::string>& handled_keys,
                  const std::string& unknown_note = "");
  Json read_value(const toml::key& key, const toml::node& node, const ParamSpec& spec, const std::string& context,
                  const std::string& pointer, const std::string& label);
  Json read_scalar(const toml::node& node, const ParamSpec& spec, const std::string& context) const;
  Json read_list(const toml::node& node, const ParamSpec& spec, const std::string& context) const;
  Json read_model(const toml::table& table);
  Json read_layers(const toml::node& node);
  void check_torchscript_model(const toml::table& table, const toml::node* arch_node, Json& model) const;
  Json read_pipeline(const toml::node& node);
  void check_data(const toml::table& table, const Json& data) const;
  void check_classes(const toml::table& table, const Json& data) const;
  void check_init(const toml::table& table, Json& baseline) const;
  void check_normalisation(const toml::table& table, const Json& data) const;
  void check_model_input(const toml::table& root, const Json& model, const Json& data) const;
  void check_teacher(const toml::table& table, const std::string& context) const;
  void check_name(const toml::table& table, const std::string& name) const;

  std::string source_name_;
  std::vector<FoundDimension> dimensions_;
};

/// Reads every key of `table` against `spec` and fills in the defaults of the keys not given. Keys listed in
/// `handled_keys` are left to the caller (neither read nor defaulted when present).
Json SpecParser::read_table(const toml::table& table, const SectionSpec& spec, const std::string& context,
                            const std::string& pointer, const std::string& label,
                            const std::vector<std::string>& handled_keys, const std::string& unknown_note) {
  Json out = Json::object();
  for (const auto& [key, node] : entries_in_file_order(table)) {
    const std::string name(key->str());
    if (std::find(handled_keys.begin(), handled_keys.end(), name) != handled_keys.end()) continue;
    const ParamSpec* param = spec.find(name);
    if (param == nullptr) {
      std::vector<std::string> known;
      for (const std::string& n : handled_keys) {
        if (spec.find(n) == nullptr) known.push_back(n);
      }
      for (const std::string& n : param_names(spec)) known.push_back(n);
      fail(key->source().begin,
           fmt::format("unknown key '{}' in {} ({}known keys: {})", name, context, unknown_note, join(known)));
    }
    out[name] = read_value(*key, *node, *param, context, pointer + "/" + name, label + "." + name);
  }
  for (const ParamSpec& param : spec.params) {
    if (table.contains(param.name) || !param.fill_default) continue;
    if (param.default_value.is_null()) {
      fail(table.source().begin, fmt::format("{} is missing required key '{}'", context, param.name));
    }
    out[param.name] = param.default_value;
  }
  return out;
}

/// Reads one key's value: a scalar, a list setting, or (for a sweepable key) a sweep list that becomes a dimension
/// and stands in the config with its first value.
Json SpecParser::read_value(const toml::key& key, const toml::node& node, const ParamSpec& spec,
                            const std::string& context, const std::string& pointer, const std::string& label) {
  if (spec.type == ParamType::StringList || spec.type == ParamType::FloatList ||
      spec.type == ParamType::IntegerList) {
    return read_list(node, spec, context);
  }
  EDGESWEEP_ASSERT(spec.type != ParamType::TableList);  // table lists are read by their section

  const toml::array* array = node.as_array();
  if (array == nullptr) return read_scalar(node, spec, context);
  if (!spec.sweepable) {
    fail(node.source().begin, fmt::format("{} '{}' cannot be swept: give {}, not an array", context, spec.name,
                                          expected_text(spec.type)));
  }
  if (array->empty()) {
    fail(node.source().begin,
         fmt::format("{} '{}' = [] is an empty sweep: give at least one value", context, spec.name));
  }
  SweepDimension dimension;
  dimension.pointer = pointer;
  dimension.label = label;
  std::vector<toml::source_position> positions;
  for (const toml::node& element : *array) {
    Json value = read_scalar(element, spec, context);
    for (size_t i = 0; i < dimension.values.size(); ++i) {
      if (dimension.values[i] == value) {
        fail(element.source().begin,
             fmt::format("{} '{}' sweeps {} twice (first at {}:{})", context, spec.name, value.dump(),
                         positions[i].line, positions[i].column));
      }
    }
    dimension.values.push_back(std::move(value));
    positions.push_back(element.source().begin);
  }
  Json first = dimension.values.front();
  dimensions_.push_back({key.source().begin, std::move(dimension)});
  return first;
}

/// Reads one scalar and checks it against its spec (type, range, choices).
Json SpecParser::read_scalar(const toml::node& node, const ParamSpec& spec, const std::string& context) const {
  Json value;
  std::string kind;
  if (!scalar_to_json(node, value, kind)) {
    fail(node.source().begin,
         fmt::format("{} '{}' must be {}, got {}", context, spec.name, expected_text(spec.type), kind));
  }
  const std::string problem = check_value(spec, value);
  if (!problem.empty()) fail(node.source().begin, context + " " + problem);
  return value;
}

/// Reads an array-of-scalars setting (never swept); each element is checked at its own position.
Json SpecParser::read_list(const toml::node& node, const ParamSpec& spec, const std::string& context) const {
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    std::string kind;
    Json value;
    if (scalar_to_json(node, value, kind)) kind = value.dump();
    fail(node.source().begin,
         fmt::format("{} '{}' must be {}, got {}", context, spec.name, expected_text(spec.type), kind));
  }
  Json list = Json::array();
  for (const toml::node& element : *array) {
    Json value;
    std::string kind;
    if (!scalar_to_json(element, value, kind)) {
      fail(element.source().begin,
           fmt::format("{} '{}' must be {}, got {}", context, spec.name, expected_text(spec.type), kind));
    }
    Json single = Json::array({value});
    const std::string problem = check_value(spec, single);
    if (!problem.empty()) fail(element.source().begin, context + " " + problem);
    list.push_back(single.front());
  }
  return list;
}

/// Where architecture `name` is written in [model] arch (one value or a sweep); null when it is not.
const toml::node* find_arch(const toml::node* arch_node, std::string_view name) {
  if (arch_node == nullptr) return nullptr;
  if (const toml::array* sweep = arch_node->as_array()) {
    for (const toml::node& element : *sweep) {
      if (element.value<std::string_view>() == name) return &element;
    }
    return nullptr;
  }
  return arch_node->value<std::string_view>() == name ? arch_node : nullptr;
}

/// Reads [model] and its [[model.layers]]; custom architectures need layers, zoo architectures take none.
Json SpecParser::read_model(const toml::table& table) {
  Json model = read_table(table, section_spec("model"), "[model]", "/model", "model", {"layers"});
  const toml::node* layers_node = table.get("layers");
  model["layers"] = layers_node != nullptr ? read_layers(*layers_node) : Json::array();

  // Where "custom" is written, if any of the architectures (one value or a sweep) is custom.
  const toml::node* arch_node = table.get("arch");
  const toml::node* custom_node = find_arch(arch_node, "custom");
  if (custom_node != nullptr && model["layers"].empty()) {
    fail(custom_node->source().begin,
         "[model] arch = \"custom\" needs its layers: add one [[model.layers]] table per layer");
  }
  if (custom_node == nullptr && !model["layers"].empty()) {
    fail(layers_node->source().begin,
         fmt::format("[model] layers are given but arch = \"{}\": set arch = \"custom\" to build them, or remove "
                     "the [[model.layers]] tables",
                     model["arch"].get<std::string>()));
  }
  check_torchscript_model(table, arch_node, model);
  return model;
}

/// arch = "torchscript" (alone or in a sweep) needs an existing `path`, whose sha256 goes into the config, and an
/// input_shape of three positive sizes; other architectures take neither.
void SpecParser::check_torchscript_model(const toml::table& table, const toml::node* arch_node, Json& model) const {
  const toml::node* torchscript_node = find_arch(arch_node, "torchscript");
  const std::string path = model["path"].get<std::string>();
  const Json shape = model["input_shape"];
  if (torchscript_node == nullptr) {
    for (const char* key : {"path", "input_shape"}) {
      if (const toml::node* node = table.get(key)) {
        fail(node->source().begin, fmt::format("[model] '{}' is for arch = \"torchscript\" only (arch is \"{}\")",
                                               key, model["arch"].get<std::string>()));
      }
    }
    return;
  }
  if (path.empty()) {
    fail(torchscript_node->source().begin,
         "[model] arch = \"torchscript\" needs 'path', the TorchScript archive of your network; hint: "
         "scripts/torchvision-model writes one for a torchvision network");
  }
  std::error_code error;
  if (!std::filesystem::is_regular_file(std::filesystem::path(path), error)) {
    fail(table.get("path")->source().begin,
         fmt::format("[model] 'path' = \"{}\" is not an existing file (relative paths are read from the working "
                     "folder)", path));
  }
  if (shape.size() != 3 || !std::all_of(shape.begin(), shape.end(), [](const Json& v) { return v.get<int64_t>() > 0; })) {
    const toml::node* node = table.get("input_shape");
    fail(node != nullptr ? node->source().begin : torchscript_node->source().begin,
         fmt::format("[model] arch = \"torchscript\" needs 'input_shape' = [C, H, W] of three positive sizes, got {}",
                     shape.dump()));
  }
  try {
    model["path_sha256"] = sha256_file(path);
  } catch (const Error& e) {
    fail(table.get("path")->source().begin, fmt::format("[model] 'path' = \"{}\": {}", path, e.what()));
  }
}

/// Reads the inline layers, each against layer_spec() with defaults filled in.
Json SpecParser::read_layers(const toml::node& node) {
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    fail(node.source().begin, "[model] 'layers' must be an array of tables: write each layer as [[model.layers]]");
  }
  Json layers = Json::array();
  std::vector<const toml::node*> name_nodes;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string context = fmt::format("model.layers[{}]", i);
    const toml::table* layer = element.as_table();
    if (layer == nullptr) fail(element.source().begin, context + " must be a table of layer settings");
    Json settings = read_table(*layer, layer_spec(), context, fmt::format("/model/layers/{}", i), context, {});
    const std::string name = settings["name"].get<std::string>();
    if (!name.empty()) {
      for (size_t j = 0; j < layers.size(); ++j) {
        if (layers[j]["name"] == name) {
          const auto& first = name_nodes[j]->source().begin;
          fail(layer->get("name")->source().begin,
               fmt::format("{} 'name' = \"{}\" is already used by model.layers[{}] at {}:{}", context, name, j,
                           first.line, first.column));
        }
      }
    }
    name_nodes.push_back(layer->get("name") != nullptr ? layer->get("name") : &element);
    layers.push_back(std::move(settings));
  }
  return layers;
}

/// Reads the ordered [[pipeline]] stages; each is checked against the schema of its `stage`.
Json SpecParser::read_pipeline(const toml::node& node) {
  const toml::array* array = node.as_array();
  if (array == nullptr) {
    fail(node.source().begin, "'pipeline' must be an array of tables: write each stage as [[pipeline]]");
  }
  const std::string known_stages = join(stage_names());
  Json pipeline = Json::array();
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string context = fmt::format("pipeline[{}]", i);
    const toml::node& element = *array->get(i);
    if (!element.is_table()) {
      fail(element.source().begin, context + " must be a table: write each stage as [[pipeline]]");
    }
    const toml::table& table = *element.as_table();
    const toml::node* stage_node = table.get("stage");
    if (stage_node == nullptr) {
      fail(table.source().begin,
           fmt::format("{} is missing required key 'stage' (known stages: {})", context, known_stages));
    }
    if (stage_node->is_array()) {
      fail(stage_node->source().begin,
           fmt::format("{} 'stage' cannot be swept: write one [[pipeline]] table per stage", context));
    }
    if (!stage_node->is_string()) {
      std::string kind;
      Json value;
      if (scalar_to_json(*stage_node, value, kind)) kind = value.dump();
      fail(stage_node->source().begin, fmt::format("{} 'stage' must be a string, got {}", context, kind));
    }
    const std::string stage(*stage_node->value<std::string_view>());
    const SectionSpec* spec = nullptr;
    try {
      spec = &stage_spec(stage);
    } catch (const InputError& e) {
      fail(stage_node->source().begin, context + ": " + e.what());
    }
    Json params = read_table(table, *spec, context, fmt::format("/pipeline/{}", i), context, {"stage"},
                             fmt::format("stage '{}'; ", stage));
    params["stage"] = stage;
    if (stage == "distill") check_teacher(table, context);
    if (stage == "quantize" && i + 1 < array->size()) {
      fail(stage_node->source().begin,
           fmt::format("{} (quantize) must be the last stage: its result is an int8 TorchScript module that no later "
                       "stage can take, but pipeline[{}] follows it", context, i + 1));
    }
    pipeline.push_back(std::move(params));
  }
  return pipeline;
}

/// A distill stage's teacher is "baseline" or an existing file (every value, when swept).
void SpecParser::check_teacher(const toml::table& table, const std::string& context) const {
  const toml::node* node = table.get("teacher");
  if (node == nullptr) return;
  std::vector<const toml::node*> values;
  if (const toml::array* sweep = node->as_array()) {
    for (const toml::node& element : *sweep) values.push_back(&element);
  } else {
    values.push_back(node);
  }
  for (const toml::node* value : values) {
    const std::optional<std::string_view> teacher = value->value<std::string_view>();
    if (!teacher || *teacher == "baseline") continue;  // the type was checked with the schema
    std::error_code error;
    if (!std::filesystem::is_regular_file(std::filesystem::path(std::string(*teacher)), error)) {
      fail(value->source().begin,
           fmt::format("{} 'teacher' = \"{}\" is neither baseline nor an existing file (an edgesweep archive, "
                       "e.g. results/<name>/artifacts/<sha256>.pt)", context, *teacher));
    }
  }
}

/// Datasets read from a folder need its path; fashion-mnist falls back to the packaged copy.
void SpecParser::check_data(const toml::table& table, const Json& data) const {
  const std::string dataset = data["dataset"].get<std::string>();
  const std::string path = data["path"].get<std::string>();
  if ((dataset == "cifar10" || dataset == "imagefolder") && path.empty()) {
    fail(table.get("dataset")->source().begin,
         fmt::format("[data] dataset = \"{}\" needs 'path' = the folder that holds it", dataset));
  }
  std::error_code error;
  if (!path.empty() && !std::filesystem::is_directory(path, error)) {
    // Found now rather than by every task of the run.
    fail(table.get("path")->source().begin,
         fmt::format("[data] 'path' = \"{}\" is not an existing folder (relative paths are read from the working "
                     "folder)",
                     path));
  }
}

/// How many classes a dataset has, when it can be known before reading it: 10 for fashion-mnist and cifar10, the
/// number of class subfolders of an existing image folder; 0 when unknown (load_data checks again).
int64_t known_class_count(const Json& data) {
  const std::string dataset = data["dataset"].get<std::string>();
  if (dataset == "fashion-mnist" || dataset == "cifar10") return 10;
  std::error_code error;
  const std::filesystem::path root = data["path"].get<std::string>();
  if (dataset != "imagefolder" || !std::filesystem::is_directory(root, error)) return 0;
  int64_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root, error)) count += entry.is_directory(error) ? 1 : 0;
  return count;
}

/// arch = "torchscript": the images the data gives (after resize and rgb) have the network's input_shape.
void SpecParser::check_model_input(const toml::table& root, const Json& model, const Json& data) const {
  const Json& shape = model["input_shape"];
  if (shape.size() != 3) return;
  const std::string dataset = data["dataset"].get<std::string>();
  int64_t channels = dataset == "fashion-mnist" ? 1 : dataset == "cifar10" ? 3 : data["channels"].get<int64_t>();
  int64_t size = dataset == "fashion-mnist" ? 28 : dataset == "cifar10" ? 32 : data["image_size"].get<int64_t>();
  if (data["rgb"].get<bool>()) channels = 3;
  if (data["resize"].get<int64_t>() > 0) size = data["resize"].get<int64_t>();
  const Json given = Json::array({channels, size, size});
  if (shape == given) return;
  const toml::node* at = root.at_path("model.input_shape").node();
  fail(at != nullptr ? at->source().begin : toml::source_position{1, 1},
       fmt::format("[model] 'input_shape' = {}, but [data] gives {} images of {}; hint: set [data] resize = {} {}"
                   "(and mean and std to what the network was trained with)",
                   shape.dump(), dataset, given.dump(), shape[1].get<int64_t>(),
                   shape[0].get<int64_t>() == 3 && channels == 1 ? "and rgb = true " : ""));
}

/// [data] mean and std: both or neither, one value each per channel, each std positive, each mean in [0, 1].
void SpecParser::check_normalisation(const toml::table& table, const Json& data) const {
  const Json& mean = data["mean"];
  const Json& deviation = data["std"];
  const toml::node* mean_node = table.get("mean");
  const toml::node* std_node = table.get("std");
  if (mean.empty() && deviation.empty()) return;
  if (mean.size() != deviation.size()) {
    fail((mean_node != nullptr ? mean_node : std_node)->source().begin,
         fmt::format("[data] 'mean' = {} and 'std' = {} need the same number of values, one per channel",
                     mean.dump(), deviation.dump()));
  }
  for (size_t i = 0; i < mean.size(); ++i) {
    if (mean[i].get<double>() < 0 || mean[i].get<double>() > 1) {
      fail(mean_node->source().begin,
           fmt::format("[data] 'mean' = {}: each value is in [0, 1] units, got {}", mean.dump(), mean[i].dump()));
    }
    if (!(deviation[i].get<double>() > 0)) {
      fail(std_node->source().begin,
           fmt::format("[data] 'std' = {}: each value must be positive, got {}", deviation.dump(), deviation[i].dump()));
    }
  }
}

/// [data] classes, when given: at least 2 class indices, each once and within the dataset's classes.
void SpecParser::check_classes(const toml::table& table, const Json& data) const {
  const toml::node* node = table.get("classes");
  if (node == nullptr) return;
  const toml::array& array = *node->as_array();  // the type was checked with the schema
  const Json& classes = data["classes"];
  const std::string dataset = data["dataset"].get<std::string>();
  if (classes.empty()) {
    fail(node->source().begin, "[data] 'classes' = [] is empty: list at least 2 class indices, or leave the key out "
                               "to keep every class");
  }
  if (classes.size() < 2) {
    fail(node->source().begin, fmt::format("[data] 'classes' = {} keeps 1 class; a classifier needs at least 2",
                                           classes.dump()));
  }
  const int64_t count = known_class_count(data);
  for (size_t i = 0; i < classes.size(); ++i) {
    const int64_t value = classes[i].get<int64_t>();
    const toml::source_position at = array.get(i)->source().begin;
    if (value < 0) {
      fail(at, fmt::format("[data] 'classes' = {} holds {}; class indices count from 0", classes.dump(), value));
    }
    if (count > 0 && value >= count) {
      fail(at, fmt::format("[data] 'classes' = {} holds {}, but {} has {} classes (0..{})", classes.dump(), value,
                           dataset, count, count - 1));
    }
    for (size_t j = 0; j < i; ++j) {
      if (classes[j] == classes[i]) {
        const toml::source_position first = array.get(j)->source().begin;
        fail(at, fmt::format("[data] 'classes' = {} names class {} twice (first at {}:{})", classes.dump(), value,
                             first.line, first.column));
      }
    }
  }
}

/// [baseline] init, when given: an existing file, whose sha256 goes into the config (and so the baseline hash).
void SpecParser::check_init(const toml::table& table, Json& baseline) const {
  const std::string init = baseline["init"].get<std::string>();
  if (init.empty()) return;
  std::error_code error;
  if (!std::filesystem::is_regular_file(std::filesystem::path(init), error)) {
    fail(table.get("init")->source().begin,
         fmt::format("[baseline] 'init' = \"{}\" is not an existing file (an edgesweep float archive, e.g. "
                     "results/cache/<baseline hash>.pt, the path `edgesweep validate` prints for the experiment that "
                     "trained it; relative paths are read from the working folder)", init));
  }
  try {
    baseline["init_sha256"] = sha256_file(init);
  } catch (const Error& e) {
    fail(table.get("init")->source().begin, fmt::format("[baseline] 'init' = \"{}\": {}", init, e.what()));
  }
}

/// The experiment name names a folder: letters, digits, '.', '_' and '-' only, and not "." or "..".
void SpecParser::check_name(const toml::table& table, const std::string& name) const {
  bool valid = !name.empty() && name != "." && name != "..";
  for (char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                         c == '_' || c == '-';
    valid = valid && allowed;
  }
  if (!valid) {
    fail(table.get("name")->source().begin,
         fmt::format("[experiment] 'name' = \"{}\" is not a valid name: use letters, digits, '.', '_' and '-' "
                     "(it names the results folder)",
                     name));
  }
}

/// Checks the metric names of [objectives] (each known, none twice) and parses its constraints, each at its own
/// position; the types were checked with the schema.
ObjectiveSettings SpecParser::read_objectives(const toml::table& table) const {
  // A key not given keeps its default (minimize = [] drops the default minimised metrics).
  ObjectiveSettings settings;
  std::map<std::string, toml::source_position> seen;
  for (const char* key : {"maximize", "minimize"}) {
    const toml::array* array = table.contains(key) ? table.get(key)->as_array() : nullptr;
    if (array == nullptr) {
      for (const Json& metric : section_spec("objectives").find(key)->default_value) {
        settings.objectives.push_back({metric.get<std::string>(), std::string(key) == "maximize"});
      }
      continue;
    }
    for (const toml::node& element : *array) {
      const std::string metric(*element.value<std::string_view>());
      try {
        check_metric_name(metric, fmt::format("[objectives] '{}'", key));
      } catch (const InputError& e) {
        fail(element.source().begin, e.what());
      }
      auto [it, inserted] = seen.emplace(metric, element.source().begin);
      if (!inserted) {
        fail(element.source().begin, fmt::format("[objectives] '{}' names '{}' again (first at {}:{})", key, metric,
                                                 it->second.line, it->second.column));
      }
      settings.objectives.push_back({metric, std::string(key) == "maximize"});
    }
  }
  for (size_t i = 0; i < settings.objectives.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (settings.objectives[i].metric != settings.objectives[j].metric) continue;
      // Only a default can repeat a metric here: the given lists were checked above.
      fail(table.source().begin,
           fmt::format("[objectives] '{}' is both maximised and minimised: the list you did not set holds it by "
                       "default, so set that list too",
                       settings.objectives[i].metric));
    }
  }
  if (settings.objectives.empty()) {
    fail(table.source().begin, "[objectives] has no objective: give at least one metric in 'maximize' or 'minimize'");
  }
  if (const toml::array* array = table.contains("constraints") ? table.get("constraints")->as_array() : nullptr) {
    for (const toml::node& element : *array) {
      try {
        settings.constraints.push_back(parse_constraint(std::string(*element.value<std::string_view>())));
      } catch (const InputError& e) {
        fail(element.source().begin, std::string("[objectives] ") + e.what());
      }
    }
  }
  return settings;
}

/// Whether `address` is HOST:PORT with a port in 1..65535 (an IPv6 host in brackets: [::1]:7070).
bool is_host_port(const std::string& address) {
  size_t colon = std::string::npos;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close < 2 || close + 1 >= address.size() || address[close + 1] != ':') {
      return false;
    }
    colon = close + 1;
  } else {
    colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || address.find(':') != colon) return false;
  }
  const std::string port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  const int number = std::stoi(port);
  return number >= 1 && number <= 65535;
}

/// Reads the [[devices]] tables against device_spec(): unique names, HOST:PORT addresses.
std::vector<DeviceSpec> SpecParser::read_devices(const toml::node& node) {
  const toml::array* array = node.as_array();
  if (array == nullptr) fail(node.source().begin, "'devices' must be an array of tables: write each as [[devices]]");
  std::vector<DeviceSpec> devices;
  std::vector<toml::source_position> name_positions;
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string context = fmt::format("devices[{}]", i);
    const toml::node& element = *array->get(i);
    const toml::table* table = element.as_table();
    if (table == nullptr) fail(element.source().begin, context + " must be a table: write each device as [[devices]]");
    const Json settings = read_table(*table, device_spec(), context, fmt::format("/devices/{}", i), context, {});
    DeviceSpec device;
    device.name = settings["name"].get<std::string>();
    device.address = settings["address"].get<std::string>();
    device.token_file = settings["token_file"].get<std::string>();
    if (const std::string fingerprint = settings["tls_fingerprint"].get<std::string>(); !fingerprint.empty()) {
      try {
        device.tls_fingerprint = normalise_fingerprint(fingerprint);
      } catch (const InputError& e) {
        fail(table->get("tls_fingerprint")->source().begin, fmt::format("{} 'tls_fingerprint': {}", context, e.what()));
      }
    }
    device.profile = settings["profile"].get<std::string>();
    device.spawn = settings["spawn"].get<bool>();
    if (device.spawn && !device.tls_fingerprint.empty()) {
      fail(table->get("tls_fingerprint")->source().begin,
           fmt::format("{} 'tls_fingerprint' cannot go with spawn = true: a spawned agent has no certificate (its "
                       "token_file gives it TLS)",
                       context));
    }
    device.threads = settings["threads"].get<int64_t>();
    device.memory_mb = settings["memory_mb"].get<int64_t>();
    device.cpus = settings["cpus"].get<std::string>();
    device.engine = settings["engine"].get<std::string>();
    const toml::source_position name_at = table->get("name")->source().begin;
    bool valid_name = !device.name.empty();
    for (char c : device.name) {
      valid_name = valid_name && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
    }
    if (!valid_name) {
      fail(name_at, fmt::format("{} 'name' = \"{}\" is not a valid device name: use letters, digits, '.', '_' and '-'",
                                context, device.name));
    }
    for (size_t j = 0; j < devices.size(); ++j) {
      if (devices[j].name == device.name) {
        fail(name_at, fmt::format("{} 'name' = \"{}\" is already used by devices[{}] at {}:{}", context, device.name, j,
                                  name_positions[j].line, name_positions[j].column));
      }
    }
    if (!is_host_port(device.address)) {
      fail(table->get("address")->source().begin,
           fmt::format("{} 'address' = \"{}\" is not HOST:PORT (e.g. \"127.0.0.1:7070\", \"[::1]:7070\"; port 1-65535)",
                       context, device.address));
    }
    name_positions.push_back(name_at);
    devices.push_back(std::move(device));
  }
  return devices;
}

ExperimentSpec SpecParser::parse(const std::string& text) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(text), std::string_view(source_name_));
  } catch (const toml::parse_error& e) {
    fail(e.source().begin, std::string(e.description()));
  }

  std::map<std::string, Json> sections;
  for (const std::string& name : section_names()) {
    sections[name] = Json::object();
    for (const ParamSpec& p : section_spec(name).params) {
      if (p.fill_default) sections[name][p.name] = p.default_value;
    }
  }
  Json pipeline = Json::array();
  std::vector<DeviceSpec> devices;
  ObjectiveSettings objectives = default_objective_settings();
  bool have_experiment = false;

  const std::vector<std::string>& names = section_names();
  for (const auto& [key, node] : entries_in_file_order(root)) {
    const std::string name(key->str());
    if (name == "pipeline") {
      pipeline = read_pipeline(*node);
      continue;
    }
    if (name == "devices") {
      devices = read_devices(*node);
      continue;
    }
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::vector<std::string> allowed;
      for (const std::string& n : names) allowed.push_back("[" + n + "]");
      allowed.push_back("[[pipeline]]");
      allowed.push_back("[[devices]]");
      fail(key->source().begin, fmt::format("unknown top-level key '{}' (allowed: {})", name, join(allowed)));
    }
    const toml::table* table = node->as_table();
    if (table == nullptr) fail(key->source().begin, fmt::format("'{}' must be a table: write it as [{}]", name, name));
    const std::string context = "[" + name + "]";
    if (name == "model") {
      sections[name] = read_model(*table);
    } else {
      sections[name] = read_table(*table, section_spec(name), context, "/" + name, name, {});
    }
    if (name == "data") {
      check_data(*table, sections[name]);
      check_classes(*table, sections[name]);
      check_normalisation(*table, sections[name]);
    }
    if (name == "baseline") check_init(*table, sections[name]);
    if (name == "objectives") objectives = read_objectives(*table);
    if (name == "experiment") {
      check_name(*table, sections[name]["name"].get<std::string>());
      have_experiment = true;
    }
  }
  if (!have_experiment) {
    fail({1, 1}, "missing [experiment] section: every spec needs [experiment] with a name");
  }
  check_model_input(root, sections["model"], sections["data"]);

  ExperimentSpec spec;
  spec.path = source_name_;
  spec.text = text;
  spec.hash = sha256_hex(text);
  const Json& experiment = sections["experiment"];
  spec.name = experiment["name"].get<std::string>();
  spec.seed = experiment["seed"].get<uint64_t>();
  spec.description = experiment["description"].get<std::string>();
  spec.strategy = sections["search"]["strategy"].get<std::string>();
  spec.max_trials = sections["search"]["max_trials"].get<int64_t>();
  const Json& run = sections["run"];
  spec.run.threads = run["threads"].get<int64_t>();
  const std::string results_dir = run["results_dir"].get<std::string>();
  spec.run.results_dir =
      results_dir.empty() ? std::filesystem::path("results") / spec.name : std::filesystem::path(results_dir);
  spec.run.eval_batch_size = run["eval_batch_size"].get<int64_t>();
  spec.run.max_attempts = run["max_attempts"].get<int64_t>();
  spec.run.latency_seconds = run["latency_seconds"].get<double>();
  spec.run.trial_timeout_seconds = run["trial_timeout_seconds"].get<double>();
  spec.run.heartbeat_seconds = run["heartbeat_seconds"].get<double>();
  spec.run.heartbeat_timeout_seconds = run["heartbeat_timeout_seconds"].get<double>();
  spec.run.ranks_per_trial = run["ranks_per_trial"].get<int64_t>();
  spec.run.device = run["device"].get<std::string>();
  spec.run.precision = run["precision"].get<std::string>();
  spec.run.memory_format = run["memory_format"].get<std::string>();
  if (spec.run.heartbeat_timeout_seconds < 2 * spec.run.heartbeat_seconds) {
    const toml::node* at = root.at_path("run.heartbeat_timeout_seconds").node();
    if (at == nullptr) at = root.at_path("run.heartbeat_seconds").node();
    fail(at != nullptr ? at->source().begin : toml::source_position{1, 1},
         fmt::format("[run] 'heartbeat_timeout_seconds' = {:g} must be at least twice 'heartbeat_seconds' = {:g}, or a "
                     "worker between two heartbeats would be reported lost",
                     spec.run.heartbeat_timeout_seconds, spec.run.heartbeat_seconds));
  }
  spec.objectives = std::move(objectives);
  spec.devices = std::move(devices);
  const Json& measure = sections["measure"];
  spec.measure.batch_sizes.clear();
  for (const Json& value : measure["batch_sizes"]) {
    const double batch = value.get<double>();
    if (!(batch >= 1 && batch <= 65536 && std::floor(batch) == batch)) {
      const toml::node* at = root.at_path("measure.batch_sizes").node();
      fail(at != nullptr ? at->source().begin : toml::source_position{1, 1},
           fmt::format("[measure] 'batch_sizes' holds {}; each must be a whole number from 1 to 65536", value.dump()));
    }
    spec.measure.batch_sizes.push_back(static_cast<int64_t>(batch));
  }
  if (spec.measure.batch_sizes.empty()) {
    const toml::node* at = root.at_path("measure.batch_sizes").node();
    fail(at != nullptr ? at->source().begin : toml::source_position{1, 1},
         "[measure] 'batch_sizes' is empty; give at least one batch size");
  }
  spec.measure.warmup_runs = measure["warmup_runs"].get<int64_t>();
  spec.measure.warmup_seconds = measure["warmup_seconds"].get<double>();
  spec.measure.min_runs = measure["min_runs"].get<int64_t>();
  spec.measure.min_seconds = measure["min_seconds"].get<double>();
  spec.measure.accuracy_images = measure["accuracy_images"].get<int64_t>();
  spec.measure.dataset_path = measure["dataset_path"].get<std::string>();
  spec.measure.max_attempts = measure["max_attempts"].get<int64_t>();
  spec.measure.retry_seconds = measure["retry_seconds"].get<double>();
  spec.measure.heartbeat_seconds = measure["heartbeat_seconds"].get<double>();
  spec.measure.offline_after = measure["offline_after"].get<int64_t>();
  spec.measure.benchmark_timeout_seconds = measure["benchmark_timeout_seconds"].get<double>();
  spec.measure.timeout_seconds = measure["timeout_seconds"].get<double>();
  spec.measure.during_training = measure["during_training"].get<bool>();

  // [run] precision goes into every training that sets none, so that it enters the trial's and the baseline's
  // hashes (a bf16 baseline is never taken from the cache for an fp32 one); fp32 is written nowhere (absent).
  if (spec.run.precision != "fp32") {
    if (!sections["baseline"].contains("precision")) sections["baseline"]["precision"] = spec.run.precision;
    for (Json& stage : pipeline) {
      const SectionSpec& schema = stage_spec(stage.at("stage").get<std::string>());
      if (schema.find("precision") != nullptr && !stage.contains("precision")) stage["precision"] = spec.run.precision;
    }
  }
  const Json trial = {{"seed", spec.seed},
                      {"data", sections["data"]},
                      {"model", sections["model"]},
                      {"baseline", sections["baseline"]},
                      {"pipeline", pipeline}};
  spec.base_trial = Json(trial.get<TrialConfig>());

  std::stable_sort(dimensions_.begin(), dimensions_.end(), [](const FoundDimension& a, const FoundDimension& b) {
    return comes_before(a.position, b.position);
  });
  for (FoundDimension& found : dimensions_) spec.dimensions.push_back(std::move(found.dimension));
  return spec;
}

}  // namespace

ObjectiveSettings default_objective_settings() {
  ObjectiveSettings settings;
  settings.objectives = {{"accuracy", true}, {"latency_p50_ms", false}, {"peak_rss_mb", false}, {"model_bytes", false}};
  return settings;
}

ExperimentSpec parse_spec_file(const std::filesystem::path& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw InputError(fmt::format("cannot read experiment file '{}': it is a directory", path.string()));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InputError(fmt::format("cannot read experiment file '{}': {}", path.string(), std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw InputError(fmt::format("cannot read experiment file '{}': {}", path.string(), std::strerror(errno)));
  }
  return parse_spec_string(text.str(), path.string());
}

ExperimentSpec parse_spec_string(const std::string& text, const std::string& source_name) {
  return SpecParser(source_name).parse(text);
}

bool same_experiment(const std::string& recorded_text, const std::string& text) {
  try {
    return toml::parse(std::string_view(recorded_text)) == toml::parse(std::string_view(text));
  } catch (const toml::parse_error&) {
    return false;
  }
}

std::string shared_stages_key(const TrialConfig& trial) {
  if (trial.pipeline.size() < 2) return "";
  Json stages = Json::array();
  for (size_t i = 0; i + 1 < trial.pipeline.size(); ++i) stages.push_back(trial.pipeline[i]);
  return json_hash(Json{{"baseline", baseline_hash(trial)}, {"stages", stages}});
}

size_t pick_next_task(const std::vector<std::string>& candidates, const std::multiset<std::string>& running) {
  EDGESWEEP_ASSERT(!candidates.empty());
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i].empty() || running.count(candidates[i]) == 0) return i;
  }
  return 0;
}

}  // namespace edgesweep
