// tests/simulator.hpp: the simulated cluster of tests/cluster.hpp with every poll checked, for
// testing raft::Replica.
//
// The cluster (one simulated clock; a network with random delays, loss and duplication,
// partitions, failed and slow links; crashes and restarts over surviving storage; one seeded
// generator, so that a seed replays the identical run) is shared with tests/snapshot.cpp and the
// bench. The simulator layers on it a checked storage, transport and state machine, and a
// History of what every replica did.
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
//
// Membership (raft.hpp, Membership changes): Simulator::change_membership asks a replica for a
// change, add_replica starts a replica under a new id with Options::joining, and stop ends one
// for good (after its removal; a removed replica may also keep running). The checks hold across
// configurations: History's committed sequence holds the configuration entries too (each
// replica's state machine passes them, as read from the log its storage holds, without
// apply_transition), so every replica that reaches an index agrees on the configuration there;
// each configuration committed is one change from the one before, as asked; a leader appends
// one only once an entry of its term and the configuration before have committed; configuration()
// is the latest in the replica's log; requests go to members only; and every change is reported
// as raft.hpp says (CheckedStateMachine::expect_change). At the end, "every replica" means every
// member of the latest committed configuration.
#ifndef TESTS_SIMULATOR_HPP
#define TESTS_SIMULATOR_HPP

#include "cluster.hpp"
#include "raft.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
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

inline std::string who(std::optional<ReplicaID> replica) {
  return replica ? "r" + std::to_string(*replica) : "none";
}

inline const char* name(raft::MembershipChange change) {
  switch (change) {
  case raft::MembershipChange::AddLearner: return "AddLearner";
  case raft::MembershipChange::AddVoter: return "AddVoter";
  case raft::MembershipChange::Remove: return "Remove";
  }
  return "?";
}

// A replica's role in a configuration.
enum class Role { None, Learner, Voter };
inline Role role_in(const raft::Configuration& configuration, ReplicaID id) {
  auto has = [id](const std::vector<ReplicaID>& ids) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  return has(configuration.voters)     ? Role::Voter
         : has(configuration.learners) ? Role::Learner
                                       : Role::None;
}
inline bool is_member(const raft::Configuration& configuration, ReplicaID id) {
  return role_in(configuration, id) != Role::None;
}

// "{r1 r2 r3 | r4}": the voters, then the learners if any.
inline std::string show(const raft::Configuration& configuration) {
  std::string shown = "{";
  for (ReplicaID id : configuration.voters) shown += text(shown.size() > 1 ? " r" : "r", id);
  if (!configuration.learners.empty()) shown += " |";
  for (ReplicaID id : configuration.learners) shown += text(" r", id);
  return shown + "}";
}

// Ids sorted ascending, none twice, none in both lists (raft.hpp, Configuration).
inline bool well_formed(const raft::Configuration& configuration) {
  std::vector<ReplicaID> all = configuration.voters;
  all.insert(all.end(), configuration.learners.begin(), configuration.learners.end());
  std::vector<ReplicaID> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  return std::is_sorted(configuration.voters.begin(), configuration.voters.end()) &&
         std::is_sorted(configuration.learners.begin(), configuration.learners.end()) &&
         std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
}

