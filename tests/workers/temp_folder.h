// A fresh temporary folder for one test, removed with everything in it when the test ends.
#pragma once

#include <string>

#include "edgesweep/common/process.h"

namespace edgesweep {

/// An empty folder under the system's temporary folder, named edgesweep-<purpose>-XXXXXX.
class TempFolder : public TemporaryFolder {
 public:
  explicit TempFolder(const std::string& purpose) : TemporaryFolder("edgesweep-" + purpose + "-") {}
};

}  // namespace edgesweep
