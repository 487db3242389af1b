// TLS 1.3 between an agent and its clients (Asio's SSL stream over OpenSSL), with the peer pinned one of two ways:
//  - an external pre-shared key derived from the shared token (HKDF-SHA256), always combined with an ephemeral
//    key exchange (psk_dhe_ke), so a token that leaks later does not open sessions recorded before;
//  - the agent's certificate, pinned in the client's configuration by the SHA-256 fingerprint of its DER form.
// The HMAC handshake of auth.h still runs inside the encrypted stream, as the authorisation step.
//
// Before anything else, on every connection, the agent sends an 8-byte preamble in the clear: "ESWAG", the
// protocol version, the transport that follows ('T' TLS, 'P' plaintext, 'R' one plaintext error frame, then the
// agent closes) and a newline. The client never takes the transport from it: it only lets the client say clearly
// that the two sides are configured differently. A client with a token or a fingerprint insists on TLS; a client
// with neither speaks plaintext, and only to a loopback address.
#pragma once

#include <array>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/ssl/context.hpp>

namespace edgesweep {

enum class AgentTransport : char { Plaintext = 'P', Tls = 'T', Refused = 'R' };

constexpr size_t agent_preamble_bytes = 8;
using AgentPreamble = std::array<unsigned char, agent_preamble_bytes>;

/// The preamble an agent of this protocol version sends for `transport`.
AgentPreamble encode_agent_preamble(AgentTransport transport);

/// Reads a preamble; throws ProtocolError when the bytes are not an agent's preamble (another service on the
/// port), or carry another protocol version or an unknown transport.
AgentTransport decode_agent_preamble(const AgentPreamble& bytes);

/// The 32-byte TLS pre-shared key of a token: HKDF-SHA256 with a fixed salt and label.
std::string tls_psk_from_token(std::string_view token);

/// "sha256:" and the 64 lower-case hex digits of the SHA-256 of a certificate's DER form.
std::string certificate_fingerprint(const std::filesystem::path& pem_file);

/// A TLS context with what its callbacks need.
class TlsContext {
 public:
  virtual ~TlsContext() = default;
  boost::asio::ssl::context& context() { return context_; }
  /// The pre-shared key in use (empty: none).
  const std::string& psk() const { return psk_; }
  /// The fingerprint ("sha256:...") of the certificate this side presents, as loaded; empty without one.
  std::string certificate_fingerprint() const;

 protected:
  explicit TlsContext(boost::asio::ssl::context::method method);
  boost::asio::ssl::context context_;
  std::string psk_;
};

/// The agent's side: TLS 1.3 only; accepts the PSK of `token` (when not empty) and presents the certificate in
/// `cert_file` with the key in `key_file` (when given). Throws InputError naming the file that cannot be used.
std::shared_ptr<TlsContext> make_agent_tls_context(const std::string& token, const std::filesystem::path& cert_file,
                                                   const std::filesystem::path& key_file);

/// The client's side: TLS 1.3 only. With a `fingerprint`, the agent must present the certificate it names and no
/// PSK is offered; otherwise the PSK of `token` is offered and a handshake that did not use it fails.
class ClientTlsContext : public TlsContext {
 public:
  ClientTlsContext(const std::string& token, const std::string& fingerprint);
  /// The fingerprint of the certificate the agent presented in the last handshake (empty when none).
  const std::string& presented_fingerprint() const { return presented_; }
  bool pins_certificate() const { return !fingerprint_.empty(); }

 private:
  std::string fingerprint_;
  std::string presented_;
};

}  // namespace edgesweep
