// bench/bench.cpp: `make bench`. Measures raft.cpp in one process and prints one table:
//   1. in-process throughput of writes and of reads (ReadIndex, and with lease_reads; 3 and 5
//      replicas, one thread, no message delay) beside a floor,
//   2. latency of one write, or one read, at a time on an idle cluster,
//   3. idle CPU of a cluster run by start() in three threads,
//   4. failover time with random message delays, after the leader crashes (with check-quorum,
//      the default, and without) or is cut off in a minority,
// Items 1, 2 and 4 run the simulated cluster the tests use (tests/cluster.hpp), without checks.
//   5. durable appends through FileStorage,
//   6. a burst of 100,000 proposals at a 5 ms heartbeat, three threads running start(),
//   7. examples/kv over TCP: three kv-server processes on loopback and concurrent clients that
//      PUT new keys, then GET the keys written,
//   8. examples/kv against a 3-member etcd on the same machine, both loaded by wrk
//   (examples/kv/bench/etcd.cpp;
//      skipped, with a note, without etcd and wrk): writes and linearizable reads at 1, 16 and
//      64 connections, and the ratios.
// Every figure is measured when the program runs; nothing is hard-coded. Seeds are fixed, so
// everything except wall-clock times and CPU use is the same from run to run.
#include "examples/kv/bench/etcd.hpp"
#include "examples/kv/bench/tcp.hpp"
#include "raft.hpp"
#include "tests/cluster.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

// ---- Allocation counting: global operator new counts bytes while `counting` is set ----
// Counting is switched on only around single-threaded measured phases, so plain counters do.

namespace {
std::atomic<bool> counting{false};
std::uint64_t counted_bytes = 0, counted_allocations = 0;
bool in_transport = false; // set by the in-memory transport while it copies a message
std::uint64_t transport_bytes = 0;

void* allocate(std::size_t size) {
  if (counting.load(std::memory_order_relaxed)) {
    counted_bytes += size;
    ++counted_allocations;
    if (in_transport) transport_bytes += size;
  }
  void* pointer = std::malloc(size ? size : 1);
  if (!pointer) throw std::bad_alloc();
  return pointer;
}
} // namespace

void* operator new(std::size_t size) { return allocate(size); }
void* operator new[](std::size_t size) { return allocate(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size);
  } catch (...) { return nullptr; }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size);
  } catch (...) { return nullptr; }
}
void operator delete(void* pointer) noexcept { std::free(pointer); }
void operator delete[](void* pointer) noexcept { std::free(pointer); }
void operator delete(void* pointer, std::size_t) noexcept { std::free(pointer); }
void operator delete[](void* pointer, std::size_t) noexcept { std::free(pointer); }
void operator delete(void* pointer, const std::nothrow_t&) noexcept { std::free(pointer); }
void operator delete[](void* pointer, const std::nothrow_t&) noexcept { std::free(pointer); }

namespace {

using namespace std::chrono_literals;
using raft::Clock;
using raft::ReplicaID;
using Wall = std::chrono::steady_clock;

struct Allocations {
  std::uint64_t bytes = 0, count = 0, transport_bytes = 0;
};
void start_counting() {
  counted_bytes = counted_allocations = transport_bytes = 0;
  counting.store(true);
}
Allocations stop_counting() {
  counting.store(false);
  return {counted_bytes, counted_allocations, transport_bytes};
}

double seconds_since(Wall::time_point start) {
  return std::chrono::duration<double>(Wall::now() - start).count();
}

// ---- Statistics and formatting ----

double median(std::vector<double> values) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// Nearest rank: the smallest value with at least p of the samples at or below it.
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(p * values.size()));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

struct Row {
  std::string label, three, five;
};
std::vector<Row> rows;
std::vector<std::string> notes; // anything that went wrong, printed after the table

void row(std::string label, std::string three, std::string five = "-") {
  rows.push_back({std::move(label), std::move(three), std::move(five)});
}

const std::string did_not_converge = "did not converge";

// ---- Shared pieces: timeouts, the state machine, payloads ----

constexpr auto heartbeat = 50ms;
const std::pair<raft::Duration, raft::Duration> election_range{150ms, 300ms};
const raft::Transition noop{0, ""};
constexpr std::size_t payload_bytes = 16;

std::vector<ReplicaID> peers_of(ReplicaID id, std::size_t size) {
  std::vector<ReplicaID> peers;
  for (ReplicaID peer = 1; peer <= size; ++peer)
    if (peer != id) peers.push_back(peer);
  return peers;
}

// Applies transitions 1, 2, 3... in order: counts them, checks the order, touches the payload.
class Machine final : public raft::StateMachine {
public:
  std::vector<raft::Transition> pending; // handed over at the next get_pending_transitions
  std::uint64_t applied = 0;             // transitions applied, the no-op excluded
  std::uint64_t checksum = 0;
  bool out_of_order = false;

  // Reads use ids from read_base on: their reports are counted, not ignored. A read reported
  // Applied before this machine applied `read_needs` transitions would be stale.
  static constexpr std::uint64_t read_base = std::uint64_t{1} << 48;
  std::vector<std::uint8_t> read_reports; // by read id - read_base: bit 1 Queued, bit 2 Applied
  std::uint64_t reads_applied = 0, read_needs = 0, read_problems = 0;

  void register_transition_state(std::uint64_t id, raft::TransitionState state,
                                 raft::AbandonReason) override {
    if (id < read_base) return;
    std::uint64_t n = id - read_base;
    std::uint8_t bit = state == raft::TransitionState::Queued    ? 1
                       : state == raft::TransitionState::Applied ? 2
                                                                 : 4; // Committed or Abandoned
    if (n >= read_reports.size() || (read_reports[n] & bit) || bit == 4 ||
        (bit == 2 && (!(read_reports[n] & 1) || applied < read_needs))) {
      ++read_problems; // unknown id, twice, Committed/Abandoned, Applied unqueued or stale
      return;
    }
    read_reports[n] |= bit;
    reads_applied += bit == 2;
  }
  void expect_reads(std::size_t count) {
    read_reports.assign(count, 0);
    reads_applied = read_problems = 0;
    read_needs = applied;
  }
  void apply_transition(const raft::Transition& transition) override {
    if (transition.id == 0) return; // the no-op
    out_of_order |= transition.id != applied + 1;
    ++applied;
    if (!transition.data.empty())
      checksum += transition.data.size() + static_cast<unsigned char>(transition.data.back());
  }
  std::vector<raft::Transition> get_pending_transitions() override {
    return std::exchange(pending, {});
  }
};

raft::Transition make_transition(std::uint64_t id) {
  char data[payload_bytes + 1];
  std::snprintf(data, sizeof data, "%016llx",
                static_cast<unsigned long long>(id * 0x9E3779B97F4A7C15ull));
  return raft::Transition{id, std::string(data, payload_bytes)};
}

std::vector<raft::Transition> make_transitions(std::size_t count) {
  std::vector<raft::Transition> transitions;
  transitions.reserve(count);
  for (std::uint64_t id = 1; id <= count; ++id) transitions.push_back(make_transition(id));
  return transitions;
}

