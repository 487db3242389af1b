// Autocast scopes, loss scaling, the CPU's bf16 support, and the channels-last layout with its timed probe.
#include "edgesweep/workers/mixed_precision.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "edgesweep/common/error.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/workers/device.h"

namespace edgesweep {

std::string cpu_bf16_unavailable_reason(const std::string& cpuinfo) {
  std::istringstream lines(cpuinfo);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
    std::string flag;
    while (words >> flag) {
      if (flag == "avx512_bf16" || flag == "amx_bf16") return "";
    }
    return "this CPU has neither AVX-512 BF16 (avx512_bf16) nor AMX (amx_bf16), so bf16 would run slower than fp32";
  }
  return "the CPU's flags are not readable (no 'flags' line in /proc/cpuinfo), so its bf16 support is unknown";
}

std::string cpu_bf16_unavailable_reason() {
  // Read once per process: every training checks its precision.
  static const std::string reason = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    text << in.rdbuf();
    return cpu_bf16_unavailable_reason(text.str());
  }();
  return reason;
}

void check_precision_usable(const std::string& precision, const torch::Device& device, const std::string& where) {
  check_input(precision == "fp32" || precision == "bf16" || precision == "fp16",
              "{} = \"{}\": expected fp32, bf16 or fp16", where, precision);
  if (device.is_cpu()) {
    check_input(precision != "fp16",
                "{} = \"fp16\" on the CPU: CPU kernels have no fast fp16 and fp16 needs loss scaling; use bf16 (or "
                "device = \"cuda\")",
                where);
    if (precision == "bf16") {
      const std::string reason = cpu_bf16_unavailable_reason();
      check_input(reason.empty(), "{} = \"bf16\", but {}; use fp32 here", where, reason);
    }
  }
}

AutocastScope::AutocastScope(const std::string& precision, const torch::Device& device) {
  if (precision == "fp32") return;
  const at::ScalarType dtype = precision == "bf16" ? at::kBFloat16 : at::kHalf;
  active_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    previous_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

LossScaler::LossScaler(bool enabled, double initial_scale, int64_t growth_interval)
    : enabled_(enabled), scale_(enabled ? initial_scale : 1.0), growth_interval_(growth_interval) {
  check(initial_scale > 0 && growth_interval >= 1, "loss scaler: scale {} and growth interval {}", initial_scale,
        growth_interval);
}

torch::Tensor LossScaler::scaled(const torch::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }

bool LossScaler::unscale_and_update(const std::vector<torch::Tensor>& parameters) {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  // One host synchronisation per step, not one per parameter.
  std::vector<torch::Tensor> finite_flags;
  for (const torch::Tensor& p : parameters) {
    if (!p.grad().defined()) continue;
    p.mutable_grad().mul_(1.0 / scale_);
    finite_flags.push_back(torch::isfinite(p.grad()).all());
  }
  const bool finite = finite_flags.empty() || torch::stack(finite_flags).all().item<bool>();
  if (!finite) {
    scale_ *= 0.5;
    good_steps_ = 0;
    ++skipped_;
    return false;
  }
  if (++good_steps_ >= growth_interval_) {
    scale_ *= 2.0;
    good_steps_ = 0;
  }
  return true;
}

torch::Tensor at_least_fp32(const torch::Tensor& t) {
  const at::ScalarType type = t.scalar_type();
  return type == at::kBFloat16 || type == at::kHalf ? t.to(torch::kFloat32) : t;
}

bool has_convolutions(const GraphModule& model) {
  for (const Node& node : model->graph().nodes) {
    if (node.op == OpKind::Conv) return true;
  }
  return false;
}

torch::Tensor in_memory_format(const torch::Tensor& t, torch::MemoryFormat format) {
  if (!t.defined() || t.dim() != 4 || t.suggest_memory_format() == format) return t;
  torch::Tensor out = at::empty_like(t, t.options().memory_format(format));
  out.copy_(t);
  return out;
}

void set_memory_format(GraphModule& model, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  // A gradient left in the old layout would break autograd's layout contract (slower accumulation): it goes.
  const auto convert = [format](torch::Tensor t) {
    const torch::Tensor converted = in_memory_format(t, format);
    if (converted.is_same(t)) return;  // already in the layout (or not 4-D)
    t.set_data(converted);
    if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
  };
  for (torch::Tensor& p : model->parameters()) convert(p);
  for (torch::Tensor& b : model->buffers()) convert(b);
}

namespace {

/// Median seconds of a forward and backward pass of `model` on `input` (after one untimed pass).
double time_passes(GraphModule& model, const torch::Tensor& input, const std::string& precision,
                   const torch::Device& device) {
  const int passes = 3;
  std::vector<double> seconds;
  for (int i = 0; i <= passes; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor loss;
    {
      const AutocastScope autocast(precision, device);
      loss = model->forward(input).to(torch::kFloat32).square().mean();
    }
    loss.backward();
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    if (i > 0) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace

bool channels_last_is_faster(GraphModule& model, const Shape& input, int64_t batch, const std::string& precision,
                             const torch::Device& device) {
  if (!has_convolutions(model) || input.flat) return false;
  static std::mutex mutex;
  static std::map<std::string, bool> decided;
  const std::string key = json_hash(Json{{"graph", model->graph()},
                                         {"batch", batch},
                                         {"precision", precision},
                                         {"device", device_name(device)},
                                         {"threads", torch::get_num_threads()}});
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (const auto found = decided.find(key); found != decided.end()) return found->second;
  }
  const bool was_training = model->is_training();
  model->eval();  // running statistics stay as they are
  torch::Generator generator = at::detail::createCPUGenerator(1);
  const torch::Tensor x = torch::randn({batch, input.channels, input.height, input.width}, generator).to(device);
  set_memory_format(model, torch::MemoryFormat::Contiguous);
  const double contiguous = time_passes(model, x, precision, device);
  for (torch::Tensor& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  set_memory_format(model, torch::MemoryFormat::ChannelsLast);
  const double channels_last =
      time_passes(model, in_memory_format(x, torch::MemoryFormat::ChannelsLast), precision, device);
  set_memory_format(model, torch::MemoryFormat::Contiguous);
  for (torch::Tensor& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  model->train(was_training);
  const bool faster = channels_last < 0.95 * contiguous;
  const std::lock_guard<std::mutex> lock(mutex);
  decided[key] = faster;
  return faster;
}

}  // namespace edgesweep
