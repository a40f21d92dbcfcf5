// tests/linearizability.hpp: a linearizability checker for histories of a key-value store.
//
// A history is linearizable if each operation can be given one instant between its call and its
// return at which it takes effect, so that the results agree with a sequential map. Keys are
// independent registers and linearizability is local (Herlihy & Wing 1990), so each key's
// operations are checked on their own.
//
// Per key, this is Wing & Gong's search ("Testing and verifying concurrent objects", JPDC 1993)
// with Lowe's memoization ("Testing for linearizability", CCPE 2017), as in Porcupine. The calls
// and returns form one list ordered by time. Walking it from the front, every call met before the
// first return belongs to an operation that may take effect next: nothing still pending returned
// before it was called. If the operation agrees with the register's value, it is linearized: its
// call and return leave the list and the walk restarts at the front. Meeting a return instead means
// an operation that has returned cannot be linearized yet, so the search backtracks: it undoes the
// last operation linearized and tries the next call after it. The history is linearizable when the
// list empties, and is not when the search must backtrack past the start. What is left to search
// depends only on which operations are linearized and on the register's value, so a pair of these
// that was seen before is not explored again. The worst case is exponential in how many operations
// overlap. Two exact shortcuts on top: a read that may go next and agrees with the value is taken
// with no alternative tried (it changes nothing, so if any order works, one taking it first does),
// and writes that never returned, which overlap everything after them, are simplified first.
//
// Intervals are closed: an operation precedes another only if it returned strictly before the
// other's call. An operation whose client saw no return (ret == kNever) may take effect at any time
// after its call, or never: it can always be linearized after everything else. A Get that never
// returned says nothing and is dropped.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lin {

using Time = std::int64_t;
constexpr Time kNever = std::numeric_limits<Time>::max(); // the client saw no return

struct Operation {
  enum Kind { Put, Get, Cas };
  std::uint64_t client = 0;
  std::string key;
  Kind kind = Get;
  std::string value;                   // Put: the value written; Cas: the value swapped in
  std::optional<std::string> expected; // Cas: the value it compares with (nullopt: absent)
  std::optional<std::string> output;   // Get: the value read (nullopt: never written)
  bool swapped = false;                // Cas: whether it found `expected` and swapped
  Time call = 0, ret = kNever;
};

inline Operation put(std::uint64_t client, std::string key, std::string value, Time call,
                     Time ret) {
  return {client, std::move(key), Operation::Put, std::move(value), {}, {}, false, call, ret};
}

inline Operation get(std::uint64_t client, std::string key, std::optional<std::string> output,
                     Time call, Time ret) {
  return {client, std::move(key), Operation::Get, {}, {}, std::move(output), false, call, ret};
}

inline Operation cas(std::uint64_t client, std::string key, std::optional<std::string> expected,
                     std::string value, bool swapped, Time call, Time ret) {
  Operation op = put(client, std::move(key), std::move(value), call, ret);
  op.kind = Operation::Cas;
  op.expected = std::move(expected);
  op.swapped = swapped;
  return op;
}

struct Result {
  bool ok = true;
  std::string key;         // on failure: the first key, in key order, that is not linearizable
  std::string explanation; // on failure: that key's operations in call order, and the search's end
};