// ---- The simulated cluster of tests/cluster.hpp, with this state machine and no checks ----

// The cluster's transport, whose allocations (its copies of messages, its inboxes) count apart.
class Transport final : public sim::Endpoint {
public:
  using Endpoint::Endpoint;
  void send_message(ReplicaID to, const raft::Message& message) override {
    in_transport = true;
    Endpoint::send_message(to, message);
    in_transport = false;
  }
  std::vector<raft::Message> receive_messages() override {
    in_transport = true;
    std::vector<raft::Message> messages = Endpoint::receive_messages();
    in_transport = false;
    return messages;
  }
};

// With no delay (the default) it runs in rounds: every replica polled in id order, a message
// sent during a poll in the receiver's inbox at its next poll. With delays, step() runs it on
// events. Replicas are r1 to rN; `cut_off` is the minority side of a partition.
class Cluster : public sim::Cluster<Machine, raft::MemoryStorage, Transport> {
public:
  Cluster(std::size_t size, std::uint64_t seed, raft::Options options = {},
          std::pair<raft::Duration, raft::Duration> delays = {})
      : sim::Cluster<Machine, raft::MemoryStorage, Transport>(seed, {heartbeat, election_range},
                                                              options, noop),
        seed_(seed) {
    network().faults = {delays.first, delays.second, 0, 0};
    start(size);
  }

  std::set<ReplicaID> cut_off;

  bool in_flight() const { return network().next_arrival() != Clock::time_point::max(); }
  bool all_applied(std::uint64_t count) const {
    for (ReplicaID id : ids())
      if (machine(id).applied != count) return false;
    return true;
  }
  bool counted(ReplicaID id) const { return is_up(id) && !cut_off.count(id); }
  bool any_leader() const {
    for (ReplicaID id : ids())
      if (counted(id) && replica(id).is_leader()) return true;
    return false;
  }
  // The running replica, not cut off, that leads and that every such replica names as leader.
  std::optional<ReplicaID> agreed_leader() const {
    std::optional<ReplicaID> found;
    for (ReplicaID id : ids())
      if (counted(id) && replica(id).is_leader()) found = id;
    if (!found) return std::nullopt;
    for (ReplicaID id : ids())
      if (counted(id) && replica(id).leader() != found) return std::nullopt;
    return found;
  }

  // Rounds of 1 ms until one replica leads, every replica knows it, everyone applied the no-op
  // and no message is in flight. False after 20 simulated seconds.
  bool elect() {
    for (int rounds = 0; rounds < 20000; ++rounds) {
      round(1ms);
      std::optional<ReplicaID> l = leader();
      if (!l || in_flight()) continue;
      bool settled = true;
      for (ReplicaID id : ids())
        settled = settled && replica(id).leader() == l &&
                  replica(id).last_applied() == replica(*l).last_log_index();
      if (settled) return true;
    }
    return false;
  }

private:
  // Replica r of seed s draws from seed 100 s + r; it keeps no storage, as a replica given none
  // (nothing here restarts), so that every byte counted is the library's or the network's.
  raft::Options options_for(Slot& slot) override {
    raft::Options options =
        sim::Cluster<Machine, raft::MemoryStorage, Transport>::options_for(slot);
    options.seed = seed_ * 100 + slot.id;
    options.storage = nullptr;
    return options;
  }

  const std::uint64_t seed_;
};

// ---- 1. Throughput ----

constexpr std::size_t throughput_transitions = 100000;
constexpr int throughput_runs = 5;
const std::size_t sizes[] = {3, 5};
// How many transitions (or reads) are handed over before each round; 0: all before the first.
const std::pair<std::size_t, const char*> modes[] = {
    {0, "all at once"}, {1, "1 per poll"}, {16, "16 per poll"}, {256, "256 per poll"}};

// The runs of one item at each size and in each mode; a Run has an optional `failure`.
template <class Run> struct Runs {
  std::vector<Run> at[2][4]; // [size][mode]

  // The median of one figure over the runs; nullopt if any run failed.
  std::optional<double> figure(int s, std::size_t m, double Run::*field) const {
    std::vector<double> values;
    for (const Run& run : at[s][m]) {
      if (run.failure) return std::nullopt;
      values.push_back(run.*field);
    }
    return median(values);
  }
  // The first failure at each size and mode, as a note.
  void note_failures(const std::string& item) const {
    for (int s = 0; s < 2; ++s)
      for (std::size_t m = 0; m < 4; ++m)
        for (const Run& run : at[s][m])
          if (run.failure) {
            notes.push_back(format("%s, %zu replicas, %s: %s", item.c_str(), sizes[s],
                                   modes[m].second, run.failure->c_str()));
            break;
          }
  }
  // One row per mode, `show` turning a median (and the size's index) into a cell.
  void rows(const std::string& label, double Run::*field,
            const std::function<std::string(double, int)>& show) const {
    for (std::size_t m = 0; m < 4; ++m) {
      std::string cells[2];
      for (int s = 0; s < 2; ++s) {
        std::optional<double> value = figure(s, m, field);
        cells[s] = value ? show(*value, s) : did_not_converge;
      }
      row(label + ", " + modes[m].second, cells[0], cells[1]);
    }
  }
};

struct ThroughputRun {
  std::optional<std::string> failure;
  double per_second = 0, messages = 0, bytes = 0, allocations = 0, transport_bytes = 0;
};

// per_poll == 0: everything through one get_pending_transitions.
ThroughputRun run_throughput(std::size_t size, std::size_t per_poll,
                             const std::vector<raft::Transition>& source) {
  ThroughputRun run;
  Cluster cluster(size, 1);
  if (!cluster.elect()) return run.failure = "no leader elected", run;
  ReplicaID l = *cluster.leader();
  raft::Term term = cluster.replica(l).current_term();
  std::size_t chunk = per_poll ? per_poll : source.size();
  std::vector<std::vector<raft::Transition>> chunks;
  for (std::size_t i = 0; i < source.size(); i += chunk)
    chunks.emplace_back(source.begin() + i, source.begin() + std::min(source.size(), i + chunk));

  Machine& leader = cluster.machine(l);
  const std::uint64_t count = source.size(), bound = 2 * count + 100000;
  const std::uint64_t sent = cluster.network().sent();
  bool done = false;
  std::size_t next = 0;
  start_counting();
  Wall::time_point start = Wall::now();
  for (std::uint64_t rounds = 0; rounds < bound && !done; ++rounds) {
    if (next < chunks.size()) leader.pending = std::move(chunks[next++]);
    cluster.round(1us);
    done = cluster.all_applied(count);
  }
  double elapsed = seconds_since(start);
  Allocations allocations = stop_counting();

  if (cluster.leader() != l || cluster.replica(l).current_term() != term)
    run.failure = format("leadership changed during the run (term %llu -> %llu)",
                         static_cast<unsigned long long>(term),
                         static_cast<unsigned long long>(cluster.replica(l).current_term()));
  for (ReplicaID id : cluster.ids())
    if (cluster.machine(id).out_of_order || cluster.machine(id).checksum != leader.checksum)
      run.failure = "replicas applied different sequences";
  if (!done && !run.failure) {
    std::uint64_t least = count;
    for (ReplicaID id : cluster.ids()) least = std::min(least, cluster.machine(id).applied);
    run.failure =
        format("only %llu of %llu applied everywhere after %llu rounds",
               static_cast<unsigned long long>(least), static_cast<unsigned long long>(count),
               static_cast<unsigned long long>(bound));
  }
  run.per_second = count / elapsed;
  run.messages = double(cluster.network().sent() - sent) / count;
  run.bytes = double(allocations.bytes) / count;
  run.allocations = double(allocations.count) / count;
  run.transport_bytes = double(allocations.transport_bytes) / count;
  return run;
}

