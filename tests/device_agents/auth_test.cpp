// Authentication pieces checked against their definitions: the HMAC inputs, constant-time comparison, nonces, the
// replay registry and token files.
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fstream>
#include <set>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "edgesweep/common/error.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/frame.h"
#include "edgesweep/device_agents/messages.h"

namespace edgesweep {
namespace {

std::string hex_to_bytes(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i < hex.size(); i += 2) bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

std::string reference_hmac(const std::string& key, const std::string& message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), digest, &length);
  std::string hex;
  char pair[3];
  for (unsigned int i = 0; i < length; ++i) {
    snprintf(pair, sizeof pair, "%02x", digest[i]);
    hex += pair;
  }
  return hex;
}

void write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
  std::ofstream(path, std::ios::binary) << text;
  ASSERT_EQ(chmod(path.c_str(), mode), 0);
}

TEST(Auth, ProofsAreHmacOfTheRawNoncesAndTheLabel) {
  const std::string agent = std::string(62, 'a') + "01";
  const std::string client = "ff" + std::string(62, '3');
  const std::string token = "s3cret token";
  EXPECT_EQ(client_proof(token, agent, client),
            reference_hmac(token, hex_to_bytes(agent) + hex_to_bytes(client) + "edgesweep-v1"));
  EXPECT_EQ(agent_proof(token, agent, client),
            reference_hmac(token, hex_to_bytes(client) + hex_to_bytes(agent) + "edgesweep-v1-agent"));
  // A client's proof cannot be reflected back as the agent's, and the token matters.
  EXPECT_NE(client_proof(token, agent, client), agent_proof(token, agent, client));
  EXPECT_NE(client_proof(token, agent, client), client_proof("other", agent, client));
  EXPECT_EQ(client_proof(token, agent, client).size(), 64u);
}

TEST(Auth, ProofComparison) {
  EXPECT_TRUE(proofs_equal("abcd", "abcd"));
  EXPECT_FALSE(proofs_equal("abcd", "abce"));
  EXPECT_FALSE(proofs_equal("abcd", "abc"));
  EXPECT_FALSE(proofs_equal("abcd", ""));
}

TEST(Auth, NoncesAreFreshHexDigests) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string nonce = make_nonce();
    EXPECT_TRUE(is_hex_digest(nonce)) << nonce;
    EXPECT_TRUE(seen.insert(nonce).second);
  }
}

TEST(Auth, HexDigestRefusesPathsAndOddText) {
  EXPECT_TRUE(is_hex_digest(std::string(64, '0')));
  EXPECT_FALSE(is_hex_digest(std::string(63, '0')));
  EXPECT_FALSE(is_hex_digest(std::string(65, '0')));
  EXPECT_FALSE(is_hex_digest(std::string(64, 'A')));
  EXPECT_FALSE(is_hex_digest("../../../etc/passwd"));
  EXPECT_FALSE(is_hex_digest("../" + std::string(61, '0')));
  EXPECT_FALSE(is_hex_digest(std::string(60, '0') + ".pt/"));
  EXPECT_FALSE(is_hex_digest(""));
}

TEST(Auth, NonceRegistryRefusesRepeatsAndForgetsTheOldest) {
  NonceRegistry registry(3);
  EXPECT_TRUE(registry.remember("a"));
  EXPECT_FALSE(registry.remember("a"));
  EXPECT_TRUE(registry.remember("b"));
  EXPECT_TRUE(registry.remember("c"));
  EXPECT_TRUE(registry.remember("d"));  // "a" is forgotten now
  EXPECT_FALSE(registry.remember("d"));
  EXPECT_TRUE(registry.remember("a"));
}

TEST(Auth, TokenFiles) {
  TempFolder folder("token");
  write_file(folder / "good", "abc123\n", 0600);
  EXPECT_EQ(read_token_file(folder / "good"), "abc123");
  write_file(folder / "empty", "\n \n", 0600);
  expect_error<InputError>([&] { read_token_file(folder / "empty"); }, {"token file", "empty", "empty'"});
  write_file(folder / "open", "abc123", 0644);
  expect_error<InputError>([&] { read_token_file(folder / "open"); }, {"open'", "other users", "chmod 600"});
  write_file(folder / "group", "abc123", 0640);
  expect_error<InputError>([&] { read_token_file(folder / "group"); }, {"group'", "its group", "mode 640"});
  write_file(folder / "writable", "abc123", 0602);
  expect_error<InputError>([&] { read_token_file(folder / "writable"); }, {"writable'", "other users", "mode 602"});
  write_file(folder / "read-only", "abc123", 0400);
  EXPECT_EQ(read_token_file(folder / "read-only"), "abc123");
  expect_error<InputError>([&] { read_token_file(folder / "missing"); }, {"missing'"});
  expect_error<InputError>([&] { read_token_file(folder.path()); }, {"not a regular file"});
}

TEST(Messages, ControlMessagesAndTheirChecks) {
  EXPECT_EQ(parse_control_message(R"({"type":"ping","id":3})").at("id"), 3);
  expect_error<ProtocolError>([] { parse_control_message("{nope"); }, {"not valid JSON"});
  expect_error<ProtocolError>([] { parse_control_message("[1,2]"); }, {"not a JSON object"});
  expect_error<ProtocolError>([] { parse_control_message(R"({"kind":"ping"})"); }, {"\"type\""});
  const Json upload = {{"type", "upload_begin"}, {"sha256", std::string(64, 'a')}, {"size", 3}, {"name", "../x.pt"}};
  expect_error<ProtocolError>([&] { check_message_keys(upload, {"sha256", "size"}); }, {"unknown key 'name'"});
  EXPECT_EQ(message_sha256(upload), std::string(64, 'a'));
  const Json traversal = {{"type", "has"}, {"sha256", "../../etc/passwd"}};
  expect_error<ProtocolError>([&] { message_sha256(traversal); }, {"../../etc/passwd", "paths are refused"});
  EXPECT_EQ(make_error(Json{{"type", "has"}, {"id", 9}}, "no").at("id"), 9);
}

}  // namespace
}  // namespace edgesweep
