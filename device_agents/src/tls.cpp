// TLS contexts of agents and clients: TLS 1.3 only, an external PSK from the token through OpenSSL's TLS 1.3 PSK
// session callbacks, or a certificate pinned by fingerprint through a verify callback.
#include "edgesweep/device_agents/tls.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/frame.h"

namespace edgesweep {

namespace ssl = boost::asio::ssl;

namespace {

constexpr std::array<unsigned char, 5> preamble_magic{'E', 'S', 'W', 'A', 'G'};
/// The PSK identity both sides use: the key itself is what matters.
constexpr std::string_view psk_identity = "edgesweep-agent-psk-v1";
/// TLS_AES_128_GCM_SHA256: the cipher (and so the hash) an external PSK is bound to.
constexpr std::array<unsigned char, 2> psk_cipher_id{0x13, 0x01};

std::string openssl_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> buffer{};
    ERR_error_string_n(code, buffer.data(), buffer.size());
    if (!text.empty()) text += "; ";
    text += buffer.data();
  }
  return text.empty() ? std::string("no detail from OpenSSL") : text;
}

/// The fingerprint of a certificate: the SHA-256 of its DER form; empty when it cannot be made. Never throws:
/// called from OpenSSL.
std::string fingerprint_of(X509* certificate) noexcept {
  try {
    const int length = i2d_X509(certificate, nullptr);
    if (length <= 0) return {};
    std::string der(static_cast<size_t>(length), '\0');
    auto* out = reinterpret_cast<unsigned char*>(der.data());
    if (i2d_X509(certificate, &out) != length) return {};
    return "sha256:" + sha256_hex(der);
  } catch (...) {
    return {};
  }
}

/// A session that stands for the external PSK, bound to TLS 1.3 and `cipher`.
SSL_SESSION* psk_session(const std::string& psk, const SSL_CIPHER* cipher) {
  SSL_SESSION* session = SSL_SESSION_new();
  if (session == nullptr) return nullptr;
  if (SSL_SESSION_set1_master_key(session, reinterpret_cast<const unsigned char*>(psk.data()), psk.size()) != 1 ||
      SSL_SESSION_set_cipher(session, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(session);
    return nullptr;
  }
  return session;
}

/// Where a context keeps a pointer to its TlsContext (Asio keeps its verify callback in the context's app data).
int context_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

TlsContext* context_of(SSL* ssl) {
  return static_cast<TlsContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
}

/// Client: offers the PSK (OpenSSL may ask again after a hello retry, with the hash it needs).
int use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* id_length, SSL_SESSION** session) {
  *session = nullptr;
  *id = nullptr;
  *id_length = 0;
  const TlsContext* context = context_of(ssl);
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, psk_cipher_id.data());
  if (context == nullptr || context->psk().empty() || cipher == nullptr) return 0;
  if (md != nullptr && md != SSL_CIPHER_get_handshake_digest(cipher)) return 1;
  *session = psk_session(context->psk(), cipher);
  if (*session == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(psk_identity.data());
  *id_length = psk_identity.size();
  return 1;
}

/// Agent: finds the PSK a client names; an unknown identity leaves the handshake to the certificate, if any.
int find_psk(SSL* ssl, const unsigned char* id, size_t id_length, SSL_SESSION** session) {
  *session = nullptr;
  const TlsContext* context = context_of(ssl);
  if (context == nullptr || context->psk().empty()) return 1;
  if (id_length != psk_identity.size() || std::memcmp(id, psk_identity.data(), id_length) != 0) return 1;
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, psk_cipher_id.data());
  if (cipher == nullptr) return 0;
  *session = psk_session(context->psk(), cipher);
  return *session == nullptr ? 0 : 1;
}