struct FloorRun {
  double per_second = 0, bytes = 0;
};

// What any replicated log must do at least: copy each payload into every replica's log and
// apply it once per replica.
FloorRun run_floor(std::size_t size, const std::vector<raft::Transition>& source) {
  std::vector<std::unique_ptr<Machine>> machines;
  std::vector<raft::StateMachine*> targets;
  for (std::size_t r = 0; r < size; ++r) {
    machines.push_back(std::make_unique<Machine>());
    targets.push_back(machines.back().get());
  }
  std::vector<std::vector<raft::Entry>> logs(size);
  start_counting();
  Wall::time_point start = Wall::now();
  for (const raft::Transition& transition : source)
    for (std::size_t r = 0; r < size; ++r) {
      logs[r].push_back(raft::Entry{1, transition});
      targets[r]->apply_transition(logs[r].back().transition);
    }
  double elapsed = seconds_since(start);
  Allocations allocations = stop_counting();
  for (const auto& machine : machines)
    if (machine->applied != source.size()) notes.push_back("floor: a replica missed transitions");
  return {source.size() / elapsed, double(allocations.bytes) / source.size()};
}

void measure_throughput() {
  const std::vector<raft::Transition> source = make_transitions(throughput_transitions);
  Runs<ThroughputRun> runs;
  std::vector<FloorRun> floors[2];
  for (int s = 0; s < 2; ++s)
    for (int r = 0; r < throughput_runs; ++r) { // the floor beside every round of runs
      floors[s].push_back(run_floor(sizes[s], source));
      for (std::size_t m = 0; m < 4; ++m)
        runs.at[s][m].push_back(run_throughput(sizes[s], modes[m].first, source));
    }
  runs.note_failures("throughput");
  auto floor_figure = [&](int s, double FloorRun::*field) {
    std::vector<double> values;
    for (const FloorRun& run : floors[s]) values.push_back(run.*field);
    return median(values);
  };
  runs.rows("throughput (transitions/s)", &ThroughputRun::per_second,
            [](double value, int) { return grouped(value); });
  row("floor: copy to every log + apply (transitions/s)",
      grouped(floor_figure(0, &FloorRun::per_second)),
      grouped(floor_figure(1, &FloorRun::per_second)));
  runs.rows("throughput / floor", &ThroughputRun::per_second, [&](double value, int s) {
    return format("%.3f", value / floor_figure(s, &FloorRun::per_second));
  });
  runs.rows("messages sent per transition", &ThroughputRun::messages,
            [](double value, int) { return format("%.3f", value); });
  runs.rows("bytes allocated per transition", &ThroughputRun::bytes,
            [](double value, int) { return format("%.0f B", value); });
  runs.rows("  of which in the transport's message copies", &ThroughputRun::transport_bytes,
            [](double value, int) { return format("%.0f B", value); });
  runs.rows("allocations per transition", &ThroughputRun::allocations,
            [](double value, int) { return format("%.2f", value); });
  row("floor: bytes allocated per transition", format("%.0f B", floor_figure(0, &FloorRun::bytes)),
      format("%.0f B", floor_figure(1, &FloorRun::bytes)));
}

// ---- 1, reads: ReadIndex reads (§6.4) in the same setup, with and without the lease ----

constexpr std::size_t read_count = 100000;
constexpr std::size_t writes_before_reads = 1000;

struct ReadRun {
  std::optional<std::string> failure;
  double per_second = 0, messages = 0, bytes = 0;
  std::uint64_t applied = 0;  // reads reported Applied on the leader, each once
  raft::Index log_growth = 0; // entries added to any replica's log during the reads
};

// Runs rounds until every replica applied `count` transitions and no message is in flight.
bool settle(Cluster& cluster, std::uint64_t count) {
  for (int rounds = 0; rounds < 100000; ++rounds) {
    if (cluster.all_applied(count) && !cluster.in_flight()) return true;
    cluster.round(1us);
  }
  return false;
}

// Writes 1,000 transitions and waits until all are applied everywhere, then issues `read_count`
// reads on the leader, `per_poll` before each round (0: all before the first), and runs rounds
// until the leader reported every one Applied. Times the reads alone.
ReadRun run_reads(std::size_t size, std::size_t per_poll, bool lease) {
  ReadRun run;
  raft::Options options;
  options.lease_reads = lease;
  Cluster cluster(size, 1, options);
  if (!cluster.elect()) return run.failure = "no leader elected", run;
  ReplicaID l = *cluster.leader();
  raft::Replica& leader = cluster.replica(l);
  Machine& machine = cluster.machine(l);
  const raft::Term term = leader.current_term();
  machine.pending = make_transitions(writes_before_reads);
  if (!settle(cluster, writes_before_reads))
    return run.failure = "the writes before the reads were not applied everywhere", run;
  std::vector<raft::Index> logs, commits;
  for (ReplicaID id : cluster.ids()) {
    logs.push_back(cluster.replica(id).last_log_index());
    commits.push_back(cluster.replica(id).commit_index());
  }
  machine.expect_reads(read_count);
  const std::size_t chunk = per_poll ? per_poll : read_count;
  const std::uint64_t bound = 3 * read_count + 100000;
  std::uint64_t next = 0;
  const std::uint64_t sent = cluster.network().sent();
  start_counting();
  Wall::time_point start = Wall::now();
  for (std::uint64_t rounds = 0; rounds < bound && machine.reads_applied < read_count; ++rounds) {
    for (std::size_t i = 0; i < chunk && next < read_count; ++i)
      leader.read(Machine::read_base + next++);
    cluster.round(1us);
  }
  double elapsed = seconds_since(start);
  Allocations allocations = stop_counting();

  run.applied = machine.reads_applied;
  for (std::size_t i = 0; i < cluster.ids().size(); ++i) {
    const raft::Replica& replica = cluster.replica(cluster.ids()[i]);
    run.log_growth = std::max(run.log_growth, replica.last_log_index() - logs[i]);
    if (replica.commit_index() != commits[i] || replica.last_log_index() != logs[i])
      run.failure = format("replica %llu's log or commit index moved during the reads",
                           static_cast<unsigned long long>(replica.id()));
  }
  if (cluster.leader() != l || leader.current_term() != term)
    run.failure = "leadership changed during the reads";
  if (machine.read_problems)
    run.failure = format("%llu read reports out of place (twice, Abandoned, or stale)",
                         static_cast<unsigned long long>(machine.read_problems));
  if (!run.failure && machine.reads_applied != read_count)
    run.failure = format("only %llu of %zu reads reported Applied after %llu rounds",
                         static_cast<unsigned long long>(machine.reads_applied), read_count,
                         static_cast<unsigned long long>(bound));
  run.per_second = read_count / elapsed;
  run.messages = double(cluster.network().sent() - sent) / read_count;
  run.bytes = double(allocations.bytes) / read_count;
  return run;
}

