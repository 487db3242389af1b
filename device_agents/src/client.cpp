// The synchronous agent client. Every read, write and handshake is an asynchronous operation run on the
// connection's own io_context until it completes or its deadline passes, so no call waits longer than its timeout,
// over TCP and over TLS alike; the frame code is the same templated read_frame/write_frame the tests drive through
// a fault-injecting stream.
#include "edgesweep/device_agents/client.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <openssl/ssl.h>

#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/messages.h"
#include "edgesweep/device_agents/tls.h"

namespace edgesweep {

namespace net = boost::asio;
using net::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

/// The end of a connection by the agent, in TCP or in TLS terms.
bool is_closed_by_peer(const error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated || ec == net::error::connection_reset;
}

}  // namespace

/// A connected socket, TLS on it once secured, and a deadline for every operation; a SyncReadStream and
/// SyncWriteStream for Asio.
struct AgentClient::Connection {
  net::io_context io;
  tcp::socket socket{io};
  std::shared_ptr<ClientTlsContext> tls_context;
  std::unique_ptr<net::ssl::stream<tcp::socket&>> tls;
  Clock::time_point deadline = Clock::now();

  /// Starts one operation with `start(handler)` and runs it to its end or to the deadline. A late operation is
  /// cancelled and the connection closed (a frame cut in the middle leaves the stream out of step anyway).
  template <typename Start>
  size_t run(Start&& start, error_code& ec) {
    bool done = false;
    size_t bytes = 0;
    error_code result;
    start([&](const error_code& e, size_t n) {
      result = e;
      bytes = n;
      done = true;
    });
    io.restart();
    io.run_until(deadline);
    if (!done) {
      error_code ignored;
      socket.cancel(ignored);
      socket.close(ignored);
      io.restart();
      io.run();  // the cancelled operation's handler
      ec = net::error::timed_out;
      return 0;
    }
    ec = result;
    return bytes;
  }

  template <typename Buffers>
  size_t read_some(const Buffers& buffers, error_code& ec) {
    return run(
        [&](auto handler) {
          if (tls) {
            tls->async_read_some(buffers, handler);
          } else {
            socket.async_read_some(buffers, handler);
          }
        },
        ec);
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
    return run(
        [&](auto handler) {
          if (tls) {
            tls->async_write_some(buffers, handler);
          } else {
            socket.async_write_some(buffers, handler);
          }
        },
        ec);
  }
  template <typename Buffers>
  size_t write_some(const Buffers& buffers) {
    error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  void handshake(error_code& ec) {
    run([&](auto handler) { tls->async_handshake(net::ssl::stream_base::client, [handler](const error_code& e) mutable {
          handler(e, 0);
        }); },
        ec);
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
  c.socket.set_option(tcp::no_delay(true), ec);
  secure();

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

void AgentClient::secure() {
  Connection& c = *connection_;
  AgentPreamble preamble{};
  AgentTransport transport = AgentTransport::Plaintext;
  c.deadline = deadline_after(options_.connect_timeout_seconds);
  try {
    net::read(c, net::buffer(preamble));
    transport = decode_agent_preamble(preamble);
  } catch (const boost::system::system_error& e) {
    throw Error(fmt::format("agent {}: no preamble: {}", options_.address,
                            e.code() == net::error::timed_out
                                ? fmt::format("timed out after {} s", options_.connect_timeout_seconds)
                            : is_closed_by_peer(e.code()) ? std::string("the agent closed the connection")
                                                          : e.code().message()));
  } catch (const ProtocolError& e) {
    throw Error(fmt::format("agent {}: {}", options_.address, e.what()));
  }
  if (transport == AgentTransport::Refused) {
    const Json why = read_message(options_.connect_timeout_seconds);
    throw AgentRefused(fmt::format("agent {} refused the connection: {}", options_.address,
                                   why.value("message", std::string("no reason given"))));
  }
  const bool wants_tls = !options_.token.empty() || !options_.tls_fingerprint.empty();
  if (transport == AgentTransport::Plaintext) {
    check(options_.token.empty(),
          "agent {}: runs without a token (in plaintext), so it cannot prove it holds ours; refusing it (give no "
          "token for a loopback agent without one)",
          options_.address);
    check(!wants_tls, "agent {}: speaks plaintext, but its certificate is pinned (tls_fingerprint); refusing it",
          options_.address);
    error_code ec;
    const tcp::endpoint remote = c.socket.remote_endpoint(ec);
    check(!ec && remote.address().is_loopback(),
          "agent {}: speaks plaintext, which only a loopback agent may; refusing it (run the agent with a token)",
          options_.address);
    return;
  }
  check_input(wants_tls,
              "agent {}: speaks TLS and requires a token; give its token (token_file) or pin its certificate's "
              "fingerprint (tls_fingerprint)",
              options_.address);
  c.tls_context = std::make_shared<ClientTlsContext>(options_.token, options_.tls_fingerprint);
  c.tls = std::make_unique<net::ssl::stream<tcp::socket&>>(c.socket, c.tls_context->context());
  c.deadline = deadline_after(options_.connect_timeout_seconds);
  error_code ec;
  c.handshake(ec);
  if (ec) {
    const std::string& presented = c.tls_context->presented_fingerprint();
    if (c.tls_context->pins_certificate()) {
      const std::string pinned = normalise_fingerprint(options_.tls_fingerprint);
      check(presented.empty() || presented == pinned,
            "agent {}: presented the certificate {}, not the pinned {}; refusing it", options_.address, presented,
            pinned);
    } else {
      check(presented.empty(),
            "agent {}: answered the token's key with a certificate ({}) instead; refusing it", options_.address,
            presented);
    }
    const std::string why = ec == net::error::timed_out
                                ? fmt::format("timed out after {} s", options_.connect_timeout_seconds)
                            : is_closed_by_peer(ec) ? std::string("the agent closed the connection")
                                                    : ec.message();
    throw AgentRefused(fmt::format("agent {}: TLS handshake failed: {}{}", options_.address, why,
                                   c.tls_context->pins_certificate() ? "" : " (is the token the agent's?)"));
  }
  // A PSK handshake that did not use the PSK authenticated nothing.
  check(c.tls_context->pins_certificate() || SSL_session_reused(c.tls->native_handle()) == 1,
        "agent {}: the TLS handshake did not use the token's key; refusing it", options_.address);
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
                            : is_closed_by_peer(ec)     ? std::string("the agent closed the connection")
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

void AgentClient::send_raw(const std::string& bytes) {
  check(connection_ && connection_->socket.is_open(), "agent {}: connection is closed", options_.address);
  connection_->deadline = deadline_after(options_.io_timeout_seconds);
  net::write(*connection_, net::buffer(bytes));
}

bool AgentClient::encrypted() const { return connection_ && connection_->tls != nullptr; }

void AgentClient::close() {
  if (!connection_) return;
  error_code ignored;
  connection_->socket.shutdown(tcp::socket::shutdown_both, ignored);
  connection_->socket.close(ignored);
}

}  // namespace edgesweep
