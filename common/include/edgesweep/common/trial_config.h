// The shared vocabulary of a trial: data, model, training and pipeline settings, and their JSON forms.
// A trial config is complete: every default is filled in by the spec parser, so a worker needs nothing else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

namespace edgesweep {

struct DataConfig {
  std::string dataset = "fashion-mnist";  ///< fashion-mnist | cifar10 | imagefolder
  std::string path;                       ///< empty: the packaged default location
  int64_t train_subset = 0;               ///< 0 = all
  int64_t test_subset = 0;                ///< 0 = all
  double val_fraction = 0.1;
  bool augment = false;
  int64_t image_size = 32;  ///< imagefolder only
  int64_t channels = 3;     ///< imagefolder only
  double test_fraction = 0.2;  ///< imagefolder only
  /// Classes kept, as indices into the dataset's classes, relabelled 0..n-1 in this order; empty: all classes.
  std::vector<int64_t> classes;
  int64_t resize = 0;        ///< images resized to resize x resize (bilinear); 0: as the dataset has them
  bool rgb = false;          ///< grey images replicated to three channels
  std::vector<double> mean;  ///< per channel, in [0, 1] units; empty: the training split's own
  std::vector<double> std;
  /// Seed of the train/validation/test splits and subsets; -1: the trial's seed. Fixed, trials of several seeds
  /// train on the same images. In JSON only when set.
  int64_t split_seed = -1;
  /// The seed the splits are drawn with, for a trial seeded with `trial_seed`.
  uint64_t splits_seed(uint64_t trial_seed) const {
    return split_seed >= 0 ? static_cast<uint64_t>(split_seed) : trial_seed;
  }
};

struct ModelConfig {
  std::string arch = "small-cnn";
  double width = 1.0;
  Json layers = Json::array();  ///< inline layers for arch = "custom"
  std::string path;             ///< arch = "torchscript": the archive imported
  std::string path_sha256;      ///< sha256 of `path` when the experiment was read (enters the baseline hash)
  std::vector<int64_t> input_shape;  ///< arch = "torchscript": [C, H, W] the network takes
};

struct TrainConfig {
  int64_t epochs = 3;
  double lr = 0.05;
  std::string optimizer = "sgd";
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  int64_t batch_size = 128;
  std::string lr_schedule = "cosine";
  int64_t step_size = 1;
  double gamma = 0.1;
  /// "fp32", "bf16" or "fp16": the autocast dtype of the forward pass and the loss (weights, optimizer state, batch
  /// norm and the loss stay fp32). In JSON only when not fp32, so older configs keep their form and hashes.
  std::string precision = "fp32";
  /// Epochs (fractions allowed) over which the rate rises linearly from near zero to `lr` before the schedule
  /// proper; for one-cycle, the rising phase (0: 30 % of the steps). In JSON only when above 0.
  double warmup_epochs = 0;
  /// "stage": the schedule runs over this training alone; "trial": over every training of the trial's stages that
  /// say "trial", in pipeline order, each at its own `lr` times the schedule's factor at its place. In JSON only
  /// when "trial".
  std::string lr_span = "stage";
  /// Set by the stage that trains (not part of the config's JSON): where this training starts in the trial's span
  /// and the span's length, in epochs. A length of 0: the training is its own span.
  double span_offset_epochs = 0;
  double span_total_epochs = 0;
};

/// [baseline]: its training settings and, optionally, the archive whose weights it starts from.
struct BaselineConfig : TrainConfig {
  std::string init;         ///< path of an edgesweep float archive; empty: fresh weights
  std::string init_sha256;  ///< sha256 of `init` when the experiment was read (enters the baseline hash)
};

/// One pipeline stage: its kind and its complete parameter object (including "stage").
struct StageConfig {
  std::string stage;
  Json params = Json::object();
};

struct TrialConfig {
  uint64_t seed = 0;
  DataConfig data;
  ModelConfig model;
  BaselineConfig baseline;
  std::vector<StageConfig> pipeline;
};

/// Keys added after the first stores were written (DataConfig's `classes`, `resize`, `rgb`, `mean` and `std`, BaselineConfig's `init` and
/// `init_sha256`, ModelConfig's `path`, `path_sha256` and `input_shape`) are written only when set and read as unset when missing: configs that do not use them keep the JSON
/// form and the hashes they had before, so cached baselines and recorded trials stay valid.
void to_json(Json& j, const DataConfig& c);
void from_json(const Json& j, DataConfig& c);
void to_json(Json& j, const ModelConfig& c);
void from_json(const Json& j, ModelConfig& c);
void to_json(Json& j, const TrainConfig& c);
void from_json(const Json& j, TrainConfig& c);
void to_json(Json& j, const BaselineConfig& c);
void from_json(const Json& j, BaselineConfig& c);
/// A stage's JSON form is its parameter object, which includes "stage".
void to_json(Json& j, const StageConfig& c);
void from_json(const Json& j, StageConfig& c);
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TrialConfig, seed, data, model, baseline, pipeline)

/// Content hash (sha256 hex) of a JSON value in canonical form (sorted keys, no spaces).
std::string json_hash(const Json& value);

/// Content hash of what determines a trial's baseline: seed, data (classes included), model and [baseline] (training
/// settings, and the path and sha256 of the archive it starts from).
std::string baseline_hash(const TrialConfig& config);

/// Content hash of a whole trial config.
std::string trial_hash(const TrialConfig& config);

}  // namespace edgesweep