// What any read must cost at least: the two reports, Queued and Applied, through the interface.
double run_read_floor() {
  Machine machine;
  machine.expect_reads(read_count);
  raft::StateMachine* volatile target = &machine; // a virtual call, as the replica makes
  Wall::time_point start = Wall::now();
  for (std::uint64_t n = 0; n < read_count; ++n) {
    target->register_transition_state(Machine::read_base + n, raft::TransitionState::Queued,
                                      raft::AbandonReason::None);
    target->register_transition_state(Machine::read_base + n, raft::TransitionState::Applied,
                                      raft::AbandonReason::None);
  }
  double elapsed = seconds_since(start);
  if (machine.reads_applied != read_count) notes.push_back("read floor: reports were lost");
  return read_count / elapsed;
}

void measure_reads() {
  Runs<ReadRun> runs[2]; // [lease]
  std::vector<double> floors;
  for (int s = 0; s < 2; ++s)
    for (int r = 0; r < throughput_runs; ++r) {
      floors.push_back(run_read_floor());
      for (int lease = 0; lease < 2; ++lease)
        for (std::size_t m = 0; m < 4; ++m)
          runs[lease].at[s][m].push_back(run_reads(sizes[s], modes[m].first, lease));
    }
  const char* names[] = {"ReadIndex", "lease"};
  std::uint64_t issued[2] = {0, 0}, applied[2] = {0, 0};
  raft::Index growth[2] = {0, 0};
  for (int lease = 0; lease < 2; ++lease) {
    runs[lease].note_failures(format("reads, %s", names[lease]));
    for (int s = 0; s < 2; ++s)
      for (std::size_t m = 0; m < 4; ++m)
        for (const ReadRun& run : runs[lease].at[s][m]) {
          issued[s] += read_count;
          applied[s] += run.applied;
          growth[s] = std::max(growth[s], run.log_growth);
        }
  }
  for (int lease = 0; lease < 2; ++lease)
    runs[lease].rows(format("%s reads (reads/s)", names[lease]), &ReadRun::per_second,
                     [](double value, int) { return grouped(value); });
  row("floor: the Queued and Applied reports alone (reads/s)", grouped(median(floors)));
  // One row per kind of read, the modes side by side.
  auto per_mode = [&](const char* label, double ReadRun::*field, const char* pattern) {
    for (int lease = 0; lease < 2; ++lease) {
      std::string cells[2];
      for (int s = 0; s < 2; ++s)
        for (std::size_t m = 0; m < 4; ++m) {
          std::optional<double> value = runs[lease].figure(s, m, field);
          cells[s] += (m ? " / " : "") + (value ? format(pattern, *value) : std::string("n/a"));
        }
      row(format("%s per read, %s: once/1/16/256", label, names[lease]), cells[0], cells[1]);
    }
  };
  per_mode("messages sent", &ReadRun::messages, "%.3f");
  per_mode("bytes allocated", &ReadRun::bytes, "%.0f B");
  auto checked = [&](int s) {
    return format("%s of %s, +%llu", grouped(double(applied[s])).c_str(),
                  grouped(double(issued[s])).c_str(), static_cast<unsigned long long>(growth[s]));
  };
  row("reads reported Applied (of issued), log entries added by reads", checked(0), checked(1));
}

// ---- 2. Latency ----

void measure_latency() {
  constexpr std::size_t samples = 1000;
  Cluster cluster(3, 2);
  std::vector<double> leader_polls, leader_us, all_polls, all_us;
  std::optional<std::string> failure;
  if (!cluster.elect()) failure = "no leader elected";
  ReplicaID l = cluster.leader().value_or(1);
  for (std::uint64_t id = 1; id <= samples && !failure; ++id) {
    for (int i = 0; i < 1000 && cluster.in_flight(); ++i) cluster.round(1us); // idle first
    if (cluster.in_flight()) failure = "the cluster never went idle";
    Machine& leader = cluster.machine(l);
    leader.pending.push_back(make_transition(id));
    bool leader_done = false, all_done = false;
    Wall::time_point start = Wall::now();
    for (int rounds = 1; rounds <= 1000 && !all_done; ++rounds) {
      cluster.round(1us);
      double us = seconds_since(start) * 1e6;
      if (!leader_done && leader.applied == id) {
        leader_done = true;
        leader_polls.push_back(rounds);
        leader_us.push_back(us);
      }
      if (cluster.all_applied(id)) {
        all_done = true;
        all_polls.push_back(rounds);
        all_us.push_back(us);
      }
    }
    if (!all_done)
      failure = format("transition %llu not applied everywhere within 1000 rounds",
                       static_cast<unsigned long long>(id));
  }
  if (failure) notes.push_back("latency: " + *failure);
  auto cell = [&](const std::vector<double>& values, const char* pattern) {
    if (failure) return did_not_converge;
    return format(pattern, percentile(values, 0.5), percentile(values, 0.99));
  };
  row("latency to applied on leader, p50 / p99 (rounds)", cell(leader_polls, "%.0f / %.0f"));
  row("latency to applied on leader, p50 / p99 (us)", cell(leader_us, "%.1f / %.1f"));
  row("latency to applied everywhere, p50 / p99 (rounds)", cell(all_polls, "%.0f / %.0f"));
  row("latency to applied everywhere, p50 / p99 (us)", cell(all_us, "%.1f / %.1f"));
}

