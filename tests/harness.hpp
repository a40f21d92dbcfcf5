// tests/harness.hpp: small helpers for the unit tests.
//
// A unit test drives one or two replicas by hand. Each Node bundles a Replica with a fake clock
// (`now`, moved only by the test), a FakeCluster that records what the replica sends and holds
// what the test hands it for the next poll, a RecordingStateMachine, and a MemoryStorage that
// survives crash(). Nothing happens between two lines of a test: no threads, no sleeps.
//
// The fakes also check, on every call, rules that hold in every test: a replica sends only to
// its peers and signs its messages with its own id, and `reason` is None exactly when a
// transition is not Abandoned.
#ifndef TESTS_HARNESS_HPP
#define TESTS_HARNESS_HPP

#include "raft.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace harness {

using namespace std::chrono_literals;
using raft::AbandonReason;
using raft::Clock;
using raft::Duration;
using raft::Entry;
using raft::Index;
using raft::Message;
using raft::MessageType;
using raft::ReplicaID;
using raft::Term;
using raft::Transition;
using raft::TransitionState;

constexpr Duration kHeartbeat = 10ms;
constexpr Duration kElectionMin = 100ms;
constexpr Duration kElectionMax = 200ms;
constexpr Clock::time_point kStart{1h}; // any fixed time will do
inline const Transition kNoop{0, "noop"};

// ---- Entries and logs ----

// The entry at `index` of a log, made by a leader of `term`; its transition names both.
inline Entry entry(Term term, Index index) {
  return Entry{term, Transition{term * 1000 + index, "term " + std::to_string(term) + " index " +
                                                         std::to_string(index)}};
}

// A log from index 1 given as runs: make_log({{100, 1}, {50, 3}}) is 100 entries of term 1,
// then 50 of term 3.
inline std::vector<Entry> make_log(std::vector<std::pair<std::size_t, Term>> runs) {
  std::vector<Entry> log;
  for (auto [count, term] : runs)
    for (std::size_t i = 0; i < count; ++i) log.push_back(entry(term, log.size() + 1));
  return log;
}

inline std::vector<Transition> transitions_of(const std::vector<Entry>& log) {
  std::vector<Transition> transitions;
  for (const Entry& e : log) transitions.push_back(e.transition);
  return transitions;
}

// A storage that already holds a term, a vote and a log, as if a replica had run before.
inline raft::MemoryStorage stored(Term term, std::vector<Entry> log = {},
                                  std::optional<ReplicaID> voted_for = std::nullopt) {
  raft::MemoryStorage storage;
  storage.save_term_and_vote(term, voted_for);
  storage.save_entries(1, log.data(), log.data() + log.size());
  return storage;
}

// ---- Messages ----

