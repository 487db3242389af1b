// The edgesweep command line: validate, run, status, trials, query.
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/log.h"
#include "edgesweep/common/mpi_session.h"
#include "edgesweep/orchestrator/scheduler.h"
#include "edgesweep/orchestrator/spec.h"
#include "edgesweep/orchestrator/store.h"
#include "edgesweep/orchestrator/tables.h"
#include "edgesweep/workers/benchmark_artifact.h"

namespace fs = std::filesystem;
using namespace edgesweep;

namespace {

/// A database named by an experiment file, a results folder or the database file itself.
fs::path resolve_store(const std::string& target) {
  const fs::path path(target);
  if (path.extension() == ".toml") return store_path(parse_spec_file(path));
  if (fs::is_directory(path)) return path / "edgesweep.db";
  return path;
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
}

}  // namespace

int main(int argc, char** argv) {
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

  auto* trials = app.add_subcommand("trials", "the trials of an experiment with their results");
  trials->add_option("target", target, "experiment TOML, results folder or database file")->required();
  trials->add_option("--experiment", experiment_name, "experiment name, when the store holds several");
  trials->add_option("--format", format, "table, csv or json")->capture_default_str();
  trials->add_option("--status", status_filter, "only trials in this state (pending, running, done, failed)");

  auto* query = app.add_subcommand("query", "run a read-only SQL statement on a store; rows as JSON");
  query->add_option("target", target, "experiment TOML, results folder or database file")->required();
  query->add_option("sql", sql, "one read-only SQL statement")->required();

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
      print_expansion(parse_spec_file(spec_file));
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
        RunOptions options;
        options.resume = resume;
        return orchestrate(spec, options, session);
      } catch (...) {
        release_workers(session);
        throw;
      }
    }
    if (*status) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      fmt::print("{}", format_status(store));
      return 0;
    }
    if (*trials) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      const ExperimentRow experiment = pick_experiment(store, target, experiment_name);
      fmt::print("{}", format_trials(store, experiment.id, format, status_filter));
      return 0;
    }
    if (*query) {
      const Store store = Store::open(resolve_store(target), Store::Mode::ReadOnly);
      fmt::print("{}\n", store.query(sql).dump(2));
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
