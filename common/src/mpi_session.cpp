// MPI session: the one place that knows whether MPI is compiled in.
#include "edgesweep/common/mpi_session.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <unistd.h>

#include "edgesweep/common/error.h"

#if EDGESWEEP_WITH_MPI
#include <mpi.h>
#endif

namespace edgesweep {

#if EDGESWEEP_WITH_MPI

namespace {
void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(fmt::format("MPI {} failed: {}", what, std::string(text, static_cast<size_t>(length))));
}

/// Whether a launcher (mpirun, srun or another PMI/PMIx launcher) started this process. A process started alone is a
/// world of one and does not initialise MPI: Open MPI's singleton start forks a runtime daemon first, which costs
/// time, and hung singleton starts are reported (open-mpi/ompi#3818).
bool started_by_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  if (!started_by_launcher()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "init");
  initialised_ = true;
  threads_allowed_ = provided >= MPI_THREAD_SERIALIZED;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "comm rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "comm size");
}

MpiSession::~MpiSession() {
  if (initialised_) MPI_Finalize();
}

bool MpiSession::available() { return true; }

std::string MpiSession::host() const {
  if (!initialised_) {
    char name[256] = {0};
    gethostname(name, sizeof name - 1);
    return name;
  }
  char name[MPI_MAX_PROCESSOR_NAME];
  int length = 0;
  MPI_Get_processor_name(name, &length);
  return std::string(name, static_cast<size_t>(length));
}

void MpiSession::send(int destination, Tag tag, const std::string& payload) {
  check(initialised_, "cannot send to rank {}: this process was not started by an MPI launcher", destination);
  const std::lock_guard lock(mutex_);
  check_mpi(MPI_Send(payload.data(), static_cast<int>(payload.size()), MPI_CHAR, destination, static_cast<int>(tag),
                     MPI_COMM_WORLD),
            "send");
}

std::optional<Message> MpiSession::receive(std::chrono::milliseconds timeout, std::chrono::milliseconds poll) {
  if (!initialised_) {
    std::this_thread::sleep_for(timeout);
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Short sleeps first, doubling up to `poll`: a reply that comes at once (the next task after a result) is taken
  // within microseconds, while a long wait still costs next to nothing.
  std::chrono::steady_clock::duration pause = std::chrono::microseconds(20);
  while (true) {
    std::unique_lock lock(mutex_);
    int flag = 0;
    MPI_Status status;
    check_mpi(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status), "probe");
    if (flag) {
      int count = 0;
      MPI_Get_count(&status, MPI_CHAR, &count);
      Message message;
      message.source = status.MPI_SOURCE;
      message.tag = static_cast<Tag>(status.MPI_TAG);
      message.payload.resize(static_cast<size_t>(count));
      check_mpi(MPI_Recv(message.payload.data(), count, MPI_CHAR, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE),
                "receive");
      return message;
    }
    lock.unlock();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min({pause, std::chrono::steady_clock::duration(poll), deadline - now}));
    pause = std::min(pause * 2, std::chrono::steady_clock::duration(poll));
  }
}

void MpiSession::abort(int code) {
  if (initialised_) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else  // a world of one

MpiSession::MpiSession(int*, char***) {}
MpiSession::~MpiSession() = default;
bool MpiSession::available() { return false; }

std::string MpiSession::host() const {
  char name[256] = {0};
  gethostname(name, sizeof name - 1);
  return name;
}

void MpiSession::send(int destination, Tag, const std::string&) {
  throw Error(fmt::format("cannot send to rank {}: this build has no MPI", destination));
}

std::optional<Message> MpiSession::receive(std::chrono::milliseconds timeout, std::chrono::milliseconds) {
  std::this_thread::sleep_for(timeout);
  return std::nullopt;
}

void MpiSession::abort(int code) { std::_Exit(code); }

#endif

}  // namespace edgesweep
