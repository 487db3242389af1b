// An agent in this process on 127.0.0.1 (a free port), with a stand-in benchmark function, driven through the
// client and through raw frames: authentication both ways, refusals (forged proof, replayed nonce, requests before
// authentication, sha256 mismatch, oversize frames, paths, unknown messages), each leaving the agent serving, and
// the benchmark queue (one at a time, off the network thread).
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/client.h"
#include "edgesweep/device_agents/tls.h"

namespace edgesweep {
namespace {

/// Stand-in benchmark: echoes the request with the model's size; with "sleep_ms" it takes that long, with "fail"
/// it fails with that text. Counts how many run at once.
struct FakeBench {
  std::atomic<int> running{0};
  std::atomic<int> most_at_once{0};
  std::atomic<int> runs{0};
  std::thread::id network_thread;
  std::atomic<bool> ran_on_network_thread{false};

  BenchOutcome operator()(const BenchJob& job) {
    if (std::this_thread::get_id() == network_thread) ran_on_network_thread = true;
    const int now = ++running;
    int seen = most_at_once.load();
    while (now > seen && !most_at_once.compare_exchange_weak(seen, now)) {
    }
    // Sleeps in short steps and gives up when the agent cancels it, as the real runner kills its child.
    const auto wake = std::chrono::steady_clock::now() + std::chrono::milliseconds(job.request.value("sleep_ms", 0));
    bool cancelled = false;
    while (std::chrono::steady_clock::now() < wake && !cancelled) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      cancelled = job.cancelled && job.cancelled->load();
    }
    BenchOutcome outcome;
    if (cancelled) {
      outcome.error = "agent stopping: stand-in cancelled";
    } else if (job.request.contains("fail")) {
      outcome.error = job.request.at("fail").get<std::string>();
    } else {
      outcome.ok = true;
      outcome.result = Json{{"request", job.request},
                            {"model_bytes", std::filesystem::file_size(job.model)},
                            {"model_name", job.model.filename().string()},
                            {"timeout_seconds", job.timeout_seconds}};
      // "runs": that many timed latencies, as a fast model's result carries them.
      std::vector<double> latencies(job.request.value("runs", 0));
      for (size_t i = 0; i < latencies.size(); ++i) latencies[i] = 0.012345678 + 1e-9 * static_cast<double>(i);
      if (!latencies.empty()) outcome.result["latencies_ms"] = latencies;
    }
    ++runs;
    --running;
    return outcome;
  }
};

class AgentTest : public ::testing::Test {
 protected:
  void start(bool with_token = true, double auth_timeout = 30, size_t max_unauthenticated = 32,
             size_t max_queued_per_connection = 32) {
    if (with_token) {
      std::ofstream(folder_ / "token") << token_ << "\n";
      chmod((folder_ / "token").c_str(), 0600);
    }
    AgentOptions options;
    options.listen = "127.0.0.1:0";
    if (with_token) options.token_file = folder_ / "token";
    options.data_dir = folder_ / "data";
    options.profile.name = "test-profile";
    options.profile.threads = 1;
    options.limits.max_control_bytes = 64 * 1024;
    options.limits.max_chunk_bytes = 64 * 1024;
    options.max_upload_bytes = 1 << 20;
    options.auth_timeout_seconds = auth_timeout;
    options.max_unauthenticated = max_unauthenticated;
    options.max_queued_per_connection = max_queued_per_connection;
    options.hardware = Json{{"cpu_model", "test cpu"}, {"cores", 2}};
    options.handle_signals = false;
    options.benchmark = [this](const BenchJob& job) { return bench_(job); };
    agent_ = std::make_unique<Agent>(options);
    address_ = agent_->address();
    thread_ = std::thread([this] {
      bench_.network_thread = std::this_thread::get_id();
      agent_->run();
    });
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (thread_.joinable()) thread_.join();
    agent_.reset();
  }

