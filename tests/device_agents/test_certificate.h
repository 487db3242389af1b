// A self-signed certificate and its key as PEM files, for tests of agents that present one.
#pragma once

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../workers/temp_folder.h"

namespace edgesweep {

struct Certificate {
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// A self-signed P-256 certificate valid for an hour, written as PEM files named after `name`.
inline Certificate make_certificate(const TempFolder& folder, const std::string& name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* certificate = X509_new();
  if (key == nullptr || certificate == nullptr) throw std::runtime_error("cannot make a test key");
  X509_set_version(certificate, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate), 1);
  X509_gmtime_adj(X509_getm_notBefore(certificate), -60);
  X509_gmtime_adj(X509_getm_notAfter(certificate), 3600);
  X509_set_pubkey(certificate, key);
  X509_NAME* subject = X509_get_subject_name(certificate);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(name.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(certificate, subject);
  if (X509_sign(certificate, key, EVP_sha256()) == 0) throw std::runtime_error("cannot sign a test certificate");
  Certificate files{folder / (name + ".crt"), folder / (name + ".key")};
  FILE* out = std::fopen(files.cert.c_str(), "w");
  PEM_write_X509(out, certificate);
  std::fclose(out);
  out = std::fopen(files.key.c_str(), "w");
  PEM_write_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(out);
  chmod(files.key.c_str(), 0600);
  X509_free(certificate);
  EVP_PKEY_free(key);
  return files;
}

}  // namespace edgesweep
