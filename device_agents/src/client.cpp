// The synchronous agent client. Reads and writes go through a non-blocking socket and poll() against a deadline,
// so no call waits longer than its timeout; the frame code is the same templated read_frame/write_frame the tests
// drive through a fault-injecting stream.
#include "edgesweep/device_agents/client.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/messages.h"

namespace edgesweep {

namespace net = boost::asio;
using net::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

/// A connected socket with a deadline for every read and write; a SyncReadStream and SyncWriteStream for Asio.
struct AgentClient::Connection {
  net::io_context io;
  tcp::socket socket{io};
  Clock::time_point deadline = Clock::now();

  /// Waits until the socket is ready for `events` or the deadline passes (ec = timed_out).
  bool wait(short events, error_code& ec) {
    for (;;) {
      const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (remaining <= 0) {
        ec = net::error::timed_out;
        return false;
      }
      pollfd entry{socket.native_handle(), events, 0};
      const int ready = ::poll(&entry, 1, static_cast<int>(std::min<long long>(remaining, 1000)));
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) {
        ec = error_code(errno, boost::system::system_category());
        return false;
      }
    }
  }

  template <typename Buffers>
  size_t read_some(const Buffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket.read_some(buffers, ec);
      if (ec != net::error::would_block && ec != net::error::try_again) return n;
      if (!wait(POLLIN, ec)) return 0;
    }
  }
  template <typename Buffers>
  size_t read_some(const Buffers& buffers) {
    error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <typename Buffers>
  size_t write_some(const Buffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket.write_some(buffers, ec);
      if (ec != net::error::would_block && ec != net::error::try_again) return n;
      if (!wait(POLLOUT, ec)) return 0;
    }
  }
  template <typename Buffers>
  size_t write_some(const Buffers& buffers) {
    error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
};

AgentClient::AgentClient(AgentClientOptions options) : AgentClient(std::move(options), true) {}

AgentClient AgentClient::connect_unauthenticated(AgentClientOptions options) {
  return AgentClient(std::move(options), false);
}

AgentClient::AgentClient(AgentClientOptions options, bool authenticate)
    : options_(std::move(options)), connection_(std::make_unique<Connection>()) {
  check_input(options_.chunk_bytes > 0 && options_.chunk_bytes <= options_.limits.max_chunk_bytes,
              "upload chunk size {} is not in [1, {}]", options_.chunk_bytes, options_.limits.max_chunk_bytes);
  const auto [host, port] = split_host_port(options_.address);
  Connection& c = *connection_;
  error_code ec;
  tcp::resolver resolver(c.io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  check(!ec, "agent {}: cannot resolve: {}", options_.address, ec.message());

  error_code connect_ec = net::error::timed_out;
  bool done = false;
  net::async_connect(c.socket, endpoints, [&](const error_code& result, const tcp::endpoint&) {
    connect_ec = result;
    done = true;
  });
  c.io.run_for(std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.connect_timeout_seconds)));
  if (!done) {
    error_code ignored;
    c.socket.close(ignored);
    c.io.restart();
    c.io.run();
    connect_ec = net::error::timed_out;
  }
  check(!connect_ec, "agent {}: cannot connect: {}{}", options_.address, connect_ec.message(),
        connect_ec == net::error::timed_out ? fmt::format(" (after {} s)", options_.connect_timeout_seconds) : "");
  c.socket.non_blocking(true, ec);
  check(!ec, "agent {}: cannot make the socket non-blocking: {}", options_.address, ec.message());
  c.socket.set_option(tcp::no_delay(true), ec);

  hello_ = read_message(options_.connect_timeout_seconds);
  if (hello_.value("type", "") == "error") {
    throw AgentRefused(fmt::format("agent {} refused the connection: {}", options_.address,
                                   hello_.value("message", std::string())));
  }
  check(hello_.value("type", "") == "hello", "agent {}: expected hello, got '{}'", options_.address,
        hello_.value("type", ""));
  check(hello_.value("protocol", 0) == agent_protocol_version, "agent {}: speaks protocol {}, this client speaks {}",
        options_.address, hello_.value("protocol", 0), agent_protocol_version);
  check(hello_.contains("nonce") && hello_.at("nonce").is_string() &&
            is_hex_digest(hello_.at("nonce").get<std::string>()),
        "agent {}: hello carries no valid nonce", options_.address);
  if (authenticate) this->authenticate();
}

