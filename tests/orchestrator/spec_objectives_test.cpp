// Tests of the [objectives] and [[devices]] sections of experiment specs: defaults, parsed values, and the
// file:line:col of every error.
#include <gtest/gtest.h>

#include <string>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {
namespace {

const std::string kHead = "[experiment]\nname = \"t\"\n";

std::string error_of(const std::string& text) {
  try {
    parse_spec_string(text, "x.toml");
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError for:\n" << text;
  return "";
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

TEST(SpecObjectives, DefaultsWithoutTheSection) {
  const ExperimentSpec spec = parse_spec_string(kHead, "x.toml");
  ASSERT_EQ(spec.objectives.objectives.size(), 4u);
  EXPECT_EQ(spec.objectives.objectives[0].metric, "accuracy");
  EXPECT_TRUE(spec.objectives.objectives[0].maximize);
  EXPECT_EQ(spec.objectives.objectives[1].metric, "latency_p50_ms");
  EXPECT_FALSE(spec.objectives.objectives[1].maximize);
  EXPECT_EQ(spec.objectives.objectives[2].metric, "peak_rss_mb");
  EXPECT_EQ(spec.objectives.objectives[3].metric, "model_bytes");
  EXPECT_FALSE(spec.objectives.objectives[3].maximize);
  EXPECT_TRUE(spec.objectives.constraints.empty());
  EXPECT_TRUE(spec.devices.empty());
}

TEST(SpecObjectives, ReadsTheDesignExample) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"(
[[devices]]
name = "local-cpu"
address = "127.0.0.1:7070"
spawn = true

[[devices]]
name = "nano"
address = "[::1]:7071"
token_file = "nano.token"
profile = "one-thread"

[objectives]
maximize = ["accuracy", "fps"]
minimize = ["latency_p50_ms", "peak_rss_mb", "model_bytes"]
constraints = ["accuracy_drop <= 1.0", "fps>=25"]
)",
                                                "x.toml");
  ASSERT_EQ(spec.objectives.objectives.size(), 5u);
  EXPECT_EQ(spec.objectives.objectives[1].metric, "fps");
  EXPECT_TRUE(spec.objectives.objectives[1].maximize);
  EXPECT_EQ(spec.objectives.objectives[4].metric, "model_bytes");
  ASSERT_EQ(spec.objectives.constraints.size(), 2u);
  EXPECT_EQ(spec.objectives.constraints[0].metric, "accuracy_drop");
  EXPECT_EQ(spec.objectives.constraints[0].op, "<=");
  EXPECT_EQ(spec.objectives.constraints[0].value, 1.0);
  EXPECT_EQ(spec.objectives.constraints[1].text, "fps>=25");
  ASSERT_EQ(spec.devices.size(), 2u);
  EXPECT_EQ(spec.devices[0].name, "local-cpu");
  EXPECT_EQ(spec.devices[0].address, "127.0.0.1:7070");
  EXPECT_TRUE(spec.devices[0].spawn);
  EXPECT_EQ(spec.devices[0].token_file, "");
  EXPECT_EQ(spec.devices[0].profile, "");
  EXPECT_EQ(spec.devices[1].name, "nano");
  EXPECT_EQ(spec.devices[1].address, "[::1]:7071");
  EXPECT_EQ(spec.devices[1].token_file, "nano.token");
  EXPECT_EQ(spec.devices[1].profile, "one-thread");
  EXPECT_FALSE(spec.devices[1].spawn);
  EXPECT_TRUE(spec.dimensions.empty()) << "devices and objectives are not swept";
}

TEST(SpecObjectives, AKeyNotGivenKeepsItsDefault) {
  const ExperimentSpec constrained =
      parse_spec_string(kHead + "[objectives]\nconstraints = [\"accuracy_drop < 2\"]\n", "x.toml");
  EXPECT_EQ(constrained.objectives.objectives.size(), 4u);
  EXPECT_EQ(constrained.objectives.constraints.size(), 1u);
  const ExperimentSpec two = parse_spec_string(kHead + "[objectives]\nminimize = [\"latency_p90_ms\"]\n", "x.toml");
  ASSERT_EQ(two.objectives.objectives.size(), 2u);
  EXPECT_EQ(two.objectives.objectives[0].metric, "accuracy");
  EXPECT_EQ(two.objectives.objectives[1].metric, "latency_p90_ms");
  const ExperimentSpec one = parse_spec_string(kHead + "[objectives]\nminimize = []\n", "x.toml");
  ASSERT_EQ(one.objectives.objectives.size(), 1u);
}

