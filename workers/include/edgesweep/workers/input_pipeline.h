// The training loop's input pipeline: a batch's images gathered, augmented (random crop after zero padding, random
// horizontal flip), normalised and laid out in one pass over the uint8 samples, and a background thread that
// prepares the next batches while the current step computes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <torch/types.h>

#include "edgesweep/workers/dataset.h"

namespace edgesweep {

/// How a batch is made from the samples.
struct BatchRecipe {
  std::vector<double> mean;  ///< per channel, in [0, 1] units
  std::vector<double> std;
  bool augment = false;
  int64_t padding = 0;  ///< zero padding before the random crop (augment only)
  torch::MemoryFormat layout = torch::MemoryFormat::Contiguous;
  bool pinned = false;  ///< page-locked host memory, for non-blocking copies to a GPU
};

/// One step's inputs: rows [first, first + count) of the global batch, normalised float [count, C, H, W], and their
/// labels.
struct PreparedBatch {
  torch::Tensor inputs;
  torch::Tensor labels;
  int64_t global = 0;  ///< samples in the whole batch
  int64_t first = 0;
  int64_t count = 0;
};

/// The samples at `indices` of `data` (uint8 [N, C, H, W], contiguous), rows [first, first + count) of them, as
/// `recipe` says. With `recipe.augment` the crop offsets and flips of the whole batch are drawn from `generator` (the
/// same draws as augment_images, so every rank of a group draws alike), and only the rows asked for are built. Equal
/// to normalize_images(augment_images(images at indices)) narrowed to the rows.
PreparedBatch prepare_batch(const Dataset& data, const torch::Tensor& indices, int64_t first, int64_t count,
                            const BatchRecipe& recipe, torch::Generator* generator);

/// Prepares `count` batches in order, by calling `prepare(k)` for k = 0, 1, ..., up to `depth` batches ahead of the
/// one taken, on a thread of its own (depth 0: on the caller's thread, when next() asks). The thread runs LibTorch's
/// operators on one OpenMP thread so it never starts a second team beside the step's. An exception from `prepare`
/// is thrown again by the next() that would have taken that batch. The destructor stops the thread (a batch being
/// prepared is finished and dropped).
class BatchPipeline {
 public:
  BatchPipeline(int64_t count, std::function<PreparedBatch(int64_t)> prepare, int64_t depth);
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  /// The next batch; throws Error past the last one.
  PreparedBatch next();
  /// Seconds next() has spent waiting for the background thread.
  double wait_seconds() const { return wait_seconds_; }

 private:
  void produce();

  const int64_t count_;
  const std::function<PreparedBatch(int64_t)> prepare_;
  const int64_t depth_;
  int64_t taken_ = 0;
  double wait_seconds_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<PreparedBatch> ready_;
  std::exception_ptr failure_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace edgesweep
