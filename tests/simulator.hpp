// tests/simulator.hpp: a deterministic simulated cluster for testing raft::Replica.
//
// N replicas share one simulated clock. The simulator decides when each replica is polled and
// with what `now`, carries messages between them with random delays, loss and duplication, splits
// them into partitions, and crashes and restarts them over their surviving MemoryStorage. One
// seeded generator drives all of it, so a seed replays the identical run.
//
// Every poll is checked against the safety properties of the paper (Figure 3) and the contract
// in raft.hpp. The first violation stops the run and becomes its failure, naming the seed and the
// simulated time. tests/simulator.cpp drives it: scripted scenarios and random faults.
//
// With Settings::snapshot_delta, the replicas compact their logs and send snapshots in chunks of
// Settings::snapshot_chunk_bytes. The state machine's state (MachineState) depends on every
// transition applied, so a snapshot set on a replica is checked against the state that the
// committed sequence up to its index gives; applying then resumes after that index.
//
// The state is also a small key-value store: a transition whose data is MachineState::put_data
// writes a value under a key, and Simulator::read() asks a replica for a linearizable read
// (Replica::read), whose reports are checked against the contract; whoever watches the reports
// (Simulator::on_report) reads the store in the read's Applied callback. Beside partitions, the
// network can fail one way, and for one type of message only (Network::block), and a link can be
// slow one way (Network::slow).
#ifndef TESTS_SIMULATOR_HPP
#define TESTS_SIMULATOR_HPP

#include "raft.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace sim {

using namespace std::chrono_literals;
using raft::AbandonReason;
using raft::Clock;
using raft::Duration;
using raft::Index;
using raft::Message;
using raft::ReplicaID;
using raft::Term;
using raft::Transition;
using raft::TransitionState;

// The no-op each new leader appends. No client uses its id, so the checks can tell it apart.
inline const Transition kNoop{UINT64_MAX, "no-op"};

// ---- Small helpers ----

// A seeded generator with the few draws the simulator needs, written out because the standard
// distributions give different numbers on different standard libraries.
class Random {
public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}
  std::uint64_t next() { return engine_(); }
  std::uint64_t below(std::uint64_t n) { return engine_() % n; } // n > 0
  bool chance(double probability) { return (engine_() >> 11) * 0x1.0p-53 < probability; }
  Duration between(Duration low, Duration high) { // inclusive
    auto span = static_cast<std::uint64_t>((high - low).count());
    return low + Duration(static_cast<Duration::rep>(below(span + 1)));
  }

private:
  std::mt19937_64 engine_;
};

inline const char* name(TransitionState state) {
  switch (state) {
  case TransitionState::Queued: return "Queued";
  case TransitionState::Committed: return "Committed";
  case TransitionState::Applied: return "Applied";
  case TransitionState::Abandoned: return "Abandoned";
  }
  return "?";
}

inline const char* name(AbandonReason reason) {
  switch (reason) {
  case AbandonReason::None: return "None";
  case AbandonReason::NotLeader: return "NotLeader";
  case AbandonReason::ConflictWithLeader: return "ConflictWithLeader";
  case AbandonReason::Refused: return "Refused";
  }
  return "?";
}

inline const char* name(raft::MessageType type) {
  switch (type) {
  case raft::MessageType::AppendEntries: return "AppendEntries";
  case raft::MessageType::AppendEntriesResponse: return "AppendEntriesResponse";
  case raft::MessageType::RequestVote: return "RequestVote";
  case raft::MessageType::RequestVoteResponse: return "RequestVoteResponse";
  case raft::MessageType::InstallSnapshot: return "InstallSnapshot";
  case raft::MessageType::InstallSnapshotResponse: return "InstallSnapshotResponse";
  case raft::MessageType::TimeoutNow: return "TimeoutNow";
  }
  return "?";
}

inline std::string who(std::optional<ReplicaID> replica) {
  return replica ? "r" + std::to_string(*replica) : "none";
}