// The configuration that `change` of `replica` makes of `from` (raft.hpp, Membership changes:
// the role it completes; AddVoter's first step, to a learner, aside).
inline raft::Configuration changed(raft::Configuration from, raft::MembershipChange change,
                                   ReplicaID replica) {
  auto drop = [replica](std::vector<ReplicaID>& ids) {
    ids.erase(std::remove(ids.begin(), ids.end(), replica), ids.end());
  };
  auto add = [replica](std::vector<ReplicaID>& ids) {
    ids.insert(std::upper_bound(ids.begin(), ids.end(), replica), replica);
  };
  drop(from.voters), drop(from.learners);
  if (change == raft::MembershipChange::AddLearner) add(from.learners);
  if (change == raft::MembershipChange::AddVoter) add(from.voters);
  return from;
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

// ---- Storage: a MemoryStorage that also knows what sync() made durable, and what it holds ----

// Each replica's storage outlives its Replica objects, as a disk outlives a process. Beside the
// data it keeps the term, vote and log length as of the last sync(), for the checks in Host, and
// an outline of the log as written (each entry's term, transition id and configuration, after the
// snapshot's index, term and configuration): the replica writes every entry it appends, so the
// outline is its log from the snapshot on, which the checks of configurations read.
class CheckedStorage : public raft::Storage {
public:
  struct Durable {
    Term term = 0;
    std::optional<ReplicaID> vote;
    Index last_index = 0;
  };
  struct Written {
    Term term = 0;
    std::uint64_t id = 0; // the transition's
    std::optional<raft::Configuration> configuration;
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
    log_.resize(std::min<Index>(log_.size(), first - 1 - snapshot_index_));
    while (!configurations_.empty() && configurations_.back() >= first) configurations_.pop_back();
    outline(begin, end);
  }
  void save_snapshot(const raft::Snapshot& snapshot, const raft::Entry* begin,
                     const raft::Entry* end) override {
    memory_.save_snapshot(snapshot, begin, end);
    written_.last_index = snapshot.last_included_index + static_cast<Index>(end - begin);
    snapshot_index_ = snapshot.last_included_index;
    snapshot_term_ = snapshot.last_included_term;
    snapshot_configuration_ = snapshot.configuration;
    log_.clear();
    configurations_.clear();
    outline(begin, end);
  }
  void sync() override { synced_ = written_; }

  const Durable& synced() const { return synced_; }

  // The outline of the log as written: the entry at `index` if the log after the snapshot holds
  // it, its term (also the snapshot's, at its index), the latest configuration entry's index (0
  // if none follows the snapshot) and the one before `index`.
  const Written* entry(Index index) const {
    if (index <= snapshot_index_ || index > snapshot_index_ + log_.size()) return nullptr;
    return &log_[index - snapshot_index_ - 1];
  }
  std::optional<Term> term_at(Index index) const {
    if (index == snapshot_index_) return snapshot_term_;
    if (const Written* written = entry(index)) return written->term;
    return std::nullopt;
  }
  Index last_configuration_index() const {
    return configurations_.empty() ? 0 : configurations_.back();
  }
  Index configuration_index_before(Index index) const {
    auto after = std::lower_bound(configurations_.begin(), configurations_.end(), index);
    return after == configurations_.begin() ? 0 : *std::prev(after);
  }
  Index snapshot_index() const { return snapshot_index_; }
  const raft::Configuration& snapshot_configuration() const { return snapshot_configuration_; }

private:
  void outline(const raft::Entry* begin, const raft::Entry* end) {
    for (const raft::Entry* entry = begin; entry != end; ++entry) {
      log_.push_back(
          Written{entry->term, entry->transition.id,
                  entry->configuration ? std::optional(*entry->configuration) : std::nullopt});
      if (entry->configuration) configurations_.push_back(snapshot_index_ + log_.size());
    }
  }

  raft::MemoryStorage memory_;
  Durable written_;
  Durable synced_;
  Index snapshot_index_ = 0;
  Term snapshot_term_ = 0;
  raft::Configuration snapshot_configuration_;
  std::vector<Written> log_;          // log_[i]: the entry at snapshot_index_ + 1 + i
  std::vector<Index> configurations_; // the indexes of the configuration entries in log_
};

// ---- History: what all replicas did so far, and what the checks compare against ----

class History {
public:
  // `clock` is the simulated cluster's, read whenever a line is traced or a violation found.
  History(std::uint64_t seed, const Clock::time_point& clock, bool tracing)
      : seed_(seed), start_(clock), now_(clock), tracing_(tracing) {}

  Clock::time_point now() const { return now_; }

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

  // State Machine Safety (Figure 3): whoever applies index i applies the same entry there, the
  // same transition in the same term. The first replica to apply an index extends the one
  // committed sequence.
  void record_apply(ReplicaID replica, Index index, Term term, const Transition& transition) {
    if (index <= committed_.size()) {
      const Transition& expected = committed_[index - 1];
      if (!(transition == expected) || terms_[index - 1] != term || configurations_[index - 1])
        fail("r", replica, " applied #", transition.id, " of term ", term, " at index ", index,
             " where r", first_applier_[index - 1], " applied #", expected.id, " of term ",
             terms_[index - 1], configurations_[index - 1] ? ", a configuration" : "",
             " (or the data differ)");
      return;
    }
    extend(replica, index, term, transition, std::nullopt);
  }

  // The same for a configuration entry (raft.hpp, Membership changes): it counts in the indexes
  // but is never applied. Every replica that reaches its index agrees on it, so on the committed
  // configuration. Each one committed differs from the one before by one replica's role, as a
  // change asked (change_asked) makes it, or, for AddVoter, as its first step, the replica as a
  // learner (an entry that names the no-op). It follows a committed entry of its own term: a
  // leader appends a change only once an entry of its term committed (Simulator checks that
  // exactly, at the poll that appends it).
  void record_configuration(ReplicaID replica, Index index, Term term, std::uint64_t id,
                            const raft::Configuration& configuration) {
    if (index <= committed_.size()) {
      if (committed_[index - 1].id != id || terms_[index - 1] != term ||
          !(configurations_[index - 1] == configuration))
        fail("r", replica, " reached the configuration ", show(configuration), " (change #", id,
             ", term ", term, ") at index ", index, " where r", first_applier_[index - 1],
             configurations_[index - 1] ? text(" reached ", show(*configurations_[index - 1]))
                                        : text(" applied #", committed_[index - 1].id),
             " of term ", terms_[index - 1]);
      return;
    }
    check_configuration_change(index, term, id, configuration);
    extend(replica, index, term, Transition{id, {}}, configuration);
    committed_configuration_ = configuration;
    committed_configuration_index_ = index;
    ever_members_.insert(configuration.voters.begin(), configuration.voters.end());
    ever_members_.insert(configuration.learners.begin(), configuration.learners.end());
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

  // The committed sequence: the transition at each index, configuration entries named by their
  // change's id (or the no-op's).
  const std::vector<Transition>& committed() const { return committed_; }
  bool is_committed(std::uint64_t id) const { return committed_at_.count(id) > 0; }
  // The index at which a transition or change (not the no-op) is committed, if it is.
  std::optional<Index> committed_index(std::uint64_t id) const {
    auto found = committed_at_.find(id);
    if (found == committed_at_.end()) return std::nullopt;
    return found->second;
  }
  // The state that applying the committed sequence through `index` gives.
  MachineState state_after(Index index) const {
    MachineState state;
    for (Index i = 0; i < index && i < committed_.size(); ++i)
      if (!configurations_[i]) state.apply(committed_[i]);
    return state;
  }

  // Membership. The replicas the cluster starts with, as voters; every change asked of any
  // replica, by id; the latest committed configuration and its index (0: the initial one).
  void set_initial_configuration(const raft::Configuration& configuration) {
    committed_configuration_ = configuration;
    ever_members_.insert(configuration.voters.begin(), configuration.voters.end());
  }
  struct ChangeAsked {
    raft::MembershipChange change;
    ReplicaID replica;
  };
  void change_asked(std::uint64_t id, raft::MembershipChange change, ReplicaID replica) {
    changes_[id] = ChangeAsked{change, replica};
  }
  const ChangeAsked* change(std::uint64_t id) const {
    auto found = changes_.find(id);
    return found == changes_.end() ? nullptr : &found->second;
  }
  const raft::Configuration& committed_configuration() const { return committed_configuration_; }
  Index committed_configuration_index() const { return committed_configuration_index_; }
  // Every replica that a committed configuration named, then or earlier.
  const std::set<ReplicaID>& ever_members() const { return ever_members_; }
  // Who led each term so far.
  const std::map<Term, ReplicaID>& leaders() const { return leaders_; }

private:
  std::string stamp() const {
    return text("[", std::fixed, std::setprecision(3), std::setw(9), milliseconds(now_ - start_),
                " ms] ");
  }

  const std::uint64_t seed_;
  const Clock::time_point start_;
  const Clock::time_point& now_;
  const bool tracing_;
  std::string failure_;
  void extend(ReplicaID replica, Index index, Term term, const Transition& transition,
              const std::optional<raft::Configuration>& configuration) {
    committed_.push_back(transition);
    terms_.push_back(term);
    configurations_.push_back(configuration);
    first_applier_.push_back(replica);
    if (transition.id == kNoop.id) return;
    if (abandoned_.count(transition.id))
      fail("#", transition.id, " is committed at index ", index, " but was reported Abandoned");
    auto [known, inserted] = committed_at_.emplace(transition.id, index);
    if (!inserted)
      fail("#", transition.id, " is committed twice: at index ", known->second, " and ", index);
  }

  void check_configuration_change(Index index, Term term, std::uint64_t id,
                                  const raft::Configuration& next) {
    const raft::Configuration& before = committed_configuration_;
    std::string what = text("the configuration committed at index ", index, " (change #", id,
                            ", term ", term, "), ", show(next), ", ");
    if (!well_formed(next) || next.voters.empty())
      return fail(what, "is not well formed or has no voter");
    std::set<ReplicaID> ids(before.voters.begin(), before.voters.end());
    ids.insert(before.learners.begin(), before.learners.end());
    ids.insert(next.voters.begin(), next.voters.end());
    ids.insert(next.learners.begin(), next.learners.end());
    std::vector<ReplicaID> moved;
    for (ReplicaID replica : ids)
      if (role_in(before, replica) != role_in(next, replica)) moved.push_back(replica);
    if (moved.size() != 1)
      return fail(what, "changes ", moved.size(), " roles of ", show(before), ", not one");
    Role from = role_in(before, moved[0]), to = role_in(next, moved[0]);
    if (id == kNoop.id) {
      if (from != Role::None || to != Role::Learner)
        return fail(what, "names no change and is not AddVoter's first step (a new learner)");
    } else if (const ChangeAsked* asked = change(id)) {
      if (!(next == changed(before, asked->change, asked->replica)))
        return fail(what, "is not ", name(asked->change), " of r", asked->replica, " made of ",
                    show(before));
      if (asked->change == raft::MembershipChange::AddVoter && from != Role::Learner)
        return fail(what, "makes r", moved[0], " a voter before it was a learner");
    } else {
      return fail(what, "names no change that was asked");
    }
    bool own_term = false;
    for (Index i = terms_.size(); i > 0 && terms_[i - 1] >= term && !own_term; --i)
      own_term = terms_[i - 1] == term;
    if (!own_term)
      fail(what, "follows no committed entry of its own term: its leader appended it before an "
                 "entry of its term committed");
  }

  // committed_[i - 1]: the transition at index i; terms_ its term, configurations_ its
  // configuration if it is a configuration entry.
  std::vector<Transition> committed_;
  std::vector<Term> terms_;
  std::vector<std::optional<raft::Configuration>> configurations_;
  std::vector<ReplicaID> first_applier_;         // who applied each index first, for messages
  std::map<std::uint64_t, Index> committed_at_;  // ids in committed_, without the no-op
  std::set<std::uint64_t> abandoned_;            // ids some replica reported Abandoned
  std::map<Term, ReplicaID> leaders_;            // who led each term
  std::map<std::uint64_t, ChangeAsked> changes_; // every membership change asked, by id
  raft::Configuration committed_configuration_;  // the latest in committed_, or the initial one
  Index committed_configuration_index_ = 0;
  std::set<ReplicaID> ever_members_;
};

// ---- The state machine: records what the replica does to it, checks it against raft.hpp ----

class CheckedStateMachine : public raft::StateMachine {
public:
  // `storage` is the replica's, whose outline of the log tells which indexes hold configuration
  // entries; `snapshot_delta` is the replica's Options::snapshot_delta, for the compaction check;
  // `transfer_window` the maximum election timeout, for which a leader transfer lasts at most.
  CheckedStateMachine(ReplicaID replica, History& history, const CheckedStorage& storage,
                      Index snapshot_delta = 0, Duration transfer_window = Duration::zero())
      : replica_(replica), history_(history), storage_(storage), snapshot_delta_(snapshot_delta),
        transfer_window_(transfer_window) {}
  // The replica this state machine belongs to, once built: the checks of membership reports read
  // its configuration, role and commit index from inside the callbacks.
  void attach(const raft::Replica* replica) { raft_ = replica; }

  // The client side: transitions handed to the replica at its next poll.
  void propose(Transition transition) { pending_.push_back(std::move(transition)); }
  bool has_pending() const { return !pending_.empty(); }
  // Every apply_transition of this lifetime, no-ops included; the state machine's whole history
  // only while no snapshot was set (Settings::snapshot_delta 0).
  const std::vector<Transition>& applied() const { return applied_; }
  // The index the state has reached, by set_snapshot and apply_transition, and the state.
  Index position() const { return position_; }
  const MachineState& state() const { return state_; }
  // The index of the latest snapshot created or set in this lifetime (0: none), and of the
  // latest one set (installed or loaded at a restart).
  Index snapshot_index() const { return snapshot_index_; }
  Index snapshot_set_through() const { return set_through_; }
  // Whether a membership change queued here has no outcome yet (nor is covered by a snapshot).
  bool has_change_under_way() const { return !under_way_.empty(); }
  // The last state reported for a transition or membership change in this lifetime, and the
  // reason if Abandoned.
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

  // A membership change asked of the replica (Replica::change_membership) under `id`, which no
  // transition uses (History::change_asked knows what it asks); the next poll takes it. It must be
  // reported as raft.hpp says: in that poll Queued (by a leader, if the change can be made) or
  // Abandoned, NotLeader (off a leader, or during a transfer) or Refused (for one of the reasons
  // raft.hpp gives); after Queued, Committed then Applied, or Abandoned: NotLeader, or
  // ConflictWithLeader, or (AddVoter whose learner does not catch up) Refused. Every replica
  // reports Committed and Applied for the configuration entry that completes it, in log order,
  // when its state machine passes that index.
  void expect_change(std::uint64_t id) { changes_asked_.push_back(id); }
  // A leader transfer asked of the replica: for a maximum election timeout it turns changes away.
  void transfer_asked() { transfer_asked_at_ = history_.now(); }

  // The simulator calls these around every poll: some rules are about "the same poll".
  // `last_applied` is the replica's after the poll: configuration entries up to there count as
  // passed, as they never reach apply_transition.
  void begin_poll() {
    taken_this_poll_.clear();
    applied_this_poll_ = false;
    reads_taken_ = std::exchange(reads_asked_, {});
    changes_taken_ = std::exchange(changes_asked_, {});
  }
  void end_poll(Index last_applied) {
    pass_configurations(last_applied);
    for (std::uint64_t id : reads_taken_)
      if (!reads_.at(id).last)
        return fail("took read #", id, " but did not report it Queued or NotLeader in that poll");
    for (std::uint64_t id : changes_taken_)
      if (!reports_[id].last)
        return fail("took change #", id, " but did not report it Queued or Abandoned in that poll");
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
    if (const History::ChangeAsked* change = history_.change(id))
      return check_change_report(id, state, reason, *change);
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

  // The entry at the next index that is not a configuration must be this transition, in the
  // replica's log: configuration entries are never applied.
  void apply_transition(const Transition& transition) override {
    pass_configurations(UINT64_MAX);
    const CheckedStorage::Written* entry = storage_.entry(position_ + 1);
    if (!entry)
      return fail("apply_transition(#", transition.id, ") at index ", position_ + 1,
                  ", which its log does not hold");
    if (entry->configuration || entry->id != transition.id)
      return fail("apply_transition(#", transition.id, ") at index ", position_ + 1,
                  " where its log holds ",
                  entry->configuration ? "a configuration entry" : "another transition", " #",
                  entry->id);
    history_.record_apply(replica_, position_ + 1, entry->term, transition);
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
    pass_configurations(last_included_index);
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
    for (auto change = under_way_.begin(); change != under_way_.end();) {
      std::optional<Index> at = history_.committed_index(*change);
      change = at && *at <= index ? under_way_.erase(change) : std::next(change);
    }
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

  // Records `state` as the last one reported for `what`, unless an outcome (Applied or
  // Abandoned) came before it, which is a failure.
  bool follows_outcome(std::optional<TransitionState>& last, TransitionState state,
                       const std::string& what) {
    if (last == TransitionState::Applied || last == TransitionState::Abandoned)
      return fail("reported ", what, " ", name(state), " after ", name(*last)), false;
    last = state;
    return true;
  }

  // raft.hpp, Linearizable reads: Queued (in the poll that takes it) then Applied, never
  // Committed; or Abandoned/NotLeader, in that poll or once leadership is lost.
  void check_read_report(std::uint64_t id, TransitionState state, AbandonReason reason,
                         ReadReports& read) {
    bool taken_now = std::count(reads_taken_.begin(), reads_taken_.end(), id) > 0;
    if (!follows_outcome(read.last, state, text("read #", id))) return;
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

  // raft.hpp, Membership changes. See expect_change.
  void check_change_report(std::uint64_t id, TransitionState state, AbandonReason reason,
                           const History::ChangeAsked& asked) {
    Reports& reports = reports_[id];
    bool taken_now = std::count(changes_taken_.begin(), changes_taken_.end(), id) > 0;
    std::string change =
        text("change #", id, " (", name(asked.change), " of r", asked.replica, ")");
    if (!follows_outcome(reports.last, state, change)) return;
    switch (state) {
    case TransitionState::Queued:
      if (reports.queued) return fail("reported ", change, " Queued twice");
      if (!taken_now) return fail("reported ", change, " Queued outside the poll that took it");
      if (!raft_->is_leader()) return fail("reported ", change, " Queued but does not lead");
      if (std::string why = refusal(asked, false); !why.empty())
        return fail("reported ", change, " Queued though ", why);
      reports.queued = true;
      under_way_.insert(id);
      history_.trace("r", replica_, " queues ", change);
      return;
    case TransitionState::Committed:
      if (reports.committed) return fail("reported ", change, " Committed twice");
      reports.committed = true;
      return pass_change(id, change);
    case TransitionState::Applied:
      if (!reports.committed) return fail("reported ", change, " Applied before Committed");
      if (const CheckedStorage::Written* entry = storage_.entry(position_);
          !entry || !entry->configuration || entry->id != id)
        return fail("reported ", change, " Applied but the last index passed, ", position_,
                    ", is not its configuration entry");
      reports.applied = true;
      under_way_.erase(id);
      return;
    case TransitionState::Abandoned: return abandon_change(id, reason, reports, taken_now, asked);
    }
  }

  // Committed: the state machine passes the configuration entry that completes the change, the
  // next one after its position (AddVoter's first step, which is not reported, aside).
  void pass_change(std::uint64_t id, const std::string& change) {
    for (;;) {
      const CheckedStorage::Written* entry = storage_.entry(position_ + 1);
      if (!entry || !entry->configuration || (entry->id != id && entry->id != kNoop.id))
        return fail("reported ", change, " Committed but the next index, ", position_ + 1,
                    ", holds ",
                    !entry                 ? std::string("nothing in its log")
                    : entry->configuration ? text("the configuration entry of change #", entry->id)
                                           : text("transition #", entry->id));
      pass_configurations(position_ + 1);
      if (entry->id == id) return;
    }
  }

  void abandon_change(std::uint64_t id, AbandonReason reason, Reports& reports, bool taken_now,
                      const History::ChangeAsked& asked) {
    std::string change =
        text("change #", id, " (", name(asked.change), " of r", asked.replica, ")");
    std::string as = text("reported ", change, " Abandoned/", name(reason));
    if (reports.committed) return fail(as, " after Committed");
    if (reports.queued) {
      if (reason == AbandonReason::NotLeader && raft_->is_leader())
        return fail(as, " after Queued while it still leads");
      if (reason == AbandonReason::Refused && asked.change != raft::MembershipChange::AddVoter)
        return fail(as, " after Queued: only AddVoter, whose learner does not catch up, may be");
    } else if (!taken_now) {
      return fail(as, " outside the poll that took it and without Queued");
    } else if (reason == AbandonReason::ConflictWithLeader) {
      return fail(as, " but never queued it");
    } else if (reason == AbandonReason::NotLeader && raft_->is_leader() && !in_transfer()) {
      return fail(as, " in the poll that took it, though it leads and no transfer is under way");
    } else if (reason == AbandonReason::Refused) {
      if (std::string why = refusal(asked, true); why.empty())
        return fail(as, " though it could be made: its configuration is ",
                    show(raft_->configuration()),
                    ", committed through its latest entry, with "
                    "no other change under way");
    }
    reports.reason = reason;
    under_way_.erase(id);
    history_.trace("r", replica_, " abandons ", change, " (", name(reason), ")");
    history_.record_abandoned(replica_, id, reason);
  }

  // Why raft.hpp says the change must be refused now, if it does (empty if not): the replica
  // already has that role (Remove: it is no member), it is the last voter (Remove), or the latest
  // configuration entry is not committed. With `under_way`, also another change queued here and
  // not yet Applied or Abandoned (which may be committed already, so it only allows a refusal).
  std::string refusal(const History::ChangeAsked& asked, bool under_way) const {
    raft::Configuration configuration = raft_->configuration();
    Role role = role_in(configuration, asked.replica);
    bool has_role = asked.change == raft::MembershipChange::AddLearner ? role != Role::None
                    : asked.change == raft::MembershipChange::AddVoter ? role == Role::Voter
                                                                       : role == Role::None;
    if (has_role)
      return text("r", asked.replica, " is ",
                  role == Role::None    ? "no member"
                  : role == Role::Voter ? "a voter"
                                        : "a learner",
                  " of ", show(configuration));
    if (asked.change == raft::MembershipChange::Remove && role == Role::Voter &&
        configuration.voters.size() == 1)
      return text("r", asked.replica, " is the last voter");
    Index latest = storage_.last_configuration_index();
    if (latest > raft_->commit_index())
      return text("the configuration entry at index ", latest, " is not committed (commit index ",
                  raft_->commit_index(), ")");
    if (under_way && !under_way_.empty())
      return text("change #", *under_way_.begin(), " is under way");
    return "";
  }

  bool in_transfer() const {
    return transfer_asked_at_ && history_.now() <= *transfer_asked_at_ + transfer_window_;
  }

  // Configuration entries count in the indexes but never reach apply_transition: the state
  // machine passes those that follow its position in the replica's log, up to `through`, and
  // History records them.
  void pass_configurations(Index through) {
    for (; position_ < through;) {
      const CheckedStorage::Written* entry = storage_.entry(position_ + 1);
      if (!entry || !entry->configuration) return;
      ++position_;
      applied_this_poll_ = true;
      history_.record_configuration(replica_, position_, entry->term, entry->id,
                                    *entry->configuration);
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
  const CheckedStorage& storage_;
  const raft::Replica* raft_ = nullptr;
  const Index snapshot_delta_;
  const Duration transfer_window_;
  std::vector<std::uint64_t> changes_asked_; // not yet taken by a poll
  std::vector<std::uint64_t> changes_taken_; // taken by the poll under way (or the last)
  std::set<std::uint64_t> under_way_;        // changes Queued here, not yet Applied or Abandoned
  std::optional<Clock::time_point> transfer_asked_at_;
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

// ---- The transport one replica sees, checked: the cluster's Endpoint ----

class Host : public Endpoint {
public:
  Host(ReplicaID id, Network& network, History& history, const CheckedStorage& storage)
      : Endpoint(id, network), history_(history), storage_(storage) {}

  void send_message(ReplicaID to, const Message& message) override {
    if (message.from != id_ || message.to != to || to == id_ || !network_.is_member(to))
      return history_.fail("r", id_, " sent a ", name(message.type), " from r", message.from,
                           " to r", message.to, " through send_message(", to,
                           "): from must be the sender, to the argument, another member");
    check_durable(message);
    check_addressee(message);
    Endpoint::send_message(to, message);
  }
  std::vector<Message> receive_messages() override {
    std::vector<Message> messages = Endpoint::receive_messages();
    for (const Message& message : messages)
      if (is_request(message.type)) requesters_.insert(message.from);
    return messages;
  }
  void register_leader(std::optional<ReplicaID> leader) override {
    Endpoint::register_leader(leader);
    history_.trace("r", id_, " registers leader ", who(leader));
  }

  // The replica this host carries, once built: its configuration when it sends.
  void attach(const raft::Replica* replica) { replica_ = replica; }
  // Messages leave at the end of a poll, once its state is final: the configuration they are
  // checked against is read once per poll.
  void begin_poll() { configuration_.reset(); }

  static bool is_request(raft::MessageType type) {
    using raft::MessageType;
    return type == MessageType::AppendEntries || type == MessageType::RequestVote ||
           type == MessageType::InstallSnapshot || type == MessageType::TimeoutNow;
  }

private:
  // raft.hpp: a replica sends requests only to members (voters and learners) of its latest
  // configuration, and answers to whoever asked; it asks for votes only if that configuration
  // makes it a voter (one that is not never campaigns), or while the entry of a latest
  // configuration that removed it is not committed on it (a leader that removed itself and lost
  // its leadership first, whose vote the others may need: README, Membership changes).
  void check_addressee(const Message& message) {
    if (!is_request(message.type)) {
      if (!requesters_.count(message.to))
        fail(message, "answers a replica that never sent it a request");
      return;
    }
    if (!configuration_) configuration_ = replica_->configuration(); // the same all poll long
    const raft::Configuration& configuration = *configuration_;
    if (!is_member(configuration, message.to))
      return fail(message, text("is a request to a replica outside its latest configuration ",
                                show(configuration)));
    if (message.type != raft::MessageType::RequestVote ||
        role_in(configuration, id_) == Role::Voter)
      return;
    for (Index i = replica_->last_log_index(); i > replica_->commit_index(); --i)
      if (const CheckedStorage::Written* entry = storage_.entry(i); entry && entry->configuration)
        return; // the removal is not committed here
    fail(message, text("asks for a vote, but its latest configuration ", show(configuration),
                       ", committed here, does not make it a voter"));
  }

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

  History& history_;
  const CheckedStorage& storage_;
  const raft::Replica* replica_ = nullptr;
  std::optional<raft::Configuration> configuration_; // the replica's, in the poll under way
  std::set<ReplicaID> requesters_;                   // whoever sent it a request in this lifetime
};

// ---- The simulator: the cluster, every poll checked ----

// What the simulator keeps per replica beside the cluster's own.
struct SlotRecord {
  bool joining = false;            // started by add_replica, with Options::joining
  bool retired = false;            // stopped for good
  Index configuration_checked = 0; // the last configuration entry checked as its leader's
  Index commit_index = 0;          // as of the last poll in this lifetime
  bool was_leader = false;         // as of the last poll in this lifetime
  Term highest_term = 0;           // over all lifetimes: terms are durable
  Term term_at_crash = 0;
  Index log_at_crash = 0;
  std::uint64_t messages_sent = 0; // by earlier lifetimes
};

class Simulator : public Cluster<CheckedStateMachine, CheckedStorage, Host, SlotRecord> {
  using Base = Cluster<CheckedStateMachine, CheckedStorage, Host, SlotRecord>;

public:
  struct Settings {
    std::size_t replicas = 3; // r1 to rN, the initial voters; add_replica starts more
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
      : Base(seed, {settings.heartbeat, settings.election_timeout}, options_of(settings), kNoop),
        settings_(settings), history_(seed, clock(), settings.trace > 0) {
    network().faults = settings.faults;
    network().trace_messages = settings.trace > 1;
    if (settings.trace > 0)
      network().trace_to = [this](const std::string& line) { history_.trace(line); };
    history_.set_initial_configuration(raft::Configuration{ids_of(settings.replicas), {}});
    start(settings.replicas);
  }

  // ---- Time ----

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
    std::string data(random().below(9), '\0');
    for (char& byte : data) byte = static_cast<char>(random().below(256));
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
    asked.machine->transfer_asked();
    asked.wake = true;
  }

  // ---- Membership ----

  // Replica::change_membership on a running replica under a fresh id, which no transition or
  // read uses; its next poll, at once, takes it. Returns the id.
  std::uint64_t change_membership(ReplicaID at, raft::MembershipChange change, ReplicaID target) {
    std::uint64_t id = next_transition_id_++;
    history_.trace("r", at, " is asked for change #", id, ": ", name(change), " of r", target);
    history_.change_asked(id, change, target);
    Slot& asked = slot(at);
    asked.machine->expect_change(id);
    asked.replica->change_membership(id, change, target);
    asked.wake = true;
    return id;
  }

  // Starts a replica under an id never used before, built with Options::joining and no peers:
  // it waits for a leader to add it. Returns its id.
  ReplicaID add_replica() {
    ReplicaID id = ids().size() + 1;
    Slot& added = add_slot(id);
    added.joining = true;
    build(added);
    history_.trace("r", id, " starts, joining");
    return id;
  }

  // Stops a replica for good, as after its removal: it is never restarted.
  void stop(ReplicaID id) {
    crash(id);
    slot(id).retired = true;
    history_.trace("r", id, " is stopped for good");
  }

  // Called with every report of every replica's state machine (CheckedStateMachine::Observer).
  void on_report(CheckedStateMachine::Observer observer) {
    observer_ = std::move(observer);
    for (const auto& slot : slots())
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
    Base::crash(id);
  }

  // A new Replica over the same storage, with a fresh state machine: it must recover its term
  // and log, and replay every committed transition from index 1.
  void restart(ReplicaID id) {
    Slot& restarted = slot(id);
    if (restarted.replica || restarted.retired) return;
    build(restarted);
    const raft::Replica& replica = *restarted.replica;
    history_.trace("r", id, " restarts (term ", replica.current_term(), ", log ",
                   replica.last_log_index(), ")");
    if (replica.current_term() != restarted.term_at_crash ||
        replica.last_log_index() != restarted.log_at_crash)
      history_.fail("r", id, " restarted with term ", replica.current_term(), " and log ",
                    replica.last_log_index(), " but crashed with term ", restarted.term_at_crash,
                    " and log ", restarted.log_at_crash);
  }

  // ---- Observations ----

  bool is_stopped(ReplicaID id) const { return slot(id).retired; }
  // The replicas that the latest committed configuration names, voters and learners: those the
  // cluster replicates to.
  std::vector<ReplicaID> members() const {
    const raft::Configuration& configuration = history_.committed_configuration();
    std::vector<ReplicaID> members = configuration.voters;
    members.insert(members.end(), configuration.learners.begin(), configuration.learners.end());
    std::sort(members.begin(), members.end());
    return members;
  }
  // How many times the replica was built: 1 until its first restart. A report can come only from
  // the lifetime that took the request.
  std::uint64_t lifetime(ReplicaID id) const { return slot(id).lifetimes; }
  History& history() { return history_; }
  const History& history() const { return history_; }
  const Settings& settings() const { return settings_; }
  bool failed() const { return history_.failed(); }
  const std::string& failure() const { return history_.failure(); }

  // True when every member (of the latest committed configuration) runs and its state machine
  // has reached the end of the committed sequence, by applying it or by a snapshot.
  bool all_caught_up() const {
    for (ReplicaID id : members()) {
      const Slot& member = slot(id);
      if (!member.replica || member.machine->position() != history_.committed().size())
        return false;
    }
    return true;
  }

  // The end of a run: every running member (of the latest committed configuration) holds the
  // state of the whole committed sequence, and every transition and change it reported Queued in
  // its current lifetime has its outcome (CheckedStateMachine::check_settled). A replica removed
  // is not told what became of what it queued and did not see commit.
  void check_final_states() {
    MachineState expected = history_.state_after(history_.committed().size());
    const raft::Configuration& configuration = history_.committed_configuration();
    for (const auto& slot : slots()) {
      if (!slot->replica || failed() || !is_member(configuration, slot->id)) continue;
      if (slot->machine->position() != history_.committed().size() ||
          slot->machine->state() != expected)
        history_.fail("r", slot->id, "'s state machine is at index ", slot->machine->position(),
                      " with ", slot->machine->state().count,
                      " transitions applied, not at the end", " of the committed sequence (",
                      history_.committed().size(), " entries, ", expected.count, " transitions)");
      slot->machine->check_settled();
    }
  }

  // True when no running member has a membership change under way
  // (CheckedStateMachine::has_change_under_way).
  bool changes_settled() const {
    for (ReplicaID id : members())
      if (slot(id).machine && slot(id).machine->has_change_under_way()) return false;
    return true;
  }

  // One line per replica, for failure messages.
  std::string describe() const {
    std::string lines;
    for (const auto& slot : slots()) {
      if (!slot->replica) {
        lines += text("\n  r", slot->id, slot->retired ? ": stopped" : ": down");
        continue;
      }
      const raft::Replica& replica = *slot->replica;
      lines += text("\n  r", slot->id, ": term ", replica.current_term(),
                    replica.is_leader() ? " leader" : "", ", leader ", who(replica.leader()),
                    ", log ", replica.last_log_index(), ", commit ", replica.commit_index(),
                    ", applied ", replica.last_applied(),
                    settings_.snapshot_delta ? text(", snapshot ", slot->machine->snapshot_index())
                                             : std::string(),
                    ", configuration ", show(replica.configuration()));
    }
    return text(history_.committed().size(), " entries committed, the latest configuration ",
                show(history_.committed_configuration()), lines);
  }

  // A summary of the run that two runs of the same seed must share.
  std::string fingerprint() const {
    std::string summary = text(milliseconds(now() - kStart), " ms, ", polls_, " polls");
    for (const auto& slot : slots())
      summary += text(", r", slot->id, " term ", slot->highest_term, " sent ",
                      slot->messages_sent + (slot->host ? slot->host->messages_sent() : 0));
    for (const Transition& transition : history_.committed()) summary += text(" #", transition.id);
    return summary;
  }

private:
  static raft::Options options_of(const Settings& settings) {
    raft::Options options;
    options.max_entries_per_message = settings.max_entries_per_message;
    options.max_messages_in_flight = settings.max_messages_in_flight;
    options.pre_vote = settings.pre_vote;
    options.check_quorum = settings.check_quorum;
    options.lease_reads = settings.lease_reads;
    options.snapshot_delta = settings.snapshot_delta;
    options.snapshot_chunk_bytes = settings.snapshot_chunk_bytes;
    return options;
  }

  static std::vector<ReplicaID> ids_of(std::size_t count) {
    std::vector<ReplicaID> ids;
    for (ReplicaID id = 1; id <= count; ++id) ids.push_back(id);
    return ids;
  }

  // The configuration a replica starts with when its storage holds none: the initial voters, or
  // none for a joining replica.
  raft::Configuration initial_configuration(const Slot& slot) const {
    if (slot.joining) return {};
    return raft::Configuration{ids_of(settings_.replicas), {}};
  }

  // ---- The cluster's hooks: each lifetime checked, each poll checked ----

  std::unique_ptr<Host> make_host(Slot& slot) override {
    return std::make_unique<Host>(slot.id, network(), history_, slot.storage);
  }
  std::unique_ptr<CheckedStateMachine> make_machine(Slot& slot) override {
    auto machine = std::make_unique<CheckedStateMachine>(slot.id, history_, slot.storage,
                                                         settings_.snapshot_delta,
                                                         settings_.election_timeout.second);
    machine->set_observer(observer_);
    return machine;
  }
  std::vector<ReplicaID> peers_of(const Slot& slot) override {
    std::vector<ReplicaID> peers;
    for (ReplicaID id : initial_configuration(slot).voters)
      if (id != slot.id) peers.push_back(id);
    return peers;
  }
  raft::Options options_for(Slot& slot) override {
    raft::Options options = Base::options_for(slot);
    options.joining = slot.joining;
    return options;
  }
  void built(Slot& slot) override {
    slot.host->attach(slot.replica.get());
    slot.machine->attach(slot.replica.get());
    slot.commit_index = 0;
    slot.was_leader = false;
  }
  // A pending transition is a reason to poll (transfer_leadership and change_membership wake).
  bool has_request(const Slot& slot) const override { return slot.machine->has_pending(); }
  void before_poll(Slot& slot) override {
    ++polls_;
    slot.machine->begin_poll();
    slot.host->begin_poll();
  }
  void after_poll(Slot& slot) override {
    slot.machine->end_poll(slot.replica->last_applied());
    check_after_poll(slot);
  }
  void after_step() override { check_leader_completeness(); }
  bool halted() const override { return failed(); }
  void stalled() override {
    history_.fail("livelock: replicas keep asking to be polled again at the same instant");
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
    check_configuration(slot);
  }

  // raft.hpp, Membership changes. configuration() is the latest configuration in the replica's
  // log (as its storage holds it), else in its snapshot, else the one it started with (or none,
  // for a snapshot that a replica with none took). A leader appends a configuration entry only
  // once an entry of its term and the configuration entry before have committed (at most one
  // change uncommitted), and, removed, steps down in the poll that commits its removal.
  void check_configuration(Slot& slot) {
    const raft::Replica& replica = *slot.replica;
    const CheckedStorage& storage = slot.storage;
    raft::Configuration actual = replica.configuration();
    Index latest = storage.last_configuration_index();
    const raft::Configuration& snapshot = storage.snapshot_configuration();
    bool agrees = latest ? actual == *storage.entry(latest)->configuration
                  : !snapshot.voters.empty()
                      ? actual == snapshot
                      : actual == snapshot || actual == initial_configuration(slot);
    if (!agrees || !well_formed(actual))
      return history_.fail(
          "r", slot.id, ": configuration() is ", show(actual), " but its log holds ",
          latest ? text("the configuration ", show(*storage.entry(latest)->configuration),
                        " at index ", latest)
                 : text("no configuration entry after its snapshot through ",
                        storage.snapshot_index(), ", whose configuration is ", show(snapshot)));
    if (!replica.is_leader() || !latest) return;
    Index commit = replica.commit_index();
    const CheckedStorage::Written& entry = *storage.entry(latest);
    if (entry.term == replica.current_term() && latest != slot.configuration_checked) {
      slot.configuration_checked = latest;
      std::optional<Term> committed_term = storage.term_at(commit);
      Index before = storage.configuration_index_before(latest);
      if (committed_term && *committed_term != replica.current_term())
        return history_.fail("r", slot.id, " leads term ", replica.current_term(),
                             " and appended the configuration ", show(actual), " at index ", latest,
                             " though no entry of its term is committed (commit index ", commit,
                             ", of term ", *committed_term, ")");
      if (before > commit)
        return history_.fail("r", slot.id, " appended the configuration ", show(actual),
                             " at index ", latest, " while the one at index ", before,
                             " is not committed (commit index ", commit, ")");
    }
    if (role_in(actual, slot.id) != Role::Voter && latest <= commit)
      history_.fail("r", slot.id, " still leads term ", replica.current_term(),
                    " after its removal, at index ", latest, ", committed (commit index ", commit,
                    ")");
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
    for (const auto& slot : slots()) highest = std::max(highest, slot->highest_term);
    for (const auto& slot : slots()) {
      const raft::Replica* replica = slot->replica.get();
      if (!replica || !replica->is_leader() || replica->current_term() != highest) continue;
      if (replica->last_log_index() < history_.committed().size())
        history_.fail("r", slot->id, " leads term ", highest, " with a log of ",
                      replica->last_log_index(), " entries, but ", history_.committed().size(),
                      " are committed");
    }
  }

  const Settings settings_;
  History history_;
  std::uint64_t next_transition_id_ = 1;
  std::uint64_t next_read_id_ = std::uint64_t{1} << 62; // far from every transition's id
  CheckedStateMachine::Observer observer_;
  std::uint64_t polls_ = 0;
};

// ================================================================================================
// For the test files that drive the simulator (tests/simulator.cpp, tests/sim_membership.cpp).
// ================================================================================================

// ---- Reading the environment ----

inline std::uint64_t environment_number(const char* variable, std::uint64_t otherwise) {
  const char* value = std::getenv(variable);
  return value && *value ? std::strtoull(value, nullptr, 10) : otherwise;
}

inline int trace_level() { return static_cast<int>(environment_number("SIM_TRACE", 0)); }
inline bool replaying_one_seed() { return environment_number("SIM_SEED", 0) != 0; }

inline std::vector<std::uint64_t> seeds_to_run() {
  if (replaying_one_seed()) return {environment_number("SIM_SEED", 0)};
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t seed = 1; seed <= environment_number("SIM_SEEDS", 300); ++seed)
    seeds.push_back(seed);
  return seeds;
}

// ---- Helpers for the scripted scenarios ----

// A fault-free network; the scenarios add their faults by hand. `make sim` replays a random seed,
// so the scenarios stay quiet then.
inline Simulator::Settings scenario(std::size_t replicas) {
  Simulator::Settings settings;
  settings.replicas = replicas;
  settings.trace = replaying_one_seed() ? 0 : trace_level();
  return settings;
}

inline void require_progress(const Simulator& sim, bool done, const std::string& waiting_for) {
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
  REQUIRE_MESSAGE(done, text("timed out waiting for ", waiting_for, "; ", sim.describe()));
}

inline ReplicaID elect(Simulator& sim) {
  require_progress(sim, sim.run_until([&] { return sim.leader().has_value(); }, 2s), "a leader");
  return *sim.leader();
}

inline std::vector<std::uint64_t> propose(Simulator& sim, ReplicaID to, int count) {
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < count; ++i) ids.push_back(sim.propose(to));
  return ids;
}

inline bool all_committed(const Simulator& sim, const std::vector<std::uint64_t>& ids) {
  return std::all_of(ids.begin(), ids.end(),
                     [&](std::uint64_t id) { return sim.history().is_committed(id); });
}

// Runs until every replica has applied the whole committed sequence, `ids` included.
inline void settle(Simulator& sim, const std::vector<std::uint64_t>& ids) {
  bool settled = sim.run_until([&] { return all_committed(sim, ids) && sim.all_caught_up(); }, 2s);
  require_progress(sim, settled, "every replica to apply the proposals");
}

inline std::vector<ReplicaID> all_but(const Simulator& sim,
                                      const std::vector<ReplicaID>& excluded) {
  std::vector<ReplicaID> others;
  for (ReplicaID id : sim.ids())
    if (std::find(excluded.begin(), excluded.end(), id) == excluded.end()) others.push_back(id);
  return others;
}

// Runs until a replica of `group` leads the highest term in the group, and returns it. A leader
// cut off in an older term does not count.
inline ReplicaID elect_among(Simulator& sim, const std::vector<ReplicaID>& group) {
  auto leader_of_group = [&]() -> std::optional<ReplicaID> {
    Term highest = 0;
    for (ReplicaID id : group) highest = std::max(highest, sim.replica(id).current_term());
    for (ReplicaID id : group)
      if (sim.replica(id).is_leader() && sim.replica(id).current_term() == highest) return id;
    return std::nullopt;
  };
  bool elected = sim.run_until([&] { return leader_of_group().has_value(); }, 3s);
  require_progress(sim, elected, "a leader in the group");
  return *leader_of_group();
}

} // namespace sim

#endif
