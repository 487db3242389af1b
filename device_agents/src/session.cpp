// One agent connection, Beast style: a read loop of frames on the connection's strand, replies queued and written
// one at a time, and every failure turned into an error message or a clean close, never into a dead agent.
#include "edgesweep/device_agents/session.h"

#include <unistd.h>

#include <chrono>
#include <fstream>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/messages.h"

namespace edgesweep {

namespace net = boost::asio;
using boost::system::error_code;

/// An upload in progress: written to a temporary file that is removed unless it verified and was renamed.
struct Session::Upload {
  std::string sha256;
  uint64_t size = 0;
  uint64_t received = 0;
  std::filesystem::path temp;
  std::ofstream out;
  bool kept = false;

  ~Upload() {
    if (out.is_open()) out.close();
    if (!kept) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
    }
  }
};

Session::Session(net::ip::tcp::socket socket, std::shared_ptr<SharedState> state)
    : stream_(std::move(socket)), state_(std::move(state)), auth_timer_(stream_.get_executor()) {
  error_code ec;
  const auto endpoint = stream_.socket().remote_endpoint(ec);
  peer_ = ec ? std::string("unknown peer") : fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
}

Session::~Session() { release_place(); }

void Session::release_place() {
  if (!holds_place_) return;
  holds_place_ = false;
  state_->release_unauthenticated();
}

void Session::run() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->start(); });
}

void Session::start() {
  const AgentSettings& settings = state_->settings();
  authenticated_ = settings.token.empty();
  spdlog::debug("connection from {}", peer_);
  if (!authenticated_) {
    holds_place_ = state_->admit_unauthenticated();
    if (!holds_place_) {
      // Before anything is read and before any TLS: a flood of idle connections costs a socket each, and nothing
      // more. The refusal goes out in the clear, announced by the preamble.
      spdlog::debug("connection from {} refused: {} connections are waiting for authentication", peer_,
                    settings.max_unauthenticated);
      closing_ = true;
      const AgentPreamble refused = encode_agent_preamble(AgentTransport::Refused);
      outbox_.emplace_back(refused.begin(), refused.end());
      outbox_.push_back(encode_frame(
          FrameType::Control,
          make_error(nullptr, fmt::format("too many connections waiting for authentication ({}); try again later",
                                          settings.max_unauthenticated))
              .dump(),
          settings.limits));
      return write_next();
    }
  }
  if (!authenticated_ || settings.tls) {
    // The handshake, TLS included, must end within the authentication time (a TLS handshake also on an agent that
    // has a certificate but no token).
    auth_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(settings.auth_timeout_seconds)));
    auth_timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_auth_timeout(ec); });
  }
  preamble_ = encode_agent_preamble(settings.tls ? AgentTransport::Tls : AgentTransport::Plaintext);
  // Written before the TLS handshake starts, so the two never interleave on the socket.
  net::async_write(stream_.socket(), net::buffer(preamble_),
                   [self = shared_from_this()](error_code ec, size_t) { self->on_preamble(ec); });
}

void Session::on_preamble(error_code ec) {
  if (ec) return fail(ec, "write");
  if (closed_) return;
  if (!state_->settings().tls) return greet();
  stream_.async_server_handshake(state_->settings().tls,
                                 [self = shared_from_this()](error_code handshake_ec) {
                                   self->on_handshake(handshake_ec);
                                 });
}

void Session::on_handshake(error_code ec) {
  if (closed_) return;
  if (ec) {
    // A peer without the token (or speaking plaintext) cannot get past here; nothing has been read from it.
    spdlog::info("connection from {}: TLS handshake failed: {}", peer_, ec.message());
    return close();
  }
  if (authenticated_) auth_timer_.cancel();  // no token: the handshake was all there was to wait for
  greet();
}

void Session::greet() {
  const AgentSettings& settings = state_->settings();
  nonce_ = make_nonce();
  send(Json{{"type", "hello"},
            {"protocol", agent_protocol_version},
            {"nonce", nonce_},
            {"auth", !authenticated_},
            {"tls", stream_.secured()},
            {"hardware", settings.hardware},
            {"profile", profile_to_json(settings.profile)}});
  read_header();
}

void Session::on_auth_timeout(error_code ec) {
  if (ec || closed_) return;
  if (state_->settings().tls && !stream_.secured()) {
    spdlog::debug("connection from {}: no TLS handshake within {} s; closed", peer_,
                  state_->settings().auth_timeout_seconds);
    return close();
  }
  if (authenticated_) return;
  send_and_close(make_error(nullptr, fmt::format("no authentication within {} s; closing",
                                                 state_->settings().auth_timeout_seconds)));
}