// One read at a time on an idle cluster, as above: rounds and wall time until the leader reports
// it Applied. Also checks that every read was reported Applied and that none grew the log.
void measure_read_latency() {
  constexpr std::size_t samples = 1000;
  for (bool lease : {false, true}) {
    std::string polls_cells[2], us_cells[2];
    for (int s = 0; s < 2; ++s) {
      std::size_t size = s ? 5 : 3;
      raft::Options options;
      options.lease_reads = lease;
      Cluster cluster(size, 2, options);
      std::vector<double> polls, us;
      std::optional<std::string> failure;
      if (!cluster.elect()) failure = "no leader elected";
      ReplicaID l = cluster.leader().value_or(1);
      raft::Index log = cluster.replica(l).last_log_index();
      Machine& machine = cluster.machine(l);
      machine.expect_reads(samples);
      for (std::uint64_t n = 0; n < samples && !failure; ++n) {
        for (int i = 0; i < 1000 && cluster.in_flight(); ++i) cluster.round(1us); // idle first
        if (cluster.in_flight()) failure = "the cluster never went idle";
        cluster.replica(l).read(Machine::read_base + n);
        bool done = false;
        Wall::time_point start = Wall::now();
        for (int rounds = 1; rounds <= 1000 && !done; ++rounds) {
          cluster.round(1us);
          if ((done = machine.reads_applied == n + 1)) {
            us.push_back(seconds_since(start) * 1e6);
            polls.push_back(rounds);
          }
        }
        if (!done)
          failure = format("read %llu not Applied within 1000 rounds",
                           static_cast<unsigned long long>(n));
      }
      if (!failure && machine.read_problems) failure = "read reports out of place";
      if (!failure && (cluster.leader() != l || cluster.replica(l).last_log_index() != log))
        failure = "the leader changed or its log grew during the reads";
      if (failure) {
        notes.push_back(format("read latency, %zu replicas%s: %s", size, lease ? ", lease" : "",
                               failure->c_str()));
        polls_cells[s] = us_cells[s] = did_not_converge;
        continue;
      }
      polls_cells[s] = format("%.0f / %.0f", percentile(polls, 0.5), percentile(polls, 0.99));
      us_cells[s] = format("%.1f / %.1f", percentile(us, 0.5), percentile(us, 0.99));
    }
    std::string kind = lease ? "lease read" : "ReadIndex read";
    row("latency of a " + kind + " to Applied, p50 / p99 (rounds)", polls_cells[0], polls_cells[1]);
    row("latency of a " + kind + " to Applied, p50 / p99 (us)", us_cells[0], us_cells[1]);
  }
}

// ---- 3. Idle cost: three threads running start() ----

struct Hub {
  struct Inbox {
    std::mutex mutex;
    std::condition_variable arrived;
    std::vector<raft::Message> messages;
  };
  std::vector<std::unique_ptr<Inbox>> inboxes; // by id
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sent{0};
  explicit Hub(std::size_t size) {
    for (std::size_t i = 0; i <= size; ++i) inboxes.push_back(std::make_unique<Inbox>());
  }
};

// Thread-safe transport; wait_until is left to raft::Cluster's default (sleep 1 ms at most).
class SleepingEndpoint : public raft::Cluster {
public:
  SleepingEndpoint(Hub& hub, ReplicaID id) : hub_(hub), id_(id) {}
  void send_message(ReplicaID to, const raft::Message& message) override {
    Hub::Inbox& inbox = *hub_.inboxes[to];
    {
      std::lock_guard<std::mutex> lock(inbox.mutex);
      inbox.messages.push_back(message);
    }
    inbox.arrived.notify_one();
    hub_.sent.fetch_add(1, std::memory_order_relaxed);
  }
  std::vector<raft::Message> receive_messages() override {
    Hub::Inbox& inbox = *hub_.inboxes[id_];
    std::lock_guard<std::mutex> lock(inbox.mutex);
    return std::exchange(inbox.messages, {});
  }
  bool halt() const override { return hub_.stop.load(); }
  void register_leader(std::optional<ReplicaID>) override {}

protected:
  Hub& hub_;
  const ReplicaID id_;
};

// The same, waking on a message or at the deadline through a condition variable.
class WakingEndpoint : public SleepingEndpoint {
public:
  using SleepingEndpoint::SleepingEndpoint;
  void wait_until(Clock::time_point deadline) override {
    Hub::Inbox& inbox = *hub_.inboxes[id_];
    std::unique_lock<std::mutex> lock(inbox.mutex);
    inbox.arrived.wait_until(lock, deadline,
                             [&] { return !inbox.messages.empty() || hub_.stop.load(); });
  }
};

struct IdleRun {
  double cpu_seconds = 0, wall_seconds = 0, messages_per_second = 0;
  int leaders = 0;
};

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Replicas that run start() in threads of their own, over a Hub; stop() halts and joins them.
template <class M, class Endpoint> struct ThreadedCluster {
  Hub hub;
  std::vector<std::unique_ptr<M>> machines;
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::vector<std::unique_ptr<raft::Replica>> replicas;
  std::vector<std::thread> threads;

  ThreadedCluster(std::size_t size, std::uint64_t seed, raft::Duration heartbeat,
                  std::pair<raft::Duration, raft::Duration> election)
      : hub(size) {
    for (ReplicaID id = 1; id <= size; ++id) {
      machines.push_back(std::make_unique<M>());
      endpoints.push_back(std::make_unique<Endpoint>(hub, id));
      raft::Options options;
      options.seed = seed + id;
      replicas.push_back(std::make_unique<raft::Replica>(id, peers_of(id, size), *endpoints.back(),
                                                         *machines.back(), noop, heartbeat,
                                                         election, options));
    }
    for (auto& replica : replicas) threads.emplace_back([&replica] { replica->start(); });
  }
  void stop() {
    hub.stop.store(true);
    for (auto& inbox : hub.inboxes) {
      { std::lock_guard<std::mutex> lock(inbox->mutex); }
      inbox->arrived.notify_all();
    }
    for (std::thread& thread : threads) thread.join();
    threads.clear();
  }
  ~ThreadedCluster() { stop(); }
};

template <class Endpoint> IdleRun run_idle(std::chrono::seconds duration) {
  IdleRun run;
  double cpu_before = cpu_seconds();
  Wall::time_point start = Wall::now();
  ThreadedCluster<Machine, Endpoint> cluster(3, 300, heartbeat, election_range);
  std::this_thread::sleep_for(duration);
  cluster.stop();
  run.wall_seconds = seconds_since(start);
  run.cpu_seconds = cpu_seconds() - cpu_before;
  run.messages_per_second = cluster.hub.sent.load() / run.wall_seconds;
  for (auto& replica : cluster.replicas) run.leaders += replica->is_leader();
  return run;
}

void measure_idle() {
  auto report = [](const IdleRun& run, const std::string& name, int seconds) {
    if (run.leaders != 1) {
      notes.push_back(format("idle, %s: %d leaders at the end", name.c_str(), run.leaders));
      row("idle CPU, " + name + format(" (CPU s in %d s)", seconds), did_not_converge);
      return;
    }
    row("idle CPU, " + name + format(" (CPU s in %d s)", seconds),
        format("%.3f s", run.cpu_seconds));
    double percent = 100 * run.cpu_seconds / run.wall_seconds;
    row("idle CPU, " + name + " (% of one core)",
        format("%.3f %% (%.3f %% per replica)", percent, percent / 3));
    row("idle messages, " + name + " (per s)", format("%.1f", run.messages_per_second));
  };
  report(run_idle<WakingEndpoint>(10s), "condvar wait_until", 10);
  report(run_idle<SleepingEndpoint>(5s), "default wait_until", 5);
  // What the default's thousand wakeups a second cost by themselves: three threads that only
  // sleep as it does, with no replica at all.
  double cpu_before = cpu_seconds();
  Wall::time_point start = Wall::now();
  std::vector<std::thread> sleepers;
  for (int i = 0; i < 3; ++i)
    sleepers.emplace_back([start] {
      while (Wall::now() < start + 5s) std::this_thread::sleep_until(Clock::now() + 1ms);
    });
  for (std::thread& sleeper : sleepers) sleeper.join();
  row("idle CPU, 3 threads that only sleep 1 ms at a time (% of one core)",
      format("%.3f %%", 100 * (cpu_seconds() - cpu_before) / seconds_since(start)));
}

