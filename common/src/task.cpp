// JSON forms of tasks and their results.
#include "edgesweep/common/task.h"

namespace edgesweep {

void to_json(Json& j, const Task& t) {
  j = Json{{"kind", t.kind},
           {"trial_id", t.trial_id},
           {"config", t.config},
           {"results_dir", t.results_dir},
           {"baseline_path", t.baseline_path},
           {"baseline_sha256", t.baseline_sha256},
           {"cache_dir", t.cache_dir},
           {"threads", t.threads},
           {"eval_batch_size", t.eval_batch_size}};
}

void from_json(const Json& j, Task& t) {
  j.at("kind").get_to(t.kind);
  j.at("trial_id").get_to(t.trial_id);
  j.at("config").get_to(t.config);
  j.at("results_dir").get_to(t.results_dir);
  j.at("baseline_path").get_to(t.baseline_path);
  j.at("baseline_sha256").get_to(t.baseline_sha256);
  j.at("cache_dir").get_to(t.cache_dir);
  j.at("threads").get_to(t.threads);
  j.at("eval_batch_size").get_to(t.eval_batch_size);
}

void to_json(Json& j, const Metric& m) { j = Json{{"step", m.step}, {"name", m.name}, {"value", m.value}}; }

void from_json(const Json& j, Metric& m) {
  j.at("step").get_to(m.step);
  j.at("name").get_to(m.name);
  j.at("value").get_to(m.value);
}

void to_json(Json& j, const ArtifactRecord& a) {
  j = Json{{"kind", a.kind},     {"path", a.path}, {"sha256", a.sha256}, {"bytes", a.bytes},
           {"params", a.params}, {"macs", a.macs}, {"format", a.format}, {"metadata", a.metadata}};
}

void from_json(const Json& j, ArtifactRecord& a) {
  j.at("kind").get_to(a.kind);
  j.at("path").get_to(a.path);
  j.at("sha256").get_to(a.sha256);
  j.at("bytes").get_to(a.bytes);
  j.at("params").get_to(a.params);
  j.at("macs").get_to(a.macs);
  j.at("format").get_to(a.format);
  a.metadata = j.value("metadata", Json::object());
}

void to_json(Json& j, const TaskResult& r) {
  j = Json{{"trial_id", r.trial_id}, {"ok", r.ok},           {"error", r.error},     {"metrics", r.metrics},
           {"artifacts", r.artifacts}, {"seconds", r.seconds}, {"cached", r.cached}};
}

void from_json(const Json& j, TaskResult& r) {
  j.at("trial_id").get_to(r.trial_id);
  j.at("ok").get_to(r.ok);
  j.at("error").get_to(r.error);
  j.at("metrics").get_to(r.metrics);
  j.at("artifacts").get_to(r.artifacts);
  j.at("seconds").get_to(r.seconds);
  r.cached = j.value("cached", false);
}

}  // namespace edgesweep