class AgentTlsContext : public TlsContext {
 public:
  AgentTlsContext(const std::string& token, const std::filesystem::path& cert_file,
                  const std::filesystem::path& key_file)
      : TlsContext(ssl::context::tls_server) {
    SSL_CTX* native = context_.native_handle();
    if (!token.empty()) {
      psk_ = tls_psk_from_token(token);
      SSL_CTX_set_psk_find_session_callback(native, find_psk);
    }
    check_input(cert_file.empty() == key_file.empty(), "a TLS certificate needs its key and a key its certificate "
                                                       "(got only {})",
                cert_file.empty() ? "a key" : "a certificate");
    if (!cert_file.empty()) {
      check_input(SSL_CTX_use_certificate_chain_file(native, cert_file.c_str()) == 1,
                  "cannot use '{}' as the agent's TLS certificate (PEM): {}", cert_file.string(), openssl_errors());
      check_private_file(key_file, "TLS key file");
      std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(key_file.c_str(), "r"), std::fclose);
      check_input(file != nullptr, "cannot read the agent's TLS key '{}': {}", key_file.string(), std::strerror(errno));
      std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
          PEM_read_PrivateKey(file.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
      check_input(key != nullptr, "'{}' holds no PEM private key (an encrypted key is not supported): {}",
                  key_file.string(), openssl_errors());
      check_input(SSL_CTX_use_PrivateKey(native, key.get()) == 1 && SSL_CTX_check_private_key(native) == 1,
                  "the TLS key '{}' does not belong to the certificate '{}'", key_file.string(), cert_file.string());
      ERR_clear_error();
    }
    check_input(!psk_.empty() || !cert_file.empty(), "TLS needs a token or a certificate");
  }
};

}  // namespace

std::string TlsContext::certificate_fingerprint() const {
  X509* certificate = SSL_CTX_get0_certificate(const_cast<ssl::context&>(context_).native_handle());
  return certificate == nullptr ? std::string() : fingerprint_of(certificate);
}

TlsContext::TlsContext(ssl::context::method method) : context_(method) {
  SSL_CTX* native = context_.native_handle();
  check(SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) == 1,
        "OpenSSL refuses TLS 1.3: {}", openssl_errors());
  // Suites on SHA-256 only: an external PSK is bound to one hash, and a suite on another would pass it over.
  check(SSL_CTX_set_ciphersuites(native, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256") == 1,
        "OpenSSL refuses the TLS 1.3 suites: {}", openssl_errors());
  // No resumption tickets: every connection does a full handshake with a fresh ephemeral key.
  SSL_CTX_set_num_tickets(native, 0);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  check(context_index() >= 0 && SSL_CTX_set_ex_data(native, context_index(), this) == 1,
        "cannot attach data to a TLS context: {}", openssl_errors());
}

AgentPreamble encode_agent_preamble(AgentTransport transport) {
  AgentPreamble bytes{};
  std::copy(preamble_magic.begin(), preamble_magic.end(), bytes.begin());
  bytes[5] = static_cast<unsigned char>(agent_protocol_version);
  bytes[6] = static_cast<unsigned char>(transport);
  bytes[7] = '\n';
  return bytes;
}

AgentTransport decode_agent_preamble(const AgentPreamble& bytes) {
  if (!std::equal(preamble_magic.begin(), preamble_magic.end(), bytes.begin()) || bytes[7] != '\n') {
    throw ProtocolError("not an edgesweep agent: its first bytes are not the agent preamble (another service on "
                        "the port, or an agent older than protocol 3)");
  }
  if (bytes[5] != agent_protocol_version) {
    throw ProtocolError(fmt::format("the agent speaks protocol {}, this client speaks {}", static_cast<int>(bytes[5]),
                                    agent_protocol_version));
  }
  const auto transport = static_cast<AgentTransport>(bytes[6]);
  if (transport != AgentTransport::Plaintext && transport != AgentTransport::Tls &&
      transport != AgentTransport::Refused) {
    throw ProtocolError(fmt::format("the agent announced an unknown transport (byte {})", static_cast<int>(bytes[6])));
  }
  return transport;
}