  AgentClientOptions client_options(const std::string& token) const {
    AgentClientOptions options;
    options.address = address_;
    options.token = token;
    options.connect_timeout_seconds = 10;
    options.io_timeout_seconds = 10;
    options.benchmark_timeout_seconds = 30;
    options.chunk_bytes = 4096;
    options.limits.max_control_bytes = 64 * 1024;
    options.limits.max_chunk_bytes = 64 * 1024;
    return options;
  }
  AgentClient client() { return AgentClient(client_options(token_)); }
  AgentClient raw_client() { return AgentClient::connect_unauthenticated(client_options(token_)); }

  /// The agent still answers a fresh, authenticated connection.
  void expect_serving() { EXPECT_EQ(client().ping().value("type", ""), "pong"); }

  /// Files under the model folder, temporary ones included.
  std::vector<std::string> stored_files() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(folder_ / "data" / "models")) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  /// The connection was closed by the agent: reading fails.
  static void expect_closed(AgentClient& c) {
    expect_error<Error>([&] { c.read_message(5); }, {"closed the connection"});
  }

  TempFolder folder_{"agent"};
  std::string token_ = "correct horse battery staple";
  FakeBench bench_;
  std::unique_ptr<Agent> agent_;
  std::string address_;
  std::thread thread_;
};

TEST_F(AgentTest, HelloCarriesProtocolNonceHardwareAndProfile) {
  start();
  AgentClient c = client();
  EXPECT_EQ(c.hello().at("protocol"), agent_protocol_version);
  EXPECT_TRUE(c.hello().at("auth").get<bool>());
  EXPECT_TRUE(c.hello().at("tls").get<bool>());  // a token means TLS
  EXPECT_TRUE(c.encrypted());
  EXPECT_TRUE(is_hex_digest(c.hello().at("nonce").get<std::string>()));
  EXPECT_EQ(c.hardware().at("cpu_model"), "test cpu");
  EXPECT_EQ(c.profile().at("name"), "test-profile");
  EXPECT_EQ(c.ping().at("queued"), 0);
  // Every connection gets its own nonce.
  EXPECT_NE(client().hello().at("nonce"), c.hello().at("nonce"));
}

TEST_F(AgentTest, ForgedProofRefusedAndConnectionClosed) {
  start();
  AgentClient c = raw_client();
  c.send_frame(FrameType::Control,
               Json{{"type", "auth"}, {"nonce", make_nonce()}, {"proof", std::string(64, '0')}}.dump());
  const Json reply = c.read_message();
  EXPECT_EQ(reply.at("type"), "error");
  EXPECT_NE(reply.at("message").get<std::string>().find("authentication failed"), std::string::npos);
  expect_closed(c);
  // Another token gives another TLS key: the handshake fails before any proof is sent.
  expect_error<AgentRefused>([&] { AgentClient(client_options("wrong token")); },
                             {address_, "TLS handshake failed", "is the token the agent's?"});
  expect_serving();
}

TEST_F(AgentTest, ReplayedNonceRefused) {
  start();
  const std::string client_nonce = make_nonce();
  AgentClient first = raw_client();
  const std::string first_agent_nonce = first.hello().at("nonce");
  const Json first_auth{{"type", "auth"}, {"nonce", client_nonce},
                        {"proof", client_proof(token_, first_agent_nonce, client_nonce)}};
  first.send_frame(FrameType::Control, first_auth.dump());
  EXPECT_EQ(first.read_message().at("type"), "welcome");

  // The recorded auth message on a new connection: the agent's nonce changed, so its proof is wrong.
  AgentClient second = raw_client();
  second.send_frame(FrameType::Control, first_auth.dump());
  EXPECT_EQ(second.read_message().at("type"), "error");
  expect_closed(second);

  // A correct proof for the new agent nonce, but with the client nonce used before: refused as a replay.
  AgentClient third = raw_client();
  const std::string third_agent_nonce = third.hello().at("nonce");
  third.send_frame(FrameType::Control, Json{{"type", "auth"}, {"nonce", client_nonce},
                                            {"proof", client_proof(token_, third_agent_nonce, client_nonce)}}
                                           .dump());
  const Json reply = third.read_message();
  EXPECT_EQ(reply.at("type"), "error");
  EXPECT_NE(reply.at("message").get<std::string>().find("replay"), std::string::npos);
  expect_closed(third);
  expect_serving();
}

