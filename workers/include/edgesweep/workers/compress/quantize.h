// Quantization of a GraphModule: activation observers, symmetric int8 weights, batch-norm folding, the plan of
// which values are quantized, fake quantization for quantization-aware training, and export as real int8 (or fp16
// storage) TorchScript with weights prepacked for the ONEDNN or QNNPACK engine.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/script.h>

#include "edgesweep/common/json.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

/// Extra file of quantized archives: mode, engine and the scale/zero point of every quantized value.
inline constexpr const char* kQuantizationFile = "edgesweep/quantization.json";

/// Affine parameters of one quantized tensor: real = scale * (q - zero_point).
struct QuantParams {
  double scale = 1.0;
  int64_t zero_point = 0;
};

/// quint8 (0..255) parameters covering [min, max] widened to include 0, so that 0 is exact (zero padding, relu).
QuantParams affine_qparams(double min, double max);

/// How an activation observer turns what it saw into a range.
enum class ObserverKind {
  MinMax,         ///< the smallest and largest value ever seen
  MovingAverage,  ///< exponential moving average of each batch's min and max (constant 0.01, as PyTorch's)
  Histogram,      ///< a histogram of every value seen; the range is its [100 - p, p] percentiles
};

/// Parses "minmax", "moving-average" or "histogram"; throws InputError otherwise.
ObserverKind observer_from_name(const std::string& name);

/// Watches the values of one activation and proposes its quantization range.
class ActivationObserver {
 public:
  explicit ActivationObserver(ObserverKind kind = ObserverKind::MinMax, double percentile = 99.99);
  /// Takes one batch of values into account.
  void observe(const torch::Tensor& values);
  bool empty() const { return batches_ == 0; }
  /// The range the observer settles on (for Histogram, the percentile-clipped range).
  std::pair<double, double> range() const;
  /// quint8 parameters of range().
  QuantParams qparams() const { return affine_qparams(range().first, range().second); }

 private:
  void add_to_histogram(const torch::Tensor& values);
  ObserverKind kind_;
  double percentile_;
  int64_t batches_ = 0;
  double min_ = 0, max_ = 0;
  torch::Tensor histogram_;  ///< Histogram: counts of `bins` equal bins over [min_, max_]
};

/// Symmetric int8 scales of a conv or linear weight: max |w| / 127 per output channel (a 1-D tensor) or for the
/// whole tensor (one element); an all-zero channel gets scale 1.
torch::Tensor weight_scales(const torch::Tensor& weight, bool per_channel);

/// The weight as a qint8 tensor with weight_scales() and zero point 0 (values in -127..127).
torch::Tensor quantize_weight(const torch::Tensor& weight, bool per_channel);

/// Weight fake quantization for training: the float values quantize_weight would give, with a straight-through
/// gradient (torch::fake_quantize_per_channel_affine / _per_tensor_affine). Scales follow the live weight.
torch::Tensor fake_quantize_weight(const torch::Tensor& weight, bool per_channel);

/// Activation fake quantization to quint8 with `params` (torch::fake_quantize_per_tensor_affine): gradient 1 inside
/// the representable range, 0 outside.
torch::Tensor fake_quantize_activation(const torch::Tensor& values, const QuantParams& params);

/// A copy of `model` in which every batch norm that is the only consumer of a conv or linear is folded into it with
/// its running statistics (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta);
/// the layer gains a bias and the batch-norm node disappears. Equal to the original in eval mode.
GraphModule fold_batchnorm(const GraphModule& model);

/// Which values of a graph the static int8 export quantizes, and where activations fuse into their producer.
struct QuantizationPlan {
  std::vector<bool> quantized;     ///< per node: its output is a quantized tensor in the int8 model
  std::vector<bool> observed;      ///< per node: its output has its own observer (and fake quantization in QAT)
  std::vector<int> fused_into;     ///< per node: the conv/linear/add/concat a relu or relu6 is fused into, or -1
  std::vector<int> params_source;  ///< per node: the node whose observer gives its quantization parameters, or -1
  /// Observed nodes in order.
  std::vector<int> observed_nodes() const;
};

/// Conv, linear, add and concat run as quantized ops; a relu or relu6 that is the only consumer of one of them fuses
/// into it (relu: the _relu op; relu6: the op's output range, observed after the clamp, is within [0, 6]). Pools,
/// flatten, dropout and unfused activations work on what they get; other ops (an unfolded batch norm) run in float.
QuantizationPlan plan_quantization(const Graph& graph);

/// Quantized numerics and export settings.
struct QuantizeOptions {
  std::string mode = "static-int8";  ///< none | dynamic-fp16 | dynamic-int8 | static-int8 | qat-int8
  std::string engine = "onednn";     ///< onednn | qnnpack
  ObserverKind observer = ObserverKind::MinMax;
  double percentile = 99.99;
  bool per_channel = true;
  int64_t calibration_batches = 16;
  int64_t calibration_batch_size = 128;
  TrainConfig qat_training;            ///< qat-int8: fine-tuning with fake quantization (epochs = qat epochs)
  bool keep_zero_weights = false;      ///< qat-int8: weights that are zero when training starts stay zero (pruned)
  int64_t freeze_observers_epoch = 2;  ///< qat-int8: observers update before this epoch (1-based), then stay fixed
};