namespace detail {

// A register operation with its values numbered: 0 is "absent", equal strings get equal numbers.
struct Op {
  Operation::Kind kind;
  int value, expected, output;
  bool swapped, returned; // returned: whether its outcome is known
  Time call, ret;         // ret: kNever while it may take effect at any time after its call
  bool left_out = false;  // a write whose value nothing reads (see simplify)
  int twin = -1;          // the previous operation identical to this one that never returned
};

// Applies `op` to the register's value `state`; false if its result contradicts that value.
inline bool step(const Op& op, int& state) {
  switch (op.kind) {
  case Operation::Put: state = op.value; return true;
  case Operation::Get: return op.output == state;
  case Operation::Cas:
    if (op.returned && op.swapped != (state == op.expected)) return false;
    if (state == op.expected) state = op.value;
    return true;
  }
  return false;
}

// Each write that never returned could take effect anywhere after its call, which multiplies the
// search. Four exact simplifications, for `ops` in call order:
//  1. A Cas that expects a value nothing writes never swaps: it is left out.
//  2. A write of a value that nothing reads - no Get, no Cas expects it, no Cas failed (which reads
//     that the value is not the one expected) - is left out: the value could only last until the
//     next Put, unseen.
//  3. The only write of a value that is read must take effect before the first read of it returns,
//     so that becomes its return time.
//  4. Identical writes that never returned are interchangeable, so they take effect in call order.
inline void simplify(std::vector<Op>& ops) {
  std::map<int, int> writes;          // how many operations write each value
  std::map<int, Time> first_read_ret; // the first return of a completed read of each value
  std::set<int> expected;             // the values some Cas expects
  bool any_failed_cas = false;
  for (const Op& op : ops) {
    if (op.kind != Operation::Get) ++writes[op.value];
    if (op.kind == Operation::Cas) expected.insert(op.expected);
    any_failed_cas = any_failed_cas || (op.kind == Operation::Cas && op.returned && !op.swapped);
    if (op.returned && (op.kind == Operation::Get || op.swapped)) {
      const int read = op.kind == Operation::Get ? op.output : op.expected;
      auto [it, fresh] = first_read_ret.emplace(read, op.ret);
      if (!fresh) it->second = std::min(it->second, op.ret);
    }
  }
  std::map<std::tuple<int, int, int>, int> last_twin;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (op.returned) continue;
    auto read = first_read_ret.find(op.value);
    if (op.kind == Operation::Cas && op.expected != 0 && !writes.count(op.expected)) {
      op.left_out = true;
    } else if (read == first_read_ret.end() && !expected.count(op.value) && !any_failed_cas) {
      op.left_out = true;
    } else if (read != first_read_ret.end() && writes[op.value] == 1) {
      op.ret = std::max(op.call, read->second);
    } else {
      auto twin = last_twin.emplace(std::make_tuple(op.kind, op.value, op.expected), -1).first;
      op.twin = twin->second;
      twin->second = static_cast<int>(i);
    }
  }
}

// Whether `op` leaves the value unchanged whenever it agrees with it.
inline bool read_only(const Op& op) {
  return op.kind == Operation::Get || (op.kind == Operation::Cas && op.returned && !op.swapped);
}

struct WordsHash {
  std::size_t operator()(const std::vector<std::uint64_t>& words) const {
    std::uint64_t h = 14695981039346656037ull;
    for (std::uint64_t w : words) h = (h ^ w) * 1099511628211ull;
    return static_cast<std::size_t>(h);
  }
};

// Whether `ops` is linearizable. Either way `longest` ends as the longest sequence of operations
// (indices into `ops`) that the search linearized, and `last_state` as the value after it.
inline bool linearizable(const std::vector<Op>& ops, std::vector<int>& longest, int& last_state) {
  const int n = static_cast<int>(ops.size());
  // Event 2i is the call of operation i and 2i + 1 its return; calls come first at equal times.
  auto time = [&](int e) { return e % 2 ? ops[e / 2].ret : ops[e / 2].call; };
  std::vector<int> order;
  for (int e = 0; e < 2 * n; ++e)
    if (!ops[static_cast<std::size_t>(e / 2)].left_out) order.push_back(e);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return time(a) != time(b) ? time(a) < time(b) : (a % 2 != b % 2 ? a % 2 < b % 2 : a < b);
  });
  // A doubly linked list of the events, headed by node 2n; -1 ends it. Removed nodes keep their
  // links, so they can be put back in the reverse order (Knuth's dancing links).
  const int head = 2 * n;
  std::vector<int> prev(2 * n + 1), next(2 * n + 1);
  int last = head;
  for (int e : order) next[last] = e, prev[e] = last, last = e;
  next[last] = -1;
  auto remove = [&](int e) {
    next[prev[e]] = next[e];
    if (next[e] >= 0) prev[next[e]] = prev[e];
  };
  auto restore = [&](int e) {
    next[prev[e]] = e;
    if (next[e] >= 0) prev[next[e]] = e;
  };

  // The memo's key: the set of linearized operations as a bitset, then the register's value.
  std::vector<std::uint64_t> key(static_cast<std::size_t>((n + 63) / 64 + 1), 0);
  auto bit = [&](int i) -> std::uint64_t& { return key[static_cast<std::size_t>(i / 64)]; };
  auto flip = [&](int i) { bit(i) ^= std::uint64_t{1} << (i % 64); };
  auto linearized = [&](int i) { return i >= 0 && bit(i) >> (i % 64) & 1; };
  std::unordered_set<std::vector<std::uint64_t>, WordsHash> seen;
  struct Frame {
    int op, state_before;
    bool read_only;
  };
  std::vector<Frame> stack;
  int state = 0;
  longest.clear();
  last_state = 0;
  // The list's last event is always a return, so the walk meets one before running off the end.
  for (int e = next[head]; next[head] >= 0;) {
    bool backtrack = e % 2 == 1; // a return: the operation returning there cannot go next
    if (!backtrack) {            // a call: try to linearize its operation now
      const int i = e / 2;
      const Op& op = ops[static_cast<std::size_t>(i)];
      int after = state;
      if ((op.twin < 0 || linearized(op.twin)) && step(op, after)) {
        flip(i);
        key.back() = static_cast<std::uint64_t>(after);
        if (seen.insert(key).second) {
          stack.push_back({i, state, read_only(op)});
          state = after;
          remove(e);
          remove(e + 1);
          if (stack.size() > longest.size()) {
            longest.clear();
            for (const Frame& f : stack) longest.push_back(f.op);
            last_state = state;
          }
          e = next[head];
          continue;
        }
        flip(i);
        backtrack = read_only(op); // what comes after a read that may go next failed before
      }
      e = next[e];
    }
    if (backtrack) { // undo the last operation linearized but a read, and try the call after it
      Frame f{};
      do {
        if (stack.empty()) return false;
        f = stack.back();
        stack.pop_back();
        state = f.state_before;
        flip(f.op);
        restore(2 * f.op + 1);
        restore(2 * f.op);
      } while (f.read_only);
      e = next[2 * f.op];
    }
  }
  return true;
}