AgentClient::~AgentClient() = default;
AgentClient::AgentClient(AgentClient&&) noexcept = default;
AgentClient& AgentClient::operator=(AgentClient&&) noexcept = default;

void AgentClient::authenticate() {
  const bool wants_token = hello_.value("auth", true);
  if (!wants_token) {
    check(options_.token.empty(),
          "agent {}: runs without a token, so it cannot prove it holds ours; refusing it (give no token for a "
          "loopback agent without one)",
          options_.address);
    return;
  }
  check_input(!options_.token.empty(), "agent {}: requires a token; hint: give the agent's token file",
              options_.address);
  const std::string agent_nonce = hello_.at("nonce").get<std::string>();
  const std::string client_nonce = make_nonce();
  Json reply;
  try {
    reply = request(Json{{"type", "auth"},
                         {"nonce", client_nonce},
                         {"proof", client_proof(options_.token, agent_nonce, client_nonce)}},
                    options_.connect_timeout_seconds);
  } catch (const AgentRefused& e) {
    throw AgentRefused(fmt::format("{} (is the token the agent's?)", e.what()));
  }
  check(reply.value("type", "") == "welcome", "agent {}: expected welcome after auth, got '{}'", options_.address,
        reply.value("type", ""));
  const std::string expected = agent_proof(options_.token, agent_nonce, client_nonce);
  check(reply.contains("proof") && reply.at("proof").is_string() &&
            proofs_equal(expected, reply.at("proof").get<std::string>()),
        "agent {}: failed to prove it holds the token; refusing it", options_.address);
}

const std::string& AgentClient::address() const { return options_.address; }
const Json& AgentClient::hello() const { return hello_; }
const Json& AgentClient::hardware() const { return hello_.at("hardware"); }
const Json& AgentClient::profile() const { return hello_.at("profile"); }

void AgentClient::send_frame(FrameType type, const std::string& payload) {
  check(connection_ && connection_->socket.is_open(), "agent {}: connection is closed", options_.address);
  connection_->deadline = deadline_after(options_.io_timeout_seconds);
  try {
    write_frame(*connection_, type, payload, options_.limits);
  } catch (const boost::system::system_error& e) {
    throw Error(fmt::format("agent {}: cannot send a {} frame: {}", options_.address, to_string(type),
                            e.code() == net::error::timed_out
                                ? fmt::format("timed out after {} s", options_.io_timeout_seconds)
                                : e.code().message()));
  }
}

Json AgentClient::read_message(double timeout_seconds) {
  check(connection_ && connection_->socket.is_open(), "agent {}: connection is closed", options_.address);
  const double seconds = timeout_seconds > 0 ? timeout_seconds : options_.io_timeout_seconds;
  connection_->deadline = deadline_after(seconds);
  try {
    const Frame frame = read_message_frame(*connection_, options_.limits);
    if (frame.type != FrameType::Control) throw ProtocolError("expected a control frame, got a chunk");
    return parse_control_message(frame.payload);
  } catch (const boost::system::system_error& e) {
    const error_code ec = e.code();
    throw Error(fmt::format("agent {}: no reply: {}", options_.address,
                            ec == net::error::timed_out ? fmt::format("timed out after {} s", seconds)
                            : ec == net::error::eof     ? std::string("the agent closed the connection")
                                                        : ec.message()));
  } catch (const ProtocolError& e) {
    throw Error(fmt::format("agent {}: bad reply: {}", options_.address, e.what()));
  }
}

