// What every edgesweep fuzz harness shares: bad input must end in edgesweep's own error types (a clear message),
// never in a crash, a sanitizer report or a foreign exception, which abort so that libFuzzer keeps the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "edgesweep/common/error.h"

namespace edgesweep::fuzz {

/// Runs `body`; edgesweep::Error (InputError, ProtocolError, ...) is an accepted outcome, anything else aborts.
template <typename Body>
void expect_clean(Body&& body) {
  try {
    body();
  } catch (const Error&) {
    // A refusal with a message: what bad input should get.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "foreign exception escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace edgesweep::fuzz
