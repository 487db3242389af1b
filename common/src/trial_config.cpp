// JSON forms and content hashes of trial configs.
#include "edgesweep/common/trial_config.h"

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"

namespace edgesweep {

void to_json(Json& j, const DataConfig& c) {
  j = Json{{"dataset", c.dataset},         {"path", c.path},
           {"train_subset", c.train_subset}, {"test_subset", c.test_subset},
           {"val_fraction", c.val_fraction}, {"augment", c.augment},
           {"image_size", c.image_size},     {"channels", c.channels},
           {"test_fraction", c.test_fraction}};
  if (!c.classes.empty()) j["classes"] = c.classes;
  if (c.resize > 0) j["resize"] = c.resize;
  if (c.rgb) j["rgb"] = true;
  if (!c.mean.empty()) j["mean"] = c.mean;
  if (!c.std.empty()) j["std"] = c.std;
  if (c.split_seed >= 0) j["split_seed"] = c.split_seed;
}

void from_json(const Json& j, DataConfig& c) {
  j.at("dataset").get_to(c.dataset);
  j.at("path").get_to(c.path);
  j.at("train_subset").get_to(c.train_subset);
  j.at("test_subset").get_to(c.test_subset);
  j.at("val_fraction").get_to(c.val_fraction);
  j.at("augment").get_to(c.augment);
  j.at("image_size").get_to(c.image_size);
  j.at("channels").get_to(c.channels);
  j.at("test_fraction").get_to(c.test_fraction);
  c.classes = j.value("classes", std::vector<int64_t>());
  c.resize = j.value("resize", int64_t{0});
  c.rgb = j.value("rgb", false);
  c.mean = j.value("mean", std::vector<double>());
  c.std = j.value("std", std::vector<double>());
  c.split_seed = j.value("split_seed", int64_t{-1});
}

void to_json(Json& j, const ModelConfig& c) {
  j = Json{{"arch", c.arch}, {"width", c.width}, {"layers", c.layers}};
  if (!c.path.empty()) {
    j["path"] = c.path;
    j["path_sha256"] = c.path_sha256;
  }
  if (!c.input_shape.empty()) j["input_shape"] = c.input_shape;
}

void from_json(const Json& j, ModelConfig& c) {
  j.at("arch").get_to(c.arch);
  j.at("width").get_to(c.width);
  j.at("layers").get_to(c.layers);
  c.path = j.value("path", std::string());
  c.path_sha256 = j.value("path_sha256", std::string());
  c.input_shape = j.value("input_shape", std::vector<int64_t>());
}

void to_json(Json& j, const TrainConfig& c) {
  j = Json{{"epochs", c.epochs},       {"lr", c.lr},
           {"optimizer", c.optimizer}, {"momentum", c.momentum},
           {"nesterov", c.nesterov},   {"weight_decay", c.weight_decay},
           {"batch_size", c.batch_size}, {"lr_schedule", c.lr_schedule},
           {"step_size", c.step_size}, {"gamma", c.gamma}};
  if (c.precision != "fp32") j["precision"] = c.precision;
  if (c.warmup_epochs > 0) j["warmup_epochs"] = c.warmup_epochs;
  if (c.lr_span != "stage") j["lr_span"] = c.lr_span;
}

void from_json(const Json& j, TrainConfig& c) {
  j.at("epochs").get_to(c.epochs);
  j.at("lr").get_to(c.lr);
  j.at("optimizer").get_to(c.optimizer);
  j.at("momentum").get_to(c.momentum);
  j.at("nesterov").get_to(c.nesterov);
  j.at("weight_decay").get_to(c.weight_decay);
  j.at("batch_size").get_to(c.batch_size);
  j.at("lr_schedule").get_to(c.lr_schedule);
  j.at("step_size").get_to(c.step_size);
  j.at("gamma").get_to(c.gamma);
  c.precision = j.value("precision", std::string("fp32"));
  c.warmup_epochs = j.value("warmup_epochs", 0.0);
  c.lr_span = j.value("lr_span", std::string("stage"));
}

void to_json(Json& j, const BaselineConfig& c) {
  j = static_cast<const TrainConfig&>(c);
  if (!c.init.empty()) {
    j["init"] = c.init;
    j["init_sha256"] = c.init_sha256;
  }
}

void from_json(const Json& j, BaselineConfig& c) {
  from_json(j, static_cast<TrainConfig&>(c));
  c.init = j.value("init", std::string());
  c.init_sha256 = j.value("init_sha256", std::string());
}

void to_json(Json& j, const StageConfig& c) {
  j = c.params;
  j["stage"] = c.stage;
}

void from_json(const Json& j, StageConfig& c) {
  j.at("stage").get_to(c.stage);
  c.params = j;
}

std::string json_hash(const Json& value) { return sha256_hex(value.dump()); }

std::string baseline_hash(const TrialConfig& config) {
  return json_hash(Json{{"seed", config.seed}, {"data", config.data}, {"model", config.model},
                        {"baseline", config.baseline}});
}

std::string trial_hash(const TrialConfig& config) { return json_hash(Json(config)); }

}  // namespace edgesweep
