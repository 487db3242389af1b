// Tests of the training loop: learning-rate schedules at chosen steps, evaluation on a model with known answers,
// determinism and records on a tiny synthetic task, divergence detection, and one epoch of the small CNN on
// 1,000 Fashion-MNIST images.
#include "edgesweep/workers/trainer.h"

#include <cmath>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "synthetic_data.h"

namespace edgesweep {
namespace {

TrainConfig schedule(const std::string& name) {
  TrainConfig config;
  config.lr = 0.1;
  config.lr_schedule = name;
  config.step_size = 2;
  config.gamma = 0.1;
  return config;
}

TEST(LearningRate, ConstantNeverChanges) {
  const TrainConfig c = schedule("constant");
  for (int64_t step : {0, 1, 57, 99, 100}) EXPECT_EQ(learning_rate_at(c, step, 10, 100), 0.1) << step;
}

TEST(LearningRate, StepDecaysEveryStepSizeEpochs) {
  const TrainConfig c = schedule("step");  // 10 steps per epoch, x0.1 every 2 epochs
  EXPECT_EQ(learning_rate_at(c, 0, 10, 100), 0.1);
  EXPECT_EQ(learning_rate_at(c, 19, 10, 100), 0.1);             // epoch 1
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 20, 10, 100), 0.01);     // epoch 2
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 39, 10, 100), 0.01);     // epoch 3
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 40, 10, 100), 0.001);    // epoch 4
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 99, 10, 100), 0.00001);  // epoch 9: 0.1 * 0.1^4
}

TEST(LearningRate, CosineFollowsHalfACosine) {
  const TrainConfig c = schedule("cosine");  // lr(t) = 0.05 * (1 + cos(pi t / 100))
  EXPECT_EQ(learning_rate_at(c, 0, 10, 100), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 25, 10, 100), 0.05 * (1 + std::sqrt(0.5)));  // 0.0853553...
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 50, 10, 100), 0.05);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 75, 10, 100), 0.05 * (1 - std::sqrt(0.5)));  // 0.0146446...
  EXPECT_EQ(learning_rate_at(c, 100, 10, 100), 0.0);
  EXPECT_EQ(learning_rate_at(c, 5, 10, 0), 0.1);  // no steps: the base rate
}

TEST(LearningRate, WarmUpRisesLinearlyThenTheScheduleRunsOverTheRest) {
  TrainConfig c = schedule("cosine");
  c.warmup_epochs = 2;  // 20 of the 100 steps
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0, 10, 100), 0.1 / 20);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 9, 10, 100), 0.1 * 10 / 20);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 19, 10, 100), 0.1);
  EXPECT_EQ(learning_rate_at(c, 20, 10, 100), 0.1);  // the cosine starts at its top after the warm-up
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 60, 10, 100), 0.05);
  EXPECT_EQ(learning_rate_at(c, 100, 10, 100), 0.0);
  c.lr_schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 5, 10, 100), 0.1 * 6 / 20);
  EXPECT_EQ(learning_rate_at(c, 50, 10, 100), 0.1);
  c.lr_schedule = "step";  // x0.1 every 2 epochs, counted from the start
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 5, 10, 100), 0.1 * 6 / 20);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 20, 10, 100), 0.01);
  c.warmup_epochs = 0.5;  // fractions of an epoch: 5 steps
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 2, 10, 100), 0.1 * 3 / 5);
  EXPECT_EQ(learning_rate_at(c, 5, 10, 100), 0.1);
}

TEST(LearningRate, OneCycleRisesFromATwentyFifthToTheRateThenFallsFarBelowIt) {
  TrainConfig c = schedule("one-cycle");  // 100 steps: rising over 30, falling over 70 (PyTorch's OneCycleLR shape)
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0, 10, 100), 0.1 / 25);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 15, 10, 100), (0.1 / 25 + 0.1) / 2);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 30, 10, 100), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 65, 10, 100), (0.1 + 0.1 / 25 / 1e4) / 2);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 100, 10, 100), 0.1 / 25 / 1e4);
  double previous = 0;
  for (int64_t step = 0; step <= 100; ++step) {
    const double lr = learning_rate_at(c, step, 10, 100);
    if (step <= 30) {
      EXPECT_GT(lr, previous) << step;
    } else {
      EXPECT_LT(lr, previous) << step;
    }
    previous = lr;
  }
  c.warmup_epochs = 1;  // the rise is the warm-up when one is set
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 10, 10, 100), 0.1);
  EXPECT_LT(learning_rate_at(c, 11, 10, 100), 0.1);
}

