// TLS between agents and clients: the preamble, the token's key, certificates pinned by fingerprint, and what a
// party on the path sees and can change. The path is a relay in this process that records every byte both ways
// and can flip one; the same recording of a plaintext agent shows that the recording would see the secrets.
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "test_certificate.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/client.h"
#include "edgesweep/device_agents/tls.h"

namespace edgesweep {
namespace {

namespace net = boost::asio;
using net::ip::tcp;

/// Forwards one connection to `target`, recording what passes each way; can flip a bit of the next bytes from the
/// client once asked.
class Relay {
 public:
  explicit Relay(uint16_t target_port) : acceptor_(io_, {net::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this, target_port] {
      try {
        acceptor_.accept(client_);
        accepted_ = true;
        agent_.connect({net::ip::make_address("127.0.0.1"), target_port});
      } catch (const std::exception&) {
        return;
      }
      std::thread back([this] { pump(agent_, client_, from_agent_, false); });
      pump(client_, agent_, from_client_, true);
      back.join();
    });
  }
  ~Relay() {
    boost::system::error_code ignored;
    if (!accepted_) {
      // A test that failed before connecting: a connection of our own ends the blocked accept.
      net::io_context io;
      tcp::socket poke(io);
      poke.connect(acceptor_.local_endpoint(), ignored);
    }
    client_.shutdown(tcp::socket::shutdown_both, ignored);
    agent_.shutdown(tcp::socket::shutdown_both, ignored);
    thread_.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }
  /// Everything that went from the client to the agent, and back.
  std::string from_client() {
    std::lock_guard lock(mutex_);
    return from_client_;
  }
  std::string from_agent() {
    std::lock_guard lock(mutex_);
    return from_agent_;
  }
  /// Flips one bit in the next bytes the client sends.
  void tamper() { tamper_ = true; }

 private:
  void pump(tcp::socket& from, tcp::socket& to, std::string& record, bool from_client) {
    std::array<char, 65536> buffer{};
    boost::system::error_code ec;
    for (;;) {
      const size_t n = from.read_some(net::buffer(buffer), ec);
      if (ec) break;
      if (from_client && tamper_.exchange(false)) buffer[n - 1] ^= 0x20;
      {
        std::lock_guard lock(mutex_);
        record.append(buffer.data(), n);
      }
      net::write(to, net::buffer(buffer.data(), n), ec);
      if (ec) break;
    }
    to.shutdown(tcp::socket::shutdown_send, ec);
  }

  net::io_context io_;
  tcp::acceptor acceptor_;
  tcp::socket client_{io_};
  tcp::socket agent_{io_};
  std::mutex mutex_;
  std::string from_client_;
  std::string from_agent_;
  std::atomic<bool> tamper_{false};
  std::atomic<bool> accepted_{false};
  std::thread thread_;
};

class TlsTest : public ::testing::Test {
 protected:
  /// Starts an agent on 127.0.0.1 with the token (when `with_token`) and the certificate (when given).
  void start(bool with_token, const Certificate* certificate = nullptr) {
    AgentOptions options;
    options.listen = "127.0.0.1:0";
    if (with_token) {
      std::ofstream(folder_ / "token") << token_ << "\n";
      chmod((folder_ / "token").c_str(), 0600);
      options.token_file = folder_ / "token";
    }
    if (certificate != nullptr) {
      options.tls_cert_file = certificate->cert;
      options.tls_key_file = certificate->key;
    }
    options.data_dir = folder_ / "data";
    options.hardware = Json{{"cpu_model", "test cpu"}};
    options.handle_signals = false;
    options.benchmark = [](const BenchJob& job) {
      BenchOutcome outcome;
      outcome.ok = true;
      outcome.result = Json{{"model_bytes", std::filesystem::file_size(job.model)}};
      return outcome;
    };
    agent_ = std::make_unique<Agent>(options);
    address_ = agent_->address();
    thread_ = std::thread([this] { agent_->run(); });
  }

