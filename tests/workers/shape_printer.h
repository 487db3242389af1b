// Lets GoogleTest print IR shapes in failure messages as "[CxHxW]" or "[N]".
#pragma once

#include <ostream>

#include "edgesweep/workers/graph.h"

namespace edgesweep {

inline void PrintTo(const Shape& shape, std::ostream* out) { *out << shape.to_string(); }

}  // namespace edgesweep
