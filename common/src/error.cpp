// Adding context to an exception as it passes a layer.
#include "edgesweep/common/error.h"

namespace edgesweep {

TrialTimeout::TrialTimeout(double limit_seconds) : Error(fmt::format("timeout after {:g} s", limit_seconds)) {}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const TrialTimeout&) {
    throw;
  } catch (const InputError& e) {
    throw InputError(context + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace edgesweep
