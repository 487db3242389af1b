// Run under mpirun by gradient_sync_test.cpp, every rank in one group: a BN-free network trained data-parallel (each
// rank on its shard of every global batch, gradients averaged in several buckets) must end with the weights one
// process computes on the whole batches; the leader's tensors reach every rank. Prints "rank R ok" or what differed.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "edgesweep/common/mpi_session.h"
#include "../common/mpi_probe.h"
#include "edgesweep/workers/gradient_sync.h"

using namespace edgesweep;

using mpi_probe::expect;

namespace {

torch::nn::Sequential network() {
  torch::manual_seed(3);  // the same start on every rank
  return torch::nn::Sequential(torch::nn::Linear(20, 16), torch::nn::ReLU(), torch::nn::Linear(16, 5),
                               torch::nn::Linear(5, 5));  // the last layer takes no part: no gradient
}

torch::Tensor forward(torch::nn::Sequential& net, const torch::Tensor& x) {
  // The third linear layer is skipped, so its parameters never get a gradient.
  return net[2]->as<torch::nn::Linear>()->forward(torch::relu(net[0]->as<torch::nn::Linear>()->forward(x)));
}

void sgd_step(torch::nn::Sequential& net, double lr) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) {
    if (p.grad().defined()) p.sub_(lr * p.grad());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  torch::set_num_threads(1);
  const std::unique_ptr<Collective> group = session.split(0, session.rank());
  const int rank = group->rank();
  const int ranks = group->size();
  const int64_t global_batch = 12 * ranks;

  torch::nn::Sequential parallel = network();
  torch::nn::Sequential alone = network();
  // A cap of 100 floats: the 20x16 weight gets a bucket of its own, the small tensors share one.
  GradientAverager averager(*group, parallel->parameters(), 100 * sizeof(float));
  expect(averager.buckets() >= 3, fmt::format("rank {}: {} bucket(s)", rank, averager.buckets()));
  torch::manual_seed(4);  // the same data on every rank
  for (int step = 0; step < 10; ++step) {
    const torch::Tensor x = torch::randn({global_batch, 20});
    const torch::Tensor y = torch::randint(0, 5, {global_batch});
    // Data-parallel: this rank's shard, the mean loss over it, gradients averaged over the group.
    parallel->zero_grad();
    const torch::Tensor xs = x.narrow(0, rank * 12, 12), ys = y.narrow(0, rank * 12, 12);
    torch::nn::functional::cross_entropy(forward(parallel, xs), ys).backward();
    averager.average_gradients();
    sgd_step(parallel, 0.1);
    // One process on the whole batch.
    alone->zero_grad();
    torch::nn::functional::cross_entropy(forward(alone, x), y).backward();
    sgd_step(alone, 0.1);
  }
  const auto p = parallel->parameters(), a = alone->parameters();
  for (size_t k = 0; k < p.size(); ++k) {
    const double difference = (p[k] - a[k]).abs().max().item<double>();
    expect(difference < 1e-5, fmt::format("rank {}: parameter {} differs from one process's by {}", rank, k, difference));
  }
  // The unused layer: its gradient is the group's mean of nothing, zeros.
  const torch::Tensor unused_grad = parallel->parameters()[4].grad();
  expect(unused_grad.defined() && unused_grad.abs().max().item<double>() == 0.0,
         fmt::format("rank {}: the unused layer's gradient is not zeros", rank));
  // The leader's values reach every rank, whatever the dtype or layout.
  torch::Tensor counts = torch::full({3}, rank, torch::kInt64);
  torch::Tensor strided = torch::full({4, 6}, static_cast<float>(rank)).t();  // not contiguous
  GradientAverager::broadcast_from_leader(*group, {counts, strided});
  expect(counts.eq(0).all().item<bool>() && strided.eq(0).all().item<bool>(),
         fmt::format("rank {}: broadcast did not copy the leader's values", rank));
  return mpi_probe::finish(session.rank());
}
