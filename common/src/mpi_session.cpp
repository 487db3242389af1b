// MPI session: the one place that knows whether MPI is compiled in.
#include "edgesweep/common/mpi_session.h"

#include <algorithm>
#include <cstdlib>
#include <list>
#include <thread>

#include <unistd.h>

#include "edgesweep/common/error.h"

#if EDGESWEEP_WITH_MPI
#include <mpi.h>
#endif

namespace edgesweep {
namespace {

/// A group of one: nothing to sum with, nothing to copy.
class SoloCollective : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "mpi"; }
  void allreduce_sum(float*, size_t) override {}
  void broadcast(void*, size_t, int root) override {
    check(root == 0, "broadcast from group rank {}: the group has 1 rank", root);
  }
};

}  // namespace

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

MpiSession::MpiSession(int* argc, char*** argv) : outbox_(std::make_unique<Outbox>()) {
  if (!started_by_launcher()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "init");
  initialised_ = true;
  threads_allowed_ = provided >= MPI_THREAD_SERIALIZED;
  serialise_ = provided < MPI_THREAD_MULTIPLE;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "comm rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "comm size");
}

/// Sends still in flight: each payload is kept until MPI is done with it.
struct MpiSession::Outbox {
  std::mutex mutex;
  std::list<std::pair<std::string, MPI_Request>> sends;
  /// Drops the sends MPI has finished; the caller holds `mutex` (and the session's guard).
  void complete() {
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      check_mpi(MPI_Test(&it->second, &done, MPI_STATUS_IGNORE), "send");
      it = done ? sends.erase(it) : std::next(it);
    }
  }
};

MpiSession::~MpiSession() {
  if (!initialised_) return;
  {  // messages still on their way leave before the session ends
    const std::lock_guard sends(outbox_->mutex);
    for (auto& [payload, request] : outbox_->sends) MPI_Wait(&request, MPI_STATUS_IGNORE);
    outbox_->sends.clear();
  }
  MPI_Finalize();
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
  // Non-blocking: a message past the eager limit would otherwise hold the sender until the receiver next polls
  // (rank 0 waiting on a sleeping worker for every task it hands out). The session keeps the payload until MPI is
  // done with it; messages to one rank still arrive in the order they were sent.
  const std::lock_guard sends(outbox_->mutex);
  const auto lock = guard();
  outbox_->complete();
  auto& [kept, request] = outbox_->sends.emplace_back(payload, MPI_REQUEST_NULL);
  const int code = MPI_Isend(kept.data(), static_cast<int>(kept.size()), MPI_CHAR, destination, static_cast<int>(tag),
                             MPI_COMM_WORLD, &request);
  if (code != MPI_SUCCESS) outbox_->sends.pop_back();
  check_mpi(code, "send");
  mark_traffic();
}

std::optional<Message> MpiSession::receive(std::chrono::milliseconds timeout, std::chrono::milliseconds poll) {
  if (!initialised_) {
    std::this_thread::sleep_for(timeout);
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Short sleeps first, doubling up to `poll`: a reply that comes at once (the next task after a result) is taken
  // within microseconds, while a long wait still costs next to nothing. While messages flow (one sent or received
  // in the last kHotWindow) the sleeps stay short: the next one is likely close.
  std::chrono::steady_clock::duration pause = std::chrono::microseconds(20);
  while (true) {
    {
      const std::lock_guard sends(outbox_->mutex);
      const auto lock = guard();
      outbox_->complete();
    }
    auto lock = guard();
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
      mark_traffic();
      return message;
    }
    if (lock.owns_lock()) lock.unlock();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min({pause, std::chrono::steady_clock::duration(poll), deadline - now}));
    const bool hot = now - std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(
                               last_traffic_.load())) < kHotWindow;
    pause = std::min(pause * 2, hot ? std::chrono::steady_clock::duration(kHotPause)
                                    : std::chrono::steady_clock::duration(poll));
  }
}

void MpiSession::abort(int code) {
  if (initialised_) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void MpiSession::mark_traffic() {
  last_traffic_.store(std::chrono::steady_clock::now().time_since_epoch().count());
}

std::unique_lock<std::mutex> MpiSession::guard() {
  return serialise_ ? std::unique_lock<std::mutex>(mutex_) : std::unique_lock<std::mutex>(mutex_, std::defer_lock);
}

namespace {

/// A group of ranks on an MPI communicator of its own. Counts over INT_MAX go in several calls.
class MpiCollective : public Collective {
 public:
  MpiCollective(MpiSession& session, MPI_Comm comm) : session_(session), comm_(comm) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    check_mpi(MPI_Comm_rank(comm_, &rank_), "group rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "group size");
  }
  ~MpiCollective() override { MPI_Comm_free(&comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void allreduce_sum(float* data, size_t count) override {
    const auto lock = session_.guard();
    for (size_t done = 0; done < count;) {
      const int part = static_cast<int>(std::min<size_t>(count - done, kMaxCount));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, part, MPI_FLOAT, MPI_SUM, comm_), "group all-reduce");
      done += static_cast<size_t>(part);
    }
  }
  void broadcast(void* data, size_t bytes, int root) override {
    check(root >= 0 && root < size_, "broadcast from group rank {}: the group has {} rank(s)", root, size_);
    const auto lock = session_.guard();
    auto* bytes_at = static_cast<char*>(data);
    for (size_t done = 0; done < bytes;) {
      const int part = static_cast<int>(std::min<size_t>(bytes - done, kMaxCount));
      check_mpi(MPI_Bcast(bytes_at + done, part, MPI_BYTE, root, comm_), "group broadcast");
      done += static_cast<size_t>(part);
    }
  }

 private:
  static constexpr size_t kMaxCount = 1u << 30;
  MpiSession& session_;
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

std::unique_ptr<Collective> MpiSession::split(int color, int key) {
  if (!initialised_) return std::make_unique<SoloCollective>();
  MPI_Comm comm = MPI_COMM_NULL;
  {
    const auto lock = guard();
    check_mpi(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm), "split the world into groups");
  }
  return std::make_unique<MpiCollective>(*this, comm);
}

#else  // a world of one

struct MpiSession::Outbox {};
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

std::unique_lock<std::mutex> MpiSession::guard() { return std::unique_lock<std::mutex>(mutex_, std::defer_lock); }

std::unique_ptr<Collective> MpiSession::split(int, int) { return std::make_unique<SoloCollective>(); }

#endif

}  // namespace edgesweep
