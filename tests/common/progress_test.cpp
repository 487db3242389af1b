// The current task's progress and its wall-clock limit.
#include "edgesweep/common/progress.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace edgesweep {
namespace {

/// Every test leaves no task, limit or listener behind for the next.
class ProgressTest : public ::testing::Test {
 protected:
  void TearDown() override {
    task_progress::set_listener({}, 0);
    task_progress::end_task();
  }
};

TEST_F(ProgressTest, DescribesOnlyWhatIsKnown) {
  TaskProgress p;
  EXPECT_EQ(describe(p), "starting");
  p.stage = "finetune";
  p.stage_index = 1;
  p.stages = 3;
  EXPECT_EQ(describe(p), "stage 2/3 finetune");
  p.epoch = 1;
  p.epochs = 2;
  p.step = 30;
  p.steps = 94;
  EXPECT_EQ(describe(p), "stage 2/3 finetune, epoch 1/2, step 30/94");
}

TEST_F(ProgressTest, StepsAreSeenFromAnotherThreadWithTheTaskAndItsStage) {
  task_progress::begin_task(42, 0);
  task_progress::begin_stage("prune", 0, 2);
  task_progress::step(3, 4, 17, 50);
  TaskProgress seen;
  std::thread reader([&] { seen = task_progress::snapshot(); });
  reader.join();
  EXPECT_EQ(seen.trial_id, 42);
  EXPECT_EQ(seen.stage, "prune");
  EXPECT_EQ(seen.stage_index, 0);
  EXPECT_EQ(seen.stages, 2);
  EXPECT_EQ(seen.epoch, 3);
  EXPECT_EQ(seen.epochs, 4);
  EXPECT_EQ(seen.step, 17);
  EXPECT_EQ(seen.steps, 50);
  EXPECT_GE(seen.seconds, 0.0);
  // A new stage starts its epochs and steps from zero; JSON keeps every field.
  task_progress::begin_stage("finetune", 1, 2);
  const TaskProgress next = Json(task_progress::snapshot()).get<TaskProgress>();
  EXPECT_EQ(next.stage, "finetune");
  EXPECT_EQ(next.epoch, 0);
  EXPECT_EQ(next.step, 0);
  EXPECT_EQ(next.trial_id, 42);
}

TEST_F(ProgressTest, ATaskPastItsLimitStopsAtItsNextStepWithTheLimitInTheMessage) {
  task_progress::begin_task(7, 0.05);
  EXPECT_NO_THROW(task_progress::step(1, 1, 1, 10));
  EXPECT_NO_THROW(task_progress::check_deadline());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  try {
    task_progress::step(1, 1, 2, 10);
    FAIL() << "no timeout";
  } catch (const TrialTimeout& e) {
    EXPECT_STREQ(e.what(), "timeout after 0.05 s");
  }
  EXPECT_THROW(task_progress::check_deadline(), TrialTimeout);
  // The step that timed out is the progress reported.
  EXPECT_EQ(task_progress::snapshot().step, 2);
  // A stage that begins past the limit is where the task stopped.
  EXPECT_THROW(task_progress::begin_stage("next", 1, 2), TrialTimeout);
  EXPECT_EQ(task_progress::snapshot().stage, "next");
  // Once the task ends no limit applies, and a task without a limit never times out.
  task_progress::end_task();
  EXPECT_NO_THROW(task_progress::check_deadline());
  task_progress::begin_task(8, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NO_THROW(task_progress::step(1, 1, 1, 1));
}

TEST_F(ProgressTest, ATimeoutPassesThroughAddedContextUnchanged) {
  try {
    try {
      throw TrialTimeout(3600);
    } catch (...) {
      rethrow_with_context("stage 0 (finetune)");
    }
  } catch (const TrialTimeout& e) {
    EXPECT_STREQ(e.what(), "timeout after 3600 s");
    return;
  }
  FAIL() << "the timeout lost its type";
}

TEST_F(ProgressTest, TheListenerHearsStagesAtOnceAndStepsAtMostOncePerInterval) {
  std::vector<TaskProgress> heard;
  task_progress::set_listener([&](const TaskProgress& p) { heard.push_back(p); }, 3600);
  task_progress::begin_task(5, 0);  // heard: a task begins
  task_progress::begin_stage("train", 0, 1);  // heard: a stage begins
  for (int64_t i = 1; i <= 100; ++i) task_progress::step(1, 1, i, 100);  // within the interval: not heard
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_EQ(heard[0].trial_id, 5);
  EXPECT_EQ(heard[1].stage, "train");
  // With a short interval, steps are heard again once it has passed.
  heard.clear();
  task_progress::set_listener([&](const TaskProgress& p) { heard.push_back(p); }, 0.01);
  task_progress::step(1, 1, 1, 100);  // the first since the listener was set
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  task_progress::step(1, 1, 2, 100);
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_EQ(heard[0].step, 1);
  EXPECT_EQ(heard[1].step, 2);
  // Removed, it hears nothing.
  task_progress::set_listener({}, 0);
  task_progress::begin_stage("again", 0, 1);
  EXPECT_EQ(heard.size(), 2u);
}

}  // namespace
}  // namespace edgesweep