void Session::read_header() {
  reading_ = true;
  net::async_read(stream_, net::buffer(header_),
                  [self = shared_from_this()](error_code ec, size_t) { self->on_header(ec); });
}

void Session::on_header(error_code ec) {
  reading_ = false;
  if (ec) return fail(ec, "read");
  if (closing_) return discard();
  try {
    frame_header_ = decode_frame_header(header_, state_->settings().limits);
  } catch (const ProtocolError& e) {
    // The stream is out of step (or the payload is not worth reading): say why and close.
    return send_and_close(make_error(nullptr, e.what()));
  }
  const size_t auth_cap = state_->settings().max_auth_bytes;
  if (!authenticated_ && (frame_header_.type != FrameType::Control || frame_header_.length > auth_cap)) {
    // Nothing is allocated for a peer that has not proved it holds the token: only a short auth is read.
    return send_and_close(make_error(
        nullptr, fmt::format("not authenticated: send auth first (only a control frame of at most {} bytes is read "
                             "before authentication; got a {} frame of {} bytes)",
                             auth_cap, to_string(frame_header_.type), frame_header_.length)));
  }
  payload_.resize(frame_header_.length);
  if (payload_.empty()) return on_payload({});
  reading_ = true;
  net::async_read(stream_, net::buffer(payload_),
                  [self = shared_from_this()](error_code ec, size_t) { self->on_payload(ec); });
}

void Session::on_payload(error_code ec) {
  reading_ = false;
  if (ec) return fail(ec, "read");
  if (closing_) return discard();
  handle_frame(frame_header_.type, payload_);
  if (!closing_ && !closed_) read_header();
}

void Session::handle_frame(FrameType type, std::string& payload) {
  if (type == FrameType::Continuation) {
    return send_and_close(make_error(nullptr, "continuation frames are not accepted by the agent: requests fit in "
                                              "one control frame"));
  }
  if (type == FrameType::Chunk) {
    if (!authenticated_) return send_and_close(make_error(nullptr, "not authenticated: send auth first"));
    return handle_chunk(payload);
  }
  Json message;
  try {
    message = parse_control_message(payload);
  } catch (const ProtocolError& e) {
    if (!authenticated_) return send_and_close(make_error(nullptr, e.what()));
    return send(make_error(nullptr, e.what()));
  }
  try {
    handle_control(message);
  } catch (const std::exception& e) {
    // Bad fields of a request: refused, and the connection stays usable once authenticated.
    if (!authenticated_) return send_and_close(make_error(message, e.what()));
    send(make_error(message, e.what()));
  }
}

void Session::handle_control(const Json& message) {
  const std::string type = message.at("type").get<std::string>();
  if (type == "auth") return handle_auth(message);
  if (!authenticated_) {
    return send_and_close(
        make_error(message, fmt::format("not authenticated: send auth first (got '{}')", type.substr(0, 80))));
  }
  if (type == "upload_begin") return handle_upload_begin(message);
  if (type == "upload_end") return handle_upload_end(message);
  if (type == "has") return handle_has(message);
  if (type == "benchmark") return handle_benchmark(message);
  if (type == "ping") {
    check_message_keys(message, {});
    Json reply = make_reply(message, "pong");
    reply["queued"] = state_->pending_benchmarks();
    return send(reply);
  }
  throw ProtocolError(fmt::format("unknown message type '{}'", type.substr(0, 80)));
}

void Session::handle_auth(const Json& message) {
  const std::string& token = state_->settings().token;
  if (authenticated_) {
    throw ProtocolError(token.empty() ? "this agent runs without a token; auth is not needed"
                                      : "already authenticated");
  }
  check_message_keys(message, {"nonce", "proof"});
  const auto nonce = message.find("nonce");
  const auto proof = message.find("proof");
  if (nonce == message.end() || !nonce->is_string() || !is_hex_digest(nonce->get<std::string>())) {
    throw ProtocolError("auth needs a \"nonce\" of 64 lower-case hex digits");
  }
  if (proof == message.end() || !proof->is_string()) throw ProtocolError("auth needs a string \"proof\"");
  const std::string client_nonce = nonce->get<std::string>();
  if (!proofs_equal(client_proof(token, nonce_, client_nonce), proof->get<std::string>())) {
    spdlog::warn("connection from {}: authentication failed (wrong proof)", peer_);
    return send_and_close(make_error(message, "authentication failed: the proof does not match this agent's token"));
  }
  if (!state_->nonces().remember(client_nonce)) {
    spdlog::warn("connection from {}: replayed client nonce refused", peer_);
    return send_and_close(make_error(message, "authentication refused: this client nonce was used before (replay)"));
  }
  authenticated_ = true;
  release_place();
  auth_timer_.cancel();
  spdlog::debug("client {} authenticated", peer_);
  Json reply = make_reply(message, "welcome");
  reply["proof"] = agent_proof(token, nonce_, client_nonce);
  send(reply);
}