TEST(LearningRate, ATrainingInATrialSpanTakesItsPartOfTheSpansCurve) {
  // Two trainings of 2 epochs (10 steps each) in a span of 4 epochs: together, one schedule over 40 steps.
  for (const char* name : {"cosine", "one-cycle", "step", "constant"}) {
    TrainConfig whole = schedule(name);
    whole.warmup_epochs = name == std::string("cosine") ? 1 : 0;
    TrainConfig first = whole, second = whole;
    first.span_total_epochs = second.span_total_epochs = 4;
    second.span_offset_epochs = 2;
    for (int64_t step = 0; step < 20; ++step) {
      EXPECT_DOUBLE_EQ(learning_rate_at(first, step, 10, 20), learning_rate_at(whole, step, 10, 40)) << name << step;
      EXPECT_DOUBLE_EQ(learning_rate_at(second, step, 10, 20), learning_rate_at(whole, step + 20, 10, 40))
          << name << step;
    }
  }
  TrainConfig c = schedule("cosine");
  c.span_offset_epochs = 2;
  c.span_total_epochs = 4;
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0, 10, 20), 0.05);  // half-way through the span
  EXPECT_EQ(learning_rate_at(c, 20, 10, 20), 0.0);         // its end is the span's end
}

TEST(TrialSpan, CountsTheTrainingEpochsOfTheStagesThatSpanAndPlacesEach) {
  TrialConfig trial;
  trial.pipeline = {
      stage_config("prune", {{"method", "block"}, {"sparsity", 0.3}, {"schedule", "iterative"}, {"steps", 3},
                             {"finetune_epochs", 2}, {"lr_span", "trial"}}),
      stage_config("sensitivity", Json::object()),
      stage_config("distill", {{"epochs", 4}, {"lr_span", "trial"}}),
      stage_config("finetune", {{"epochs", 5}}),  // its own schedule
      stage_config("quantize", {{"mode", "qat-int8"}, {"qat_epochs", 1}, {"lr_span", "trial"}}),
  };
  EXPECT_EQ(stage_training_epochs(trial.pipeline[0]), 6.0);  // 3 rounds of 2
  EXPECT_EQ(stage_training_epochs(trial.pipeline[1]), 0.0);
  EXPECT_EQ(stage_training_epochs(trial.pipeline[3]), 5.0);
  EXPECT_EQ(stage_training_epochs(stage_config("quantize", {{"mode", "static-int8"}})), 0.0);
  EXPECT_EQ(stage_training_epochs(stage_config("prune", {{"method", "block"}, {"sparsity", 0.3},
                                                         {"schedule", "one-shot"}, {"steps", 3},
                                                         {"finetune_epochs", 2}})),
            2.0);
  EXPECT_EQ(trial_span_epochs(trial.pipeline), 11.0);  // 6 + 4 + 1
  const DataSplits data = brightness_task(5);
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 2, 0, &metrics};
  TrainConfig config;
  config.lr_span = "trial";
  const TrainConfig placed = in_trial_span(config, context);
  EXPECT_EQ(placed.span_offset_epochs, 6.0);
  EXPECT_EQ(placed.span_total_epochs, 11.0);
  context.stage_index = 0;
  EXPECT_EQ(in_trial_span(config, context, 4.0).span_offset_epochs, 4.0);  // the prune stage's third round
  context.stage_index = 4;
  EXPECT_EQ(in_trial_span(config, context).span_offset_epochs, 10.0);
  const TrainConfig own = in_trial_span(TrainConfig(), context);  // lr_span = "stage"
  EXPECT_EQ(own.span_total_epochs, 0.0);
  EXPECT_EQ(own.span_offset_epochs, 0.0);
}

GraphModule tiny_cnn(uint64_t seed);  // below

