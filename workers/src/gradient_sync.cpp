// Bucketed gradient averaging and leader broadcasts over a worker group's collective.
#include "edgesweep/workers/gradient_sync.h"

#include <algorithm>

#include "edgesweep/common/error.h"

namespace edgesweep {

GradientAverager::GradientAverager(Collective& group, std::vector<torch::Tensor> parameters, size_t bucket_bytes)
    : group_(group) {
  check(bucket_bytes > 0, "gradient buckets need a positive byte cap");
  for (torch::Tensor& p : parameters) {
    if (!p.requires_grad()) continue;
    check(p.scalar_type() == torch::kFloat32, "gradient averaging: a parameter of {} values (only float32 is averaged)",
          c10::toString(p.scalar_type()));
    parameters_.push_back(p);
  }
  // Reverse order: backward produces the last layers' gradients first, so their buckets could go first.
  size_t largest = 0;
  size_t bytes = 0;
  for (size_t k = parameters_.size(); k-- > 0;) {
    const size_t size = static_cast<size_t>(parameters_[k].numel()) * sizeof(float);
    if (buckets_.empty() || bytes + size > bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(k);
    bytes += size;
    largest = std::max(largest, bytes);
  }
  flat_ = torch::empty({static_cast<int64_t>(largest / sizeof(float))}, torch::kFloat32);
}

void GradientAverager::average_gradients() {
  if (group_.size() == 1) return;
  torch::NoGradGuard no_grad;
  const float scale = 1.0f / static_cast<float>(group_.size());
  for (const std::vector<size_t>& bucket : buckets_) {
    int64_t offset = 0;
    for (const size_t k : bucket) {
      const torch::Tensor& p = parameters_[k];
      const int64_t n = p.numel();
      if (p.grad().defined()) {
        flat_.narrow(0, offset, n).copy_(p.grad().reshape({n}));
      } else {
        flat_.narrow(0, offset, n).zero_();
      }
      offset += n;
    }
    group_.allreduce_sum(flat_.data_ptr<float>(), static_cast<size_t>(offset));
    flat_.narrow(0, 0, offset).mul_(scale);
    offset = 0;
    for (const size_t k : bucket) {
      torch::Tensor p = parameters_[k];
      const int64_t n = p.numel();
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(flat_.narrow(0, offset, n).view(p.sizes()));
      offset += n;
    }
  }
}

void GradientAverager::broadcast_from_leader(Collective& group, const std::vector<torch::Tensor>& tensors) {
  if (group.size() == 1) return;
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    check(t.device().is_cpu(), "broadcast: a tensor on {} (the MPI group copies host memory)", t.device().str());
    torch::Tensor values = t.is_contiguous() ? t : t.contiguous();
    group.broadcast(values.data_ptr(), values.nbytes(), 0);
    if (!values.is_same(t)) t.copy_(values);
  }
}

}  // namespace edgesweep
