// Transfer learning: a baseline that starts from the weights of an earlier edgesweep archive ([baseline] init), with
// a new classifier head when the class count differs, and is then trained (fine-tuned) as configured.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "edgesweep/workers/graph_module.h"

namespace edgesweep {

/// Index of the layer whose outputs are the class scores that [baseline] init may re-size: the last linear layer of
/// `graph`, or -1 when it has none.
int classifier_head(const Graph& graph);

/// Copies into `model` (built from [model] for this experiment's classes, its weights seeded) the weights of the
/// edgesweep float archive at `path`: every parameter and buffer, except the head's weight and bias when the archive
/// gives another number of outputs, or when `class_names` is given and the archive's metadata names other classes
/// (a head trained for other classes is no start for these); those keep `model`'s own seeded initialisation.
/// `expected_sha256`, when not
/// empty, is the file's sha256 when the experiment was read. Throws InputError naming [baseline] init and the file for
/// a missing file, a changed sha256, a file that is no edgesweep archive, a quantized archive, and a graph that
/// differs from `model`'s in anything but the head's outputs (naming the first layer that differs and how).
void initialize_from_archive(GraphModule& model, const std::filesystem::path& path,
                             const std::string& expected_sha256 = "",
                             const std::vector<std::string>& class_names = {});

}  // namespace edgesweep