TEST(TrialSpan, APruneStagesRoundsAndAFineTuningAnnealOnce) {
  // Prune in two rounds of one epoch, then fine-tune for two: one cosine over the four epochs.
  const DataSplits data = brightness_task(5);
  TrialConfig trial;
  trial.pipeline = {stage_config("prune", {{"method", "block"}, {"sparsity", 0.25}, {"schedule", "iterative"},
                                           {"steps", 2}, {"finetune_epochs", 1}, {"batch_size", 16}, {"lr", 0.05},
                                           {"lr_span", "trial"}}),
                    stage_config("finetune", {{"epochs", 2}, {"batch_size", 16}, {"lr", 0.05}, {"lr_span", "trial"}})};
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule model = tiny_cnn(3);
  for (size_t i = 0; i < trial.pipeline.size(); ++i) {
    context.stage_index = static_cast<int>(i);
    model = find_stage(trial.pipeline[i].stage)(model, trial.pipeline[i], context);
  }
  std::vector<double> rates;
  for (const Metric& m : metrics) {
    if (m.name == "lr") rates.push_back(m.value);
  }
  ASSERT_EQ(rates.size(), 4u);
  for (size_t e = 0; e < 4; ++e) {
    EXPECT_NEAR(rates[e], 0.025 * (1 + std::cos(M_PI * static_cast<double>(e) / 4)), 1e-12) << "epoch " << e + 1;
  }
}

/// `count` samples of 4 channels x 1 x 1: sample i has label i % 4 and a single 255 in channel `label`.
Dataset one_hot_samples(int64_t count) {
  auto images = torch::zeros({count, 4, 1, 1}, torch::kUInt8);
  auto labels = torch::arange(count, torch::kInt64).remainder(4);
  for (int64_t i = 0; i < count; ++i) images[i][labels[i].item<int64_t>()] = 255;
  return Dataset{images, labels};
}

TEST(Evaluation, CountsCorrectPredictionsExactly) {
  GraphModule model(graph_from_layers(Json::parse(R"([{"op": "flatten"}, {"op": "linear", "out": 4}])"),
                                      Shape{4, 1, 1, false}, 4));
  const Dataset data = one_hot_samples(8);  // two of each class
  const std::vector<double> mean(4, 0.0), std(4, 1.0);
  torch::NoGradGuard no_grad;
  model->weight(2).copy_(torch::eye(4));
  model->bias(2).zero_();
  model->train();
  EXPECT_EQ(evaluate_accuracy(model, data, mean, std, 3), 100.0);
  EXPECT_TRUE(model->is_training());  // the mode is restored
  // Class 3 now scores -1 on its own samples and loses to class 0 (0 is the first of the ties at 0).
  model->weight(2)[3][3] = 0;
  model->bias(2)[3] = -1;
  EXPECT_EQ(evaluate_accuracy(model, data, mean, std, 3), 75.0);
  // A permutation gets everything wrong.
  model->weight(2).copy_(torch::eye(4).roll(1, 0));
  model->bias(2).zero_();
  EXPECT_EQ(evaluate_accuracy(model, data, mean, std, 8), 0.0);
  expect_error<Error>([&] { evaluate_accuracy(model, Dataset{}, mean, std, 8); }, {"empty"});
}

GraphModule tiny_cnn(uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "out": 4}, {"op": "batchnorm"}, {"op": "relu"}, {"op": "adaptive_avgpool"},
    {"op": "flatten"}, {"op": "dropout", "p": 0.1}, {"op": "linear", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
}

TrainConfig tiny_config() {
  TrainConfig config;
  config.epochs = 3;
  config.lr = 0.1;
  config.batch_size = 16;
  config.lr_schedule = "cosine";
  return config;
}

