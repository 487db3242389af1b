// Run under mpirun by collective_test.cpp: the world split into worker groups (rank 0 alone, the others in groups of
// two), each group's sums and copies checked against what every rank can compute by itself, and the NCCL bootstrap
// (the leader's communicator id reaching every rank) where the build has NCCL. Prints "rank R ok" or the first
// mismatch; exits 0 when every check held.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/mpi_session.h"
#include "mpi_probe.h"

using namespace edgesweep;

using mpi_probe::expect;

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  const int world = session.rank();
  // Rank 0 alone (as the orchestrator is), ranks 1-2, 3-4, ... in groups of two, ordered by world rank.
  const int color = world == 0 ? 0 : 1 + (world - 1) / 2;
  const std::unique_ptr<Collective> group = session.split(color, world);
  const int expected_size = world == 0 ? 1 : std::min(2, session.size() - 1 - 2 * (color - 1));
  expect(group->size() == expected_size, fmt::format("rank {}: group size {} (expected {})", world, group->size(),
                                                     expected_size));
  expect(group->rank() == (world == 0 ? 0 : (world - 1) % 2),
         fmt::format("rank {}: group rank {}", world, group->rank()));
  expect(group->backend() == "mpi", "backend " + group->backend());

  // Sums: each rank adds its world rank + the index; counts below and above one message's worth.
  for (const size_t count : {size_t{1}, size_t{1000}, size_t{3} << 20}) {
    std::vector<float> values(count);
    for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(world) + static_cast<float>(i % 97);
    group->allreduce_sum(values.data(), values.size());
    // Every rank knows the group's world ranks: the first is 1 + 2 * (color - 1).
    float ranks_sum = 0;
    for (int r = 0; r < group->size(); ++r) ranks_sum += world == 0 ? 0.0f : static_cast<float>(1 + 2 * (color - 1) + r);
    bool same = true;
    for (size_t i = 0; i < count && same; ++i) {
      same = values[i] == ranks_sum + static_cast<float>(group->size()) * static_cast<float>(i % 97);
    }
    expect(same, fmt::format("rank {}: all-reduce of {} floats gave {} at 0", world, count, values[0]));
  }
  // Copies: the leader's bytes reach the others, whatever they held.
  std::vector<unsigned char> bytes(5000, static_cast<unsigned char>(world));
  if (group->rank() == 0) std::iota(bytes.begin(), bytes.end(), static_cast<unsigned char>(7));
  group->broadcast(bytes.data(), bytes.size(), 0);
  bool copied = true;
  for (size_t i = 0; i < bytes.size(); ++i) copied = copied && bytes[i] == static_cast<unsigned char>(7 + i);
  expect(copied, fmt::format("rank {}: broadcast did not copy the leader's bytes", world));
  try {
    group->broadcast(bytes.data(), bytes.size(), group->size());
    expect(false, fmt::format("rank {}: a broadcast from a rank outside the group was not refused", world));
  } catch (const Error& e) {
    expect(std::string(e.what()).find("the group has") != std::string::npos, e.what());
  }

  // NCCL: the leader's id reaches every rank of the group; the communicator itself needs a GPU.
  if (nccl_available()) {
    const std::vector<unsigned char> id = nccl_unique_id(*group);
    std::vector<unsigned char> leaders = id;
    group->broadcast(leaders.data(), leaders.size(), 0);
    expect(id == leaders && !id.empty(), fmt::format("rank {}: NCCL ids differ within the group", world));
    expect(std::any_of(id.begin(), id.end(), [](unsigned char b) { return b != 0; }),
           fmt::format("rank {}: the NCCL id is all zeros", world));
    try {
      const std::unique_ptr<Collective> nccl = nccl_collective(*group, 0);
      fmt::print("rank {} nccl: communicator of {} on device 0\n", world, nccl->size());
    } catch (const Error& e) {
      fmt::print("rank {} nccl: no device: {}\n", world, e.what());
    }
  } else {
    fmt::print("rank {} nccl: not built\n", world);
  }
  return mpi_probe::finish(world);
}