// ---- 6. A burst of 100,000 proposals at a 5 ms heartbeat, three threads running start() ----

// Thread-safe: the bench thread hands over transitions while the replica's thread polls. What a
// replica abandons as NotLeader (the leader changed) is kept to be proposed again.
class LockedMachine final : public raft::StateMachine {
public:
  std::mutex mutex;
  std::vector<raft::Transition> pending, handed, abandoned;
  std::atomic<std::uint64_t> applied{0};
  std::atomic<int> noops{0}; // one per leader elected: each appends a no-op (§8)
  void register_transition_state(std::uint64_t id, raft::TransitionState state,
                                 raft::AbandonReason) override {
    if (state != raft::TransitionState::Abandoned) return;
    std::lock_guard<std::mutex> lock(mutex);
    abandoned.push_back(make_transition(id));
  }
  void apply_transition(const raft::Transition& transition) override {
    if (transition.id != 0) applied.fetch_add(1, std::memory_order_relaxed);
    if (transition.id == 0) noops.fetch_add(1);
  }
  std::vector<raft::Transition> get_pending_transitions() override {
    std::lock_guard<std::mutex> lock(mutex);
    return std::exchange(pending, {});
  }
};

// Counts every change of leader this replica sees, and remembers whether it leads.
class WatchingEndpoint final : public WakingEndpoint {
public:
  using WakingEndpoint::WakingEndpoint;
  std::atomic<int> changes{0};
  std::atomic<bool> leads{false};
  void register_leader(std::optional<ReplicaID> leader) override {
    changes.fetch_add(1);
    leads.store(leader == id_);
  }
};

struct BurstRun {
  double seconds = 0;    // from handing over the burst until every replica applied it
  int new_leaders = 0;   // no-ops applied on replica 1 during that time: a leader was lost
  int registrations = 0; // register_leader calls on any replica, pre-candidacies included
  bool converged = false;
};

BurstRun run_burst(std::size_t size, std::size_t count) {
  ThreadedCluster<LockedMachine, WatchingEndpoint> cluster(size, 600, 5ms, {15ms, 30ms});
  auto& machines = cluster.machines;
  auto& endpoints = cluster.endpoints;
  auto leader = [&]() -> int {
    for (std::size_t i = 0; i < size; ++i)
      if (endpoints[i]->leads.load()) return static_cast<int>(i);
    return -1;
  };
  auto all_applied = [&] {
    for (auto& machine : machines)
      if (machine->applied.load() < count) return false;
    return true;
  };
  Wall::time_point deadline = Wall::now() + 5s;
  while (leader() < 0 && Wall::now() < deadline) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms); // let every replica learn of it
  int changes_before = 0, noops_before = machines[0]->noops.load();
  for (auto& endpoint : endpoints) changes_before += endpoint->changes.load();
  std::vector<raft::Transition> to_propose = make_transitions(count);
  BurstRun run;
  Wall::time_point start = Wall::now();
  for (deadline = start + 60s; !all_applied() && Wall::now() < deadline;) {
    for (auto& machine : machines) { // proposals a former leader abandoned go out again
      std::lock_guard<std::mutex> lock(machine->mutex);
      for (raft::Transition& t : std::exchange(machine->abandoned, {}))
        to_propose.push_back(std::move(t));
    }
    int chosen = leader();
    if (chosen >= 0 && !to_propose.empty()) { // a swap: the lock is held for O(1), not O(n)
      std::lock_guard<std::mutex> lock(machines[chosen]->mutex);
      std::vector<raft::Transition>& pending = machines[chosen]->pending;
      if (pending.empty()) pending.swap(to_propose);
      for (raft::Transition& t : std::exchange(to_propose, {})) pending.push_back(std::move(t));
    }
    std::this_thread::sleep_for(100us);
  }
  run.seconds = seconds_since(start);
  run.converged = all_applied();
  for (auto& endpoint : endpoints) run.registrations += endpoint->changes.load();
  run.registrations -= changes_before;
  run.new_leaders = machines[0]->noops.load() - noops_before;
  return run;
}

void measure_burst() {
  std::vector<std::string> cells;
  for (std::size_t size : {3, 5}) {
    std::vector<double> rates;
    int new_leaders = 0, registrations = 0;
    bool converged = true;
    for (int run = 0; run < 3; ++run) {
      BurstRun r = run_burst(size, 100000);
      converged = converged && r.converged;
      new_leaders += r.new_leaders;
      registrations += r.registrations;
      rates.push_back(100000 / r.seconds);
    }
    cells.push_back(converged ? format("%s/s, %d new leaders (%d register_leader)",
                                       grouped(median(rates)).c_str(), new_leaders, registrations)
                              : did_not_converge);
  }
  row("burst of 100,000 at a 5 ms heartbeat, threads, 3 runs", cells[0], cells[1]);
}

// ---- 4. Failover on a simulated clock with random message delays ----

// Elects a leader, then 500 ms of heartbeats, plus a random part of `period` (a heartbeat period
// by default) so that what follows falls at a random phase of the leader's timers, not at one of
// its polls. Returns the leader's index, or -1.
std::optional<ReplicaID> settled_leader(Cluster& cluster, raft::Duration period = heartbeat) {
  Clock::time_point give_up = cluster.now() + 30s;
  while (!cluster.agreed_leader() && cluster.now() < give_up) cluster.step();
  Clock::time_point end = cluster.now() + 500ms + cluster.random().between(0us, period - 1us);
  while (cluster.now() < end) cluster.step(end);
  return cluster.agreed_leader();
}

constexpr std::pair<raft::Duration, raft::Duration> simulated_delays{500us, 2000us};

double in_timeouts(Clock::duration elapsed) {
  return std::chrono::duration<double>(elapsed) /
         std::chrono::duration<double>(election_range.second);
}

// Cuts `side` off from the rest: every message between the two sides is lost, in flight too.
void cut_off(Cluster& cluster, const std::set<ReplicaID>& side) {
  std::vector<ReplicaID> rest;
  for (ReplicaID id : cluster.ids())
    if (!side.count(id)) rest.push_back(id);
  cluster.cut_off = side;
  cluster.partition({std::vector<ReplicaID>(side.begin(), side.end()), rest});
}

struct Trial {
  std::optional<std::string> failure;
  double first_leader = 0, all_know = 0; // in maximum election timeouts: until a live replica of
                                         // the majority leads; until every one names it
  bool extra_rounds = false;             // the new leader's term is above the old one's + 1
  std::optional<double> stepped_down;    // partitioned: when the old leader stopped leading
};

