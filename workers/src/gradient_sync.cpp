// Bucketed gradient averaging and leader broadcasts over a worker group's collective.
#include "edgesweep/workers/gradient_sync.h"

#include <algorithm>

#include "edgesweep/common/error.h"
#include "edgesweep/common/progress.h"

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
  // MPI reads host memory: device gradients are staged through a host buffer (copy_ crosses devices). NCCL reads
  // device memory: the buffer lives with the parameters.
  const torch::Device device = group_.backend() == "nccl" && !parameters_.empty() ? parameters_.front().device()
                                                                                 : torch::Device(torch::kCPU);
  flat_ = torch::empty({static_cast<int64_t>(largest / sizeof(float))},
                       torch::TensorOptions().dtype(torch::kFloat32).device(device));
}

void GradientAverager::sum_weighted_gradients(double weight) {
  if (group_.size() == 1) return;
  torch::NoGradGuard no_grad;
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
    flat_.narrow(0, 0, offset).mul_(weight);
    group_.allreduce_sum(flat_.data_ptr<float>(), static_cast<size_t>(offset));
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

void GradientAverager::broadcast_from_leader(Collective& group, const std::vector<torch::Tensor>& tensors,
                                             size_t bucket_bytes) {
  if (group.size() == 1) return;
  check(bucket_bytes > 0, "broadcast buckets need a positive byte cap");
  torch::NoGradGuard no_grad;
  // Tensors are packed byte for byte into buckets of at most `bucket_bytes` (a larger tensor goes alone).
  std::vector<torch::Tensor> bucket;
  size_t bytes = 0;
  const auto flush = [&] {
    if (bucket.empty()) return;
    // Host staging for MPI, the tensors' device for NCCL (as for the gradients).
    const torch::Device device = group.backend() == "nccl" ? bucket.front().device() : torch::Device(torch::kCPU);
    torch::Tensor flat =
        torch::empty({static_cast<int64_t>(bytes)}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
    int64_t offset = 0;
    if (group.rank() == 0) {
      for (const torch::Tensor& t : bucket) {
        const auto n = static_cast<int64_t>(t.nbytes());
        flat.narrow(0, offset, n).copy_(t.contiguous().view({-1}).view(torch::kUInt8));
        offset += n;
      }
    }
    group.broadcast(flat.data_ptr(), bytes, 0);
    if (group.rank() != 0) {
      offset = 0;
      for (const torch::Tensor& t : bucket) {
        const auto n = static_cast<int64_t>(t.nbytes());
        torch::Tensor values = flat.narrow(0, offset, n).view(t.scalar_type()).view(t.sizes());
        t.copy_(values);
        offset += n;
      }
    }
    bucket.clear();
    bytes = 0;
  };
  for (const torch::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    if (!bucket.empty() && bytes + t.nbytes() > bucket_bytes) flush();
    bucket.push_back(t);
    bytes += t.nbytes();
  }
  flush();
}

namespace group_task {

bool leader() {
  const Collective* group = task_group::current();
  return group == nullptr || group->rank() == 0;
}

double computed_by_leader(const std::function<double()>& compute) {
  Collective* group = task_group::current();
  if (group == nullptr) return compute();
  // [status, value]: status 0 done, 1 past the time limit, 2 the computation failed.
  double shared[2] = {0, 0};
  std::exception_ptr failure;
  if (group->rank() == 0) {
    try {
      shared[1] = compute();
      if (task_progress::past_deadline()) shared[0] = 1;
    } catch (...) {
      failure = std::current_exception();
      shared[0] = 2;
    }
  }
  group->broadcast(shared, sizeof shared, 0);
  if (shared[0] == 1) throw TrialTimeout(task_progress::limit_seconds());
  if (shared[0] == 2) {
    if (failure) std::rethrow_exception(failure);
    throw Error("the group's leader failed (its result carries the error)");
  }
  return shared[1];
}

int64_t leader_value(int64_t value) {
  Collective* group = task_group::current();
  if (group == nullptr) return value;
  group->broadcast(&value, sizeof value, 0);
  return value;
}

}  // namespace group_task

}  // namespace edgesweep