  void TearDown() override {
    if (agent_) agent_->stop();
    if (thread_.joinable()) thread_.join();
  }

  AgentClientOptions options(const std::string& token, const std::string& fingerprint = "") const {
    AgentClientOptions o;
    o.address = address_;
    o.token = token;
    o.tls_fingerprint = fingerprint;
    o.connect_timeout_seconds = 10;
    o.io_timeout_seconds = 10;
    o.benchmark_timeout_seconds = 30;
    o.chunk_bytes = 4096;
    return o;
  }

  /// Options to reach the agent through `relay`.
  AgentClientOptions through(const Relay& relay, const std::string& token) const {
    AgentClientOptions o = options(token);
    o.address = relay.address();
    return o;
  }

  std::vector<std::string> stored_files() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(folder_ / "data" / "models")) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  TempFolder folder_{"tls"};
  std::string token_ = "a token for the TLS tests";
  std::unique_ptr<Agent> agent_;
  std::string address_;
  std::thread thread_;
};

/// A model whose bytes are easy to find in a recording.
const std::string secret_model = std::string(5000, 'm') + "THE-MODEL-BYTES-ON-THE-WIRE" + std::string(5000, 'n');

TEST(TlsParts, PreambleRoundTripsAndForeignBytesAreNamed) {
  for (AgentTransport transport : {AgentTransport::Plaintext, AgentTransport::Tls, AgentTransport::Refused}) {
    EXPECT_EQ(decode_agent_preamble(encode_agent_preamble(transport)), transport);
  }
  AgentPreamble http{'H', 'T', 'T', 'P', '/', '1', '.', '1'};
  expect_error<ProtocolError>([&] { decode_agent_preamble(http); }, {"not an edgesweep agent"});
  AgentPreamble old = encode_agent_preamble(AgentTransport::Tls);
  old[5] = 2;
  expect_error<ProtocolError>([&] { decode_agent_preamble(old); }, {"speaks protocol 2"});
  AgentPreamble unknown = encode_agent_preamble(AgentTransport::Tls);
  unknown[6] = 'X';
  expect_error<ProtocolError>([&] { decode_agent_preamble(unknown); }, {"unknown transport"});
}

TEST(TlsParts, TheKeyIsDerivedFromTheTokenAndDiffersPerToken) {
  const std::string key = tls_psk_from_token("token one");
  EXPECT_EQ(key.size(), 32u);
  EXPECT_EQ(key, tls_psk_from_token("token one"));
  EXPECT_NE(key, tls_psk_from_token("token two"));
  EXPECT_EQ(key.find("token one"), std::string::npos);
}

TEST_F(TlsTest, WithATokenNothingReadableCrossesThePath) {
  start(true);
  Relay relay(agent_->port());
  {
    AgentClient c(through(relay, token_));
    EXPECT_TRUE(c.encrypted());
    const std::string sha = c.upload_bytes(secret_model);
    EXPECT_EQ(c.benchmark(sha, Json::object()).at("model_bytes"), secret_model.size());
  }
  const std::string up = relay.from_client();
  const std::string down = relay.from_agent();
  EXPECT_GT(up.size(), secret_model.size());  // the model did cross, encrypted
  EXPECT_EQ(down.substr(0, 5), "ESWAG");      // only the preamble is in the clear
  for (const std::string& secret : {std::string("THE-MODEL-BYTES"), std::string("mmmmmmmmmmmmmmmm"),
                                    std::string("\"nonce\""), std::string("\"proof\""), std::string("test cpu"),
                                    std::string("model_bytes"), token_}) {
    EXPECT_EQ(up.find(secret), std::string::npos) << secret;
    EXPECT_EQ(down.find(secret), std::string::npos) << secret;
  }
}

