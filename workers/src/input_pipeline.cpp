// The training loop's input pipeline.
#include "edgesweep/workers/input_pipeline.h"

#include <dlfcn.h>

#include <chrono>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"

namespace edgesweep {

PreparedBatch prepare_batch(const Dataset& data, const torch::Tensor& indices, int64_t first, int64_t count,
                            const BatchRecipe& recipe, torch::Generator* generator) {
  const torch::Tensor& images = data.images;
  check(images.scalar_type() == torch::kUInt8 && images.dim() == 4 && images.is_contiguous(),
        "prepare_batch needs contiguous uint8 images [N, C, H, W]");
  const int64_t global = indices.size(0);
  check(first >= 0 && count >= 0 && first + count <= global, "rows [{}, {}) are not inside a batch of {}", first,
        first + count, global);
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  check(static_cast<int64_t>(recipe.mean.size()) == channels && static_cast<int64_t>(recipe.std.size()) == channels,
        "normalisation has {} means and {} deviations for {} channels", recipe.mean.size(), recipe.std.size(),
        channels);
  // The whole batch's draws, in augment_images' order (offsets, then flips), whatever rows are built.
  torch::Tensor offsets, flips;
  const int64_t padding = recipe.augment ? recipe.padding : 0;
  if (recipe.augment) {
    check(generator != nullptr, "augmentation needs a generator");
    offsets = torch::randint(0, 2 * padding + 1, {global, 2}, *generator, torch::kInt64);
    flips = torch::randint(0, 2, {global}, *generator, torch::kInt64);
  }
  const torch::Tensor rows = indices.narrow(0, first, count).to(torch::kInt64).contiguous();
  const int64_t* sample = rows.data_ptr<int64_t>();
  const int64_t total = images.size(0);
  for (int64_t i = 0; i < count; ++i) {
    check(sample[i] >= 0 && sample[i] < total, "sample index {} is outside the dataset's {} samples", sample[i], total);
  }
  PreparedBatch batch;
  batch.global = global;
  batch.first = first;
  batch.count = count;
  batch.labels = data.labels.index_select(0, rows);
  auto options = torch::TensorOptions().dtype(torch::kFloat32).memory_format(recipe.layout);
  if (recipe.pinned) options = options.pinned_memory(true);
  batch.inputs = torch::empty({count, channels, height, width}, options);
  // Scale and shift per channel: (v / 255 - mean) / std, in float as normalize_images computes it.
  std::vector<float> mean(channels), deviation(channels);
  for (int64_t c = 0; c < channels; ++c) {
    mean[c] = static_cast<float>(recipe.mean[c]);
    deviation[c] = static_cast<float>(recipe.std[c]);
  }
  const uint8_t* source = images.data_ptr<uint8_t>();
  float* out = batch.inputs.data_ptr<float>();
  const auto stride = batch.inputs.strides();
  const int64_t sample_size = channels * height * width, plane = height * width;
  const int64_t* offset = recipe.augment ? offsets.data_ptr<int64_t>() : nullptr;
  const int64_t* flipped = recipe.augment ? flips.data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* image = source + sample[i] * sample_size;
    // Crop origin in the unpadded image (may be negative: the padding's zeros), and the flip.
    int64_t top = 0, left = 0;
    bool flip = false;
    if (recipe.augment) {
      top = offset[(first + i) * 2] - padding;
      left = offset[(first + i) * 2 + 1] - padding;
      flip = flipped[first + i] != 0;
    }
    for (int64_t c = 0; c < channels; ++c) {
      const float zero = (0.0f / 255.0f - mean[c]) / deviation[c];
      for (int64_t y = 0; y < height; ++y) {
        const int64_t sy = y + top;
        float* row = out + i * stride[0] + c * stride[1] + y * stride[2];
        for (int64_t x = 0; x < width; ++x) {
          const int64_t sx = (flip ? width - 1 - x : x) + left;
          float value = zero;
          if (sy >= 0 && sy < height && sx >= 0 && sx < width) {
            value = (static_cast<float>(image[c * plane + sy * width + sx]) / 255.0f - mean[c]) / deviation[c];
          }
          row[x * stride[3]] = value;
        }
      }
    }
  }
  return batch;
}

namespace {
/// Makes LibTorch's operators on the calling thread run on one OpenMP thread. LibTorch sets a new thread's OpenMP
/// count to its global setting the first time the thread asks for it; that is done first, then this thread's count
/// (an OpenMP per-thread setting) goes to one.
void use_one_openmp_thread() {
  (void)at::get_num_threads();
  using SetThreads = void (*)(int);
  if (const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) set(1);
}
}  // namespace

BatchPipeline::BatchPipeline(int64_t count, std::function<PreparedBatch(int64_t)> prepare, int64_t depth)
    : count_(count), prepare_(std::move(prepare)), depth_(std::max<int64_t>(depth, 0)) {
  if (depth_ > 0 && count_ > 0) worker_ = std::thread([this] { produce(); });
}

BatchPipeline::~BatchPipeline() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void BatchPipeline::produce() {
  use_one_openmp_thread();
  for (int64_t k = 0; k < count_; ++k) {
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(ready_.size()) < depth_; });
      if (stopping_) return;
    }
    PreparedBatch batch;
    try {
      batch = prepare_(k);
    } catch (...) {
      const std::lock_guard lock(mutex_);
      failure_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    const std::lock_guard lock(mutex_);
    ready_.push_back(std::move(batch));
    changed_.notify_all();
  }
}

PreparedBatch BatchPipeline::next() {
  check(taken_ < count_, "the input pipeline has given all its {} batches", count_);
  if (depth_ == 0) return prepare_(taken_++);
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || failure_ != nullptr; });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (ready_.empty()) std::rethrow_exception(failure_);
  PreparedBatch batch = std::move(ready_.front());
  ready_.pop_front();
  ++taken_;
  changed_.notify_all();
  return batch;
}

}  // namespace edgesweep