TEST_F(AgentTest, RequestsBeforeAuthenticationRefused) {
  start();
  for (const Json& request : {Json{{"type", "benchmark"}, {"sha256", std::string(64, 'a')}},
                              Json{{"type", "upload_begin"}, {"sha256", std::string(64, 'a')}, {"size", 1}},
                              Json{{"type", "ping"}}}) {
    AgentClient c = raw_client();
    c.send_frame(FrameType::Control, request.dump());
    const Json reply = c.read_message();
    EXPECT_EQ(reply.at("type"), "error");
    EXPECT_NE(reply.at("message").get<std::string>().find("not authenticated"), std::string::npos);
    expect_closed(c);
  }
  AgentClient c = raw_client();
  c.send_frame(FrameType::Chunk, "raw bytes");
  EXPECT_EQ(c.read_message().at("type"), "error");
  expect_closed(c);
  EXPECT_EQ(bench_.runs.load(), 0);
  expect_serving();
}

TEST_F(AgentTest, UnauthenticatedConnectionTimesOut) {
  start(true, 0.3);
  AgentClient c = raw_client();
  const Json reply = c.read_message(5);
  EXPECT_EQ(reply.at("type"), "error");
  EXPECT_NE(reply.at("message").get<std::string>().find("no authentication within"), std::string::npos);
  expect_closed(c);
  expect_serving();
}

TEST_F(AgentTest, BeforeAuthenticationOnlyAShortAuthIsRead) {
  start();
  // A chunk header announcing 60 KiB, then a control frame longer than an auth: refused from the 12 header bytes,
  // with no payload read (the peer sends none) and nothing allocated for it.
  for (const auto& [type, length] : {std::pair{FrameType::Chunk, size_t{60} * 1024}, std::pair{FrameType::Control,
                                                                                        size_t{4097}}}) {
    AgentClient c = raw_client();
    const FrameHeaderBytes header = encode_frame_header(type, length, FrameLimits{});
    c.send_raw(std::string(header.begin(), header.end()));
    const Json message = c.read_message();
    EXPECT_EQ(message.at("type"), "error");
    EXPECT_NE(message.at("message").get<std::string>().find(
                  fmt::format("at most 4096 bytes is read before authentication; got a {} frame of {} bytes",
                              to_string(type), length)),
              std::string::npos)
        << message.dump();
  }
  expect_serving();
}

TEST_F(AgentTest, ConnectionsWaitingForAuthenticationAreBounded) {
  start(true, 30, 3);
  std::vector<AgentClient> waiting;
  for (int i = 0; i < 3; ++i) waiting.push_back(raw_client());
  expect_error<AgentRefused>([&] { raw_client(); }, {address_, "too many connections waiting for authentication (3)"});
  expect_error<AgentRefused>([&] { client(); }, {"too many connections waiting"});
  // One that closes gives its place back; so does one that authenticates.
  waiting.front().close();
  waiting.erase(waiting.begin());
  auto reconnect = [&] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      try {
        return client();
      } catch (const AgentRefused&) {
        if (std::chrono::steady_clock::now() > end) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the agent sees the close a moment later
      }
    }
  };
  AgentClient authenticated = reconnect();
  EXPECT_EQ(authenticated.ping().at("type"), "pong");
  waiting.push_back(raw_client());  // the authenticated one holds no place
  expect_error<AgentRefused>([&] { raw_client(); }, {"too many connections waiting"});
  EXPECT_EQ(authenticated.ping().at("type"), "pong");
}

/// A benchmark request of the stand-in that sleeps `sleep_ms`.
std::string sleeping_benchmark(int id, const std::string& sha, int sleep_ms) {
  return Json{{"type", "benchmark"}, {"id", id}, {"sha256", sha}, {"request", {{"sleep_ms", sleep_ms}}}}.dump();
}

