// The process helper with real children (/bin/sh): exit codes and signals, output files and descriptors, the
// environment, CPU affinity, a program that cannot start, timeouts that end the whole group, the parent-death
// signal, and temporary folders; and whole-file writes that fail cleanly.
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "../workers/expect_error.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/file_io.h"
#include "edgesweep/common/process.h"

namespace edgesweep {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

ProcessOptions shell(const std::string& script) {
  ProcessOptions options;
  options.argv = {"/bin/sh", "-c", script};
  return options;
}

/// Whether `pid` runs: not gone, and not a zombie waiting for whoever adopted it.
bool alive(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

TEST(Process, ExitCodesSignalsAndOutput) {
  const TemporaryFolder folder("edgesweep-process-test-");
  ProcessOptions options = shell("echo out; echo err >&2; exit 3");
  options.output_file = folder / "out.txt";
  options.error_file = folder / "err.txt";
  Process child(options);
  const ProcessExit exit = child.wait();
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_EQ(exit.signal, 0);
  EXPECT_EQ(exit.status(), 3);
  EXPECT_EQ(read_text(folder / "out.txt"), "out\n");
  EXPECT_EQ(read_text(folder / "err.txt"), "err\n");

  // Appending, with standard error beside standard output.
  options = shell("echo again; echo oops >&2");
  options.output_file = folder / "out.txt";
  options.append_output = true;
  EXPECT_EQ(Process(options).wait().status(), 0);
  EXPECT_EQ(read_text(folder / "out.txt"), "out\nagain\noops\n");

  const ProcessExit killed = Process(shell("kill -TERM $$")).wait();
  EXPECT_EQ(killed.signal, SIGTERM);
  EXPECT_EQ(killed.status(), 128 + SIGTERM);
}

TEST(Process, EnvironmentAffinityAndPipes) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ProcessOptions options = shell("echo \"$ONLY_THIS\"; grep Cpus_allowed_list /proc/self/status");
  options.environment = std::vector<std::string>{"ONLY_THIS=yes", "PATH=/usr/bin:/bin"};
  // The first CPU this process may use (a runner pinned elsewhere than CPU 0 has one too).
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  int first = 0;
  while (first < CPU_SETSIZE && !CPU_ISSET(first, &allowed)) ++first;
  options.cpus = {first};
  options.output_fd = fds[1];
  Process child(options);
  close(fds[1]);
  std::string text;
  char buffer[256];
  ssize_t n = 0;
  while ((n = read(fds[0], buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  EXPECT_EQ(child.wait().status(), 0);
  EXPECT_EQ(text.substr(0, 4), "yes\n") << text;
  EXPECT_NE(text.find("Cpus_allowed_list:\t" + std::to_string(first) + "\n"), std::string::npos) << text;
}

TEST(Process, AProgramThatCannotStartSaysWhy) {
  const TemporaryFolder folder("edgesweep-process-test-");
  ProcessOptions options;
  options.argv = {(folder / "no-such-program").string()};
  options.output_file = folder / "out.txt";
  EXPECT_EQ(Process(options).wait().exit_code, 127);
  EXPECT_NE(read_text(folder / "out.txt").find("cannot start " + (folder / "no-such-program").string() + ": exec"),
            std::string::npos)
      << read_text(folder / "out.txt");
  expect_error<Error>([] { Process(ProcessOptions{}); }, {"without a program"});
}

TEST(Process, ATimeoutEndsTheWholeGroup) {
  const TemporaryFolder folder("edgesweep-process-test-");
  ProcessOptions options = shell("sleep 60 & echo $! > '" + (folder / "grandchild").string() + "'; wait");
  pid_t grandchild = -1;
  {
    Process child(options);
    while (read_text(folder / "grandchild").empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    grandchild = std::stoi(read_text(folder / "grandchild"));
    EXPECT_FALSE(child.wait_for(std::chrono::milliseconds(200)).has_value());
    EXPECT_FALSE(child.ended());
    EXPECT_TRUE(alive(grandchild));
  }  // out of scope: the group is killed and the child reaped
  for (int i = 0; i < 200 && alive(grandchild); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(alive(grandchild));
}

TEST(Process, TheParentDeathSignalComesWhenTheStartingThreadEnds) {
  const TemporaryFolder folder("edgesweep-process-test-");
  ProcessOptions options = shell("echo ready > '" + (folder / "ready").string() + "'; sleep 60");
  options.parent_death_signal = SIGKILL;
  std::unique_ptr<Process> child;
  std::thread starter([&] {
    child = std::make_unique<Process>(options);
    // The signal is armed in the child before exec: once the script runs, the end of this thread sends it.
    while (read_text(folder / "ready").empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  starter.join();
  const std::optional<ProcessExit> exit = child->wait_for(std::chrono::seconds(10));
  ASSERT_TRUE(exit.has_value()) << "the child outlived the thread that started it";
  EXPECT_EQ(exit->signal, SIGKILL);
}

TEST(TemporaryFolderTest, IsRemovedWithItsContents) {
  std::filesystem::path path;
  {
    const TemporaryFolder folder("edgesweep-process-test-");
    path = folder.path();
    EXPECT_EQ(path.filename().string().rfind("edgesweep-process-test-", 0), 0u);
    std::filesystem::create_directories(folder / "a" / "b");
    std::ofstream(folder / "a" / "b" / "file") << "x";
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(WriteFileAtomically, WritesWholeOrNamesTheFileAndLeavesTheOldOne) {
  const TemporaryFolder folder("edgesweep-process-test-");
  write_file_atomically(folder / "file", "first");
  write_file_atomically(folder / "file", "second");
  EXPECT_EQ(read_text(folder / "file"), "second");
  expect_error<Error>([&] { write_file_atomically(folder / "missing" / "file", "x"); },
                      {(folder / "missing" / "file").string(), "creating a temporary file failed",
                       "No such file or directory"});
  {
    // A file size limit stands for a full disk: the write fails, named, and nothing is left beside the file.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction before_signal {};
    ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &before_signal), 0);
    rlimit before{};
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &before), 0);
    rlimit small = before;
    small.rlim_cur = 4096;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
    std::string message;
    try {
      write_file_atomically(folder / "big", std::string(8192, 'x'));
    } catch (const Error& e) {
      message = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &before);
    sigaction(SIGXFSZ, &before_signal, nullptr);
    EXPECT_NE(message.find((folder / "big").string()), std::string::npos) << message;
    EXPECT_NE(message.find("write failed: File too large"), std::string::npos) << message;
    // Only "file": neither "big" nor a temporary file.
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(folder.path()), std::filesystem::directory_iterator{}),
              1);
  }
  EXPECT_EQ(read_text(folder / "file"), "second");
}

}  // namespace
}  // namespace edgesweep
