// Writing whole files so that a failure (a full disk, a read-only folder) is an error naming the file and never a
// half-written file under the final name.
#pragma once

#include <filesystem>
#include <string_view>

namespace edgesweep {

/// Writes `bytes` to `path` through a temporary file of its own beside it (flushed to the disk), then renames it over
/// `path` (mode 0644).
/// Throws Error naming the file and the system's reason (e.g. "No space left on device"); the temporary file is
/// removed and `path` is left as it was.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace edgesweep