// The leader crashes: it is no longer polled and every message to or from it is lost, in flight
// too. Or, `partitioned`, it and with 5 replicas one follower with it (the largest minority) are
// cut off from the rest but keep running, at a random phase of the leader's check-quorum period
// (the maximum election timeout). Followed until the majority agrees on a leader and, when
// partitioned, the old leader stepped down, or for 20 maximum election timeouts.
Trial run_trial(std::size_t size, std::uint64_t seed, const raft::Options& options,
                bool partitioned) {
  Trial trial;
  Cluster cluster(size, seed, options, simulated_delays);
  std::optional<ReplicaID> old =
      settled_leader(cluster, partitioned ? election_range.second : heartbeat);
  if (!old) return trial.failure = "no settled first leader", trial;
  raft::Term old_term = cluster.replica(*old).current_term();
  std::set<ReplicaID> minority{*old};
  if (partitioned)
    for (std::size_t k = 1; k < (size - 1) / 2; ++k) minority.insert((*old - 1 + k) % size + 1);
  else
    cluster.crash(*old);
  cut_off(cluster, minority);
  const Clock::time_point start = cluster.now(), give_up = start + 20 * election_range.second;
  std::optional<Clock::time_point> first, agreed;
  while (cluster.now() < give_up && !(agreed && (!partitioned || trial.stepped_down))) {
    Clock::time_point at = cluster.now(); // the step polls at this instant, then moves the clock
    cluster.step();
    if (!first && cluster.any_leader()) first = at;
    if (partitioned && !trial.stepped_down && !cluster.replica(*old).is_leader())
      trial.stepped_down = in_timeouts(at - start);
    if (std::optional<ReplicaID> next = cluster.agreed_leader(); next && !agreed) {
      agreed = at;
      trial.extra_rounds = cluster.replica(*next).current_term() > old_term + 1;
    }
  }
  if (!agreed) return trial.failure = "no agreed new leader within 20 election timeouts", trial;
  trial.first_leader = in_timeouts(*first - start);
  trial.all_know = in_timeouts(*agreed - start);
  return trial;
}

// Crash: with the defaults (check-quorum and Pre-Vote), then without each, on the same seeds.
// Partition: with check-quorum (the default), then without it.
void measure_failover() {
  constexpr int trials = 1000;
  raft::Options no_pre_vote, no_check_quorum;
  no_pre_vote.pre_vote = false;
  no_check_quorum.check_quorum = false;
  struct Mode {
    std::string name;
    raft::Options options;
    bool partitioned;
  };
  const Mode modes[] = {{"", {}, false},
                        {", no Pre-Vote", no_pre_vote, false},
                        {", no check-quorum", no_check_quorum, false},
                        {"", {}, true},
                        {", no check-quorum", no_check_quorum, true}};
  for (const Mode& mode : modes) {
    const char* name = mode.name.c_str();
    std::vector<double> first[2], all[2], stepped[2];
    int extra[2] = {0, 0}, slow[2] = {0, 0}, still_leads[2] = {0, 0}, late[2] = {0, 0},
        failed[2] = {0, 0};
    for (int s = 0; s < 2; ++s)
      for (int t = 1; t <= trials; ++t) {
        Trial trial = run_trial(sizes[s], 1000 * sizes[s] + t, mode.options, mode.partitioned);
        if (trial.failure) {
          if (!failed[s]++)
            notes.push_back(format("%s%s, %zu replicas, trial %d: %s",
                                   mode.partitioned ? "partition" : "failover", name, sizes[s], t,
                                   trial.failure->c_str()));
          continue;
        }
        first[s].push_back(trial.first_leader);
        all[s].push_back(trial.all_know);
        extra[s] += trial.extra_rounds;
        slow[s] += trial.first_leader > 1;
        if (trial.stepped_down) stepped[s].push_back(*trial.stepped_down);
        still_leads[s] += !trial.stepped_down;
        late[s] += !trial.stepped_down || *trial.stepped_down > 2;
      }
    // p50/p99/max of each size's figure, or why there is none.
    auto spread = [&](const std::string& label, const std::vector<double>(&values)[2]) {
      std::string cells[2];
      for (int s = 0; s < 2; ++s)
        cells[s] =
            failed[s] ? format("%s (%d)", did_not_converge.c_str(), failed[s])
            : values[s].empty()
                ? std::string("never")
                : format("%.2f/%.2f/%.2f", percentile(values[s], 0.5), percentile(values[s], 0.99),
                         *std::max_element(values[s].begin(), values[s].end()));
      row(label, cells[0], cells[1]);
    };
    if (!mode.partitioned) {
      spread(format("failover after a crash%s, new leader, p50/p99/max (x 300 ms)", name), first);
      spread(format("failover after a crash%s, all know it, p50/p99/max (x 300 ms)", name), all);
      row(format("failover trials needing > 1 election%s (of %d)", name, trials),
          format("%d", extra[0]), format("%d", extra[1]));
      row(format("failover trials over 300 ms%s (of %d)", name, trials), format("%d", slow[0]),
          format("%d", slow[1]));
      continue;
    }
    spread(format("partitioned leader%s, steps down, p50/p99/max (x 300 ms)", name), stepped);
    spread(format("partitioned leader%s, majority's new leader, p50/p99/max (x 300 ms)", name),
           all);
    row(format("partitioned leader%s, still leads after 600 ms / 6 s (of %d)", name, trials),
        format("%d / %d", late[0], still_leads[0]), format("%d / %d", late[1], still_leads[1]));
  }
}

// ---- 5. Durable writes through FileStorage ----

void measure_durable() {
  char pattern[] = "/tmp/raft-bench-XXXXXX";
  if (!mkdtemp(pattern)) {
    notes.push_back(format("durable writes: mkdtemp failed: %s", std::strerror(errno)));
    return;
  }
  const std::string directory = pattern;
  constexpr int runs = 5;
  constexpr double time_bound = 0.5; // seconds per run
  constexpr std::uint64_t max_syncs = 2000;
  std::vector<double> save_ns; // save_entries alone, per entry, with 1024-entry batches
  for (std::size_t batch : {std::size_t{1}, std::size_t{64}, std::size_t{1024}}) {
    std::vector<double> per_second, syncs_per_second;
    std::optional<std::string> failure;
    for (int run = 0; run < runs && !failure; ++run) {
      try {
        raft::FileStorage storage(directory + format("/batch%zu-run%d", batch, run));
        storage.load();
        std::vector<raft::Entry> entries(batch);
        raft::Index next = 1;
        std::uint64_t syncs = 0;
        double elapsed = 0, saving = 0;
        Wall::time_point start = Wall::now();
        for (; syncs < max_syncs && elapsed < time_bound; ++syncs) {
          for (raft::Entry& entry : entries) entry = raft::Entry{1, make_transition(next++)};
          Wall::time_point save = Wall::now();
          storage.save_entries(next - batch, entries.data(), entries.data() + batch);
          saving += seconds_since(save);
          storage.sync();
          elapsed = seconds_since(start);
        }
        per_second.push_back(syncs * batch / elapsed);
        syncs_per_second.push_back(syncs / elapsed);
        if (batch == 1024) save_ns.push_back(saving * 1e9 / (syncs * batch));
      } catch (const std::exception& error) { failure = error.what(); }
    }
    std::string label =
        format("durable appends, %zu entr%s per sync (entries/s)", batch, batch == 1 ? "y" : "ies");
    if (failure) {
      notes.push_back("durable writes: " + *failure);
      row(label, "failed: see notes");
      continue;
    }
    row(label, grouped(median(per_second)) +
                   format(" (%s syncs/s)", grouped(median(syncs_per_second)).c_str()));
  }
  if (!save_ns.empty())
    row("durable: save_entries alone, 1024 per call (ns/entry)", format("%.0f", median(save_ns)));
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);
}