TEST_F(TlsTest, WithoutATokenTheSameRecordingSeesEverything) {
  // The control: the relay does record what a plaintext loopback agent says.
  start(false);
  Relay relay(agent_->port());
  {
    AgentClient c(through(relay, ""));
    EXPECT_FALSE(c.encrypted());
    c.upload_bytes(secret_model);
  }
  EXPECT_NE(relay.from_client().find("THE-MODEL-BYTES"), std::string::npos);
  EXPECT_NE(relay.from_agent().find("test cpu"), std::string::npos);
}

TEST_F(TlsTest, AModelChangedOnThePathIsNeverStored) {
  start(true);
  Relay relay(agent_->port());
  AgentClient c(through(relay, token_));
  ASSERT_EQ(c.ping().at("type"), "pong");
  relay.tamper();
  // The agent's TLS layer finds the changed record and drops the connection: no reply, nothing stored.
  expect_error<Error>([&] { c.upload_bytes(secret_model); }, {relay.address()});
  EXPECT_TRUE(stored_files().empty());
  AgentClient direct(options(token_));
  EXPECT_FALSE(direct.has(sha256_hex(secret_model)));
  EXPECT_EQ(direct.ping().at("type"), "pong");
}

TEST_F(TlsTest, TransportsThatDoNotMatchAreNamed) {
  start(true);
  // A client without the token cannot speak to an agent with one, and is told why at once.
  expect_error<InputError>([&] { AgentClient c(options("")); }, {address_, "speaks TLS", "requires a token"});
  // Bytes that are not TLS after the preamble: the handshake fails and the agent serves on.
  {
    net::io_context io;
    tcp::socket socket(io);
    socket.connect({net::ip::make_address("127.0.0.1"), agent_->port()});
    AgentPreamble preamble{};
    net::read(socket, net::buffer(preamble));
    EXPECT_EQ(decode_agent_preamble(preamble), AgentTransport::Tls);
    net::write(socket, net::buffer(std::string("GET / HTTP/1.1\r\n\r\n")));
    std::array<char, 64> rest{};
    boost::system::error_code ec;
    socket.read_some(net::buffer(rest), ec);  // the agent closes (perhaps after an alert)
  }
  AgentClient c(options(token_));
  EXPECT_EQ(c.ping().at("type"), "pong");
}

TEST_F(TlsTest, ACertificatePinnedByItsFingerprint) {
  const Certificate certificate = make_certificate(folder_, "agent");
  const Certificate other = make_certificate(folder_, "other");
  start(true, &certificate);
  const std::string fingerprint = certificate_fingerprint(certificate.cert);
  EXPECT_EQ(agent_->certificate_fingerprint(), fingerprint);
  EXPECT_EQ(fingerprint.substr(0, 7), "sha256:");

  // Pinned (written the way `openssl x509 -fingerprint` prints it), and authorised by the token inside.
  std::string printed = "SHA256 Fingerprint=";
  for (size_t i = 7; i < fingerprint.size(); i += 2) {
    if (i > 7) printed += ':';
    printed += static_cast<char>(std::toupper(fingerprint[i]));
    printed += static_cast<char>(std::toupper(fingerprint[i + 1]));
  }
  AgentClient pinned(options(token_, printed));
  EXPECT_TRUE(pinned.encrypted());
  EXPECT_EQ(pinned.ping().at("type"), "pong");

  // Another certificate's fingerprint: refused, both fingerprints named.
  const std::string wrong = certificate_fingerprint(other.cert);
  expect_error<Error>([&] { AgentClient c(options(token_, wrong)); },
                      {address_, "presented the certificate " + fingerprint, "not the pinned " + wrong});
  // The token still authorises: a pinned certificate with another token is refused by the HMAC step.
  expect_error<AgentRefused>([&] { AgentClient c(options("not the token", fingerprint)); },
                             {address_, "authentication failed"});
  // The token's key works beside the certificate.
  AgentClient by_token(options(token_));
  EXPECT_EQ(by_token.ping().at("type"), "pong");
}