/// The engine called `name` ("onednn", "qnnpack"); throws InputError naming it when unknown or not built into this
/// LibTorch (at::globalContext().supportedQEngines()), listing the available ones.
at::QEngine engine_from_name(const std::string& name);

/// Sets the quantized engine for its lifetime and restores the previous one.
class QEngineGuard {
 public:
  explicit QEngineGuard(at::QEngine engine);
  ~QEngineGuard();
  QEngineGuard(const QEngineGuard&) = delete;
  QEngineGuard& operator=(const QEngineGuard&) = delete;

 private:
  at::QEngine previous_;
};

/// A model that is no longer a GraphModule: a TorchScript module (int8 or fp16 storage) with what describes it.
struct ScriptedModel {
  torch::jit::Module module;
  Graph graph;              ///< the IR it computes (batch norms folded for static and QAT int8)
  std::string precision;    ///< "int8", "int8-dynamic" or "fp16-weights"
  std::string engine;       ///< quantized engine the weights are packed for ("none" for fp16 weights)
  Json quantization;        ///< mode, engine, observer and per-value parameters (kQuantizationFile)
  /// Runs the module on a normalised batch under its engine.
  torch::Tensor forward(const torch::Tensor& input);
};

/// Collects activation statistics: runs `model` in eval mode on up to `batches` batches of `data.train` (in order,
/// normalised) and feeds the observed nodes' outputs to `observers` (one per node, used where plan.observed).
void calibrate(GraphModule& model, const DataSplits& data, const QuantizationPlan& plan, int64_t batches,
               int64_t batch_size, std::vector<ActivationObserver>& observers);

/// Real int8 TorchScript of a folded model: quantize_per_tensor at the input, quantized conv2d(_relu) / linear(_relu)
/// / add(_relu) / cat with packed weights as module attributes, pools on quantized tensors, dequantize at the output.
/// `activations` holds the parameters of each node where plan.observed.
ScriptedModel export_static_int8(const GraphModule& folded, const QuantizationPlan& plan,
                                 const std::vector<QuantParams>& activations, const QuantizeOptions& options);

/// Dynamic int8: linear layers through quantized::linear_dynamic with prepacked int8 weights (activations are
/// quantized on the fly, per batch); convs and everything else stay fp32.
ScriptedModel export_dynamic_int8(const GraphModule& model, const QuantizeOptions& options);

/// fp16 weights: every parameter and buffer stored in fp16 and cast to fp32 when used. Halves the file; computes
/// in fp32 (this LibTorch has no fp16 linear kernel for ONEDNN or QNNPACK), so it is not faster.
ScriptedModel export_dynamic_fp16(const GraphModule& model);

/// Quantization-aware training: folds batch norms, calibrates, then fine-tunes with fake-quantized weights and
/// activations (observers updating in training mode until options.freeze_observers_epoch) and exports as static int8.
/// `folded` receives the trained float model; `epochs` the training records; `loss`, when set, replaces
/// cross-entropy in the fine-tuning (distillation).
ScriptedModel quantization_aware_training(const GraphModule& model, const DataSplits& data,
                                          const QuantizeOptions& options, bool augment, uint64_t seed,
                                          GraphModule* folded = nullptr, std::vector<EpochRecord>* epochs = nullptr,
                                          const TrainLoss& loss = TrainLoss());

/// Post-training quantization in one call: dynamic modes export directly; static-int8 folds, plans, calibrates on
/// `data` and exports.
ScriptedModel quantize_post_training(const GraphModule& model, const DataSplits& data, const QuantizeOptions& options,
                                     GraphModule* folded = nullptr);

/// Saves `model` with its graph, `metadata` (precision and engine added) and the quantization parameters.
void save_scripted_model(const ScriptedModel& model, const Json& metadata, const std::filesystem::path& path);

/// Top-1 accuracy in percent of a scripted model on `dataset`.
double evaluate_scripted_accuracy(ScriptedModel& model, const Dataset& dataset, const std::vector<double>& mean,
                                  const std::vector<double>& std, int64_t batch_size);

/// The quantize stage's settings, checked beyond what the schema says (InputError naming stage, key and value).
QuantizeOptions read_quantize_options(const Json& params);

/// Checks a trial's pipeline before any stage runs: every quantize stage is the last stage and its settings are valid.
void check_quantize_pipeline(const TrialConfig& trial);

/// The quantize stage: returns the float model that was quantized (batch norms folded) and puts the exported
/// module in context.scripted; mode none returns the model unchanged.
GraphModule quantize_stage(GraphModule model, const StageConfig& stage, StageContext& context);

}  // namespace edgesweep
