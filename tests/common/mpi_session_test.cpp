// Tests of the MPI session of a process that no launcher started: a world of one that never initialises MPI (no
// runtime daemon is forked), answers for its host, and refuses to send.
#include "edgesweep/common/mpi_session.h"

#include <stdlib.h>

#include <chrono>

#include <gtest/gtest.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

TEST(MpiSession, AProcessStartedAloneIsAWorldOfOne) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) unsetenv(name);
  int argc = 1;
  char program[] = "test";
  char* args[] = {program, nullptr};
  char** argv = args;
  MpiSession session(&argc, &argv);
  EXPECT_EQ(session.rank(), 0);
  EXPECT_EQ(session.size(), 1);
  EXPECT_FALSE(session.host().empty());
  EXPECT_TRUE(session.threads_allowed());  // nothing to serialise in a world of one
  try {
    session.send(1, Tag::Task, "{}");
    ADD_FAILURE() << "a world of one sent a message";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(session.receive(std::chrono::milliseconds(20)).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
}

}  // namespace
}  // namespace edgesweep