TEST_F(TlsTest, ALoopbackAgentWithOnlyACertificate) {
  const Certificate certificate = make_certificate(folder_, "agent");
  start(false, &certificate);
  AgentClient c(options("", certificate_fingerprint(certificate.cert)));
  EXPECT_TRUE(c.encrypted());
  EXPECT_FALSE(c.hello().at("auth").get<bool>());
  EXPECT_EQ(c.ping().at("type"), "pong");
  // A token's key is refused: this agent has none, and a certificate instead of it authenticates nothing.
  expect_error<Error>([&] { AgentClient t(options(token_)); },
                      {address_, "answered the token's key with a certificate (" +
                                     certificate_fingerprint(certificate.cert) + ") instead"});
}

TEST(TlsOptions, BadCertificatesAndFingerprintsAreNamed) {
  TempFolder folder("tls-options");
  const Certificate one = make_certificate(folder, "one");
  const Certificate two = make_certificate(folder, "two");
  AgentOptions options;
  options.listen = "127.0.0.1:0";
  options.data_dir = folder / "data";
  options.hardware = Json::object();
  options.handle_signals = false;
  options.benchmark = [](const BenchJob&) { return BenchOutcome{}; };
  options.tls_cert_file = one.cert;
  options.tls_key_file = two.key;
  expect_error<InputError>([&] { Agent agent(options); }, {two.key.string(), "does not belong", one.cert.string()});
  options.tls_key_file = one.key;
  chmod(one.key.c_str(), 0640);
  expect_error<InputError>([&] { Agent agent(options); }, {one.key.string(), "its group", "chmod 600"});
  chmod(one.key.c_str(), 0600);
  options.tls_key_file.clear();
  expect_error<InputError>([&] { Agent agent(options); }, {"needs its key"});
  options.tls_cert_file = folder / "missing.crt";
  options.tls_key_file = one.key;
  expect_error<InputError>([&] { Agent agent(options); }, {"missing.crt"});
  std::ofstream(folder / "garbage.crt") << "not a certificate\n";
  expect_error<InputError>([&] { certificate_fingerprint(folder / "garbage.crt"); }, {"garbage.crt", "no PEM"});

  EXPECT_EQ(normalise_fingerprint("sha256:" + std::string(64, 'A')), "sha256:" + std::string(64, 'a'));
  expect_error<InputError>([&] { normalise_fingerprint("sha256:abc"); }, {"sha256:abc", "3 hex digits"});
  expect_error<InputError>([&] { normalise_fingerprint("md5:" + std::string(32, '0')); }, {"md5:"});
}

TEST(TlsOptions, PlaintextOnlyToALoopbackAddress) {
  // A plaintext "agent" on this machine's first non-loopback IPv4 address: the client refuses it.
  ifaddrs* interfaces = nullptr;
  ASSERT_EQ(getifaddrs(&interfaces), 0);
  std::string host;
  for (ifaddrs* i = interfaces; i != nullptr && host.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto address = net::ip::make_address_v4(
        ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr));
    if (!address.is_loopback()) host = address.to_string();
  }
  freeifaddrs(interfaces);
  if (host.empty()) GTEST_SKIP() << "this machine has no non-loopback IPv4 address";
  net::io_context io;
  tcp::acceptor acceptor(io, {net::ip::make_address(host), 0});
  const std::string address = host + ":" + std::to_string(acceptor.local_endpoint().port());
  std::thread fake([&] {
    tcp::socket socket(io);
    acceptor.accept(socket);
    const AgentPreamble preamble = encode_agent_preamble(AgentTransport::Plaintext);
    boost::system::error_code ec;
    net::write(socket, net::buffer(preamble), ec);
    std::array<char, 64> rest{};
    socket.read_some(net::buffer(rest), ec);  // until the client hangs up
  });
  AgentClientOptions options;
  options.address = address;
  options.connect_timeout_seconds = 5;
  expect_error<Error>([&] { AgentClient c(options); }, {address, "plaintext", "only a loopback agent"});
  fake.join();
}

}  // namespace
}  // namespace edgesweep