void Session::handle_upload_begin(const Json& message) {
  check_message_keys(message, {"sha256", "size"});
  const std::string sha256 = message_sha256(message);
  const auto size = message.find("size");
  if (size == message.end() || !size->is_number_unsigned()) {
    throw ProtocolError("upload_begin needs a non-negative integer \"size\"");
  }
  const uint64_t bytes = size->get<uint64_t>();
  const uint64_t cap = state_->settings().max_upload_bytes;
  if (bytes > cap) throw ProtocolError(fmt::format("upload of {} bytes is over this agent's cap of {} bytes", bytes, cap));
  if (upload_) throw ProtocolError(fmt::format("an upload of {} is already in progress", upload_->sha256));
  auto upload = std::make_unique<Upload>();
  upload->sha256 = sha256;
  upload->size = bytes;
  // Named after this agent's pid: the next agent on this folder removes what a killed one left, not a live upload.
  upload->temp = state_->models_dir() / fmt::format(".upload-{}-{}.part", getpid(), make_nonce().substr(0, 16));
  upload->out.open(upload->temp, std::ios::binary | std::ios::trunc);
  check(upload->out.good(), "cannot create '{}' on the agent", upload->temp.string());
  upload_ = std::move(upload);
  send(make_reply(message, "ready"));
}

void Session::handle_chunk(const std::string& bytes) {
  // A failure here closes the connection: the client is streaming chunks without waiting for replies.
  if (!upload_) return send_and_close(make_error(nullptr, "chunk frame without upload_begin"));
  if (upload_->received + bytes.size() > upload_->size) {
    const std::string text =
        fmt::format("upload of {} is longer than the declared {} bytes; nothing stored", upload_->sha256, upload_->size);
    upload_.reset();
    return send_and_close(make_error(nullptr, text));
  }
  upload_->out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!upload_->out) {
    const std::string text = fmt::format("cannot write '{}' on the agent (disk full?)", upload_->temp.string());
    upload_.reset();
    return send_and_close(make_error(nullptr, text));
  }
  upload_->received += bytes.size();
}

void Session::handle_upload_end(const Json& message) {
  check_message_keys(message, {});
  if (!upload_) throw ProtocolError("upload_end without upload_begin");
  std::unique_ptr<Upload> upload = std::move(upload_);
  if (upload->received != upload->size) {
    throw ProtocolError(fmt::format("upload of {} ended after {} of {} bytes; nothing stored", upload->sha256,
                                    upload->received, upload->size));
  }
  upload->out.close();
  check(!upload->out.fail(), "cannot write '{}' on the agent (disk full?)", upload->temp.string());
  const std::string actual = sha256_file(upload->temp);
  if (actual != upload->sha256) {
    throw ProtocolError(fmt::format("sha256 mismatch: declared {}, received bytes hash to {}; nothing stored",
                                    upload->sha256, actual));
  }
  std::error_code ec;
  std::filesystem::rename(upload->temp, state_->model_path(upload->sha256), ec);
  check(!ec, "cannot store '{}' on the agent: {}", state_->model_path(upload->sha256).string(), ec.message());
  upload->kept = true;
  spdlog::info("stored model {} ({} bytes) from {}", upload->sha256, upload->size, peer_);
  Json reply = make_reply(message, "stored");
  reply["sha256"] = upload->sha256;
  reply["size"] = upload->size;
  send(reply);
}

void Session::handle_has(const Json& message) {
  check_message_keys(message, {"sha256"});
  const std::string sha256 = message_sha256(message);
  std::error_code ec;
  const auto path = state_->model_path(sha256);
  const bool present = std::filesystem::is_regular_file(path, ec);
  Json reply = make_reply(message, "have");
  reply["sha256"] = sha256;
  reply["present"] = present;
  reply["size"] = present ? static_cast<uint64_t>(std::filesystem::file_size(path, ec)) : 0;
  send(reply);
}

