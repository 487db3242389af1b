// Pareto selection: the non-dominated set of a point cloud, a knee point, and the candidates of an experiment
// (artifact x device) with the metrics they are chosen on. Objectives and constraints are in objectives.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"
#include "edgesweep/orchestrator/objectives.h"
#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

/// The indices (ascending) of the non-dominated points. points[i][j] is point i's value of objectives[j]. A point is
/// dominated when another is at least as good in every objective and strictly better in one; equal points do not
/// dominate each other, so all copies of a non-dominated point are kept. Exact: a sort and one scan for 2 objectives,
/// divide and conquer on the coordinates for more (O(n log^(d-2) n) for d >= 3). Throws InputError on a NaN or a point of the wrong size.
std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& points,
                                 const std::vector<Objective>& objectives);

/// The knee of a front: each objective is normalised to [0, 1] over the front's points (0 = the best value on the
/// front, 1 = the worst; an objective with one value on the whole front counts 0), and the knee is the front point
/// with the smallest Euclidean distance to the ideal point (0, ..., 0); ties go to the lower index. Returns an index
/// into `points` (a member of `front`), or nothing when the front is empty.
std::optional<size_t> knee_point(const std::vector<std::vector<double>>& points, const std::vector<size_t>& front,
                                 const std::vector<Objective>& objectives);

/// One candidate: an artifact as measured on one device at one batch size, with its trial's swept settings.
struct Candidate {
  int64_t trial_id = 0;
  int64_t artifact_id = 0;
  std::string device;
  int64_t batch = 1;
  Json settings = Json::object();  ///< swept setting label -> value, e.g. {"pipeline[0].sparsity": 0.5}
  std::map<std::string, double> values;  ///< metric name -> value; a metric not known for it is absent
  std::string kind = "trial";  ///< "baseline" or "trial"
};

/// Name of the pseudo-device for the in-process latency the workers record (latency_b1_ms, latency_b32_ms).
extern const char* const in_process_device;

/// The candidates of an experiment's done trials (the newest artifact of each) at `batch`: one per device that
/// measured the artifact at that batch size, plus one on the pseudo-device "in-process" when the worker recorded an
/// in-process latency at that batch size (1 and 32). Metrics: accuracy (on-device when measured, else the trial's
/// test_accuracy), accuracy_drop (against the baseline's accuracy measured on the same device when there is one,
/// else the trial's accuracy_drop; 0 for a baseline), latency_min/mean/p50/p90/p99_ms, fps, peak_rss_mb from the
/// measurement; model_bytes, compressed_bytes, params, macs from the trial.
std::vector<Candidate> load_candidates(const Store& store, int64_t experiment_id, int64_t batch);

/// What to select on: objectives, constraints, one device (empty = every device) and the batch size.
struct ParetoOptions {
  std::vector<Objective> objectives;
  std::vector<Constraint> constraints;
  std::string device;
  int64_t batch = 1;
};

/// The selection on one device: the feasible candidates (those satisfying every constraint and holding a value for
/// every objective), the indices into `feasible` of the front (best first in the first objective), and the knee.
struct DeviceFront {
  std::string device;
  std::vector<Candidate> feasible;
  std::vector<size_t> front;
  std::optional<size_t> knee;  ///< index into `feasible`
  size_t candidates = 0;       ///< candidates on this device before filtering
  size_t rejected = 0;         ///< of them, failing a constraint
  size_t incomplete = 0;       ///< of them, lacking a value for an objective or constraint metric
};

/// The Pareto front per device (devices in name order) of `candidates` at options.batch. Throws InputError when an
/// objective or constraint names an unknown metric (listing the known ones), when there is no objective, when a
/// metric is both maximised and minimised, or when options.device names a device with no candidate.
std::vector<DeviceFront> select_pareto(const std::vector<Candidate>& candidates, const ParetoOptions& options);

}  // namespace edgesweep
