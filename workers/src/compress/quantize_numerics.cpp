// Quantization numerics: affine parameters, activation observers (min-max, moving average, percentile histogram),
// symmetric int8 weights and fake quantization with LibTorch's straight-through estimator.
#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/quantize.h"

namespace edgesweep {
namespace {

constexpr int64_t kHistogramBins = 2048;
constexpr double kMovingAverageConstant = 0.01;
constexpr double kSmallestScale = 1.1920928955078125e-07;  // float epsilon, PyTorch's floor for scales

}  // namespace

QuantParams affine_qparams(double min, double max) {
  min = std::min(min, 0.0);
  max = std::max(max, 0.0);
  QuantParams params;
  params.scale = std::max((max - min) / 255.0, kSmallestScale);
  params.zero_point = std::clamp<int64_t>(std::llround(-min / params.scale), 0, 255);
  return params;
}

ObserverKind observer_from_name(const std::string& name) {
  if (name == "minmax") return ObserverKind::MinMax;
  if (name == "moving-average") return ObserverKind::MovingAverage;
  if (name == "histogram") return ObserverKind::Histogram;
  throw InputError(fmt::format("quantize: 'observer' is \"{}\", expected one of: minmax, moving-average, histogram",
                               name));
}

ActivationObserver::ActivationObserver(ObserverKind kind, double percentile) : kind_(kind), percentile_(percentile) {}

void ActivationObserver::observe(const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  const torch::Tensor v = values.detach().to(torch::kFloat32);
  if (v.numel() == 0) return;
  const auto extrema = torch::aminmax(v);
  const double lo = std::get<0>(extrema).item<double>();
  const double hi = std::get<1>(extrema).item<double>();
  if (kind_ == ObserverKind::Histogram) {
    add_to_histogram(v);
  } else if (batches_ == 0 || kind_ == ObserverKind::MinMax) {
    min_ = batches_ == 0 ? lo : std::min(min_, lo);
    max_ = batches_ == 0 ? hi : std::max(max_, hi);
  } else {
    min_ += kMovingAverageConstant * (lo - min_);
    max_ += kMovingAverageConstant * (hi - max_);
  }
  ++batches_;
}

// The histogram covers [min_, max_] with equal bins. A batch beyond the range widens it: each old bin's count is
// spread over the new bins it overlaps in proportion to the overlap, then the batch is counted on the new bins.
void ActivationObserver::add_to_histogram(const torch::Tensor& v) {
  const auto extrema = torch::aminmax(v);
  double lo = std::get<0>(extrema).item<double>();
  double hi = std::get<1>(extrema).item<double>();
  if (batches_ > 0) {
    lo = std::min(lo, min_);
    hi = std::max(hi, max_);
  }
  if (hi - lo < 1e-12) hi = lo + 1e-6;  // a constant value still gets a bin of its own
  if (batches_ > 0 && (lo < min_ || hi > max_)) {
    const auto old_counts = histogram_.to(torch::kFloat64).contiguous();
    const double* old = old_counts.data_ptr<double>();
    std::vector<double> counts(kHistogramBins, 0.0);
    const double old_width = (max_ - min_) / kHistogramBins;
    const double new_width = (hi - lo) / kHistogramBins;
    for (int64_t k = 0; k < kHistogramBins; ++k) {
      if (old[k] == 0) continue;
      const double a = min_ + k * old_width, b = a + old_width;
      int64_t first = std::clamp<int64_t>(static_cast<int64_t>((a - lo) / new_width), 0, kHistogramBins - 1);
      for (int64_t j = first; j < kHistogramBins; ++j) {
        const double left = lo + j * new_width, right = left + new_width;
        if (left >= b) break;
        const double overlap = std::min(b, right) - std::max(a, left);
        if (overlap > 0) counts[j] += old[k] * overlap / old_width;
      }
    }
    histogram_ = torch::tensor(counts, torch::kFloat64);
  } else if (batches_ == 0) {
    histogram_ = torch::zeros({kHistogramBins}, torch::kFloat64);
  }
  if (batches_ == 0 || lo < min_ || hi > max_) {
    min_ = lo;
    max_ = hi;
  }
  histogram_ += torch::histc(v, kHistogramBins, min_, max_).to(torch::kCPU, torch::kFloat64);
}

std::pair<double, double> ActivationObserver::range() const {
  check(batches_ > 0, "an activation observer saw no values (calibration without data?)");
  if (kind_ != ObserverKind::Histogram) return {min_, max_};
  const auto counts_tensor = histogram_.contiguous();
  const double* counts = counts_tensor.data_ptr<double>();
  double total = 0;
  for (int64_t k = 0; k < kHistogramBins; ++k) total += counts[k];
  const double width = (max_ - min_) / kHistogramBins;
  // The value below which `share` of the mass lies, interpolated linearly inside its bin.
  const auto value_at = [&](double share) {
    const double target = share * total;
    double seen = 0;
    for (int64_t k = 0; k < kHistogramBins; ++k) {
      if (counts[k] > 0 && seen + counts[k] >= target) {
        return min_ + (static_cast<double>(k) + (target - seen) / counts[k]) * width;
      }
      seen += counts[k];
    }
    return max_;
  };
  const double p = percentile_ / 100.0;
  return {value_at(1.0 - p), value_at(p)};
}

torch::Tensor weight_scales(const torch::Tensor& weight, bool per_channel) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat64);
  torch::Tensor largest = per_channel ? w.abs().flatten(1).amax(1) : w.abs().max().reshape({1});
  torch::Tensor scales = largest / 127.0;
  return torch::where(largest > 0, scales, torch::ones_like(scales));
}

torch::Tensor quantize_weight(const torch::Tensor& weight, bool per_channel) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat32).contiguous();
  const torch::Tensor scales = weight_scales(w, per_channel);
  if (per_channel) {
    return torch::quantize_per_channel(w, scales, torch::zeros({w.size(0)}, torch::kInt64), 0, torch::kQInt8);
  }
  return torch::quantize_per_tensor(w, scales.item<double>(), 0, torch::kQInt8);
}

torch::Tensor fake_quantize_weight(const torch::Tensor& weight, bool per_channel) {
  const torch::Tensor scales = weight_scales(weight, per_channel);
  if (per_channel) {
    return torch::fake_quantize_per_channel_affine(weight, scales.to(torch::kFloat32),
                                                   torch::zeros({weight.size(0)}, weight.options().dtype(torch::kInt32)),
                                                   0, -127, 127);
  }
  return torch::fake_quantize_per_tensor_affine(weight, scales.item<double>(), 0, -127, 127);
}

torch::Tensor fake_quantize_activation(const torch::Tensor& values, const QuantParams& params) {
  return torch::fake_quantize_per_tensor_affine(values, params.scale, params.zero_point, 0, 255);
}

}  // namespace edgesweep