void Session::handle_benchmark(const Json& message) {
  check_message_keys(message, {"sha256", "request", "timeout_seconds"});
  const std::string sha256 = message_sha256(message);
  BenchJob job;
  job.model = state_->model_path(sha256);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(job.model, ec)) {
    throw ProtocolError(fmt::format("no model {} on this agent; upload it first", sha256));
  }
  job.request = message.value("request", Json::object());
  if (!job.request.is_object()) throw ProtocolError("benchmark \"request\" must be a JSON object");
  if (message.contains("timeout_seconds")) {
    const Json& timeout = message.at("timeout_seconds");
    const double cap = state_->settings().max_benchmark_seconds;
    if (!timeout.is_number() || !(timeout.get<double>() > 0) || timeout.get<double>() > cap) {
      throw ProtocolError(fmt::format("benchmark timeout_seconds {} is not in (0, {}]", timeout.dump(), cap));
    }
    job.timeout_seconds = timeout.get<double>();
  }
  auto self = shared_from_this();
  state_->enqueue_benchmark(this, std::move(job), [self, message, sha256](BenchOutcome outcome) {
    // Called on the benchmark thread: hop back onto this connection's strand.
    net::post(self->stream_.get_executor(), [self, message, sha256, outcome = std::move(outcome)] {
      self->on_benchmark_done(message, sha256, outcome);
    });
  });
}

void Session::on_benchmark_done(const Json& request, const std::string& sha256, const BenchOutcome& outcome) {
  if (!outcome.ok) return send(make_error(request, fmt::format("benchmark of {} failed: {}", sha256, outcome.error)));
  Json reply = make_reply(request, "result");
  reply["sha256"] = sha256;
  reply["result"] = outcome.result;
  send(reply);
}

void Session::send(const Json& message) {
  if (closed_ || closing_) return;
  std::string frame;
  try {
    // A reply longer than a control frame (every timed run of a fast model) goes out in continuation frames.
    frame = encode_control_message(message.dump(), state_->settings().limits);
  } catch (const ProtocolError& e) {
    frame = encode_frame(FrameType::Control, make_error(message, std::string("reply too large: ") + e.what()).dump(),
                         state_->settings().limits);
  }
  outbox_.push_back(std::move(frame));
  if (outbox_.size() == 1) write_next();
}

void Session::send_and_close(const Json& message) {
  send(message);
  closing_ = true;
  if (outbox_.empty()) linger();
}

void Session::write_next() {
  if (outbox_.empty()) {
    if (closing_) linger();
    return;
  }
  net::async_write(stream_, net::buffer(outbox_.front()),
                   [self = shared_from_this()](error_code ec, size_t) { self->on_write(ec); });
}

void Session::on_write(error_code ec) {
  if (ec) return fail(ec, "write");
  outbox_.pop_front();
  write_next();
}

void Session::linger() {
  // Closing a socket with unread input makes the kernel send a reset, which can destroy the error message just
  // written before the peer reads it. So: end our side, read and drop what still comes for a short while, close.
  if (closed_ || lingering_) return;
  lingering_ = true;
  error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  auth_timer_.expires_after(std::chrono::seconds(2));
  auth_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec) self->close();
  });
  if (!reading_) discard();
}

void Session::discard() {
  if (closed_ || !lingering_) return;
  payload_.resize(64 * 1024);
  reading_ = true;
  // The raw socket, TLS or not: what comes now is dropped unread.
  stream_.socket().async_read_some(net::buffer(payload_), [self = shared_from_this()](error_code ec, size_t) {
    self->reading_ = false;
    if (ec) return self->close();
    self->discard();
  });
}

void Session::fail(error_code ec, const char* step) {
  if (closed_ || ec == net::error::operation_aborted) return;
  if (ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
      ec == net::ssl::error::stream_truncated) {
    spdlog::debug("connection from {} ended ({})", peer_, step);
  } else if (ec.category() == net::error::get_ssl_category()) {
    spdlog::warn("connection from {}: {}: {} (TLS records changed on the way?); closed", peer_, step, ec.message());
  } else {
    spdlog::warn("connection from {}: {}: {}", peer_, step, ec.message());
  }
  close();
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  release_place();
  // Nobody will read the results of this connection's waiting benchmarks.
  if (const size_t dropped = state_->drop_benchmarks_of(this); dropped > 0) {
    spdlog::info("connection from {} closed: {} waiting benchmark(s) dropped", peer_, dropped);
  }
  upload_.reset();
  auth_timer_.cancel();
  error_code ignored;  // queued replies stay alive until their write handlers have run
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

}  // namespace edgesweep