TEST_F(AgentTest, AConnectionMayQueueOnlySoMany) {
  start(true, 30, 32, 2);
  AgentClient c = client();
  const std::string sha = c.upload_bytes("model bytes");
  c.send_frame(FrameType::Control, sleeping_benchmark(1, sha, 60000));  // runs
  while (bench_.running.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (int id = 2; id <= 4; ++id) c.send_frame(FrameType::Control, sleeping_benchmark(id, sha, 10));
  const Json refused = c.read_message(10);  // the third waiting one
  EXPECT_EQ(refused.at("type"), "error") << refused.dump();
  EXPECT_EQ(refused.at("id"), 4) << refused.dump();
  EXPECT_NE(refused.at("message").get<std::string>().find("already has 2 benchmarks waiting"), std::string::npos)
      << refused.dump();
  EXPECT_EQ(c.ping().at("queued"), 3);  // the connection stays usable; another one may queue its own
  AgentClient other = client();
  other.send_frame(FrameType::Control, sleeping_benchmark(9, sha, 10));
  EXPECT_EQ(other.ping().at("queued"), 4);
}

TEST_F(AgentTest, TheWaitingBenchmarksOfAGoneClientAreDropped) {
  start();
  {
    AgentClient gone = client();
    const std::string sha = gone.upload_bytes("model bytes");
    gone.send_frame(FrameType::Control, sleeping_benchmark(1, sha, 300));  // runs to its end
    while (bench_.running.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (int id = 2; id <= 4; ++id) gone.send_frame(FrameType::Control, sleeping_benchmark(id, sha, 300));
    EXPECT_EQ(gone.ping().at("queued"), 4);
  }  // the client goes
  AgentClient watcher = client();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (watcher.ping().at("queued").get<int>() > 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(watcher.ping().at("queued"), 0);
  EXPECT_EQ(bench_.runs.load(), 1);  // not 4: the three waiting ones were dropped with their connection
}

TEST_F(AgentTest, StoppingAnswersPendingBenchmarksAtOnce) {
  start();
  AgentClient c = client();
  const std::string sha = c.upload_bytes("model bytes");
  // One benchmark running (it would take 60 s) and two queued behind it, all from one connection.
  for (int id = 1; id <= 3; ++id) {
    c.send_frame(FrameType::Control,
                 Json{{"type", "benchmark"}, {"id", id}, {"sha256", sha}, {"request", {{"sleep_ms", 60000}}}}.dump());
  }
  // All three are in the agent's hands (one running, two waiting) before it is stopped: asked on another connection.
  AgentClient watcher = client();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((bench_.running.load() == 0 || watcher.ping().at("queued").get<int>() < 3) &&
         std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(watcher.ping().at("queued"), 3);
  const auto asked = std::chrono::steady_clock::now();
  agent_->stop();
  int dropped = 0, stopped = 0;
  for (int i = 0; i < 3; ++i) {
    const Json reply = c.read_message(10);
    ASSERT_EQ(reply.at("type"), "error") << reply.dump();
    const std::string text = reply.at("message").get<std::string>();
    EXPECT_NE(text.find("agent stopping"), std::string::npos) << text;
    dropped += text.find("dropped before it ran") != std::string::npos ? 1 : 0;
    stopped += text.find("stand-in cancelled") != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(dropped, 2);
  EXPECT_EQ(stopped, 1);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count(), 5.0);
  thread_.join();  // run() has returned
  EXPECT_EQ(bench_.runs.load(), 1);
}

TEST_F(AgentTest, ClientRefusesAnAgentThatCannotProveItself) {
  // A fake agent that holds the token's TLS key (say, the key leaked, not the token), says hello, accepts any auth
  // and answers with a made-up proof.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  address_ = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  const std::shared_ptr<TlsContext> tls = make_agent_tls_context(token_, {}, {});
  std::thread fake([&] {
    boost::asio::ip::tcp::socket socket(io);
    acceptor.accept(socket);
    const AgentPreamble preamble = encode_agent_preamble(AgentTransport::Tls);
    boost::asio::write(socket, boost::asio::buffer(preamble));
    boost::asio::ssl::stream<boost::asio::ip::tcp::socket&> stream(socket, tls->context());
    stream.handshake(boost::asio::ssl::stream_base::server);
    const FrameLimits limits;
    write_frame(stream, FrameType::Control,
                Json{{"type", "hello"}, {"protocol", agent_protocol_version}, {"nonce", make_nonce()}, {"auth", true},
                     {"hardware", Json::object()}, {"profile", Json::object()}}.dump(),
                limits);
    const Json auth = Json::parse(read_frame(stream, limits).payload);
    write_frame(stream, FrameType::Control,
                Json{{"type", "welcome"}, {"id", auth.at("id")}, {"proof", std::string(64, 'f')}}.dump(), limits);
    try {
      read_frame(stream, limits);  // until the client hangs up
    } catch (const boost::system::system_error&) {
    }
  });
  expect_error<Error>([&] { client(); }, {address_, "failed to prove it holds the token"});
  fake.join();
}

TEST_F(AgentTest, UploadThenHas) {
  start();
  AgentClient c = client();
  std::string model(100000, '\0');
  for (size_t i = 0; i < model.size(); ++i) model[i] = static_cast<char>(i * 7 % 251);
  const std::string sha = sha256_hex(model);
  EXPECT_FALSE(c.has(sha));
  EXPECT_EQ(c.upload_bytes(model), sha);
  EXPECT_TRUE(c.has(sha));
  std::ifstream stored(folder_ / "data" / "models" / (sha + ".pt"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(stored)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes, model);
  EXPECT_EQ(stored_files(), std::vector<std::string>{sha + ".pt"});
  // upload() of a file the agent already holds sends nothing more and returns the same sha256.
  std::ofstream(folder_ / "model.pt", std::ios::binary) << model;
  EXPECT_EQ(client().upload(folder_ / "model.pt"), sha);
  // An empty model is a valid upload too.
  EXPECT_EQ(c.upload_bytes(""), sha256_hex(""));
  EXPECT_TRUE(c.has(sha256_hex("")));
}

TEST_F(AgentTest, ShaMismatchRefusedAndNothingLeft) {
  start();
  AgentClient c = client();
  const std::string declared = sha256_hex("the bytes announced");
  c.request(Json{{"type", "upload_begin"}, {"sha256", declared}, {"size", 9}});
  c.send_frame(FrameType::Chunk, "other one");
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "upload_end"}}); },
                             {address_, "sha256 mismatch", declared, sha256_hex("other one"), "nothing stored"});
  EXPECT_TRUE(stored_files().empty());
  EXPECT_FALSE(c.has(declared));
  EXPECT_EQ(c.ping().at("type"), "pong");  // the connection is still usable

  // Fewer bytes than declared: refused, nothing kept, connection usable.
  c.request(Json{{"type", "upload_begin"}, {"sha256", declared}, {"size", 100}});
  c.send_frame(FrameType::Chunk, "short");
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "upload_end"}}); }, {"ended after 5 of 100 bytes"});
  EXPECT_TRUE(stored_files().empty());

  // More bytes than declared: refused at once and the connection closed (chunks are not answered one by one).
  c.request(Json{{"type", "upload_begin"}, {"sha256", declared}, {"size", 3}});
  c.send_frame(FrameType::Chunk, "four");
  const Json reply = c.read_message();
  EXPECT_NE(reply.value("message", "").find("longer than the declared 3 bytes"), std::string::npos);
  expect_closed(c);
  EXPECT_TRUE(stored_files().empty());
  expect_serving();
}