// ---- Machine information ----

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
      return line.substr(line.find(':') + 2);
  return "unknown";
}

std::string filesystem_of(const char* path) {
  struct statfs info {};
  if (statfs(path, &info) != 0) return "unknown";
  switch (static_cast<unsigned long>(info.f_type)) {
  case 0xEF53: return "ext2/3/4";
  case 0x01021994: return "tmpfs (fdatasync is free: not a disk figure)";
  case 0x58465342: return "xfs";
  case 0x9123683E: return "btrfs";
  case 0x794C7630: return "overlayfs";
  default: return format("type 0x%lx", static_cast<unsigned long>(info.f_type));
  }
}

// ---- 7. examples/kv over TCP ----

void measure_tcp() {
  const char* server = std::getenv("KV_SERVER");
  std::vector<tcp_bench::Place> places = {{"fsync on: " + filesystem_of("/tmp"), "/tmp"}};
  if (filesystem_of("/dev/shm").rfind("tmpfs", 0) == 0)
    places.push_back({"fsync free: tmpfs", "/dev/shm"});
  else
    notes.push_back("TCP: no tmpfs at /dev/shm, so no figure with fsync off");
  std::vector<tcp_bench::Result> results =
      tcp_bench::run(server ? server : "build/kv-server", places, {1, 16}, 3, 1.5, notes);
  for (const tcp_bench::Result& r : results) {
    row(format("TCP kv, %s, %d client%s, %s (ops/s, p50/p99 ms)", r.op.c_str(), r.clients,
               r.clients == 1 ? "" : "s", r.storage.c_str()),
        format("%s, %.2f/%.2f", grouped(median(r.ops_per_second)).c_str(),
               percentile(r.latencies_ms, 0.5), percentile(r.latencies_ms, 0.99)));
    if (r.failed)
      notes.push_back(format("TCP, %s, %d clients, %s: %d requests not answered 200", r.op.c_str(),
                             r.clients, r.storage.c_str(), r.failed));
    if (r.wrong)
      notes.push_back(format("TCP, GET, %d clients, %s: %d answered 200 with a value that was "
                             "not the one written",
                             r.clients, r.storage.c_str(), r.wrong));
  }
  // Whether GETs go through the log: the leader's last_log_index growth per GET (about 1 if they
  // do, 0 if they are served by read()); the bench does not depend on which.
  for (const tcp_bench::Place& place : places) {
    std::vector<double> growth;
    for (const tcp_bench::Result& r : results)
      if (r.op == "GET" && r.storage == place.label)
        growth.insert(growth.end(), r.log_entries_per_op.begin(), r.log_entries_per_op.end());
    if (!growth.empty())
      row("TCP kv, GET, " + place.label + ": log entries added per GET, median/max of runs",
          format("%.3f/%.3f", median(growth), *std::max_element(growth.begin(), growth.end())));
  }
}

void print_machine() {
  utsname system{};
  uname(&system);
  std::printf("machine: %ld CPUs online (nproc), %s\n", sysconf(_SC_NPROCESSORS_ONLN),
              cpu_model().c_str());
  std::printf("system:  %s %s; compiler: g++ %s; /tmp: %s\n\n", system.sysname, system.release,
              __VERSION__, filesystem_of("/tmp").c_str());
  std::fflush(stdout);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

double throughput_cpu_share = NAN; // the bench's CPU time / wall time during item 1

void print_conditions(const std::string& load_before) {
  std::printf("load average (1/5/15 min) before: %s, after: %s\n", load_before.c_str(),
              load_average().c_str());
  if (std::isfinite(throughput_cpu_share))
    std::printf("CPU time / wall time of this process during item 1: %.0f %% (below 100 %%: "
                "other processes took the CPU, wall-clock figures are pessimistic)\n\n",
                100 * throughput_cpu_share);
  else
    std::printf("\n");
}

void print_table() {
  std::size_t width = 4;
  for (const Row& r : rows) width = std::max(width, r.label.size());
  std::size_t column = 16;
  for (const Row& r : rows) column = std::max(column, r.three.size() + 2);
  std::printf("%-*s  %-*s  %s\n", int(width), "item", int(column), "3 replicas", "5 replicas");
  std::printf("%s\n", std::string(width + column + 16, '-').c_str());
  for (const Row& r : rows)
    std::printf("%-*s  %-*s  %s\n", int(width), r.label.c_str(), int(column), r.three.c_str(),
                r.five.c_str());
}

} // namespace

// `bench` runs every item; `bench 2 4` runs items 2 and 4 only.
int main(int argc, char** argv) {
  auto wanted = [&](const char* item) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], item) == 0) return true;
    return false;
  };
  Wall::time_point start = Wall::now();
  print_machine();
  std::string load_before = load_average();
  if (wanted("1")) {
    double cpu_before = cpu_seconds();
    Wall::time_point item_start = Wall::now();
    measure_throughput();
    measure_reads();
    throughput_cpu_share = (cpu_seconds() - cpu_before) / seconds_since(item_start);
  }
  if (wanted("2")) measure_latency(), measure_read_latency();
  if (wanted("3")) measure_idle();
  if (wanted("4")) measure_failover();
  if (wanted("5")) measure_durable();
  if (wanted("6")) measure_burst();
  if (wanted("7")) measure_tcp();
  std::string etcd_comparison;
  if (wanted("8")) {
    const char* server = std::getenv("KV_SERVER");
    const char* seconds = std::getenv("BENCH_SECONDS");
    etcd_comparison = etcd_bench::measure(server ? server : "build/kv-server",
                                          seconds ? std::atof(seconds) : 10.0, notes);
  }
  print_conditions(load_before);
  print_table();
  std::printf("\nmethod: bench/README.md, Method\n");
  if (!etcd_comparison.empty()) std::printf("\n%s", etcd_comparison.c_str());
  if (!notes.empty()) {
    std::printf("\nnotes:\n");
    for (const std::string& note : notes) std::printf("- %s\n", note.c_str());
  }
  std::printf("\ntotal bench time: %.1f s\n", seconds_since(start));
}
