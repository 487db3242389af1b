// Tests of the input pipeline: a prepared batch equals the tensor-by-tensor augmentation and normalisation it
// replaces (whole batches and a rank's rows, one and three channels, both layouts), the background thread hands
// batches over in order, passes a failure on at the batch that failed, stops when dropped early, and runs its
// operators on one OpenMP thread; the training loop reports how long its steps waited.
#include "edgesweep/workers/input_pipeline.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "synthetic_data.h"

namespace edgesweep {
namespace {

Dataset random_images(int64_t count, int64_t channels, int64_t size) {
  torch::manual_seed(9);
  return Dataset{torch::randint(0, 256, {count, channels, size, size}, torch::kInt64).to(torch::kUInt8),
                 torch::arange(count, torch::kInt64).remainder(10)};
}

BatchRecipe recipe_for(int64_t channels, bool augment, torch::MemoryFormat layout) {
  BatchRecipe recipe;
  for (int64_t c = 0; c < channels; ++c) {
    recipe.mean.push_back(0.2 + 0.1 * static_cast<double>(c));
    recipe.std.push_back(0.3 + 0.05 * static_cast<double>(c));
  }
  recipe.augment = augment;
  recipe.padding = 2;
  recipe.layout = layout;
  return recipe;
}

/// What the training loop computed before the pipeline: gather, augment_images, normalize_images.
torch::Tensor reference(const Dataset& data, const torch::Tensor& indices, const BatchRecipe& recipe,
                        uint64_t seed) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  torch::Tensor images = data.images.index_select(0, indices);
  if (recipe.augment) images = augment_images(images, recipe.padding, generator);
  return normalize_images(images, recipe.mean, recipe.std);
}

TEST(PrepareBatch, EqualsAugmentThenNormalise) {
  for (const int64_t channels : {1, 3}) {
    const Dataset data = random_images(40, channels, 10);
    const torch::Tensor indices = torch::tensor({7, 3, 39, 0, 12, 12, 25, 8, 1}, torch::kInt64);
    for (const bool augment : {false, true}) {
      for (const auto layout : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
        const BatchRecipe recipe = recipe_for(channels, augment, layout);
        torch::Generator generator = at::detail::createCPUGenerator(21);
        const PreparedBatch batch = prepare_batch(data, indices, 0, indices.size(0), recipe, &generator);
        const torch::Tensor expected = reference(data, indices, recipe, 21);
        SCOPED_TRACE(testing::Message() << channels << " channel(s), augment " << augment << ", channels-last "
                                        << (layout == torch::MemoryFormat::ChannelsLast));
        EXPECT_EQ(batch.inputs.sizes(), expected.sizes());
        EXPECT_TRUE(torch::allclose(batch.inputs, expected, 0, 1e-6));
        EXPECT_TRUE(torch::equal(batch.labels, data.labels.index_select(0, indices)));
        EXPECT_TRUE(batch.inputs.is_contiguous(layout));
        EXPECT_EQ(batch.global, 9);
        EXPECT_EQ(batch.first, 0);
        EXPECT_EQ(batch.count, 9);
      }
    }
  }
}

TEST(PrepareBatch, AugmentationMovesAndMirrorsTheImages) {
  // With padding 2 on a 10x10 image, a crop either equals the image or shifts it, and some flips happen: the batch
  // differs from the plain one, and each image keeps its pixels' values (only moved, or zero padding).
  const Dataset data = random_images(16, 1, 10);
  const torch::Tensor indices = torch::arange(16, torch::kInt64);
  torch::Generator generator = at::detail::createCPUGenerator(4);
  const PreparedBatch plain = prepare_batch(data, indices, 0, 16, recipe_for(1, false, {}), nullptr);
  const PreparedBatch moved = prepare_batch(data, indices, 0, 16, recipe_for(1, true, {}), &generator);
  EXPECT_FALSE(torch::allclose(plain.inputs, moved.inputs));
}

TEST(PrepareBatch, ARanksRowsAreTheWholeBatchsRowsWithTheSameDraws) {
  const Dataset data = random_images(30, 3, 8);
  const torch::Tensor indices = torch::tensor({4, 9, 1, 22, 17, 5, 28}, torch::kInt64);
  const BatchRecipe recipe = recipe_for(3, true, torch::MemoryFormat::Contiguous);
  torch::Generator whole_generator = at::detail::createCPUGenerator(5);
  const PreparedBatch whole = prepare_batch(data, indices, 0, 7, recipe, &whole_generator);
  for (const auto& [first, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 4}, {7, 0}}) {
    torch::Generator generator = at::detail::createCPUGenerator(5);
    const PreparedBatch shard = prepare_batch(data, indices, first, count, recipe, &generator);
    EXPECT_EQ(shard.global, 7);
    EXPECT_EQ(shard.count, count);
    EXPECT_TRUE(torch::equal(shard.inputs, whole.inputs.narrow(0, first, count))) << first;
    EXPECT_TRUE(torch::equal(shard.labels, whole.labels.narrow(0, first, count))) << first;
    // The generator is left where the whole batch's draws leave it, so the next batch draws alike on every rank.
    EXPECT_TRUE(torch::equal(torch::randint(0, 1000, {4}, generator, torch::kInt64),
                             torch::randint(0, 1000, {4}, whole_generator.clone(), torch::kInt64)));
  }
}