TEST_F(AgentTest, UploadOverTheCapRefused) {
  start();
  AgentClient c = client();
  expect_error<AgentRefused>(
      [&] { c.request(Json{{"type", "upload_begin"}, {"sha256", std::string(64, 'b')}, {"size", 2 << 20}}); },
      {"over this agent's cap"});
  EXPECT_TRUE(stored_files().empty());
  EXPECT_EQ(c.ping().at("type"), "pong");
}

TEST_F(AgentTest, OversizeFramesRefusedAgentAlive) {
  start();
  for (FrameType type : {FrameType::Control, FrameType::Chunk}) {
    AgentClientOptions options = client_options(token_);
    options.limits.max_control_bytes = 1 << 20;
    options.limits.max_chunk_bytes = 1 << 20;
    AgentClient c(options);
    c.send_frame(type, std::string(64 * 1024 + 1, 'x'));
    const Json reply = c.read_message();
    EXPECT_EQ(reply.at("type"), "error");
    EXPECT_NE(reply.at("message").get<std::string>().find("over the cap of 65536 bytes"), std::string::npos)
        << reply.dump();
    expect_closed(c);
  }
  // Not even a frame: the agent says so and closes.
  AgentClient c = raw_client();
  c.send_raw("GET / HTTP/1.1\r\n\r\n");
  const Json reply = c.read_message();
  EXPECT_NE(reply.at("message").get<std::string>().find("magic"), std::string::npos) << reply.dump();
  expect_closed(c);
  expect_serving();
}