std::string tls_psk_from_token(std::string_view token) {
  check(!token.empty(), "a TLS pre-shared key needs a token");
  static constexpr std::string_view salt = "edgesweep agent TLS 1.3 PSK";
  static constexpr std::string_view info = "psk v1";
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> kdf(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                  EVP_PKEY_CTX_free);
  std::string key(32, '\0');
  size_t length = key.size();
  const bool ok =
      kdf && EVP_PKEY_derive_init(kdf.get()) == 1 && EVP_PKEY_CTX_set_hkdf_md(kdf.get(), EVP_sha256()) == 1 &&
      EVP_PKEY_CTX_set1_hkdf_salt(kdf.get(), reinterpret_cast<const unsigned char*>(salt.data()),
                                  static_cast<int>(salt.size())) == 1 &&
      EVP_PKEY_CTX_set1_hkdf_key(kdf.get(), reinterpret_cast<const unsigned char*>(token.data()),
                                 static_cast<int>(token.size())) == 1 &&
      EVP_PKEY_CTX_add1_hkdf_info(kdf.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) == 1 &&
      EVP_PKEY_derive(kdf.get(), reinterpret_cast<unsigned char*>(key.data()), &length) == 1 && length == key.size();
  check(ok, "HKDF-SHA256 failed: {}", openssl_errors());
  return key;
}

std::string certificate_fingerprint(const std::filesystem::path& pem_file) {
  std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(pem_file.c_str(), "r"), std::fclose);
  check_input(file != nullptr, "cannot read the certificate '{}': {}", pem_file.string(), std::strerror(errno));
  std::unique_ptr<X509, decltype(&X509_free)> certificate(PEM_read_X509(file.get(), nullptr, nullptr, nullptr),
                                                          X509_free);
  check_input(certificate != nullptr, "'{}' holds no PEM certificate: {}", pem_file.string(), openssl_errors());
  std::string fingerprint = fingerprint_of(certificate.get());
  check(!fingerprint.empty(), "cannot hash the certificate '{}': {}", pem_file.string(), openssl_errors());
  return fingerprint;
}

std::shared_ptr<TlsContext> make_agent_tls_context(const std::string& token, const std::filesystem::path& cert_file,
                                                   const std::filesystem::path& key_file) {
  return std::make_shared<AgentTlsContext>(token, cert_file, key_file);
}

ClientTlsContext::ClientTlsContext(const std::string& token, const std::string& fingerprint)
    : TlsContext(ssl::context::tls_client),
      fingerprint_(fingerprint.empty() ? std::string() : normalise_fingerprint(fingerprint)) {
  SSL_CTX* native = context_.native_handle();
  context_.set_verify_mode(ssl::verify_peer);
  if (!fingerprint_.empty()) {
    // The certificate is trusted because it is the one pinned, not because of a chain: only the leaf counts.
    context_.set_verify_callback([this](bool, ssl::verify_context& verify) {
      X509_STORE_CTX* store = verify.native_handle();
      if (X509_STORE_CTX_get_error_depth(store) != 0) return true;
      X509* leaf = X509_STORE_CTX_get_current_cert(store);
      presented_ = leaf == nullptr ? std::string() : fingerprint_of(leaf);
      return !presented_.empty() && presented_ == fingerprint_;
    });
    return;
  }
  check_input(!token.empty(), "TLS to an agent needs its token or its certificate's fingerprint");
  psk_ = tls_psk_from_token(token);
  SSL_CTX_set_psk_use_session_callback(native, use_psk);
  // Only the PSK may authenticate the agent: a certificate instead of it is refused.
  context_.set_verify_callback([this](bool, ssl::verify_context& verify) {
    X509* presented = X509_STORE_CTX_get_current_cert(verify.native_handle());
    if (presented != nullptr) presented_ = fingerprint_of(presented);
    return false;
  });
}

}  // namespace edgesweep
