// The edgesweep command line: validate, run, status, trials, pareto, export, query, report.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/allocator.h"

#include "edgesweep/common/error.h"
#include "edgesweep/common/log.h"
#include "edgesweep/common/mpi_session.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/orchestrator/choice_tables.h"
#include "edgesweep/orchestrator/pareto.h"
#include "edgesweep/orchestrator/report.h"
#include "edgesweep/orchestrator/scheduler.h"
#include "edgesweep/orchestrator/spec.h"
#include "edgesweep/orchestrator/store.h"
#include "edgesweep/orchestrator/tables.h"
#include "edgesweep/workers/benchmark_artifact.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/mixed_precision.h"
#include "edgesweep/workers/import_torchscript.h"

namespace fs = std::filesystem;
using namespace edgesweep;

namespace {

/// A database named by an experiment file, a results folder or the database file itself.
/// The store file a reading command means; InputError when there is none (a wrong path is bad input).
fs::path resolve_store(const std::string& target) {
  const fs::path path(target);
  fs::path store = path;
  if (path.extension() == ".toml") {
    store = store_path(parse_spec_file(path));
  } else if (fs::is_directory(path)) {
    store = path / "edgesweep.db";
  }
  check_input(fs::is_regular_file(store), "no store at '{}'{}", store.string(),
              store == path ? "" : fmt::format(" (from '{}'); has the experiment run yet?", target));
  return store;
}

/// The experiment a command is about: the one named, the one in the spec, or the only one in the store.
ExperimentRow pick_experiment(const Store& store, const std::string& target, const std::string& name) {
  std::string wanted = name;
  if (wanted.empty() && fs::path(target).extension() == ".toml") wanted = parse_spec_file(target).name;
  const auto all = store.experiments();
  if (!wanted.empty()) {
    for (const ExperimentRow& e : all) {
      if (e.name == wanted) return e;
    }
    throw InputError(fmt::format("'{}' holds no experiment '{}'", target, wanted));
  }
  check_input(!all.empty(), "'{}' holds no experiment yet", target);
  if (all.size() == 1) return all.front();
  std::string names;
  for (const ExperimentRow& e : all) names += (names.empty() ? "" : ", ") + e.name;
  throw InputError(fmt::format("'{}' holds several experiments ({}); choose one with --experiment", target, names));
}

/// Refuses, before anything runs, a device the build or machine cannot use and a precision its device cannot train
/// in: [run] precision and every training's own, swept values included.
void check_compute_settings(const ExperimentSpec& spec, const std::string& file) {
  check_device_usable(spec.run.device, fmt::format("{}: [run] device", file));
  std::set<std::string> used{spec.run.precision};
  const auto add = [&](const Json& training) {
    if (training.contains("precision")) used.insert(training.at("precision").get<std::string>());
  };
  add(spec.base_trial.at("baseline"));
  for (const Json& stage : spec.base_trial.at("pipeline")) add(stage);
  for (const SweepDimension& dimension : spec.dimensions) {
    const std::string& p = dimension.pointer;
    if (p.size() < 10 || p.compare(p.size() - 10, 10, "/precision") != 0) continue;
    for (const Json& value : dimension.values) used.insert(value.get<std::string>());
  }
  const torch::Device device = spec.run.device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  for (const std::string& precision : used) {
    check_precision_usable(precision, device, fmt::format("{}: precision", file));
  }
}

void print_expansion(const ExperimentSpec& spec) {
  const auto trials = expand_trials(spec);
  fmt::print("experiment '{}' ({}): {} trial(s), strategy {}, results in {}\n", spec.name, spec.path.string(),
             trials.size(), spec.strategy, spec.run.results_dir.string());
  for (const SweepDimension& d : spec.dimensions) {
    std::string values;
    for (const Json& v : d.values) values += (values.empty() ? "" : ", ") + v.dump();
    fmt::print("  swept {} over [{}]\n", d.label, values);
  }
  for (size_t i = 0; i < trials.size(); ++i) {
    const Json config = trials[i];
    std::string settings;
    for (const SweepDimension& d : spec.dimensions) {
      settings += (settings.empty() ? "" : " ") + d.label + "=" + config.at(Json::json_pointer(d.pointer)).dump();
    }
    std::string stages;
    for (const StageConfig& s : trials[i].pipeline) stages += (stages.empty() ? "" : " -> ") + s.stage;
    fmt::print("  trial {:>3}: {} | {} | {}\n", i + 1, trials[i].model.arch, stages.empty() ? "(no stages)" : stages,
               settings.empty() ? "(nothing swept)" : settings);
  }
  // Each imported network, as the import sees it: the check against the archive and its channel groups.
  std::set<std::string> imported;
  for (const TrialConfig& trial : trials) {
    const ModelConfig& model = trial.model;
    if (model.arch != "torchscript" || !imported.insert(model.path).second) continue;
    const Shape input{model.input_shape.at(0), model.input_shape.at(1), model.input_shape.at(2), false};
    fmt::print("{}", describe_import(model.path, import_torchscript(model.path, input)));
  }
  // Where each distinct baseline is cached once trained: the file another experiment's [baseline] init can name.
  std::set<std::string> baselines;
  for (const TrialConfig& trial : trials) {
    const std::string hash = baseline_hash(trial);
    if (!baselines.insert(hash).second) continue;
    const fs::path cached = baseline_cache_dir(spec) / (hash + ".pt");
    fmt::print("  baseline cache: {} ({})\n", cached.string(), fs::exists(cached) ? "trained" : "not trained yet");
  }
}

/// What `edgesweep pareto` was asked for on the command line.
struct ParetoCommand {
  std::vector<std::string> constraints;
  std::vector<std::string> maximize;
  std::vector<std::string> minimize;
  bool no_constraints = false;
  std::string device;
  int64_t batch = 1;
};

/// The Pareto fronts of an experiment: objectives and constraints from the command line, else from the experiment's
/// recorded [objectives].
std::string choose_pareto(const Store& store, const ExperimentRow& experiment, const ParetoCommand& command,
                          const std::string& format) {
  ObjectiveSettings settings = default_objective_settings();
  try {
    settings = parse_spec_string(experiment.spec_text, experiment.name + ".toml").objectives;
  } catch (const std::exception& e) {
    spdlog::warn("experiment '{}': its recorded spec cannot be read ({}); using the default objectives",
                 experiment.name, e.what());
  }
  ParetoOptions options;
  options.objectives = settings.objectives;
  options.constraints = settings.constraints;
  options.device = command.device;
  options.batch = command.batch;
  if (!command.maximize.empty() || !command.minimize.empty()) {
    options.objectives.clear();
    for (const std::string& m : command.maximize) options.objectives.push_back({m, true});
    for (const std::string& m : command.minimize) options.objectives.push_back({m, false});
  }
  if (!command.constraints.empty() || command.no_constraints) options.constraints.clear();
  for (const std::string& text : command.constraints) options.constraints.push_back(parse_constraint(text));
  const auto fronts = select_pareto(load_candidates(store, experiment.id, options.batch), options);
  return format_pareto(fronts, options, format);
}

/// Writes `text` to `path`; a file that cannot be opened is the user's (exit 2), a failed write is not (exit 1).
void write_output(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  check_input(static_cast<bool>(out), "cannot write '{}': {}", path.string(), std::strerror(errno));
  out << text;
  out.close();
  check(static_cast<bool>(out), "writing '{}' failed: {}", path.string(), std::strerror(errno));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    configure_allocator();  // before LibTorch allocates anything
  } catch (const edgesweep::InputError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  CLI::App app{"edgesweep: sweeps of network compression settings, measured per device"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();

  std::string spec_file;
  auto* validate = app.add_subcommand("validate", "check an experiment file and print the trials it expands to");
  validate->add_option("experiment", spec_file, "experiment TOML file")->required();

  bool resume = false;
  auto* run = app.add_subcommand("run", "run an experiment (under mpirun: rank 0 orchestrates, the others work)");
  run->add_option("experiment", spec_file, "experiment TOML file")->required();
  run->add_flag("--resume", resume, "continue an experiment already in the store; done trials are skipped");

  std::string target, experiment_name, format = "table", status_filter, sql;
  auto* status = app.add_subcommand("status", "experiments in a store and their task counts");
  status->add_option("target", target, "experiment TOML, results folder or database file")->required();

  ParetoCommand pareto_command;
  auto* pareto = app.add_subcommand("pareto", "the Pareto-optimal candidates per device, the knee marked with *");
  pareto->add_option("target", target, "experiment TOML, results folder or database file")->required();
  pareto->add_option("--experiment", experiment_name, "experiment name, when the store holds several");
  pareto->add_option("--device", pareto_command.device, "only this device (default: every device)");
  pareto->add_option("--constraint", pareto_command.constraints,
                     "\"<metric> <op> <number>\", op one of <=, <, >=, >, == (repeatable; replaces [objectives] "
                     "constraints)")
      ->allow_extra_args(false);
  pareto->add_flag("--no-constraints", pareto_command.no_constraints, "ignore the constraints of [objectives]");
  pareto->add_option("--maximize", pareto_command.maximize,
                     "metric to maximise (repeatable; with --minimize, replaces [objectives] objectives)")
      ->allow_extra_args(false);
  pareto->add_option("--minimize", pareto_command.minimize, "metric to minimise (repeatable)")
      ->allow_extra_args(false);
  pareto->add_option("--batch", pareto_command.batch, "batch size of the measurements")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  pareto->add_option("--format", format, "table, csv or json")->capture_default_str();

  std::string export_format, output_file;
  auto* export_command =
      app.add_subcommand("export", "an experiment's trials with settings, final metrics and device measurements");
  export_command->add_option("target", target, "experiment TOML, results folder or database file")->required();
  export_command->add_option("--experiment", experiment_name, "experiment name, when the store holds several");
  export_command->add_option("--format", export_format, "csv or json")->required();
  export_command->add_option("--output", output_file, "file to write (default: standard output)");

  auto* trials = app.add_subcommand("trials", "the trials of an experiment with their results");
  trials->add_option("target", target, "experiment TOML, results folder or database file")->required();
  trials->add_option("--experiment", experiment_name, "experiment name, when the store holds several");
  trials->add_option("--format", format, "table, csv or json")->capture_default_str();
  trials->add_option("--status", status_filter, "only trials in this state (pending, running, done, failed)");

  auto* query = app.add_subcommand("query", "run a read-only SQL statement on a store; rows as JSON");
  query->add_option("target", target, "experiment TOML, results folder or database file")->required();
  query->add_option("sql", sql, "one read-only SQL statement")->required();
  double query_timeout = 30;
  query->add_option("--timeout", query_timeout, "seconds before the statement is stopped (0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();

  std::string report_output, report_gnuplot;
  int64_t report_batch = 1;
  auto* report = app.add_subcommand("report", "write a self-contained HTML report of an experiment");
  report->add_option("target", target, "experiment TOML, results folder or database file")->required();
  report->add_option("--experiment", experiment_name, "experiment name, when the store holds several");
  report->add_option("--output", report_output, "HTML file to write (default: report.html beside the store)");
  report->add_option("--batch", report_batch, "batch size of the device measurements in the Pareto plots")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  report->add_option("--gnuplot", report_gnuplot,
                     "gnuplot program (default: $EDGESWEEP_GNUPLOT, else gnuplot on PATH)");

  AgentOptions agent_options;
  agent_options.profile.name = "default";
  std::string agent_token_file, agent_data, agent_cert, agent_key;
  auto* agent = app.add_subcommand(
      "agent", "serve this device: keep uploaded models by sha256 and benchmark them one at a time, each in a child");
  agent->add_option("--listen", agent_options.listen, "HOST:PORT (a non-loopback HOST needs --token-file)")
      ->capture_default_str();
  agent->add_option("--token-file", agent_token_file,
                    "file holding the shared token (not readable by others); connections then speak TLS 1.3 with "
                    "a key derived from it");
  agent->add_option("--tls-cert", agent_cert, "PEM certificate of this agent, pinned by clients by its fingerprint");
  agent->add_option("--tls-key", agent_key, "PEM private key of --tls-cert (not readable by others)");
  agent->add_option("--data", agent_data, "folder for uploaded models")->required();
  agent->add_option("--profile", agent_options.profile.name, "profile name reported with every result")
      ->capture_default_str();
  agent->add_option("--threads", agent_options.profile.threads, "LibTorch threads per benchmark (0: one per CPU)")
      ->check(CLI::NonNegativeNumber);
  agent->add_option("--cpus", agent_options.profile.cpus, "CPU affinity of the benchmarks, e.g. 0,1")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);
  agent->add_option("--memory-mb", agent_options.profile.memory_mb, "memory cap of each benchmark child (0: none)")
      ->check(CLI::NonNegativeNumber);
  agent->add_option("--engine", agent_options.profile.engine, "quantized engine of the benchmarks")
      ->check(CLI::IsMember({"onednn", "qnnpack"}));
  agent->add_option("--max-unauthenticated", agent_options.max_unauthenticated,
                    "connections waiting for authentication at once; more are refused at once")
      ->check(CLI::PositiveNumber);

  // Hidden: the isolated benchmark a device agent runs in a child process (one artifact, or --empty for the runtime
  // alone); request and result are JSON files.
  std::string bench_request, bench_output;
  bool bench_empty = false;
  auto* agent_bench = app.add_subcommand("agent-bench", "benchmark one artifact in this process (device agents)");
  agent_bench->group("");
  agent_bench->add_option("--request", bench_request, "request JSON file")->required();
  agent_bench->add_option("--output", bench_output, "result JSON file")->required();
  agent_bench->add_flag("--empty", bench_empty, "start LibTorch only, no model");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*agent_bench) return run_benchmark_request(bench_request, bench_output, bench_empty);

  try {
    setup_logging("edgesweep", log_level);
    if (*validate) {
      const ExperimentSpec spec = parse_spec_file(spec_file);
      check_compute_settings(spec, spec_file);
      print_expansion(spec);
      return 0;
    }
    if (*run) {
      MpiSession session(&argc, &argv);
      setup_logging(session.size() > 1 ? fmt::format("rank {}", session.rank()) : "edgesweep", log_level);
      if (session.rank() != 0) {
        serve_worker(session);
        return 0;
      }
      try {
        const ExperimentSpec spec = parse_spec_file(spec_file);
        check_compute_settings(spec, spec_file);
        RunOptions options;
        options.resume = resume;
        return orchestrate(spec, options, session);
      } catch (...) {
        release_workers(session);
        throw;
      }
    }
    if (*agent) {
      agent_options.token_file = agent_token_file;
      agent_options.tls_cert_file = agent_cert;
      agent_options.tls_key_file = agent_key;
      agent_options.data_dir = agent_data;
      serve_agent(agent_options);
      return 0;
    }
    if (*status) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      fmt::print("{}", format_status(store));
      return 0;
    }
    if (*pareto) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      const ExperimentRow experiment = pick_experiment(store, target, experiment_name);
      fmt::print("{}", choose_pareto(store, experiment, pareto_command, format));
      return 0;
    }
    if (*export_command) {
      check_input(export_format == "csv" || export_format == "json", "unknown export format '{}' (csv, json)",
                  export_format);
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      const ExperimentRow experiment = pick_experiment(store, target, experiment_name);
      const std::string text = format_export(store, experiment.id, export_format);
      if (output_file.empty()) {
        fmt::print("{}", text);
      } else {
        write_output(output_file, text);
      }
      return 0;
    }
    if (*trials) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      const ExperimentRow experiment = pick_experiment(store, target, experiment_name);
      fmt::print("{}", format_trials(store, experiment.id, format, status_filter));
      return 0;
    }
    if (*report) {
      const fs::path store_file = resolve_store(target);
      const Store store = Store::open(store_file, Store::Mode::ReadOnly);
      const ExperimentRow experiment = pick_experiment(store, target, experiment_name);
      ReportOptions options;
      options.batch = report_batch;
      options.gnuplot = report_gnuplot;
      const fs::path output =
          report_output.empty() ? store_file.parent_path() / "report.html" : fs::path(report_output);
      write_report(store, experiment.id, output, options);
      fmt::print("report: {}\n", output.string());
      return 0;
    }
    if (*query) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      fmt::print("{}\n", store.query(sql, query_timeout).dump(2));
      return 0;
    }
  } catch (const InputError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