TEST_F(AgentTest, PathsInNamesAndShasRefused) {
  start();
  AgentClient c = client();
  const std::string traversal = "../../../../etc/passwd";
  expect_error<AgentRefused>([&] { c.has(traversal); }, {"not 64 lower-case hex digits", traversal});
  expect_error<AgentRefused>([&] { c.benchmark("/etc/passwd", Json::object()); }, {"not 64 lower-case hex digits"});
  expect_error<AgentRefused>(
      [&] { c.request(Json{{"type", "upload_begin"}, {"sha256", "../" + std::string(61, 'a')}, {"size", 1}}); },
      {"not 64 lower-case hex digits"});
  // Uploads carry no name: a "name" key is refused, whatever it holds.
  expect_error<AgentRefused>(
      [&] {
        c.request(Json{{"type", "upload_begin"}, {"sha256", std::string(64, 'a')}, {"size", 1},
                       {"name", "../../evil.pt"}});
      },
      {"unknown key 'name'"});
  EXPECT_TRUE(stored_files().empty());
  EXPECT_FALSE(std::filesystem::exists(folder_ / "evil.pt"));
  EXPECT_EQ(c.ping().at("type"), "pong");
}

TEST_F(AgentTest, UnknownMessagesRefusedConnectionKept) {
  start();
  AgentClient c = client();
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "format_disk"}}); },
                             {address_, "unknown message type 'format_disk'"});
  c.send_frame(FrameType::Control, "{not json");
  EXPECT_NE(c.read_message().value("message", "").find("not valid JSON"), std::string::npos);
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "ping"}, {"extra", 1}}); }, {"unknown key 'extra'"});
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "upload_end"}}); }, {"without upload_begin"});
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "auth"}, {"nonce", "x"}, {"proof", "y"}}); },
                             {"already authenticated"});
  EXPECT_EQ(c.ping().at("type"), "pong");
}

TEST_F(AgentTest, BenchmarkReturnsTheRunnersResult) {
  start();
  AgentClient c = client();
  const std::string sha = c.upload_bytes("model bytes");
  const Json result = c.benchmark(sha, Json{{"batch_sizes", {1, 4}}}, 42);
  EXPECT_EQ(result.at("request").at("batch_sizes"), Json({1, 4}));
  EXPECT_EQ(result.at("model_bytes"), 11);
  EXPECT_EQ(result.at("model_name"), sha + ".pt");
  EXPECT_EQ(result.at("timeout_seconds"), 42.0);
  EXPECT_FALSE(bench_.ran_on_network_thread.load());

  expect_error<AgentRefused>([&] { c.benchmark(sha256_hex("never uploaded"), Json::object()); },
                             {"upload it first"});
  expect_error<AgentRefused>([&] { c.benchmark(sha, Json::array()); }, {"must be a JSON object"});
  expect_error<AgentRefused>([&] { c.benchmark(sha, Json::object(), 1e9); }, {"timeout_seconds"});
  expect_error<AgentRefused>([&] { c.benchmark(sha, Json{{"fail", "killed by signal SIGSEGV"}}); },
                             {address_, "benchmark of", "killed by signal SIGSEGV"});
  EXPECT_EQ(c.ping().at("type"), "pong");
}

