// Training in mixed precision and in channels-last layout. Autocast runs the forward pass and the loss in bf16 or fp16
// while weights, gradients and optimizer state stay fp32 (PyTorch's automatic mixed precision); fp16 adds dynamic loss
// scaling (torch.cuda.amp.GradScaler's rule) so small gradients survive. Channels-last (NHWC) stores convolution
// weights and activations so oneDNN and cuDNN skip their layout reorders.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/workers/graph_module.h"

namespace edgesweep {

/// Why a CPU whose /proc/cpuinfo reads `cpuinfo` cannot train in bf16 at speed: it has neither AVX-512 BF16
/// (avx512_bf16) nor AMX (amx_bf16). Empty when it can.
std::string cpu_bf16_unavailable_reason(const std::string& cpuinfo);
/// The same for this machine's CPU.
std::string cpu_bf16_unavailable_reason();

/// Throws InputError (naming `where`, e.g. "pipeline[1] (prune): precision") when `precision` cannot train on
/// `device`: an unknown name, bf16 on a CPU without AVX-512 BF16 or AMX, fp16 on a CPU (CPU kernels have no fast
/// fp16; use bf16).
void check_precision_usable(const std::string& precision, const torch::Device& device, const std::string& where);

/// Autocast to `precision` on `device` for its lifetime (nothing for fp32); the cast weights' cache is cleared when
/// the outermost scope ends, as torch.autocast does.
class AutocastScope {
 public:
  AutocastScope(const std::string& precision, const torch::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

/// Dynamic loss scaling: the loss is multiplied by the scale before backward; the gradients are divided by it after;
/// a step whose gradients hold an inf or NaN is skipped and the scale halved; after `growth_interval` good steps in a
/// row the scale doubles. Disabled, it passes everything through.
class LossScaler {
 public:
  explicit LossScaler(bool enabled, double initial_scale = 65536.0, int64_t growth_interval = 2000);
  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  /// The loss to call backward on.
  torch::Tensor scaled(const torch::Tensor& loss) const;
  /// Unscales the gradients of `parameters` in place and updates the scale; false when the step must be skipped.
  bool unscale_and_update(const std::vector<torch::Tensor>& parameters);
  int64_t skipped_steps() const { return skipped_; }

 private:
  bool enabled_;
  double scale_;
  int64_t growth_interval_;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
};

/// `t` in float32 when autocast made it bf16 or fp16; as it is otherwise (float32, float64).
torch::Tensor at_least_fp32(const torch::Tensor& t);

/// Whether `model` has 2-D convolutions (channels-last only matters for them).
bool has_convolutions(const GraphModule& model);

/// `t` with the strides of `format`. Unlike Tensor::contiguous(format), which keeps a tensor that is contiguous in both
/// layouts (one channel, or 1x1 maps) as it is, this restrides it, so convolutions see the layout asked for: an input
/// of one channel left NCHW-strided makes the first convolution's output, and all that follows, NCHW.
torch::Tensor in_memory_format(const torch::Tensor& t, torch::MemoryFormat format);

/// Stores every 4-D parameter and buffer of `model` (convolution weights) in `format`, in place.
void set_memory_format(GraphModule& model, torch::MemoryFormat format);

/// Whether channels-last trains `model` faster than contiguous on `device` at `batch` images of `input` in
/// `precision`: a few timed forward and backward passes of each in eval mode (running statistics untouched, the
/// gradients cleared after), the faster by at least 5 % wins (else contiguous). Remembered per graph, batch,
/// precision, device and thread count for the process.
bool channels_last_is_faster(GraphModule& model, const Shape& input, int64_t batch, const std::string& precision,
                             const torch::Device& device);

}  // namespace edgesweep