TEST(TrainModel, RecordsEveryEpochAndLearnsASeparableTask) {
  const DataSplits data = brightness_task(5);
  GraphModule model = tiny_cnn(1);
  std::vector<int64_t> seen;
  const auto records =
      train_model(model, data, tiny_config(), /*augment=*/true, 11, [&](const EpochRecord& r) { seen.push_back(r.epoch); });
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3}));
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].epoch, static_cast<int64_t>(i) + 1);
    // 64 images in batches of 16: 4 steps per epoch, 12 in all; the record holds the rate at the epoch's start.
    EXPECT_DOUBLE_EQ(records[i].lr, learning_rate_at(tiny_config(), 4 * static_cast<int64_t>(i), 4, 12));
    EXPECT_TRUE(std::isfinite(records[i].train_loss));
    EXPECT_GE(records[i].train_accuracy, 0.0);
    EXPECT_LE(records[i].train_accuracy, 100.0);
    EXPECT_GT(records[i].images_per_second, 0.0);
  }
  EXPECT_LT(records.back().train_loss, records.front().train_loss);
  EXPECT_GE(records.back().val_accuracy, 90.0);
  EXPECT_FALSE(model->is_training());  // handed back in eval mode
}

TEST(TrainModel, SameSeedSameResult) {
  const DataSplits data = brightness_task(5);
  GraphModule a = tiny_cnn(1);
  GraphModule b = tiny_cnn(1);
  const auto ra = train_model(a, data, tiny_config(), true, 11);
  const auto rb = train_model(b, data, tiny_config(), true, 11);
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i].train_loss, rb[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(ra[i].val_accuracy, rb[i].val_accuracy) << "epoch " << i + 1;
  }
  const auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  GraphModule c = tiny_cnn(1);
  const auto rc = train_model(c, data, tiny_config(), true, 12);  // other shuffling and augmentation
  EXPECT_NE(ra.front().train_loss, rc.front().train_loss);
}

TEST(TrainModel, NanWeightStopsTrainingWithTheLoss) {
  const DataSplits data = brightness_task(5);
  GraphModule model = tiny_cnn(1);
  {
    torch::NoGradGuard no_grad;
    model->weight(model->graph().find("linear7"))[0][0] = std::numeric_limits<float>::quiet_NaN();
  }
  expect_error<Error>([&] { train_model(model, data, tiny_config(), false, 11); },
                      {"loss became nan", "epoch 1, batch 1", "diverged"});
}

TEST(TrainModel, HugeLearningRateDiverges) {
  const DataSplits data = brightness_task(5);
  torch::manual_seed(2);
  GraphModule model(graph_from_layers(Json::parse(R"([{"op": "flatten"}, {"op": "linear", "out": 2}])"),
                                      Shape{1, 8, 8, false}, 2));
  TrainConfig config = tiny_config();
  config.lr = 1e38;  // the first update overflows the weights to infinity
  config.momentum = 0.99;
  config.weight_decay = 0;
  config.lr_schedule = "constant";
  expect_error<Error>([&] { train_model(model, data, config, false, 11); }, {"loss became", "diverged"});
}

TEST(TrainModel, NesterovNeedsMomentum) {
  const DataSplits data = brightness_task(5);
  GraphModule model = tiny_cnn(1);
  TrainConfig config = tiny_config();
  config.nesterov = true;
  config.momentum = 0;
  expect_error<InputError>([&] { train_model(model, data, config, false, 11); }, {"nesterov", "momentum"});
}

TEST(Training, SmallCnnLearnsFashionMnistInOneEpoch) {
  DataConfig data_config;
  data_config.train_subset = 1000;
  data_config.test_subset = 200;
  data_config.val_fraction = 0.01;  // 600 validation images
  const DataSplits data = load_data(data_config, 3);
  torch::manual_seed(3);
  GraphModule model(build_zoo_model("small-cnn", data.input_shape, 10, 1.0));
  TrainConfig config;
  config.epochs = 1;
  config.lr = 0.02;
  config.batch_size = 16;
  const auto records = train_model(model, data, config, /*augment=*/false, 3);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(std::isfinite(records[0].train_loss));
  EXPECT_LT(records[0].train_loss, std::log(10.0));  // better than guessing
  // One epoch on 1,000 images reaches about 72-75% here; chance is 10%.
  EXPECT_GT(records[0].val_accuracy, 60.0);
  const double test_accuracy = evaluate_accuracy(model, data.test, data.mean, data.std, 100);
  EXPECT_GT(test_accuracy, 55.0);
  std::cout << "small-cnn, 1 epoch on 1,000 images: validation " << records[0].val_accuracy << "%, test "
            << test_accuracy << "%, loss " << records[0].train_loss << "\n";
}

}  // namespace
}  // namespace edgesweep