// The fields every message has; the builders below fill in the rest.
inline Message message(MessageType type, ReplicaID from, ReplicaID to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

inline Message request_vote(ReplicaID from, ReplicaID to, Term term, Index last_log_index,
                            Term last_log_term) {
  Message m = message(MessageType::RequestVote, from, to, term);
  m.last_log_index = last_log_index;
  m.last_log_term = last_log_term;
  return m;
}

inline Message vote(ReplicaID from, ReplicaID to, Term term, bool granted) {
  Message m = message(MessageType::RequestVoteResponse, from, to, term);
  m.vote_granted = granted;
  return m;
}

inline Message append_entries(ReplicaID from, ReplicaID to, Term term, Index prev_log_index,
                              Term prev_log_term, std::vector<Entry> entries = {},
                              Index leader_commit = 0) {
  Message m = message(MessageType::AppendEntries, from, to, term);
  m.prev_log_index = prev_log_index;
  m.prev_log_term = prev_log_term;
  m.entries = std::move(entries);
  m.leader_commit = leader_commit;
  return m;
}

// A follower's answer to AppendEntries; a rejection carries the hint (conflict term and index).
inline Message append_response(ReplicaID from, ReplicaID to, Term term, bool success,
                               Index match_index, Term conflict_term = 0,
                               Index conflict_index = 0) {
  Message m = message(MessageType::AppendEntriesResponse, from, to, term);
  m.success = success;
  m.match_index = match_index;
  m.conflict_term = conflict_term;
  m.conflict_index = conflict_index;
  return m;
}

inline std::size_t count(const std::vector<Message>& messages, MessageType type, ReplicaID to) {
  return std::count_if(messages.begin(), messages.end(),
                       [&](const Message& m) { return m.type == type && m.to == to; });
}

inline std::vector<Message> of_type(const std::vector<Message>& messages, MessageType type) {
  std::vector<Message> found;
  for (const Message& m : messages)
    if (m.type == type) found.push_back(m);
  return found;
}

// Checks that `sent` is one RequestVote (or pre-vote) to each of `peers`, for `term`, naming the
// candidate's last entry.
inline void check_vote_requests(const std::vector<Message>& sent, std::vector<ReplicaID> peers,
                                Term term, Index last_log_index, Term last_log_term,
                                bool pre_vote = false) {
  CHECK(sent.size() == peers.size());
  for (ReplicaID peer : peers) CHECK(count(sent, MessageType::RequestVote, peer) == 1);
  for (const Message& m : sent) {
    CHECK(m.pre_vote == pre_vote);
    CHECK(m.term == term);
    CHECK(m.last_log_index == last_log_index);
    CHECK(m.last_log_term == last_log_term);
  }
}

// ---- Fakes ----

// What a replica saved, synced and sent, in order: "save", "sync" or "send".
using Journal = std::vector<std::string>;

// True when no message left while a write before it was still unsynced.
inline bool sends_wait_for_sync(const Journal& journal) {
  bool unsynced = false;
  for (const std::string& event : journal) {
    if (event == "save") unsynced = true;
    if (event == "sync") unsynced = false;
    if (event == "send" && unsynced) return false;
  }
  return true;
}

class JournalStorage : public raft::MemoryStorage {
public:
  JournalStorage(raft::MemoryStorage initial, Journal& journal)
      : MemoryStorage(std::move(initial)), journal_(journal) {}
  void save_term_and_vote(Term term, std::optional<ReplicaID> voted_for) override {
    journal_.push_back("save");
    MemoryStorage::save_term_and_vote(term, voted_for);
  }
  void save_entries(Index first, const Entry* begin, const Entry* end) override {
    journal_.push_back("save");
    MemoryStorage::save_entries(first, begin, end);
  }
  void save_snapshot(const raft::Snapshot& snapshot, const Entry* begin,
                     const Entry* end) override {
    journal_.push_back("save");
    MemoryStorage::save_snapshot(snapshot, begin, end);
  }
  void sync() override { journal_.push_back("sync"); }

private:
  Journal& journal_;
};

class FakeCluster : public raft::Cluster {
public:
  FakeCluster(ReplicaID owner, std::vector<ReplicaID> peers, Journal& journal)
      : owner_(owner), peers_(std::move(peers)), journal_(journal) {}

  std::vector<Message> sent;                     // sent and not yet taken by the test
  std::vector<Message> inbox;                    // handed to the replica at its next poll
  std::vector<std::optional<ReplicaID>> leaders; // every register_leader argument
  std::vector<ReplicaID> peers_extra;            // strangers whose requests it may answer

  void send_message(ReplicaID to, const Message& message) override {
    CHECK(message.from == owner_);
    CHECK(message.to == to);
    CHECK(std::count(peers_.begin(), peers_.end(), to) + // never itself, never a stranger
              std::count(peers_extra.begin(), peers_extra.end(), to) ==
          1);
    journal_.push_back("send");
    sent.push_back(message);
  }
  std::vector<Message> receive_messages() override { return std::exchange(inbox, {}); }
  bool halt() const override { return true; }
  void register_leader(std::optional<ReplicaID> leader) override { leaders.push_back(leader); }

private:
  ReplicaID owner_;
  std::vector<ReplicaID> peers_;
  Journal& journal_;
};

struct Report {
  std::uint64_t id;
  TransitionState state;
  AbandonReason reason;
};
inline bool operator==(const Report& a, const Report& b) {
  return a.id == b.id && a.state == b.state && a.reason == b.reason;
}

class RecordingStateMachine : public raft::StateMachine {
public:
  std::vector<Transition> pending; // taken by the next poll
  std::vector<Transition> applied; // every apply_transition, in order
  std::vector<Report> reports;     // every register_transition_state, in order

  void register_transition_state(std::uint64_t id, TransitionState state,
                                 AbandonReason reason) override {
    CHECK(id != kNoop.id); // the no-op's states are never reported
    CHECK((reason == AbandonReason::None) == (state != TransitionState::Abandoned));
    reports.push_back({id, state, reason});
  }
  void apply_transition(const Transition& transition) override { applied.push_back(transition); }
  std::vector<Transition> get_pending_transitions() override { return std::exchange(pending, {}); }

  // The ids reported in `state`, in the order they were reported.
  std::vector<std::uint64_t> ids(TransitionState state) const {
    std::vector<std::uint64_t> found;
    for (const Report& r : reports)
      if (r.state == state) found.push_back(r.id);
    return found;
  }
};

// Whether `machine` was told that transition `id` reached `state` (for `reason`).
inline bool reported(const RecordingStateMachine& machine, std::uint64_t id, TransitionState state,
                     AbandonReason reason = AbandonReason::None) {
  return std::count(machine.reports.begin(), machine.reports.end(), Report{id, state, reason}) > 0;
}

// ---- Files ----

// A fresh directory under /tmp, removed with everything in it when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    char name[] = "/tmp/raft-test-XXXXXX";
    path = ::mkdtemp(name);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// Saves `entries` from index `first` on.
inline void append(raft::Storage& storage, Index first, std::vector<Entry> entries) {
  storage.save_entries(first, entries.data(), entries.data() + entries.size());
}

// ---- Node: one replica with its clock, transport, state machine and storage ----

// The unit tests of §5 check the paper's rules one message at a time, so by default a Node
// campaigns as in §5.2, at once; the Pre-Vote tests turn pre_vote back on.
inline raft::Options paper_elections() {
  raft::Options options;
  options.pre_vote = false;
  return options;
}

class Node {
public:
  Node(ReplicaID id, std::vector<ReplicaID> peers, raft::MemoryStorage initial = {},
       raft::Options options = paper_elections(),
       std::pair<Duration, Duration> election_timeout = {kElectionMin, kElectionMax})
      : id(id), peers(peers), storage(std::move(initial), journal), cluster(id, peers, journal),
        options_(options), election_timeout_(election_timeout) {
    options_.storage = &storage;
    if (options_.seed == 0) options_.seed = 1000 + id;
    build();
  }

  raft::Replica* operator->() { return replica_.get(); }
  RecordingStateMachine& machine() { return *machine_; }

  void poll() { replica_->poll(now); }
  void advance(Duration elapsed) {
    now += elapsed;
    poll();
  }
  void receive(Message message) {
    cluster.inbox.push_back(std::move(message));
    poll();
  }
  // Polls once so that the election timer runs, then lets the longest election timeout pass.
  void time_out() {
    poll();
    advance(election_timeout_.second + 1ms);
  }
  // Adds transitions for the next poll to pick up.
  void propose(std::vector<Transition> transitions) {
    for (Transition& t : transitions) machine_->pending.push_back(std::move(t));
  }

  std::vector<Message> take_sent() { return std::exchange(cluster.sent, {}); }
  // The single message sent since the last take: the reply to what the test just handed over.
  Message take_reply() {
    std::vector<Message> sent = take_sent();
    REQUIRE(sent.size() == 1);
    return sent[0];
  }

  // A crash: the Replica and its state machine are lost, the storage survives.
  void crash() {
    replica_.reset();
    machine_ = std::make_unique<RecordingStateMachine>();
    cluster.leaders.clear();
    build();
  }

  const ReplicaID id;
  const std::vector<ReplicaID> peers;
  Clock::time_point now = kStart;
  Journal journal;
  JournalStorage storage;
  FakeCluster cluster;

private:
  void build() {
    replica_ = std::make_unique<raft::Replica>(id, peers, cluster, *machine_, kNoop, kHeartbeat,
                                               election_timeout_, options_);
  }

  raft::Options options_;
  std::pair<Duration, Duration> election_timeout_;
  std::unique_ptr<RecordingStateMachine> machine_ = std::make_unique<RecordingStateMachine>();
  std::unique_ptr<raft::Replica> replica_;
};

// ---- Moving messages between two Nodes ----

// Hands `to` every message `from` sent it and polls `to`; messages for others stay with `from`.
// Returns how many were handed over.
inline std::size_t deliver(Node& from, Node& to) {
  std::vector<Message> keep;
  std::size_t delivered = 0;
  for (Message& m : from.take_sent()) {
    if (m.to == to.id) {
      to.cluster.inbox.push_back(std::move(m));
      ++delivered;
    } else {
      keep.push_back(std::move(m));
    }
  }
  from.cluster.sent = std::move(keep);
  to.poll();
  return delivered;
}

inline std::size_t round_trip(Node& a, Node& b) { return deliver(a, b) + deliver(b, a); }

// Round trips until neither Node has anything for the other; returns how many were needed.
inline int settle(Node& a, Node& b) {
  int trips = 0;
  while (round_trip(a, b) > 0) {
    ++trips;
    REQUIRE(trips < 100);
  }
  return trips;
}

// Lets `node` time out and win with granted votes from just enough of its (fake) peers.
inline void win_election(Node& node) {
  node.time_out();
  for (ReplicaID peer : node.peers) {
    if (node->is_leader()) break;
    node.receive(vote(peer, node.id, node->current_term(), true));
  }
  REQUIRE(node->is_leader());
}

// Lets `candidate` time out and win with the real vote of `voter` (a three-replica cluster).
inline void elect(Node& candidate, Node& voter) {
  candidate.time_out();
  deliver(candidate, voter);
  deliver(voter, candidate);
  REQUIRE(candidate->is_leader());
}

} // namespace harness

#endif
