// tests/linearizability.cpp: tests of the linearizability checker (tests/linearizability.hpp).
#include "linearizability.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <random>

using lin::cas;
using lin::get;
using lin::kNever;
using lin::put;

namespace {

bool linearizable(const std::vector<lin::Operation>& history) { return lin::check(history).ok; }

// A history of a real atomic map: operation i takes effect at the instant 10 i, inside a random
// interval of a random client's, which calls it after its previous operation returned. Some
// writes never return, and take effect or not; some reads never return.
std::vector<lin::Operation> random_history(std::uint32_t seed, int operations, int clients,
                                           int keys, int values) {
  std::mt19937 random(seed);
  auto below = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
  auto between = [&](lin::Time low, lin::Time high) {
    return low + static_cast<lin::Time>(random() % static_cast<std::uint64_t>(high - low + 1));
  };
  std::vector<lin::Operation> history;
  std::map<std::string, std::string> map;
  for (int i = 0; i < operations; ++i) {
    const std::string key = "k" + std::to_string(below(keys));
    const std::string value = "v" + std::to_string(below(values));
    std::optional<std::string> now;
    if (map.count(key)) now = map[key];
    const bool returns = below(20) != 0;
    const bool happens = returns || below(2); // one that never returns may never take effect
    const std::uint64_t client = static_cast<std::uint64_t>(below(clients));
    const lin::Time at = 10 * i, ret = returns ? at : kNever; // intervals are widened below
    const int kind = below(6);
    if (kind < 2) {
      history.push_back(put(client, key, value, at, ret));
      if (happens) map[key] = value;
    } else if (kind < 5) {
      history.push_back(get(client, key, now, at, ret));
    } else {
      std::optional<std::string> expected;
      if (below(4)) expected = now && below(2) ? *now : "v" + std::to_string(below(values));
      history.push_back(cas(client, key, expected, value, expected == now, at, ret));
      if (happens && expected == now) map[key] = value;
    }
  }
  // Each client's operations in turn: a call after its previous return (or call, if there was no
  // return) and at most 30 before the instant, a return after the instant and before the next
  // operation's call.
  for (std::uint64_t client = 0; client < static_cast<std::uint64_t>(clients); ++client) {
    lin::Time free = std::numeric_limits<lin::Time>::min(); // when the client may call again
    for (std::size_t i = 0; i < history.size(); ++i) {
      lin::Operation& op = history[i];
      if (op.client != client) continue;
      const lin::Time at = op.call;
      op.call = between(std::max(free, at - 30), at);
      lin::Time next = at + 30;
      for (std::size_t j = i + 1; j < history.size(); ++j)
        if (history[j].client == client) {
          next = history[j].call - 1;
          break;
        }
      if (op.ret != kNever) op.ret = between(at, next - 1);
      free = (op.ret == kNever ? op.call : op.ret) + 1;
    }
  }
  return history;
}

// Whether `history` is linearizable, by trying every order of every subset of it that holds all
// the operations that returned.
bool linearizable_by_brute_force(const std::vector<lin::Operation>& history) {
  const std::size_t n = history.size();
  for (std::uint32_t subset = 0; subset < (1u << n); ++subset) {
    std::vector<std::size_t> order;
    bool complete = true;
    for (std::size_t i = 0; i < n; ++i)
      if (subset >> i & 1)
        order.push_back(i);
      else
        complete = complete && history[i].ret == kNever;
    if (!complete) continue;
    do {
      bool ok = true;
      std::optional<std::string> value;
      for (std::size_t a = 0; a < order.size() && ok; ++a) {
        const lin::Operation& op = history[order[a]];
        for (std::size_t b = a + 1; b < order.size(); ++b)
          ok = ok && history[order[b]].ret >= op.call; // nothing after it returned before its call
        const bool known = op.ret != kNever;
        if (op.kind == lin::Operation::Put) value = op.value;
        if (op.kind == lin::Operation::Get) ok = ok && (!known || op.output == value);
        if (op.kind == lin::Operation::Cas) {
          ok = ok && (!known || op.swapped == (value == op.expected));
          if (value == op.expected) value = op.value;
        }
      }
      if (ok) return true;
    } while (std::next_permutation(order.begin(), order.end()));
  }
  return false;
}

} // namespace