TEST(SpecObjectivesErrors, NameTheElementAndTheKnownMetrics) {
  const std::string unknown = error_of(kHead + "[objectives]\nmaximize = [\"accuracy\", \"acuracy\"]\n");
  EXPECT_TRUE(starts_with(unknown, "x.toml:4:25: [objectives] 'maximize': unknown metric 'acuracy' (known metrics: "
                                   "accuracy, accuracy_drop,"))
      << unknown;
  const std::string constraint = error_of(kHead + "[objectives]\nconstraints = [\n  \"accuracy_drop => 1\",\n]\n");
  EXPECT_TRUE(starts_with(constraint, "x.toml:5:3: [objectives] constraint 'accuracy_drop => 1': expected "))
      << constraint;
  EXPECT_NE(constraint.find("known metrics: accuracy,"), std::string::npos) << constraint;
  const std::string unknown_in_constraint = error_of(kHead + "[objectives]\nconstraints = [\"speed >= 3\"]\n");
  EXPECT_TRUE(starts_with(unknown_in_constraint, "x.toml:4:16: [objectives] constraint 'speed >= 3': unknown metric "
                                                 "'speed'"))
      << unknown_in_constraint;
  EXPECT_EQ(error_of(kHead + "[objectives]\nmaximize = [\"fps\"]\nminimize = [\"fps\"]\n"),
            "x.toml:5:13: [objectives] 'minimize' names 'fps' again (first at 4:13)");
  EXPECT_TRUE(starts_with(error_of(kHead + "[objectives]\nminimize = [\"accuracy\"]\n"),
                          "x.toml:3:1: [objectives] 'accuracy' is both maximised and minimised"));
  EXPECT_EQ(error_of(kHead + "[objectives]\nmaximize = []\nminimize = []\n"),
            "x.toml:3:1: [objectives] has no objective: give at least one metric in 'maximize' or 'minimize'");
  EXPECT_TRUE(starts_with(error_of(kHead + "[objectives]\nmaximise = [\"fps\"]\n"),
                          "x.toml:4:1: unknown key 'maximise' in [objectives] (known keys: maximize, minimize, "
                          "constraints)"));
  EXPECT_EQ(error_of(kHead + "[objectives]\nmaximize = \"fps\"\n"),
            "x.toml:4:12: [objectives] 'maximize' must be an array of strings, got \"fps\"");
  EXPECT_EQ(error_of(kHead + "[objectives]\nconstraints = [1]\n"),
            "x.toml:4:16: [objectives] 'constraints' must be an array of strings, got 1");
}

TEST(SpecDevicesErrors, NamesAddressesAndKeys) {
  const std::string device = "[[devices]]\nname = \"a\"\naddress = \"127.0.0.1:7070\"\n";
  EXPECT_EQ(error_of(kHead + device + device),
            "x.toml:7:8: devices[1] 'name' = \"a\" is already used by devices[0] at 4:8");
  for (const char* address : {"localhost", "host:0", "host:70000", ":7070", "host:", "[::1]7070", "::1:7070",
                              "host:12a", "[]:7070"}) {
    SCOPED_TRACE(address);
    const std::string message =
        error_of(kHead + "[[devices]]\nname = \"a\"\naddress = \"" + address + "\"\n");
    EXPECT_TRUE(starts_with(message, std::string("x.toml:5:11: devices[0] 'address' = \"") + address +
                                         "\" is not HOST:PORT"))
        << message;
  }
  EXPECT_EQ(error_of(kHead + "[[devices]]\nname = \"a\"\n"), "x.toml:3:1: devices[0] is missing required key 'address'");
  EXPECT_EQ(error_of(kHead + "[[devices]]\naddress = \"h:1\"\n"), "x.toml:3:1: devices[0] is missing required key 'name'");
  EXPECT_TRUE(starts_with(error_of(kHead + "[[devices]]\nname = \"a/b\"\naddress = \"h:1\"\n"),
                          "x.toml:4:8: devices[0] 'name' = \"a/b\" is not a valid device name"));
  EXPECT_TRUE(starts_with(error_of(kHead + "[[devices]]\nname = \"a\"\naddress = \"h:1\"\nport = 3\n"),
                          "x.toml:6:1: unknown key 'port' in devices[0] (known keys: name, address, token_file, "
                          "tls_fingerprint, profile, spawn"));
  EXPECT_TRUE(starts_with(
      error_of(kHead + "[[devices]]\nname = \"a\"\naddress = \"h:1\"\ntls_fingerprint = \"sha256:abcd\"\n"),
      "x.toml:6:19: devices[0] 'tls_fingerprint': 'sha256:abcd' is not a SHA-256 certificate fingerprint: it has 4 hex "
      "digits, not 64"));
  EXPECT_TRUE(starts_with(error_of(kHead + "[[devices]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nspawn = true\n" +
                                   "tls_fingerprint = \"" + std::string(64, 'a') + "\"\n"),
                          "x.toml:7:19: devices[0] 'tls_fingerprint' cannot go with spawn = true"));
  EXPECT_EQ(error_of(kHead + "[[devices]]\nname = \"a\"\naddress = \"h:1\"\nspawn = \"yes\"\n"),
            "x.toml:6:9: devices[0] 'spawn' must be true or false, got \"yes\"");
  EXPECT_EQ(error_of(kHead + "[[devices]]\nname = [\"a\", \"b\"]\naddress = \"h:1\"\n"),
            "x.toml:4:8: devices[0] 'name' cannot be swept: give a string, not an array");
  EXPECT_EQ(error_of("devices = 3\n" + kHead),
            "x.toml:1:11: 'devices' must be an array of tables: write each as [[devices]]");
}

}  // namespace
}  // namespace edgesweep