inline std::string show(const std::optional<std::string>& value) {
  return value ? '"' + *value + '"' : "absent";
}

inline std::string show_time(Time t) { return t == kNever ? "never" : std::to_string(t); }

inline std::string describe(const Operation& op) {
  std::string key = '"' + op.key + '"';
  switch (op.kind) {
  case Operation::Put: return "Put(" + key + ", " + show(op.value) + ")";
  case Operation::Get: return "Get(" + key + ") -> " + show(op.output);
  case Operation::Cas: {
    std::string outcome = op.swapped ? "swapped" : "not swapped";
    if (op.ret == kNever) outcome = "?";
    return "Cas(" + key + ", " + show(op.expected) + ", " + show(op.value) + ") -> " + outcome;
  }
  }
  return "?";
}

// Checks one key's operations, given in call order.
inline Result check_key(const std::string& key, const std::vector<Operation>& history) {
  std::map<std::string, int> numbers; // each distinct value's number; 0 is "absent"
  auto number = [&](const std::optional<std::string>& value) {
    return value ? numbers.emplace(*value, static_cast<int>(numbers.size()) + 1).first->second : 0;
  };
  std::vector<Op> ops;
  for (const Operation& op : history) {
    const bool get = op.kind == Operation::Get, cas = op.kind == Operation::Cas;
    ops.push_back({op.kind, get ? 0 : number(op.value), cas ? number(op.expected) : 0,
                   get ? number(op.output) : 0, op.swapped, op.ret != kNever, op.call, op.ret});
  }
  simplify(ops);
  std::vector<int> longest;
  int last_state = 0;
  if (linearizable(ops, longest, last_state)) return {true, "", ""};

  std::ostringstream out;
  out << "the history of key \"" << key << "\" is not linearizable. Its " << history.size()
      << " operations, in call order:\n";
  for (std::size_t i = 0; i < history.size(); ++i) {
    const Operation& op = history[i];
    out << "  #" << i << "  client " << op.client << "  [" << op.call << ", " << show_time(op.ret)
        << "]  " << describe(op) << (ops[i].left_out ? "  (cannot matter: left out)" : "") << "\n";
  }
  std::optional<std::string> value;
  for (const auto& [text, id] : numbers)
    if (id == last_state) value = text;
  if (longest.empty()) {
    out << "No operation can go first.\n";
  } else {
    out << "The longest order the search found:";
    for (int i : longest) out << " #" << i;
    out << ", after which the value is " << show(value) << " and no other operation can go next.\n";
  }
  return {false, key, out.str()};
}

} // namespace detail

// Checks a whole history, key by key, in key order; reports the first key that fails.
// Throws std::invalid_argument for an operation that returns before its call.
inline Result check(const std::vector<Operation>& history) {
  std::map<std::string, std::vector<Operation>> by_key;
  for (const Operation& op : history) {
    if (op.ret < op.call)
      throw std::invalid_argument("lin::check: an operation on \"" + op.key +
                                  "\" returns before its call");
    if (op.kind == Operation::Get && op.ret == kNever) continue; // it observed nothing
    by_key[op.key].push_back(op);
  }
  for (auto& [key, ops] : by_key) {
    std::stable_sort(ops.begin(), ops.end(),
                     [](const Operation& a, const Operation& b) { return a.call < b.call; });
    Result result = detail::check_key(key, ops);
    if (!result.ok) return result;
  }
  return {};
}

} // namespace lin