// Streams every argument into one string: text("r", 3, " leads") == "r3 leads".
template <typename... Parts> std::string text(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

inline double milliseconds(Duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

// ---- The replicated state ----

// What a simulated state machine holds: how many transitions it applied (no-ops aside), a hash of
// them all in order (ids and data), and registers that each transition mixes into, one chosen by
// its id. The no-op leaves it unchanged. A put (put_data) also stores a value under one of
// kKeys keys: the key-value store that reads observe. encode() is a snapshot's data: kBytes bytes,
// so that with a small snapshot_chunk_bytes a transfer takes many chunks.
struct MachineState {
  static constexpr std::size_t kRegisters = 32;
  static constexpr std::size_t kKeys = 8;
  static constexpr std::size_t kBytes = 8 * (2 + kRegisters + kKeys);
  static constexpr std::size_t kPutBytes = 10; // 'P', the key, the value (8 bytes)

  std::uint64_t count = 0;
  std::uint64_t hash = 0xcbf29ce484222325; // FNV-1a's offset basis
  std::array<std::uint64_t, kRegisters> registers{};
  std::array<std::uint64_t, kKeys> store{}; // the value under each key; 0: never written

  // The data of a transition that writes `value` (not 0) under `key` (below kKeys). Other
  // transitions carry at most 8 bytes, so they never look like one.
  static std::string put_data(std::size_t key, std::uint64_t value) {
    std::string data{'P', static_cast<char>(key)};
    for (int shift = 0; shift < 64; shift += 8) data += static_cast<char>(value >> shift);
    return data;
  }

  void apply(const Transition& transition) {
    if (transition.id == kNoop.id) return;
    ++count;
    hash = mix(hash, transition);
    std::uint64_t& slot = registers[transition.id % kRegisters];
    slot = mix(slot ^ count, transition);
    const std::string& data = transition.data;
    if (data.size() == kPutBytes && data[0] == 'P') {
      std::uint64_t value = 0;
      for (std::size_t i = 0; i < 8; ++i)
        value |= std::uint64_t(static_cast<unsigned char>(data[2 + i])) << (8 * i);
      store[static_cast<unsigned char>(data[1]) % kKeys] = value;
    }
  }

  // Little-endian 8-byte words: count, hash, then the registers.
  std::string encode() const {
    std::string bytes;
    auto put = [&](std::uint64_t word) {
      for (int shift = 0; shift < 64; shift += 8) bytes += static_cast<char>(word >> shift);
    };
    put(count);
    put(hash);
    for (std::uint64_t word : registers) put(word);
    for (std::uint64_t word : store) put(word);
    return bytes;
  }
  static std::optional<MachineState> decode(const std::string& bytes) {
    if (bytes.size() != kBytes) return std::nullopt;
    std::size_t at = 0;
    auto get = [&] {
      std::uint64_t word = 0;
      for (int shift = 0; shift < 64; shift += 8)
        word |= std::uint64_t(static_cast<unsigned char>(bytes[at++])) << shift;
      return word;
    };
    MachineState state;
    state.count = get();
    state.hash = get();
    for (std::uint64_t& word : state.registers) word = get();
    for (std::uint64_t& word : state.store) word = get();
    return state;
  }

  bool operator==(const MachineState& other) const {
    return count == other.count && hash == other.hash && registers == other.registers &&
           store == other.store;
  }
  bool operator!=(const MachineState& other) const { return !(*this == other); }

private:
  static std::uint64_t mix(std::uint64_t hash, const Transition& transition) { // FNV-1a
    auto byte = [&](unsigned char value) { hash = (hash ^ value) * 0x100000001b3; };
    for (int shift = 0; shift < 64; shift += 8)
      byte(static_cast<unsigned char>(transition.id >> shift));
    byte(static_cast<unsigned char>(transition.data.size()));
    for (char value : transition.data) byte(static_cast<unsigned char>(value));
    return hash;
  }
};

// ---- History: what all replicas did so far, and what the checks compare against ----

class History {
public:
  History(std::uint64_t seed, Clock::time_point start, bool tracing)
      : seed_(seed), start_(start), now_(start), tracing_(tracing) {}

  Clock::time_point now() const { return now_; }
  void set_now(Clock::time_point now) { now_ = now; }

  template <typename... Parts> void trace(const Parts&... parts) {
    if (tracing_) std::cout << stamp() << text(parts...) << '\n';
  }

  // Keeps the first violation only: the run stops at the end of the step that found it.
  template <typename... Parts> void fail(const Parts&... parts) {
    std::string what = text(parts...);
    trace("VIOLATION: ", what);
    if (failure_.empty())
      failure_ = text("seed ", seed_, " at t=", std::fixed, std::setprecision(3),
                      milliseconds(now_ - start_), " ms: ", what);
  }
  bool failed() const { return !failure_.empty(); }
  const std::string& failure() const { return failure_; }

  // State Machine Safety (Figure 3): whoever applies index i applies the same transition there.
  // The first replica to apply an index extends the one committed sequence.
  void record_apply(ReplicaID replica, Index index, const Transition& transition) {
    if (index <= committed_.size()) {
      const Transition& expected = committed_[index - 1];
      if (!(transition == expected))
        fail("r", replica, " applied #", transition.id, " at index ", index, " where r",
             first_applier_[index - 1], " applied #", expected.id, " (or the data differ)");
      return;
    }
    committed_.push_back(transition);
    first_applier_.push_back(replica);
    if (transition.id == kNoop.id) return;
    if (abandoned_.count(transition.id))
      fail("#", transition.id, " is committed at index ", index, " but was reported Abandoned");
    auto [known, inserted] = committed_at_.emplace(transition.id, index);
    if (!inserted)
      fail("#", transition.id, " is committed twice: at index ", known->second, " and ", index);
  }

  // Abandoned means "will never be applied": its transition must never be committed.
  void record_abandoned(ReplicaID replica, std::uint64_t id, AbandonReason reason) {
    abandoned_.insert(id);
    if (committed_at_.count(id))
      fail("r", replica, " reported #", id, " Abandoned/", name(reason), " but it is committed");
  }

  // Election Safety (Figure 3): at most one leader in a term.
  void record_leader(Term term, ReplicaID replica) {
    auto [known, inserted] = leaders_.emplace(term, replica);
    if (!inserted && known->second != replica)
      fail("two leaders in term ", term, ": r", known->second, " and r", replica);
  }

  const std::vector<Transition>& committed() const { return committed_; }
  bool is_committed(std::uint64_t id) const { return committed_at_.count(id) > 0; }
  // The index at which a transition (not the no-op) is committed, if it is.
  std::optional<Index> committed_index(std::uint64_t id) const {
    auto found = committed_at_.find(id);
    if (found == committed_at_.end()) return std::nullopt;
    return found->second;
  }
  // The state that applying the committed sequence through `index` gives.
  MachineState state_after(Index index) const {
    MachineState state;
    for (Index i = 0; i < index && i < committed_.size(); ++i) state.apply(committed_[i]);
    return state;
  }

private:
  std::string stamp() const {
    return text("[", std::fixed, std::setprecision(3), std::setw(9), milliseconds(now_ - start_),
                " ms] ");
  }

  const std::uint64_t seed_;
  const Clock::time_point start_;
  Clock::time_point now_;
  const bool tracing_;
  std::string failure_;
  std::vector<Transition> committed_;           // committed_[i - 1]: the transition at index i
  std::vector<ReplicaID> first_applier_;        // who applied each index first, for messages
  std::map<std::uint64_t, Index> committed_at_; // ids in committed_, without the no-op
  std::set<std::uint64_t> abandoned_;           // ids some replica reported Abandoned
  std::map<Term, ReplicaID> leaders_;           // who led each term
};

// ---- The state machine: records what the replica does to it, checks it against raft.hpp ----

class CheckedStateMachine : public raft::StateMachine {
public:
  // `snapshot_delta` is the replica's Options::snapshot_delta, for the compaction check.
  CheckedStateMachine(ReplicaID replica, History& history, Index snapshot_delta = 0)
      : replica_(replica), history_(history), snapshot_delta_(snapshot_delta) {}

  // The client side: transitions handed to the replica at its next poll.
  void propose(Transition transition) { pending_.push_back(std::move(transition)); }
  bool has_pending() const { return !pending_.empty(); }
  // Every apply_transition of this lifetime, no-ops included; the state machine's whole history
  // only while no snapshot was set (Settings::snapshot_delta 0).
  const std::vector<Transition>& applied() const { return applied_; }
  // The index the state has reached, by set_snapshot and apply_transition, and the state.
  Index position() const { return position_; }
  const MachineState& state() const { return state_; }
  // The index of the latest snapshot created or set in this lifetime (0: none).
  Index snapshot_index() const { return snapshot_index_; }
  // The last state reported for a transition in this lifetime, and the reason if Abandoned.
  std::optional<TransitionState> state_of(std::uint64_t id) const {
    auto found = reports_.find(id);
    if (found == reports_.end()) return std::nullopt;
    return found->second.last;
  }
  AbandonReason abandon_reason(std::uint64_t id) const {
    auto found = reports_.find(id);
    return found == reports_.end() ? AbandonReason::None : found->second.reason;
  }

  // Told of every report after its checks, transitions and reads alike, with this state
  // machine's state: a host reads the store for a read in its Applied callback.
  using Observer = std::function<void(ReplicaID replica, std::uint64_t id, TransitionState,
                                      AbandonReason, const MachineState&)>;
  void set_observer(Observer observer) { observer_ = std::move(observer); }

  // A read asked of the replica (Replica::read) under `id`, which no transition uses; the next
  // poll takes it. It must be reported as raft.hpp says (Queued then Applied, or NotLeader), and
  // when Applied, the state must have reached every entry committed when it was asked: had it
  // not, a write that completed before the read was called could be missing from what it reads.
  void expect_read(std::uint64_t id) {
    reads_[id].committed_at_call = history_.committed().size();
    reads_asked_.push_back(id);
  }

  // The simulator calls these around every poll: some rules are about "the same poll".
  void begin_poll() {
    taken_this_poll_.clear();
    applied_this_poll_ = false;
    reads_taken_ = std::exchange(reads_asked_, {});
  }
  void end_poll() {
    for (std::uint64_t id : reads_taken_)
      if (!reads_.at(id).last)
        return fail("took read #", id, " but did not report it Queued or NotLeader in that poll");
    for (std::uint64_t id : taken_this_poll_) {
      const Reports& reports = reports_[id];
      if (!reports.queued && reports.reason != AbandonReason::NotLeader)
        return fail("took #", id, " but did not report it Queued or NotLeader in that poll");
    }
    // Applied in the same poll as apply_transition, for every transition but the no-op, in log
    // order; Committed no later, in the same order.
    if (applied_reports_.size() != applied_ids_.size())
      return fail("applied ", applied_ids_.size(), " transitions (no-ops aside) but reported ",
                  applied_reports_.size(), " Applied");
    if (committed_reports_.size() < applied_reports_.size())
      return fail("reported Applied for a transition not yet reported Committed");
    for (; checked_ < applied_ids_.size(); ++checked_) {
      std::uint64_t id = applied_ids_[checked_];
      if (applied_reports_[checked_] != id || committed_reports_[checked_] != id)
        return fail("reports are out of log order: transition ", checked_ + 1, " applied is #", id,
                    ", Applied #", applied_reports_[checked_], ", Committed #",
                    committed_reports_[checked_]);
    }
    // raft.hpp, Compaction: the poll that applies through i with i at least snapshot_delta past
    // the latest snapshot calls create_snapshot(i).
    if (snapshot_delta_ && applied_this_poll_ && position_ - snapshot_index_ >= snapshot_delta_)
      return fail("applied through index ", position_, ", ", position_ - snapshot_index_,
                  " past the latest snapshot, but did not call create_snapshot (snapshot_delta ",
                  snapshot_delta_, ")");
  }

  // The end of a run, once the cluster is healed, quiet and caught up: every transition and every
  // read this lifetime reported Queued has its outcome here. It is Applied or Abandoned, or (a
  // transition) it is committed at an index that a snapshot set on this state machine covers (a
  // snapshot install reports nothing for a transition in the committed prefix it covers). A
  // lifetime that ended in a crash took its reports with it; nothing is owed for those.
  void check_settled() {
    std::string unsettled;
    std::size_t count = 0;
    for (const auto& [id, reports] : reports_) {
      if (!reports.queued || reports.last == TransitionState::Applied ||
          reports.last == TransitionState::Abandoned)
        continue;
      std::optional<Index> index = history_.committed_index(id);
      if (index && *index <= set_through_) continue; // covered by a snapshot set here
      if (++count > 5) continue;
      unsettled += text(count > 1 ? "; " : "", "#", id, " is still ", name(*reports.last),
                        index ? text(" (committed at index ", *index, ")") : " (not committed)");
    }
    if (count)
      fail(count, " transition(s) reported Queued have no outcome at the end (applied through ",
           position_, ", latest snapshot set ", set_through_, "): ", unsettled,
           count > 5 ? "; ..." : "");
    for (const auto& [id, read] : reads_)
      if (read.queued && read.last == TransitionState::Queued)
        return fail("read #", id, " reported Queued has no outcome at the end");
  }

  void register_transition_state(std::uint64_t id, TransitionState state,
                                 AbandonReason reason) override {
    check_report(id, state, reason);
    if (observer_) observer_(replica_, id, state, reason, state_);
  }

  void check_report(std::uint64_t id, TransitionState state, AbandonReason reason) {
    if (id == kNoop.id) return fail("reported ", name(state), " for the no-op");
    if ((reason == AbandonReason::None) != (state != TransitionState::Abandoned))
      return fail("reported #", id, " ", name(state), " with reason ", name(reason));
    if (auto read = reads_.find(id); read != reads_.end())
      return check_read_report(id, state, reason, read->second);
    Reports& reports = reports_[id];
    if (reports.last == TransitionState::Abandoned)
      return fail("reported #", id, " ", name(state), " after Abandoned");
    reports.last = state;
    switch (state) {
    case TransitionState::Queued:
      if (reports.queued) return fail("reported #", id, " Queued twice");
      if (!taken_this_poll_.count(id)) return fail("reported #", id, " Queued in a later poll");
      reports.queued = true;
      history_.trace("r", replica_, " queues #", id);
      return;
    case TransitionState::Committed:
      if (reports.committed) return fail("reported #", id, " Committed twice");
      reports.committed = true;
      committed_reports_.push_back(id);
      return;
    case TransitionState::Applied:
      if (reports.applied) return fail("reported #", id, " Applied twice");
      reports.applied = true;
      applied_reports_.push_back(id);
      return;
    case TransitionState::Abandoned: return abandon(id, reason, reports);
    }
  }

  void apply_transition(const Transition& transition) override {
    history_.record_apply(replica_, position_ + 1, transition);
    ++position_;
    state_.apply(transition);
    applied_this_poll_ = true;
    applied_.push_back(transition);
    if (transition.id == kNoop.id) return;
    if (!seen_ids_.insert(transition.id).second) return fail("applied #", transition.id, " twice");
    applied_ids_.push_back(transition.id);
  }

  std::vector<Transition> get_pending_transitions() override {
    for (const Transition& transition : pending_) taken_this_poll_.insert(transition.id);
    return std::exchange(pending_, {});
  }

  // raft.hpp, Compaction: create_snapshot(i, term of i) once the state machine is at i.
  raft::Snapshot create_snapshot(Index last_included_index, Term last_included_term) override {
    if (last_included_index != position_)
      fail("create_snapshot(", last_included_index, ") but the state machine is at index ",
           position_);
    history_.trace("r", replica_, " snapshots through ", last_included_index);
    snapshot_index_ = last_included_index;
    raft::Snapshot snapshot;
    snapshot.last_included_index = last_included_index;
    snapshot.last_included_term = last_included_term;
    snapshot.data = state_.encode();
    return snapshot;
  }

  // The state replaced wholesale: by a snapshot that this or another replica created, so it must
  // hold the state that the committed sequence through its index gives. Applying resumes after
  // that index (the next apply_transition is checked against the index after it).
  void set_snapshot(const raft::Snapshot& snapshot) override {
    Index index = snapshot.last_included_index;
    history_.trace("r", replica_, " sets a snapshot through ", index, " (", snapshot.data.size(),
                   " bytes)");
    if (index < position_)
      return fail("set_snapshot through ", index, " but the state machine is already at ",
                  position_);
    if (index > history_.committed().size())
      return fail("set_snapshot through ", index, " but only ", history_.committed().size(),
                  " entries are committed");
    std::optional<MachineState> state = MachineState::decode(snapshot.data);
    if (!state)
      return fail("set_snapshot through ", index, " with ", snapshot.data.size(),
                  " bytes, not a state this state machine encodes (", MachineState::kBytes,
                  " bytes)");
    if (*state != history_.state_after(index))
      return fail("set_snapshot through ", index, " with a state (", state->count,
                  " transitions applied) other than what the committed sequence gives there");
    // Reported Committed but not yet applied: such a transition is in the prefix the snapshot
    // covers (commit indexes never go back), and it will not be applied here.
    for (std::size_t i = applied_reports_.size(); i < committed_reports_.size(); ++i) {
      std::optional<Index> at = history_.committed_index(committed_reports_[i]);
      if (!at || *at > index)
        return fail("reported #", committed_reports_[i], " Committed, then set a snapshot through ",
                    index, " that does not cover it");
    }
    committed_reports_.resize(applied_reports_.size());
    state_ = *state;
    position_ = snapshot_index_ = set_through_ = index;
  }

private:
  struct Reports {
    std::optional<TransitionState> last;
    bool queued = false, committed = false, applied = false;
    AbandonReason reason = AbandonReason::None;
  };
  struct ReadReports {
    Index committed_at_call = 0; // entries committed when the read was asked
    std::optional<TransitionState> last;
    bool queued = false;
  };

  // raft.hpp, Linearizable reads: Queued (in the poll that takes it) then Applied, never
  // Committed; or Abandoned/NotLeader, in that poll or once leadership is lost.
  void check_read_report(std::uint64_t id, TransitionState state, AbandonReason reason,
                         ReadReports& read) {
    bool taken_now = std::count(reads_taken_.begin(), reads_taken_.end(), id) > 0;
    if (read.last == TransitionState::Applied || read.last == TransitionState::Abandoned)
      return fail("reported read #", id, " ", name(state), " after ", name(*read.last));
    read.last = state;
    switch (state) {
    case TransitionState::Queued:
      if (read.queued) return fail("reported read #", id, " Queued twice");
      if (!taken_now) return fail("reported read #", id, " Queued in a later poll");
      read.queued = true;
      history_.trace("r", replica_, " queues read #", id);
      return;
    case TransitionState::Committed:
      return fail("reported read #", id, " Committed: reads never are");
    case TransitionState::Applied:
      if (!read.queued) return fail("reported read #", id, " Applied but never Queued");
      history_.trace("r", replica_, " serves read #", id, " at index ", position_);
      if (position_ < read.committed_at_call)
        return fail("served read #", id, " with its state machine at index ", position_, " but ",
                    read.committed_at_call, " entries were committed when it was asked");
      return;
    case TransitionState::Abandoned:
      if (reason != AbandonReason::NotLeader)
        return fail("reported read #", id, " Abandoned/", name(reason), ", not NotLeader");
      if (!read.queued && !taken_now)
        return fail("reported read #", id, " NotLeader outside the poll that took it");
      history_.trace("r", replica_, " abandons read #", id, " (NotLeader)");
      return;
    }
  }

  void abandon(std::uint64_t id, AbandonReason reason, Reports& reports) {
    if (reason == AbandonReason::NotLeader && !taken_this_poll_.count(id))
      return fail("reported #", id, " NotLeader outside the poll that took it");
    if (reason == AbandonReason::ConflictWithLeader && !reports.queued)
      return fail("reported #", id, " ConflictWithLeader but never queued it");
    if (reports.committed) return fail("reported #", id, " Abandoned after Committed");
    reports.reason = reason;
    history_.trace("r", replica_, " abandons #", id, " (", name(reason), ")");
    history_.record_abandoned(replica_, id, reason);
  }

  template <typename... Parts> void fail(const Parts&... parts) {
    history_.fail("r", replica_, "'s state machine: ", parts...);
  }

  const ReplicaID replica_;
  History& history_;
  const Index snapshot_delta_;
  std::vector<Transition> pending_;
  MachineState state_;
  Index position_ = 0;       // the index state_ has reached
  Index snapshot_index_ = 0; // of the latest snapshot created or set
  Index set_through_ = 0;    // of the latest snapshot set
  bool applied_this_poll_ = false;
  std::vector<Transition> applied_;              // every apply_transition, no-ops included
  std::vector<std::uint64_t> applied_ids_;       // the same without no-ops
  std::set<std::uint64_t> seen_ids_;             // applied_ids_ as a set
  std::vector<std::uint64_t> applied_reports_;   // ids reported Applied, in order
  std::vector<std::uint64_t> committed_reports_; // ids reported Committed, in order
  std::size_t checked_ = 0;                      // applied_ids_ already checked for order
  std::set<std::uint64_t> taken_this_poll_;      // ids get_pending_transitions returned
  std::map<std::uint64_t, Reports> reports_;
  std::map<std::uint64_t, ReadReports> reads_; // every read asked in this lifetime
  std::vector<std::uint64_t> reads_asked_;     // not yet taken by a poll
  std::vector<std::uint64_t> reads_taken_;     // taken by the poll under way (or the last)
  Observer observer_;
};

// ---- The network: delays, loss, duplication, partitions, failed links, crashed receivers ----

class Network {
public:
  struct Faults {
    Duration min_delay = 1ms; // each copy of a message arrives after a delay in this range
    Duration max_delay = 20ms;
    double loss = 0;        // probability that a message is dropped
    double duplication = 0; // probability that a message arrives twice
  };

  Network(const std::vector<ReplicaID>& members, Random& random, History& history)
      : random_(random), history_(history) {
    for (ReplicaID member : members) group_[member] = 0;
  }

  Faults faults;
  bool trace_messages = false; // SIM_TRACE=2: every message sent, delivered or dropped

  bool is_member(ReplicaID id) const { return group_.count(id) > 0; }

  void send(ReplicaID from, ReplicaID to, const Message& message) {
    std::uint64_t copies = random_.chance(faults.duplication) ? 2 : 1;
    for (std::uint64_t copy = 0; copy < copies; ++copy) {
      if (random_.chance(faults.loss) || down_.count(to)) {
        trace_message("drops", from, to, message);
        continue;
      }
      Duration delay = random_.between(faults.min_delay, faults.max_delay);
      if (auto slow = slow_.find({from, to}); slow != slow_.end()) delay += slow->second;
      inboxes_[to].push_back(InFlight{history_.now() + delay, next_sequence_++, from, message});
    }
  }

  // Removes and returns the messages for `to` that are due, in order of arrival. A message whose
  // sender is now on the other side of a partition, or over a link now blocked for it, is lost on
  // the way.
  std::vector<Message> deliver(ReplicaID to) {
    std::vector<InFlight>& inbox = inboxes_[to];
    auto due = std::stable_partition(inbox.begin(), inbox.end(), [&](const InFlight& in_flight) {
      return in_flight.due > history_.now();
    });
    std::vector<InFlight> arrived(std::make_move_iterator(due),
                                  std::make_move_iterator(inbox.end()));
    inbox.erase(due, inbox.end());
    std::sort(arrived.begin(), arrived.end(), [](const InFlight& a, const InFlight& b) {
      return std::make_pair(a.due, a.sequence) < std::make_pair(b.due, b.sequence);
    });
    std::vector<Message> messages;
    for (InFlight& in_flight : arrived) {
      bool reachable = can_reach(in_flight.from, to, in_flight.message.type);
      trace_message(reachable ? "delivers" : "cuts", in_flight.from, to, in_flight.message);
      if (reachable) messages.push_back(std::move(in_flight.message));
    }
    return messages;
  }

  bool has_due(ReplicaID to) const {
    auto inbox = inboxes_.find(to);
    if (inbox == inboxes_.end()) return false;
    for (const InFlight& in_flight : inbox->second)
      if (in_flight.due <= history_.now()) return true;
    return false;
  }

  Clock::time_point next_arrival() const {
    Clock::time_point next = Clock::time_point::max();
    for (const auto& [to, inbox] : inboxes_)
      for (const InFlight& in_flight : inbox) next = std::min(next, in_flight.due);
    return next;
  }

  // Each replica talks only to its own group until heal().
  void partition(const std::vector<std::vector<ReplicaID>>& groups) {
    std::string description;
    for (std::size_t group = 0; group < groups.size(); ++group) {
      description += " {";
      for (ReplicaID member : groups[group]) {
        group_[member] = static_cast<int>(group);
        description += text(" r", member);
      }
      description += " }";
    }
    history_.trace("partition:", description);
  }
  // Heals partitions, failed links and slow links alike (what is on its way arrives as sent).
  void heal() {
    if (is_partitioned()) history_.trace("partition healed");
    if (!blocked_.empty() || !slow_.empty()) history_.trace("failed and slow links repaired");
    for (auto& [member, group] : group_) group = 0;
    blocked_.clear();
    slow_.clear();
  }
  bool is_partitioned() const {
    for (const auto& [member, group] : group_)
      if (group != group_.begin()->second) return true;
    return false;
  }

  // A failed link, until heal(): messages from `from` to `to` are lost, only those of `type` if
  // given, all of them if not. One way only: the other direction is a link of its own.
  void block(ReplicaID from, ReplicaID to, std::optional<raft::MessageType> type = std::nullopt) {
    blocked_.emplace(from, to, type ? static_cast<int>(*type) : kAnyType);
    history_.trace("link r", from, "->r", to, " fails", type ? text(" for ", name(*type)) : "");
  }
  // A slow link, until heal(): messages sent from `from` to `to` take `extra` longer, one way.
  void slow(ReplicaID from, ReplicaID to, Duration extra) {
    slow_[{from, to}] = extra;
    history_.trace("link r", from, "->r", to, " slows down by ", milliseconds(extra), " ms");
  }
  // Both directions, every type: as if `a` and `b` were on two sides of a partition.
  void cut(ReplicaID a, ReplicaID b) {
    block(a, b);
    block(b, a);
  }

  bool can_reach(ReplicaID from, ReplicaID to, raft::MessageType type) const {
    return group_.at(from) == group_.at(to) && !blocked_.count({from, to, kAnyType}) &&
           !blocked_.count({from, to, static_cast<int>(type)});
  }

  // A crashed replica loses what was on its way to it, and whatever is sent to it while down.
  void set_down(ReplicaID id, bool down) {
    if (down) {
      down_.insert(id);
      inboxes_[id].clear();
    } else {
      down_.erase(id);
    }
  }

private:
  struct InFlight {
    Clock::time_point due;
    std::uint64_t sequence; // ties at the same instant keep the order of sending
    ReplicaID from;
    Message message;
  };

  void trace_message(const char* what, ReplicaID from, ReplicaID to, const Message& message) {
    if (!trace_messages) return;
    using raft::MessageType;
    if (message.type == MessageType::InstallSnapshot ||
        message.type == MessageType::InstallSnapshotResponse)
      return history_.trace("  net ", what, " r", from, "->r", to, " ", name(message.type),
                            " term ", message.term, " through ", message.last_included_index,
                            " offset ", message.offset, " bytes ", message.data.size(),
                            " received ", message.received, message.done ? " done" : "");
    history_.trace("  net ", what, " r", from, "->r", to, " ", name(message.type), " term ",
                   message.term, " prev ", message.prev_log_index, " entries ",
                   message.entries.size(), " commit ", message.leader_commit,
                   message.success || message.vote_granted ? " yes" : "");
  }

  static constexpr int kAnyType = -1;

  Random& random_;
  History& history_;
  std::map<ReplicaID, std::vector<InFlight>> inboxes_;
  std::map<ReplicaID, int> group_; // partition group of each member; all 0 when healed
  std::set<std::tuple<ReplicaID, ReplicaID, int>> blocked_;  // failed links: from, to, type
  std::map<std::pair<ReplicaID, ReplicaID>, Duration> slow_; // slow links: the extra delay
  std::set<ReplicaID> down_;
  std::uint64_t next_sequence_ = 0;
};

// ---- Storage: a MemoryStorage that also knows what sync() made durable ----

// Each replica's storage outlives its Replica objects, as a disk outlives a process. Beside the
// data it keeps the term, vote and log length as of the last sync(), for the checks in Host.
class CheckedStorage : public raft::Storage {
public:
  struct Durable {
    Term term = 0;
    std::optional<ReplicaID> vote;
    Index last_index = 0;
  };

  // What a restarted replica reads back counts as durable.
  State load() override {
    synced_ = written_;
    return memory_.load();
  }
  void save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) override {
    memory_.save_term_and_vote(current_term, voted_for);
    written_.term = current_term;
    written_.vote = voted_for;
  }
  void save_entries(Index first, const raft::Entry* begin, const raft::Entry* end) override {
    memory_.save_entries(first, begin, end);
    written_.last_index = first - 1 + static_cast<Index>(end - begin);
  }
  void save_snapshot(const raft::Snapshot& snapshot, const raft::Entry* begin,
                     const raft::Entry* end) override {
    memory_.save_snapshot(snapshot, begin, end);
    written_.last_index = snapshot.last_included_index + static_cast<Index>(end - begin);
  }
  void sync() override { synced_ = written_; }

  const Durable& synced() const { return synced_; }

private:
  raft::MemoryStorage memory_;
  Durable written_;
  Durable synced_;
};

// ---- The transport one replica sees: the Cluster interface over the network ----

class Host : public raft::Cluster {
public:
  Host(ReplicaID id, Network& network, History& history, const CheckedStorage& storage)
      : id_(id), network_(network), history_(history), storage_(storage) {}

  void send_message(ReplicaID to, const Message& message) override {
    if (message.from != id_ || message.to != to || to == id_ || !network_.is_member(to))
      return history_.fail("r", id_, " sent a ", name(message.type), " from r", message.from,
                           " to r", message.to, " through send_message(", to,
                           "): from must be the sender, to the argument, another member");
    check_durable(message);
    ++messages_sent_;
    network_.send(id_, to, message);
  }
  std::vector<Message> receive_messages() override { return network_.deliver(id_); }
  bool halt() const override { return false; }
  void register_leader(std::optional<ReplicaID> leader) override {
    registered_leader_ = leader;
    history_.trace("r", id_, " registers leader ", who(leader));
  }

  std::optional<ReplicaID> registered_leader() const { return registered_leader_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

private:
  // raft.hpp, Persistence: a message leaves only once the term, vote and entries it depends on
  // are synced, so that a crash right after sending cannot make the replica take it back.
  void check_durable(const Message& message) {
    using raft::MessageType;
    const CheckedStorage::Durable& synced = storage_.synced();
    // A pre-vote request may carry the term its sender would campaign for; it changes nothing.
    bool pre_vote_request = message.type == MessageType::RequestVote && message.pre_vote;
    if (message.term > synced.term + pre_vote_request)
      return fail(message,
                  text("carries term ", message.term, " but term ", synced.term, " is synced"));
    bool casts_vote = !message.pre_vote &&
                      (message.type == MessageType::RequestVote ||
                       (message.type == MessageType::RequestVoteResponse && message.vote_granted));
    ReplicaID candidate = message.type == MessageType::RequestVote ? id_ : message.to;
    if (casts_vote && (synced.term != message.term || synced.vote != candidate))
      return fail(message,
                  text("votes for r", candidate, " in term ", message.term,
                       " but the synced vote is ", who(synced.vote), " in term ", synced.term));
    if (message.type == MessageType::AppendEntriesResponse && message.success &&
        message.match_index > synced.last_index)
      return fail(message, text("acknowledges entries through ", message.match_index, " but only ",
                                synced.last_index, " are synced"));
    // A finished snapshot transfer counts as a match through its index: the same rule.
    if (message.type == MessageType::InstallSnapshotResponse && message.done &&
        message.last_included_index > synced.last_index)
      return fail(message, text("reports the snapshot through ", message.last_included_index,
                                " done but only ", synced.last_index, " entries are synced"));
  }

  void fail(const Message& message, const std::string& what) {
    history_.fail("r", id_, "'s ", name(message.type), " to r", message.to, " ", what);
  }

  const ReplicaID id_;
  Network& network_;
  History& history_;
  const CheckedStorage& storage_;
  std::optional<ReplicaID> registered_leader_;
  std::uint64_t messages_sent_ = 0;
};

// ---- The simulator ----

class Simulator {
public:
  struct Settings {
    std::size_t replicas = 3;
    Duration heartbeat = 10ms;
    std::pair<Duration, Duration> election_timeout = {50ms, 100ms};
    Network::Faults faults;
    std::size_t max_entries_per_message = 4096; // passed on in raft::Options
    std::size_t max_messages_in_flight = 8;
    bool pre_vote = true;                       // passed on in raft::Options
    bool check_quorum = true;                   // passed on in raft::Options
    bool lease_reads = false;                   // passed on in raft::Options
    Index snapshot_delta = 0;                   // passed on in raft::Options; 0: no snapshots
    std::size_t snapshot_chunk_bytes = 1 << 20; // passed on in raft::Options
    int trace = 0;                              // 0: quiet; 1: events; 2: events and every message
  };

  Simulator(std::uint64_t seed, Settings settings)
      : settings_(settings), random_(seed), history_(seed, kStart, settings.trace > 0),
        ids_(ids_of(settings.replicas)), network_(ids_, random_, history_) {
    network_.faults = settings.faults;
    network_.trace_messages = settings.trace > 1;
    for (ReplicaID id : ids_) {
      slots_.push_back(std::make_unique<Slot>());
      slots_.back()->id = id;
      build_replica(*slots_.back());
    }
  }

  // ---- Time ----

  Clock::time_point now() const { return history_.now(); }

  // One step: polls every replica that needs it now (its deadline passed, a message arrived or a
  // transition is pending), then moves the clock to the next event, but not past `end`. Returns
  // the replicas it polled.
  std::vector<ReplicaID> step(Clock::time_point end) {
    std::vector<ReplicaID> polled = poll_due();
    Clock::time_point next = next_event();
    if (next > now()) {
      repolls_at_this_instant_ = 0;
      history_.set_now(std::max(now(), std::min(next, end)));
    } else if (++repolls_at_this_instant_ > 100) {
      history_.fail("livelock: replicas keep asking to be polled again at the same instant");
    }
    return polled;
  }

  // Steps until `end`. Returns false once a check has failed.
  bool run_until(Clock::time_point end) {
    do step(end);
    while (!failed() && now() < end);
    return !failed();
  }
  bool run_for(Duration duration) { return run_until(now() + duration); }

  // Steps until `done()` holds, checking it after every step. False on timeout or violation.
  bool run_until(const std::function<bool()>& done, Duration timeout) {
    Clock::time_point limit = now() + timeout;
    while (!failed() && !done()) {
      if (now() >= limit) return false;
      step(limit);
    }
    return !failed();
  }

  // ---- Clients ----

  // Hands a new transition (fresh id, a few random bytes) to a replica's next poll.
  std::uint64_t propose(ReplicaID to) {
    std::string data(random_.below(9), '\0');
    for (char& byte : data) byte = static_cast<char>(random_.below(256));
    return propose(to, std::move(data));
  }
  // The same with the data given, such as MachineState::put_data(key, value).
  std::uint64_t propose(ReplicaID to, std::string data) {
    std::uint64_t id = next_transition_id_++;
    history_.trace("client proposes #", id, " to r", to);
    slot(to).machine->propose(Transition{id, std::move(data)});
    return id;
  }

  // Asks a running replica for a linearizable read (Replica::read) under a fresh id, which no
  // transition uses; its next poll, at once, takes it. Returns the id.
  std::uint64_t read(ReplicaID at) {
    std::uint64_t id = next_read_id_++;
    history_.trace("client asks r", at, " for read #", id);
    Slot& asked = slot(at);
    asked.machine->expect_read(id);
    asked.replica->read(id);
    return id;
  }

  // Replica::transfer_leadership on a running replica, which is polled at once: a host calls it
  // from its event loop and goes on polling.
  void transfer_leadership(ReplicaID from, ReplicaID to) {
    history_.trace("r", from, " is asked to transfer leadership to r", to);
    Slot& asked = slot(from);
    asked.replica->transfer_leadership(to);
    asked.wake = true;
  }

  // Called with every report of every replica's state machine (CheckedStateMachine::Observer).
  void on_report(CheckedStateMachine::Observer observer) {
    observer_ = std::move(observer);
    for (const auto& slot : slots_)
      if (slot->machine) slot->machine->set_observer(observer_);
  }

  // ---- Faults ----

  void crash(ReplicaID id) {
    Slot& crashed = slot(id);
    if (!crashed.replica) return;
    history_.trace("r", id, " crashes (term ", crashed.replica->current_term(), ", log ",
                   crashed.replica->last_log_index(), ")");
    crashed.term_at_crash = crashed.replica->current_term();
    crashed.log_at_crash = crashed.replica->last_log_index();
    crashed.messages_sent += crashed.host->messages_sent();
    crashed.replica.reset(); // before the state machine and host it refers to
    crashed.machine.reset();
    crashed.host.reset();
    network_.set_down(id, true);
  }

  // A new Replica over the same storage, with a fresh state machine: it must recover its term
  // and log, and replay every committed transition from index 1.
  void restart(ReplicaID id) {
    Slot& restarted = slot(id);
    if (restarted.replica) return;
    build_replica(restarted);
    const raft::Replica& replica = *restarted.replica;
    history_.trace("r", id, " restarts (term ", replica.current_term(), ", log ",
                   replica.last_log_index(), ")");
    if (replica.current_term() != restarted.term_at_crash ||
        replica.last_log_index() != restarted.log_at_crash)
      history_.fail("r", id, " restarted with term ", replica.current_term(), " and log ",
                    replica.last_log_index(), " but crashed with term ", restarted.term_at_crash,
                    " and log ", restarted.log_at_crash);
  }

  void partition(const std::vector<std::vector<ReplicaID>>& groups) { network_.partition(groups); }
  void heal() { network_.heal(); }
  Network& network() { return network_; }

  // ---- Observations ----

  const std::vector<ReplicaID>& ids() const { return ids_; }
  bool is_up(ReplicaID id) const { return slot(id).replica != nullptr; }
  const raft::Replica& replica(ReplicaID id) const { return *slot(id).replica; }
  const CheckedStateMachine& machine(ReplicaID id) const { return *slot(id).machine; }
  // How many times the replica was built: 1 until its first restart. A report can come only from
  // the lifetime that took the request.
  std::uint64_t lifetime(ReplicaID id) const { return slot(id).lifetimes; }
  Random& random() { return random_; }
  History& history() { return history_; }
  const History& history() const { return history_; }
  const Settings& settings() const { return settings_; }
  bool failed() const { return history_.failed(); }
  const std::string& failure() const { return history_.failure(); }

  // The running replica that leads the highest term any running replica knows, if any.
  std::optional<ReplicaID> leader() const {
    std::optional<ReplicaID> leader;
    Term highest = 0;
    for (const auto& slot : slots_) {
      if (!slot->replica) continue;
      if (slot->replica->current_term() > highest) leader.reset();
      highest = std::max(highest, slot->replica->current_term());
      if (slot->replica->is_leader() && slot->replica->current_term() == highest) leader = slot->id;
    }
    return leader;
  }

  // True when every replica runs and its state machine has reached the end of the committed
  // sequence, by applying it or by a snapshot.
  bool all_caught_up() const {
    for (const auto& slot : slots_)
      if (!slot->replica || slot->machine->position() != history_.committed().size()) return false;
    return true;
  }

  // The end of a run: every running replica holds the state of the whole committed sequence, and
  // every transition it reported Queued in its current lifetime has its outcome
  // (CheckedStateMachine::check_settled).
  void check_final_states() {
    MachineState expected = history_.state_after(history_.committed().size());
    for (const auto& slot : slots_) {
      if (!slot->replica || failed()) continue;
      if (slot->machine->position() != history_.committed().size() ||
          slot->machine->state() != expected)
        history_.fail("r", slot->id, "'s state machine is at index ", slot->machine->position(),
                      " with ", slot->machine->state().count,
                      " transitions applied, not at the end", " of the committed sequence (",
                      history_.committed().size(), " entries, ", expected.count, " transitions)");
      slot->machine->check_settled();
    }
  }

  // One line per replica, for failure messages.
  std::string describe() const {
    std::string lines;
    for (const auto& slot : slots_) {
      if (!slot->replica) {
        lines += text("\n  r", slot->id, ": down");
        continue;
      }
      const raft::Replica& replica = *slot->replica;
      lines += text("\n  r", slot->id, ": term ", replica.current_term(),
                    replica.is_leader() ? " leader" : "", ", leader ", who(replica.leader()),
                    ", log ", replica.last_log_index(), ", commit ", replica.commit_index(),
                    ", applied ", replica.last_applied(),
                    settings_.snapshot_delta ? text(", snapshot ", slot->machine->snapshot_index())
                                             : std::string());
    }
    return text(history_.committed().size(), " entries committed", lines);
  }

  // A summary of the run that two runs of the same seed must share.
  std::string fingerprint() const {
    std::string summary = text(milliseconds(now() - kStart), " ms, ", polls_, " polls");
    for (const auto& slot : slots_)
      summary += text(", r", slot->id, " term ", slot->highest_term, " sent ",
                      slot->messages_sent + (slot->host ? slot->host->messages_sent() : 0));
    for (const Transition& transition : history_.committed()) summary += text(" #", transition.id);
    return summary;
  }

private:
  // Any fixed instant will do; a large one keeps "time zero" from looking special.
  static constexpr Clock::time_point kStart = Clock::time_point(std::chrono::hours(1000));

  // One replica's place in the cluster. The storage survives crashes; the rest is rebuilt.
  struct Slot {
    ReplicaID id = 0;
    CheckedStorage storage;
    std::unique_ptr<Host> host;
    std::unique_ptr<CheckedStateMachine> machine;
    std::unique_ptr<raft::Replica> replica; // null while crashed
    std::uint64_t lifetimes = 0;            // Replica objects built so far
    bool polled = false;                    // polled at least once in this lifetime
    bool wake = false;                      // a request for the next poll came from outside
    Index commit_index = 0;                 // as of the last poll in this lifetime
    bool was_leader = false;                // as of the last poll in this lifetime
    Term highest_term = 0;                  // over all lifetimes: terms are durable
    Term term_at_crash = 0;
    Index log_at_crash = 0;
    std::uint64_t messages_sent = 0; // by earlier lifetimes
  };

  static std::vector<ReplicaID> ids_of(std::size_t count) {
    std::vector<ReplicaID> ids;
    for (ReplicaID id = 1; id <= count; ++id) ids.push_back(id);
    return ids;
  }

  Slot& slot(ReplicaID id) { return *slots_.at(id - 1); }
  const Slot& slot(ReplicaID id) const { return *slots_.at(id - 1); }

  void build_replica(Slot& slot) {
    slot.host = std::make_unique<Host>(slot.id, network_, history_, slot.storage);
    slot.machine =
        std::make_unique<CheckedStateMachine>(slot.id, history_, settings_.snapshot_delta);
    slot.machine->set_observer(observer_);
    std::vector<ReplicaID> peers;
    for (ReplicaID id : ids())
      if (id != slot.id) peers.push_back(id);
    raft::Options options;
    options.seed = random_.next() | 1; // never 0, which would mean "seed from random_device"
    options.storage = &slot.storage;
    options.max_entries_per_message = settings_.max_entries_per_message;
    options.max_messages_in_flight = settings_.max_messages_in_flight;
    options.pre_vote = settings_.pre_vote;
    options.check_quorum = settings_.check_quorum;
    options.lease_reads = settings_.lease_reads;
    options.snapshot_delta = settings_.snapshot_delta;
    options.snapshot_chunk_bytes = settings_.snapshot_chunk_bytes;
    slot.replica =
        std::make_unique<raft::Replica>(slot.id, peers, *slot.host, *slot.machine, kNoop,
                                        settings_.heartbeat, settings_.election_timeout, options);
    ++slot.lifetimes;
    slot.polled = false;
    slot.wake = false;
    slot.commit_index = 0;
    slot.was_leader = false;
    network_.set_down(slot.id, false);
  }

  // A replica is polled when its deadline passes, a message arrives or a transition is pending,
  // which the contract says is enough; once at the start of each lifetime; and at once after a
  // request from outside (transfer_leadership).
  bool needs_poll(const Slot& slot) const {
    return !slot.polled || slot.wake || slot.replica->next_deadline() <= now() ||
           network_.has_due(slot.id) || slot.machine->has_pending();
  }

  Clock::time_point next_event() const {
    Clock::time_point next = network_.next_arrival();
    for (const auto& slot : slots_)
      if (slot->replica)
        next = std::min(next, slot->polled && !slot->wake ? slot->replica->next_deadline() : now());
    return next;
  }

  std::vector<ReplicaID> poll_due() {
    std::vector<ReplicaID> polled;
    for (const auto& slot : slots_) {
      if (!slot->replica || !needs_poll(*slot)) continue;
      poll(*slot);
      polled.push_back(slot->id);
      if (failed()) return polled;
    }
    check_leader_completeness();
    return polled;
  }

  void poll(Slot& slot) {
    ++polls_;
    slot.machine->begin_poll();
    slot.replica->poll(now());
    slot.machine->end_poll();
    slot.polled = true;
    slot.wake = false;
    check_after_poll(slot);
  }

  void check_after_poll(Slot& slot) {
    const raft::Replica& replica = *slot.replica;
    Term term = replica.current_term();
    if (term < slot.highest_term)
      history_.fail("r", slot.id, "'s term went back from ", slot.highest_term, " to ", term);
    if (term > slot.highest_term) history_.trace("r", slot.id, " enters term ", term);
    slot.highest_term = std::max(slot.highest_term, term);

    if (replica.commit_index() < slot.commit_index)
      history_.fail("r", slot.id, "'s commit index went back from ", slot.commit_index, " to ",
                    replica.commit_index());
    if (replica.commit_index() > slot.commit_index)
      history_.trace("r", slot.id, " commits through ", replica.commit_index());
    slot.commit_index = replica.commit_index();
    if (replica.last_applied() > replica.commit_index() ||
        replica.commit_index() > replica.last_log_index())
      history_.fail("r", slot.id, ": not last_applied ", replica.last_applied(),
                    " <= commit_index ", replica.commit_index(), " <= last_log_index ",
                    replica.last_log_index());
    if (replica.last_applied() != slot.machine->position())
      history_.fail("r", slot.id, ": last_applied() is ", replica.last_applied(),
                    " but its state machine is at index ", slot.machine->position());

    check_leadership(slot);
    check_deadline(slot);
  }

  void check_leadership(Slot& slot) {
    const raft::Replica& replica = *slot.replica;
    if (replica.leader() != slot.host->registered_leader())
      history_.fail("r", slot.id, ": leader() is ", who(replica.leader()),
                    " but the last register_leader was ", who(slot.host->registered_leader()));
    if (replica.is_leader()) {
      if (replica.leader() != replica.id())
        history_.fail("r", slot.id, " is leader but leader() is ", who(replica.leader()));
      history_.record_leader(replica.current_term(), slot.id);
      if (!slot.was_leader)
        history_.trace("r", slot.id, " becomes leader of term ", replica.current_term());
    } else if (slot.was_leader) {
      history_.trace("r", slot.id, " steps down in term ", replica.current_term());
    }
    slot.was_leader = replica.is_leader();
  }

  void check_deadline(const Slot& slot) {
    const raft::Replica& replica = *slot.replica;
    Duration limit = replica.is_leader() ? settings_.heartbeat : settings_.election_timeout.second;
    Clock::time_point deadline = replica.next_deadline();
    if (deadline < now() || deadline > now() + limit)
      history_.fail("r", slot.id, ": next_deadline() is ", milliseconds(deadline - now()),
                    " ms after now, outside [0, ", milliseconds(limit), "] ms");
  }

  // Leader Completeness (Figure 3): a leader of the highest term any replica has reached holds
  // every committed entry, so its log is at least as long as the committed sequence.
  void check_leader_completeness() {
    Term highest = 0;
    for (const auto& slot : slots_) highest = std::max(highest, slot->highest_term);
    for (const auto& slot : slots_) {
      const raft::Replica* replica = slot->replica.get();
      if (!replica || !replica->is_leader() || replica->current_term() != highest) continue;
      if (replica->last_log_index() < history_.committed().size())
        history_.fail("r", slot->id, " leads term ", highest, " with a log of ",
                      replica->last_log_index(), " entries, but ", history_.committed().size(),
                      " are committed");
    }
  }

  const Settings settings_;
  Random random_;
  History history_;
  const std::vector<ReplicaID> ids_; // 1..replicas
  Network network_;
  std::vector<std::unique_ptr<Slot>> slots_; // slots_[id - 1]; never moved: storage is referenced
  std::uint64_t next_transition_id_ = 1;
  std::uint64_t next_read_id_ = std::uint64_t{1} << 62; // far from every transition's id
  CheckedStateMachine::Observer observer_;
  std::uint64_t polls_ = 0;
  int repolls_at_this_instant_ = 0; // steps that could not move the clock
};

} // namespace sim

#endif