TEST(PrepareBatch, BadArgumentsAreErrors) {
  const Dataset data = random_images(5, 1, 4);
  const BatchRecipe recipe = recipe_for(1, false, {});
  expect_error<Error>([&] { prepare_batch(data, torch::tensor({0, 9}, torch::kInt64), 0, 2, recipe, nullptr); },
                      {"sample index 9", "5 samples"});
  expect_error<Error>([&] { prepare_batch(data, torch::tensor({0, 1}, torch::kInt64), 1, 2, recipe, nullptr); },
                      {"rows [1, 3)", "batch of 2"});
  expect_error<Error>([&] { prepare_batch(data, torch::tensor({0}), 0, 1, recipe_for(3, false, {}), nullptr); },
                      {"3 means", "1 channels"});
  expect_error<Error>([&] { prepare_batch(data, torch::tensor({0}), 0, 1, recipe_for(1, true, {}), nullptr); },
                      {"generator"});
  const Dataset floats{data.images.to(torch::kFloat32), data.labels};
  expect_error<Error>([&] { prepare_batch(floats, torch::tensor({0}), 0, 1, recipe, nullptr); }, {"uint8"});
}

PreparedBatch numbered(int64_t k) {
  PreparedBatch batch;
  batch.global = k;
  return batch;
}

TEST(BatchPipeline, HandsOverEveryBatchInOrder) {
  for (const int64_t depth : {0, 1, 2, 5}) {
    BatchPipeline pipeline(7, numbered, depth);
    for (int64_t k = 0; k < 7; ++k) EXPECT_EQ(pipeline.next().global, k) << "depth " << depth;
    expect_error<Error>([&] { pipeline.next(); }, {"all its 7 batches"});
  }
}

TEST(BatchPipeline, PreparesAheadOnAnotherThreadAtMostDepthBatches) {
  std::atomic<int64_t> prepared{0};
  std::atomic<bool> elsewhere{true};
  const auto caller = std::this_thread::get_id();
  BatchPipeline pipeline(
      10,
      [&](int64_t k) {
        if (std::this_thread::get_id() == caller) elsewhere = false;
        ++prepared;
        return numbered(k);
      },
      3);
  // Nothing taken yet: the thread stops once three are ready.
  for (int i = 0; i < 2000 && prepared < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(prepared.load(), 3);
  EXPECT_EQ(pipeline.next().global, 0);
  for (int i = 0; i < 2000 && prepared < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(prepared.load(), 4);
  EXPECT_TRUE(elsewhere.load());
}

TEST(BatchPipeline, AFailureIsThrownWhereItsBatchWouldHaveBeen) {
  for (const int64_t depth : {0, 2}) {
    BatchPipeline pipeline(
        5,
        [](int64_t k) {
          if (k == 3) throw InputError("batch 3 could not be read");
          return numbered(k);
        },
        depth);
    for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(pipeline.next().global, k);
    expect_error<InputError>([&] { pipeline.next(); }, {"batch 3 could not be read"});
  }
}

TEST(BatchPipeline, DroppedEarlyItStopsItsThread) {
  std::atomic<int64_t> prepared{0};
  {
    BatchPipeline pipeline(
        1000,
        [&](int64_t k) {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          ++prepared;
          return numbered(k);
        },
        2);
    EXPECT_EQ(pipeline.next().global, 0);
  }  // joins: the thread was waiting for room, or finishing one batch
  EXPECT_LE(prepared.load(), 4);
}

TEST(BatchPipeline, ItsThreadRunsOperatorsOnOneOpenMpThread) {
  const int before = at::get_num_threads();
  std::atomic<int> seen{-1};
  {
    BatchPipeline pipeline(
        1,
        [&](int64_t k) {
          seen = at::get_num_threads();
          return numbered(k);
        },
        1);
    pipeline.next();
  }
  EXPECT_EQ(seen.load(), 1);
  EXPECT_EQ(at::get_num_threads(), before);  // the caller's setting is its own
}

TEST(TrainModelPipeline, EpochsRecordTheirWaitForInputs) {
  const DataSplits data = brightness_task(5);
  torch::manual_seed(1);
  GraphModule model(build_zoo_model("small-cnn", data.input_shape, 2, 0.25));
  TrainConfig config;
  config.epochs = 2;
  config.batch_size = 8;
  const auto records = train_model(model, data, config, /*augment=*/true, 3);
  ASSERT_EQ(records.size(), 2u);
  for (const EpochRecord& r : records) {
    EXPECT_GE(r.input_wait_seconds, 0.0);
    EXPECT_LT(r.input_wait_seconds, r.seconds);
  }
}

}  // namespace
}  // namespace edgesweep
