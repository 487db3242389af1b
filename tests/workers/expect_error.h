// expect_error<E>(statement, fragments): the statement must throw E (or a subclass) whose message contains every
// fragment, so tests check that errors say what happened and where.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace edgesweep {

template <typename ErrorType, typename Statement>
void expect_error(Statement statement, const std::vector<std::string>& fragments) {
  try {
    statement();
    ADD_FAILURE() << "expected an exception";
  } catch (const ErrorType& e) {
    const std::string message = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << "message '" << message << "' lacks '" << fragment << "'";
    }
  }
}

}  // namespace edgesweep