Json AgentClient::request(Json message, double timeout_seconds) {
  const int64_t id = next_id_++;
  message["id"] = id;
  const std::string type = message.value("type", "");
  send_frame(FrameType::Control, message.dump());
  Json reply = read_message(timeout_seconds);
  if (reply.value("type", "") == "error") {
    throw AgentRefused(fmt::format("agent {} refused '{}': {}", options_.address, type, reply.value("message", "")));
  }
  check(reply.value("id", Json()) == Json(id), "agent {}: reply to request {} carries id {}", options_.address, id,
        reply.value("id", Json()).dump());
  return reply;
}

bool AgentClient::has(const std::string& sha256) {
  const Json reply = request(Json{{"type", "has"}, {"sha256", sha256}});
  check(reply.value("type", "") == "have", "agent {}: expected have, got '{}'", options_.address,
        reply.value("type", ""));
  return reply.value("present", false);
}

std::string AgentClient::upload(const std::filesystem::path& file) {
  const std::string sha256 = sha256_file(file);
  if (has(sha256)) return sha256;
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(file, ec);
  check(!ec, "cannot read the size of '{}': {}", file.string(), ec.message());
  std::ifstream in(file, std::ios::binary);
  check(in.good(), "cannot read '{}' to upload it", file.string());
  return upload_stream(in, sha256, size);
}

std::string AgentClient::upload_bytes(const std::string& bytes) {
  std::istringstream in(bytes);
  return upload_stream(in, sha256_hex(bytes), bytes.size());
}

std::string AgentClient::upload_stream(std::istream& in, const std::string& sha256, uint64_t size) {
  const Json ready = request(Json{{"type", "upload_begin"}, {"sha256", sha256}, {"size", size}});
  check(ready.value("type", "") == "ready", "agent {}: expected ready, got '{}'", options_.address,
        ready.value("type", ""));
  std::string chunk(options_.chunk_bytes, '\0');
  uint64_t sent = 0;
  while (sent < size) {
    in.read(chunk.data(), static_cast<std::streamsize>(std::min<uint64_t>(chunk.size(), size - sent)));
    const auto got = static_cast<size_t>(in.gcount());
    check(got > 0, "upload of {}: the source ended after {} of {} bytes", sha256, sent, size);
    try {
      send_frame(FrameType::Chunk, chunk.substr(0, got));
    } catch (const Error& send_error) {
      // The agent may have said why it stopped reading before it closed.
      Json why;
      try {
        why = read_message(2);
      } catch (const Error&) {
        throw send_error;
      }
      if (why.value("type", "") == "error") {
        throw AgentRefused(fmt::format("agent {} refused the upload: {}", options_.address, why.value("message", "")));
      }
      throw;
    }
    sent += got;
  }
  const Json stored = request(Json{{"type", "upload_end"}});
  check(stored.value("type", "") == "stored" && stored.value("sha256", "") == sha256,
        "agent {}: expected stored {}, got '{}'", options_.address, sha256, stored.dump());
  return sha256;
}

Json AgentClient::benchmark(const std::string& sha256, const Json& request_json, double timeout_seconds) {
  Json message{{"type", "benchmark"}, {"sha256", sha256}, {"request", request_json}};
  double wait = options_.benchmark_timeout_seconds;
  if (timeout_seconds > 0) {
    message["timeout_seconds"] = timeout_seconds;
    wait = std::max(wait, timeout_seconds + 60);
  }
  const Json reply = request(message, wait);
  check(reply.value("type", "") == "result", "agent {}: expected result, got '{}'", options_.address,
        reply.value("type", ""));
  return reply.value("result", Json());
}

Json AgentClient::ping() {
  const Json reply = request(Json{{"type", "ping"}});
  check(reply.value("type", "") == "pong", "agent {}: expected pong, got '{}'", options_.address,
        reply.value("type", ""));
  return reply;
}

void AgentClient::close() {
  if (!connection_) return;
  error_code ignored;
  connection_->socket.shutdown(tcp::socket::shutdown_both, ignored);
  connection_->socket.close(ignored);
}

}  // namespace edgesweep