TEST_F(AgentTest, ResultLongerThanAControlFrameArrivesWhole) {
  start();  // control frames of 64 KiB
  AgentClient c = client();
  const std::string sha = c.upload_bytes("a fast model");
  const Json result = c.benchmark(sha, Json{{"runs", 40000}});
  ASSERT_GT(result.dump().size(), 8u * 64 * 1024) << "the reply spans several control frames";
  const auto latencies = result.at("latencies_ms").get<std::vector<double>>();
  ASSERT_EQ(latencies.size(), 40000u);
  EXPECT_DOUBLE_EQ(latencies.back(), 0.012345678 + 1e-9 * 39999);
  EXPECT_EQ(c.ping().at("type"), "pong");  // the connection is in step after it

  // A client whose cap on a whole message is smaller is told so, not handed a cut message.
  AgentClientOptions small = client_options(token_);
  small.limits.max_message_bytes = 256 * 1024;
  AgentClient capped(small);
  expect_error<Error>([&] { capped.benchmark(sha, Json{{"runs", 40000}}); }, {address_, "over the cap of 262144"});
}

TEST_F(AgentTest, ContinuationFramesFromAClientRefused) {
  start();
  AgentClient c = client();
  c.send_frame(FrameType::Continuation, R"({"type":)");
  const Json reply = c.read_message();
  EXPECT_EQ(reply.at("type"), "error");
  EXPECT_NE(reply.value("message", "").find("continuation frames are not accepted"), std::string::npos)
      << reply.dump();
  expect_closed(c);
  expect_serving();
}

TEST_F(AgentTest, BenchmarksRunOneAtATimeWhileTheAgentKeepsAnswering) {
  start();
  const std::string sha = client().upload_bytes("shared model");
  std::vector<std::thread> threads;
  std::atomic<int> results{0};
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      AgentClient c = client();
      const Json result = c.benchmark(sha, Json{{"sleep_ms", 300}, {"index", i}});
      if (result.at("request").at("index") == i) ++results;
    });
  }
  // While they queue, another connection is served at once and sees the queue.
  bool saw_queue = false;
  for (int attempt = 0; attempt < 50 && !saw_queue; ++attempt) {
    const auto start = std::chrono::steady_clock::now();
    const Json pong = client().ping();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
    saw_queue = pong.at("queued").get<int>() >= 2;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(saw_queue);
  EXPECT_EQ(results.load(), 3);
  EXPECT_EQ(bench_.most_at_once.load(), 1);
  EXPECT_EQ(bench_.runs.load(), 3);
}

TEST_F(AgentTest, LoopbackAgentWithoutToken) {
  start(false);
  AgentClient c(client_options(""));
  EXPECT_FALSE(c.hello().at("auth").get<bool>());
  EXPECT_FALSE(c.encrypted());
  EXPECT_EQ(c.ping().at("type"), "pong");
  // A client holding a token refuses an agent that cannot prove it.
  expect_error<Error>([&] { AgentClient(client_options(token_)); }, {address_, "runs without a token"});
}

TEST(AgentOptionsCheck, NonLoopbackWithoutTokenRefused) {
  TempFolder folder("agent-options");
  AgentOptions options;
  options.listen = "0.0.0.0:0";
  options.data_dir = folder / "data";
  options.hardware = Json::object();
  options.benchmark = [](const BenchJob&) { return BenchOutcome{}; };
  expect_error<InputError>([&] { Agent agent(options); }, {"0.0.0.0:0", "without a token", "--token-file"});
  options.listen = "127.0.0.1";
  expect_error<InputError>([&] { Agent agent(options); }, {"'127.0.0.1'", "HOST:PORT"});
  options.listen = "127.0.0.1:99999";
  expect_error<InputError>([&] { Agent agent(options); }, {"99999"});
  options.listen = "127.0.0.1:0";
  options.token_file = folder / "missing-token";
  expect_error<InputError>([&] { Agent agent(options); }, {"missing-token"});
}

TEST(AgentClientCheck, ConnectFailureNamesTheAddress) {
  // A port that was free a moment ago: connection refused, named.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const std::string address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  acceptor.close();
  AgentClientOptions options;
  options.address = address;
  options.connect_timeout_seconds = 5;
  expect_error<Error>([&] { AgentClient client(options); }, {address, "cannot connect"});
}

}  // namespace
}  // namespace edgesweep