TEST_SUITE("Linearizability checker") {
  TEST_CASE("sequential histories are accepted") {
    CHECK(linearizable({}));
    CHECK(linearizable({get(1, "x", std::nullopt, 0, 1), put(1, "x", "a", 2, 3),
                        get(2, "x", "a", 4, 5), put(2, "x", "b", 6, 7), get(1, "x", "b", 8, 9)}));
  }

  TEST_CASE("a stale read after a completed write is rejected") {
    CHECK_FALSE(
        linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 3), get(2, "x", "a", 4, 5)}));
    CHECK_FALSE(linearizable({put(1, "x", "a", 0, 1), get(2, "x", std::nullopt, 2, 3)}));
    CHECK_FALSE(linearizable({get(2, "x", "a", 0, 1), put(1, "x", "a", 2, 3)})); // from the future
  }

  TEST_CASE("a read overlapping a write may see the old value or the new one") {
    for (const char* seen : {"a", "b"}) {
      CAPTURE(seen);
      // The read starts before the write and ends inside it, or starts inside it and ends after.
      CHECK(
          linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 4, 8), get(2, "x", seen, 2, 6)}));
      CHECK(
          linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 4, 8), get(2, "x", seen, 6, 9)}));
      CHECK(
          linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 4, 8), get(2, "x", seen, 8, 9)}));
    }
  }

  TEST_CASE("a read that sees the new value and a later read that sees the old one are rejected") {
    CHECK_FALSE(linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 20),
                              get(2, "x", "b", 3, 5), get(3, "x", "a", 6, 8)}));
    // If the second read overlaps the first, it may take effect before it, and before the write.
    CHECK(linearizable({put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 20), get(2, "x", "b", 3, 7),
                        get(3, "x", "a", 6, 8)}));
  }

  TEST_CASE("a write that never returned may take effect at any time after its call, or never") {
    const lin::Operation incomplete = put(1, "x", "b", 2, kNever);
    CHECK(linearizable({put(1, "x", "a", 0, 1), incomplete, get(2, "x", "a", 10, 11),
                        get(2, "x", "b", 12, 13), get(3, "x", "b", 14, 15)}));
    CHECK(linearizable({put(1, "x", "a", 0, 1), incomplete, get(2, "x", "a", 10, 11)}));
    // Once seen, it stays seen, and it cannot be seen before its call.
    CHECK_FALSE(linearizable(
        {put(1, "x", "a", 0, 1), incomplete, get(2, "x", "b", 10, 11), get(3, "x", "a", 12, 13)}));
    CHECK_FALSE(linearizable({put(1, "x", "a", 0, 1), get(2, "x", "b", 0, 1), incomplete}));
  }

  TEST_CASE("a read that never returned is ignored") {
    CHECK(linearizable({put(1, "x", "a", 0, 1), get(2, "x", "never written", 2, kNever)}));
  }

  TEST_CASE("compare-and-swap swaps exactly when it finds the expected value") {
    CHECK(linearizable({cas(1, "x", std::nullopt, "a", true, 0, 1),
                        cas(1, "x", "b", "c", false, 2, 3), cas(2, "x", "a", "b", true, 4, 5),
                        get(1, "x", "b", 6, 7)}));
    CHECK_FALSE(linearizable({put(1, "x", "a", 0, 1), cas(2, "x", "b", "c", true, 2, 3)}));
    CHECK_FALSE(linearizable({put(1, "x", "a", 0, 1), cas(2, "x", "a", "c", false, 2, 3)}));
    // One that never returned swaps if it takes effect when the value is the expected one.
    CHECK(linearizable(
        {put(1, "x", "a", 0, 1), cas(2, "x", "a", "c", false, 2, kNever), get(1, "x", "c", 3, 4)}));
    CHECK_FALSE(linearizable(
        {put(1, "x", "a", 0, 1), cas(2, "x", "b", "c", false, 2, kNever), get(1, "x", "c", 3, 4)}));
  }

  TEST_CASE(
      "keys are checked independently, and a failure names its key and lists its operations") {
    // As one register this would fail: the read of y does not see the write of x.
    CHECK(linearizable({put(1, "x", "a", 0, 1), get(2, "y", std::nullopt, 2, 3)}));

    const lin::Result result =
        lin::check({put(1, "x", "a", 0, 1), put(2, "y", "b", 2, 3), get(3, "x", "a", 4, 5),
                    get(3, "y", std::nullopt, 6, kNever), get(1, "y", std::nullopt, 7, 9)});
    CHECK_FALSE(result.ok);
    CHECK(result.key == "y");
    CHECK(result.explanation == "the history of key \"y\" is not linearizable. Its 2 operations, "
                                "in call order:\n"
                                "  #0  client 2  [2, 3]  Put(\"y\", \"b\")\n"
                                "  #1  client 1  [7, 9]  Get(\"y\") -> absent\n"
                                "The longest order the search found: #0, after which the value is "
                                "\"b\" and no other operation can go next.\n");
  }

  TEST_CASE("an operation that returns before its call is refused") {
    CHECK_THROWS_AS(lin::check({put(1, "x", "a", 5, 4)}), std::invalid_argument);
  }

  TEST_CASE("small random histories are judged as by trying every order") {
    std::mt19937 random(1);
    auto below = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
    auto some_value = [&]() -> std::optional<std::string> {
      const int v = below(3);
      return v ? std::optional<std::string>(v == 1 ? "a" : "b") : std::nullopt;
    };
    int accepted = 0, rejected = 0;
    for (int round = 0; round < 3000; ++round) {
      std::vector<lin::Operation> history;
      for (int i = 1 + below(6); i > 0; --i) {
        const lin::Time call = below(8), ret = below(4) ? call + below(5) : kNever;
        const std::string value = below(2) ? "a" : "b";
        const int kind = below(3);
        history.push_back(kind == 0   ? put(1, "x", value, call, ret)
                          : kind == 1 ? get(1, "x", some_value(), call, ret)
                                      : cas(1, "x", some_value(), value, below(2), call, ret));
      }
      const lin::Result result = lin::check(history);
      INFO(round, "\n", result.explanation);
      REQUIRE(result.ok == linearizable_by_brute_force(history));
      ++(result.ok ? accepted : rejected);
    }
    CHECK(accepted > 500);
    CHECK(rejected > 500);
  }

  TEST_CASE("random histories of an atomic map are accepted, and rejected with a read changed") {
    for (std::uint32_t seed = 1; seed <= 200; ++seed) {
      CAPTURE(seed);
      std::vector<lin::Operation> history = random_history(seed, 300, 5, 3, 3 + seed % 5);
      const lin::Result result = lin::check(history);
      INFO(result.explanation);
      REQUIRE(result.ok);

      std::vector<std::size_t> reads;
      for (std::size_t i = 0; i < history.size(); ++i)
        if (history[i].kind == lin::Operation::Get && history[i].ret != kNever) reads.push_back(i);
      REQUIRE(!reads.empty());
      lin::Operation& changed = history[reads[seed % reads.size()]];
      changed.output = "never written";
      const lin::Result bad = lin::check(history);
      CHECK_FALSE(bad.ok);
      CHECK(bad.key == changed.key);
    }
  }

  // A full search: the last read is changed so that every way to reach it must be tried. How long
  // it takes is printed, not asserted (these machines are shared); `make test` shows it.
  TEST_CASE("histories of 200 operations on one key from 5 clients are searched in full") {
    double slowest = 0;
    for (std::uint32_t seed = 1; seed <= 20; ++seed) {
      std::vector<lin::Operation> history = random_history(seed, 200, 5, 1, 2 + seed % 4);
      auto start = std::chrono::steady_clock::now();
      CHECK(linearizable(history));
      for (auto op = history.rbegin(); op != history.rend(); ++op)
        if (op->kind == lin::Operation::Get && op->ret != kNever) {
          op->output = "never written";
          break;
        }
      CHECK_FALSE(linearizable(history));
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      slowest = std::max(slowest, took.count());
    }
    MESSAGE("slowest accept-and-reject pair: " << slowest << " s");
  }
}
