// raft.hpp: a small, single-threaded, polling implementation of the Raft consensus algorithm
// ("In Search of an Understandable Consensus Algorithm", extended version, 2014).
//
// A Replica keeps a replicated log and applies its committed entries, in order, to a state
// machine. The library does elections, replication, commitment and persistence of term, vote and
// log; it leaves to you
//   - the state machine (StateMachine): what a transition means and how to apply it,
//   - the transport (Cluster): how a Message reaches another replica (it may be lost),
//   - the disk, if you want one (Storage): FileStorage, or MemoryStorage for tests; with none,
//     a replica keeps its state only in its own memory.
// Nothing here starts a thread, reads the clock inside poll(), or prints. What a user relies on
// is said beside each declaration below; how it is done, in raft.cpp.
//
// Vendoring: copy raft.hpp and raft.cpp into your tree and compile raft.cpp as C++17.
//
// A user's main(), in outline:
//   MyStateMachine machine;                 // implements raft::StateMachine
//   MyCluster cluster(...);                 // implements raft::Cluster
//   raft::Replica replica(1, {2, 3}, cluster, machine, raft::Transition{0, ""},
//                         std::chrono::milliseconds(50),
//                         {std::chrono::milliseconds(150), std::chrono::milliseconds(300)});
//   replica.start();                        // returns once cluster.halt() is true
// or, from a host's own event loop, call replica.poll(now) whenever replica.next_deadline()
// passes, a message arrives or a transition is pending.
#ifndef RAFT_HPP
#define RAFT_HPP

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace raft {

using ReplicaID = std::uint64_t;
using Term = std::uint64_t;
using Index = std::uint64_t; // log positions start at 1; 0 means "none"
using Clock = std::chrono::steady_clock;
using Duration = Clock::duration;

// The user's command. `id` is only reported back through register_transition_state; `data` is
// opaque bytes replicated unchanged.
struct Transition {
  std::uint64_t id = 0;
  std::string data;
};
inline bool operator==(const Transition& a, const Transition& b) {
  return a.id == b.id && a.data == b.data;
}

enum class TransitionState { Queued, Committed, Applied, Abandoned };
// Refused: a request this replica cannot carry out as asked (see change_membership).
enum class AbandonReason { None, NotLeader, ConflictWithLeader, Refused };

// Who takes part (the dissertation's §4.1): voters elect the leader and count toward a commit;
// learners receive the log and never vote. Ids sorted ascending, no id in both lists.
struct Configuration {
  std::vector<ReplicaID> voters;
  std::vector<ReplicaID> learners;
};
inline bool operator==(const Configuration& a, const Configuration& b) {
  return a.voters == b.voters && a.learners == b.learners;
}
enum class MembershipChange : std::uint8_t { AddLearner, AddVoter, Remove };

// The state machine's state after applying every entry up to last_included_index (§7).
struct Snapshot {
  Index last_included_index = 0;
  Term last_included_term = 0;
  Configuration configuration; // the one in effect at last_included_index
  std::string data;
  // The first index of each term in the log it covers, as (index, term): a replica that queued a
  // transition the snapshot covers learns from it whether that transition committed (if not, it
  // is reported ConflictWithLeader; if so, the snapshot holds it). A snapshot written before term
  // starts existed tells only the terms after its own apart.
  std::vector<std::pair<Index, Term>> term_starts = {};
};

// One slot of the replicated log: a transition and the term in which a leader appended it, or a
// configuration (§4.1), which takes effect once in the log. A configuration entry is never
// applied: its transition is the change_id it completes (data "completes"), or the no-op for the
// first step of an AddVoter, which is not reported.
struct Entry {
  Term term = 0;
  Transition transition;
  std::shared_ptr<Configuration> configuration = nullptr; // shared by the copies; never changed
};

enum class MessageType : std::uint8_t {
  AppendEntries,
  AppendEntriesResponse,
  RequestVote,
  RequestVoteResponse,
  InstallSnapshot,
  InstallSnapshotResponse, // each answer follows its request
  TimeoutNow,              // leader transfer (the dissertation's §3.10): campaign at once
};

// One plain value type for every RPC and reply of Figure 2 and §7. A transport never needs to
// look inside; fields a type does not use keep their defaults.
struct Message {
  MessageType type = MessageType::AppendEntries;
  ReplicaID from = 0;
  ReplicaID to = 0;
  Term term = 0; // the sender's currentTerm
  // RequestVote: the candidate's last log entry (§5.4.1). A pre-vote (the dissertation's §9.6)
  // asks whether a vote in `term` would be granted, changing nothing; the response says whether,
  // in the voter's own term.
  // A vote asked for by a leader transfer (`transfer`) is granted even by a replica that heard
  // from a leader recently (the dissertation's §4.2.3).
  Index last_log_index = 0;
  Term last_log_term = 0;
  bool pre_vote = false;
  bool transfer = false;
  bool vote_granted = false; // RequestVoteResponse
  // AppendEntries. In a response, prev_log_index echoes the request's.
  Index prev_log_index = 0;
  Term prev_log_term = 0;
  std::vector<Entry> entries{};
  Index leader_commit = 0;
  std::uint64_t round = 0; // the leader's heartbeat round (here and in InstallSnapshot), echoed
                           // in the response (§6.4)
  // AppendEntriesResponse: success means the follower's log matches the leader's through
  // match_index. A rejection carries a hint (§5.3, the "optimization" paragraph): the term of the
  // follower's conflicting entry (0 if its log is too short) and the first index it holds for
  // that term (or its last index plus one).
  bool success = false;
  Index match_index = 0;
  Index conflict_index = 0;
  Term conflict_term = 0;
  // InstallSnapshot: bytes [offset, offset + data.size()) of the leader's snapshot (§7); done
  // when they reach its end. The response echoes offset and says how many bytes the follower
  // holds (received), or that it holds the snapshot's state (done).
  Index last_included_index = 0;
  Term last_included_term = 0;
  Configuration configuration{};
  std::vector<std::pair<Index, Term>> term_starts{}; // of the snapshot
  std::uint64_t offset = 0;
  std::string data{};
  bool done = false;
  std::uint64_t received = 0;
};

// What the user implements: the replicated state. Every method is called from the thread that
// runs the Replica, during poll().
class StateMachine {
public:
  virtual ~StateMachine() = default;
  // Reports what became of a transition taken from get_pending_transitions (and of a read or a
  // membership change, under its id). Only the leader accepts transitions: Queued there, before
  // the poll that took them returns; Abandoned/NotLeader on every other replica (a one-replica
  // cluster too, until its first election timeout makes it leader). Committed, then Applied, come
  // on every replica that applies the transition, in log order, in the poll that applies it; not
  // for those a replica receives inside an installed snapshot. `reason` is None unless `state` is
  // Abandoned. A queued transition whose log position a new leader filled with another entry is
  // reported Abandoned/ConflictWithLeader by the replica that queued it once that position
  // commits (an entry overwritten here may still commit from another log); a committed one never
  // is. One accepted but not yet appended when leadership is lost is Abandoned/NotLeader. The
  // no-op each new leader appends is applied like any other, but its states are not reported:
  // give it an id no client uses.
  virtual void register_transition_state(std::uint64_t transition_id, TransitionState state,
                                         AbandonReason reason) = 0;
  // Called once per committed transition (the no-op too, never a configuration), in log order,
  // on every replica, once per state machine lifetime.
  virtual void apply_transition(const Transition& transition) = 0;
  // Polled once per poll(): the transitions the user wants replicated, in order.
  virtual std::vector<Transition> get_pending_transitions() = 0;
  // Snapshots. The defaults mean "this state machine does not snapshot": get_snapshot returns
  // nullopt, create_snapshot and set_snapshot throw std::logic_error. Set snapshot_delta only
  // with a state machine that implements all three. At start-up a replica whose storage holds a
  // snapshot calls set_snapshot with it; one whose storage holds none calls get_snapshot once,
  // for a state the machine is already in. Either way it applies the committed log after it once
  // a leader tells it the commit index.
  virtual std::optional<Snapshot> get_snapshot();
  virtual Snapshot create_snapshot(Index last_included_index, Term last_included_term);
  virtual void set_snapshot(const Snapshot& snapshot); // state replaced wholesale
};

// What the user implements: the transport between replicas.
class Cluster {
public:
  virtual ~Cluster() = default;
  virtual void send_message(ReplicaID to, const Message& message) = 0; // never blocks; may drop
  virtual std::vector<Message> receive_messages() = 0;                 // never blocks
  virtual bool halt() const = 0;                                       // true: start() returns
  virtual void register_leader(std::optional<ReplicaID> leader) = 0;   // on every change
  // Blocks until a message may have arrived or `deadline` passes; start() calls it between
  // polls. The default sleeps until the deadline or for 1 ms, whichever is sooner.
  virtual void wait_until(Clock::time_point deadline);
};

// Durable state (Figure 2, §7): currentTerm and votedFor, the log, the latest snapshot. Writes
// may be buffered; sync() makes every earlier write durable. The Replica calls sync() before it
// sends anything that depends on those writes, so one poll needs at most one sync (group commit),
// and once right after load(), whose state may hold writes that were never synced. So term and
// vote (saved together) are durable before any message of their poll leaves, a vote above all;
// entries before they are acknowledged, and before a leader counts its own copy toward a commit;
// a snapshot before the log it covers is dropped. To recover from a crash, build a new Replica
// over the same storage (or a new FileStorage on the same directory) with a fresh StateMachine:
// load() returns the durable state at every call.
// A method that cannot do its work throws; the Replica then must be rebuilt, as after a crash.
class Storage {
public:
  struct State {
    Term current_term = 0;
    std::optional<ReplicaID> voted_for;
    std::optional<Snapshot> snapshot;
    std::vector<Entry> entries; // the log after the snapshot (from index 1 without one)
  };
  virtual ~Storage() = default;
  virtual State load() = 0; // called by each Replica built over this storage
  virtual void save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) = 0;
  // Replaces the log from index `first` on by [begin, end): drops entries >= first, then appends.
  virtual void save_entries(Index first, const Entry* begin, const Entry* end) = 0;
  // Replaces snapshot and log: the snapshot, then [begin, end), the entries that follow it.
  virtual void save_snapshot(const Snapshot& snapshot, const Entry* begin, const Entry* end) = 0;
  virtual void sync() = 0;
};

// Keeps everything in memory: it survives a destroyed Replica, not a crashed process.
class MemoryStorage : public Storage {
public:
  State load() override;
  void save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) override;
  void save_entries(Index first, const Entry* begin, const Entry* end) override;
  void save_snapshot(const Snapshot& snapshot, const Entry* begin, const Entry* end) override;
  void sync() override {}

private:
  State state_;
};

struct Options {
  std::uint64_t seed = 0;     // 0: seed from std::random_device; else deterministic
  Storage* storage = nullptr; // nullptr: in memory, owned by the replica
  Index snapshot_delta = 0;   // 0: never compact; N: snapshot every N applied entries
  std::size_t max_entries_per_message = 1024; // entries in one AppendEntries
  std::size_t max_messages_in_flight = 8;     // full AppendEntries unacknowledged per follower
  // Once a follower is known to match, a leader pipelines that many; after a rejection it probes,
  // one at a time. A new commit index goes out at once: followers apply within a round trip.
  // A window, max_entries_per_message * max_messages_in_flight, is also the most a leader
  // appends to its log in one poll; the rest of a burst waits, already Queued, for the next, and
  // next_deadline() is now meanwhile, so no poll (nor the heartbeats after it) waits long. That
  // queue has no bound of its own: a host that proposes faster than the cluster commits, for
  // long, should hold back (count what it was told is Queued and not yet Applied).
  // Snapshots (§7) go in chunks, one in flight per follower, sent again after a minimum election
  // timeout without progress. The leader keeps its log from a snapshot in flight on (to a
  // follower heard from within an election timeout), so that the follower goes on by
  // AppendEntries once it has installed it, however fast the leader compacts.
  // A follower keeps its log after the snapshot if its entry at the snapshot's index has the
  // snapshot's term, and otherwise drops it.
  std::size_t snapshot_chunk_bytes = 1 << 20; // bytes of snapshot in one InstallSnapshot
  // Pre-Vote (the dissertation's §9.6, with the check of its §4.2.3), which changes no term or
  // vote anywhere: a replica cut off, or too busy to hear the leader in time, cannot depose on
  // its return a leader the others still hear. A pre-vote is granted to a log at least as up to
  // date (§5.4.1). Beyond the dissertation, a replica asking for pre-votes itself grants one only
  // to a better claim (a more up-to-date log, or an equal one and a lower id), then stands back,
  // so two that time out together do not split the vote. false: §5.2 elections alone.
  bool pre_vote = true; // campaign only after a pre-vote majority, which is withheld by anyone
                        // that heard from a leader within the minimum election timeout
  // Check-quorum (the dissertation's §6.2): once per maximum election timeout, a leader that has
  // not heard from a majority of voters since the last check steps down (same term, no leader),
  // so one cut off in a minority stops leading within two maximum election timeouts. With it, the
  // vote check of §4.2.3: a replica that heard from a leader within the minimum election timeout,
  // or leads, ignores a RequestVote (unless a transfer sent it) without raising its term.
  // Pre-Vote alone can livelock (a leader that reaches one follower of five keeps it from
  // granting pre-votes, committing nothing); check-quorum deposes that leader.
  bool check_quorum = true;
  // read() may answer at once while a majority of voters answered heartbeats sent less than 90%
  // of the minimum election timeout ago: by §4.2.3 they grant no other vote for that timeout
  // (needs check_quorum; set it on every replica alike). It assumes that no replica's clock runs
  // more than 10% faster than the leader's over an election timeout. With it, a replica that
  // starts up refuses votes for a minimum election timeout, so a restart forgets no lease it
  // helped grant. A leader gives its lease up for the rest of its term when it starts a transfer.
  bool lease_reads = false;
  // Start with no configuration (and empty peer_ids) and wait for a leader to add this replica.
  bool joining = false;
};

class Replica {
public:
  // `peer_ids` are the other replicas: the initial configuration, used while the storage holds
  // none (then it comes from the log or snapshot). `noop_transition` is appended by each new
  // leader (§8) and must leave the state machine unchanged. The heartbeat must be positive and
  // below the election timeout's minimum, itself below the maximum; as in §5.6, a heartbeat a
  // small fraction of the minimum (50 ms against 150 to 300 ms) keeps followers from timing out
  // on a late message, and a range wide next to a message's delay keeps split votes rare.
  // Throws std::invalid_argument naming the problem: own id among the peers, a duplicate peer,
  // those timeouts, a zero max_entries_per_message or max_messages_in_flight, or joining with
  // peer_ids.
  Replica(ReplicaID id, std::vector<ReplicaID> peer_ids, Cluster& cluster,
          StateMachine& state_machine, Transition noop_transition, Duration heartbeat_timeout,
          std::pair<Duration, Duration> election_timeout_range, Options options = {});
  void start(); // polls until cluster.halt(); sleeps when idle
  // One pass: takes the messages and pending transitions, runs the timers against `now`, syncs
  // the storage once, sends what the pass produced, applies what is committed. Never blocks or
  // reads the clock: the same Options::seed, inputs and `now` values give the same run. A `now`
  // earlier than the last poll's counts as the last poll's: the replica's time never goes back.
  // Polling when next_deadline() passes, a message arrives or a transition is pending loses
  // nothing. If a storage call or a callback throws, the exception leaves poll, nothing more of
  // that pass is sent, and later polls throw std::logic_error: rebuild the replica over the same
  // storage, as after a crash (a half-finished pass is never resumed, so nothing applies twice).
  void poll(Clock::time_point now);
  Clock::time_point next_deadline() const; // when poll() next has timer work to do

  // Leader transfer (the dissertation's §3.10), before a restart or an upgrade: on a leader,
  // with `to` another voter, stop appending (transitions taken meanwhile are reported
  // Abandoned/NotLeader) and, once `to`'s log matches, send it TimeoutNow, again with each
  // heartbeat: `to` campaigns at once, skipping Pre-Vote, and voters grant it even though they
  // hear from a leader. Given up, the leader carrying on, if `to` does not lead within a maximum
  // election timeout. Elsewhere it does nothing. register_leader tells the outcome.
  void transfer_leadership(ReplicaID to);
  // A linearizable read (ReadIndex, §6.4), reported under read_id (ids shared with transitions:
  // keep them apart): Queued on a leader, then Applied (never Committed) once (1) an entry of its
  // term has committed, (2) a majority of voters answered a heartbeat round started after the
  // read (the reads of one poll share one, sent at once), and (3) the state machine applied
  // through the read index, the commit index at the call (or when (1) came true); the host then
  // reads its state machine. On a non-leader, or if leadership is lost first,
  // Abandoned/NotLeader. Never written to the log.
  void read(std::uint64_t read_id) { reads_asked_.push_back(read_id); }
  // A membership change, one replica at a time (§4.1), reported under change_id as a transition
  // is: Queued on the leader, then Committed and Applied on every replica that applies the entry
  // completing it (never passed to apply_transition, though counted in the indexes);
  // Abandoned/NotLeader off the leader, during a transfer, or if leadership is lost before that
  // entry is appended; Abandoned/Refused if another change is under way or not yet committed, the
  // replica already has that role (AddLearner of a voter too: no demotion), is not a member
  // (Remove), or no voter would be left. A configuration takes effect on a replica once its entry
  // is in that replica's log, and stops if the entry is truncated. The leader appends a change
  // only once an entry of its own term has committed (the fix posted to raft-dev in July 2015:
  // else two changes from leaders of different terms can form disjoint majorities).
  // AddVoter of a replica that is not a caught-up learner adds it as a learner first and promotes
  // it once it keeps up (§4.2.1): in rounds, each replicating the log as it was at the round's
  // start and awaiting a heartbeat answer sent after it; one under a maximum election timeout
  // promotes. Given up (Refused, it stays a learner) after 10 rounds that each took longer, or
  // one round of 10 maximum election timeouts. One report covers both steps.
  // A leader that removes itself leads until that commits, not counting itself, sends the commit
  // index, then steps down (§4.2.2; transfer first to avoid the election). A replica that is not
  // a voter in its latest configuration never campaigns, except while that configuration's entry
  // is uncommitted on it (the README says why). A removed replica left running does not disrupt
  // (§4.2.3): voters that hear a leader refuse its pre-votes and, with check_quorum, its votes
  // (with pre_vote and check_quorum both off, it can raise the term).
  // A replica that believes it is a learner still votes when asked: its promotion may have
  // committed before it heard of it.
  void change_membership(std::uint64_t change_id, MembershipChange change, ReplicaID replica) {
    changes_asked_.push_back(Change{change_id, change, replica});
  }
  Configuration configuration() const { return configs_.back().second; } // the latest in the log

  ReplicaID id() const { return id_; }
  Term current_term() const { return current_term_; }
  bool is_leader() const { return role_ == Role::Leader; }
  std::optional<ReplicaID> leader() const { return leader_; }
  Index commit_index() const { return commit_index_; }
  Index last_applied() const { return last_applied_; }
  Index last_log_index() const { return log_start() + log_.size(); }

  // ---------------------------------------------------------------------------------------------
private:
  enum class Role { Follower, PreCandidate, Candidate, Leader };
  enum class Progress { Probe, Pipeline, Snapshot };
  Index log_start() const { return log_start_; } // the index just before log_[0]
  struct Appended { // a transition this replica queued and appended to its log, as leader
    Index index;
    Term term;
    std::uint64_t id;
  };
  struct Peer {
    ReplicaID id;
    bool voter = true;     // in the latest configuration; else a learner
    Index next_index = 1;  // leader: the next entry to send
    Index match_index = 0; // leader: the last entry known to be replicated
    // Leader: how to send to it (etcd's Progress). Probe: one AppendEntries at a time until one
    // succeeds; Pipeline: entries stream, nextIndex moving on as they are sent; Snapshot: a
    // transfer (§7) runs to its end, or starts over once stalled for an election timeout. A
    // probe or a chunk may be in flight, awaiting its answer.
    Progress progress = Progress::Probe;
    bool in_flight = false;
    Index commit_sent = 0; // leader: the leaderCommit last sent
    Clock::time_point heartbeat_due{};
    bool vote_granted = false;     // candidate
    bool recent_active = false;    // leader: it answered since the last quorum check
    std::uint64_t acked_round = 0; // leader: the latest heartbeat round it answered
    // Leader: the snapshot in flight (§7), kept to the transfer's end; the first byte the peer
    // lacks, when that last moved on, and when its chunk was last sent.
    std::shared_ptr<const Snapshot> snapshot = nullptr;
    std::uint64_t snapshot_offset = 0;
    Clock::time_point snapshot_progress{}, chunk_sent{};
  };
  static Index granted(const Peer& peer) { return peer.vote_granted; }

  Term term_at(Index index) const;
  void save_from(Index first);
  void truncate_from(Index index);
  void set_term_and_vote(Term term, std::optional<ReplicaID> voted_for);
  void become_follower(Term term, std::optional<ReplicaID> leader);
  void become_candidate(bool pre_vote);
  void become_leader();
  void set_leader(std::optional<ReplicaID> leader) {
    if (leader != std::exchange(leader_, leader)) cluster_.register_leader(leader);
  }
  void campaign(bool pre_vote, bool transfer = false);
  void reset_election_timer();
  template <class Value> Index agreed(Value value, Index own);
  void track_configurations(Index from);
  const Configuration& configuration_at(Index at) const { // in effect at that index (>= log start)
    for (auto config = configs_.rbegin();; ++config)
      if (config->first <= at) return config->second;
  }
  void take_changes();
  void advance_change();
  void handle_request_vote(const Message& request, bool heard);
  void handle_request_vote_response(const Message& response, Peer& peer);
  void send_append_entries(Peer& peer, std::size_t limit);
  void replicate();
  void handle_append_entries(Message& request);
  void handle_append_entries_response(const Message& response, Peer& peer);
  void record_match(Peer& peer, Index match);
  void advance_commit_index();
  void take_snapshot();
  void send_snapshot_chunk(Peer& peer);
  void handle_install_snapshot(const Message& request);
  void install_snapshot(Snapshot snapshot);
  void handle_install_snapshot_response(const Message& response, Peer& peer);
  void take_pending_transitions();
  void report(std::uint64_t id, TransitionState state, AbandonReason reason = AbandonReason::None) {
    state_machine_.register_transition_state(id, state, reason);
  }
  void abandon(std::uint64_t id, AbandonReason reason = AbandonReason::ConflictWithLeader) {
    report(id, TransitionState::Abandoned, reason);
  }
  void apply_committed();
  Peer* find_peer(ReplicaID id);
  Message make_message(MessageType type, ReplicaID to) const;
  void send(Message message) { outbox_.push_back(std::move(message)); }
  void handle(Message& message);
  void check_quorum();
  void send_timeout_now(Peer& peer);
  void take_reads();
  std::uint64_t quorum_round();
  bool has_lease();
  void serve_reads();

  const ReplicaID id_;
  Cluster& cluster_;
  StateMachine& state_machine_;
  const Transition noop_;
  const Duration heartbeat_timeout_;
  const std::pair<Duration, Duration> election_timeout_range_;
  const Options options_;
  std::unique_ptr<Storage> owned_storage_;
  Storage* storage_;
  Index window_; // max_entries_per_message * max_messages_in_flight
  std::mt19937_64 random_;

  // Persistent state (Figure 2), written through storage_ before anything depends on it.
  Term current_term_ = 0;
  std::optional<ReplicaID> voted_for_;
  std::shared_ptr<const Snapshot> snapshot_; // the latest, created or installed (§7)
  std::vector<Entry> log_; // from log_start() + 1 on: after the snapshot, or a little before it
  Index log_start_ = 0;    // while a follower still receives an older snapshot (§7)
  Term log_start_term_ = 0;

  // Volatile state. commit_index_ never decreases; last_applied_ <= commit_index_ <= last index.
  Index commit_index_ = 0;
  Index last_applied_ = 0;
  Role role_ = Role::Follower;
  std::optional<ReplicaID> leader_;

  // The other members, one record each (mostly leader state), and what this replica queued.
  std::vector<Peer> peers_;
  Index durable_index_ = 0;         // the last entry storage has synced
  std::vector<Index> matched_;      // advance_commit_index's scratch space
  std::deque<Transition> accepted_; // reported Queued here, not yet appended to our log
  std::deque<Appended> appended_;   // appended here, fate not yet known; by term, then index

  // Leadership: transfer, heartbeat rounds, reads (§3.10, §6.2, §6.4).
  struct Read {
    std::uint64_t id;
    std::uint64_t round; // confirmed once a majority answered this round (0: by the lease)
    Index index;         // the read index; 0 until an entry of this term commits
  };
  std::optional<ReplicaID> transfer_to_;
  Clock::time_point transfer_deadline_{};
  std::vector<std::uint64_t> reads_asked_; // read() calls not yet taken by a poll
  std::vector<Read> reads_;
  std::uint64_t round_ = 0;                    // the latest heartbeat round started
  bool start_round_ = false;                   // reads wait for a round that this poll starts
  std::uint64_t lease_round_ = 1;              // the first round that counts toward a lease
  std::deque<Clock::time_point> round_starts_; // of the latest rounds, round_ last (for the lease)
  Clock::time_point quorum_deadline_{};

  // Membership (§4.1): every configuration in the log, the first being the one in effect at
  // log_start(); the latest is this replica's. At most one change under way, on a leader.
  std::vector<std::pair<Index, Configuration>> configs_;
  bool voter_ = false; // in the latest configuration
  struct Change {
    std::uint64_t id;
    MembershipChange change;
    ReplicaID replica;
    // AddVoter: the learner's catch-up round (§4.2.1): when it started, the index it must reach,
    // the heartbeat round it must answer (0: none started yet), and how many were too slow.
    Clock::time_point round_start{};
    Index round_end = 0;
    std::uint64_t heard = 0;
    int rounds = 0;
  };
  std::vector<Change> changes_asked_;
  std::optional<Change> change_;

  // Timers and bookkeeping.
  Clock::time_point now_{};
  Clock::time_point election_deadline_{};
  Clock::time_point leader_contact_ = Clock::time_point::min(); // last heard from a leader
  Snapshot incoming_;           // follower: the chunks of a snapshot received so far
  Term incoming_term_ = 0;      // follower: the term of the leader that sends it
  std::vector<Message> outbox_; // sent after the poll's storage sync
  bool polled_ = false;         // the first poll starts the election timer
  bool broken_ = false;         // a poll threw: rebuild the replica
};

// ================================================================================================
// FileStorage: durable storage in one file.
// ================================================================================================

// Durable storage in a directory, in one file: `log`, an append-only file of CRC-checked
// records (entries, term and vote, and the snapshot), rewritten at each compaction (format at the
// head of FileStorage's section in raft.cpp). sync() writes and fdatasyncs everything buffered:
// one poll costs one sync. The constructor creates the directory if needed and recovers: a torn
// last record is cut off, what remains is synced; any other damage throws std::runtime_error
// naming the file and offset.
// load() reads the file again at every call, so a Replica rebuilt over this object recovers what
// was synced. After an I/O error every call throws until a new FileStorage opens the directory.
// Compaction renames a new file over the log: a crash leaves the old or the new one, complete.
// The head of FileStorage's section in raft.cpp says how to recover by hand from damage.
class FileStorage : public Storage {
public:
  explicit FileStorage(std::string directory);
  ~FileStorage() override;
  FileStorage(const FileStorage&) = delete;
  FileStorage& operator=(const FileStorage&) = delete;
  State load() override;
  void save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) override;
  void save_entries(Index first, const Entry* begin, const Entry* end) override;
  void save_snapshot(const Snapshot& snapshot, const Entry* begin, const Entry* end) override;
  void sync() override;

private:
  void check_usable() const;
  void replace_log(const std::string& contents);

  const std::string directory_, path_;
  int log_fd_ = -1;       // the log, open for appending
  std::string pending_;   // records not yet written
  bool failed_ = false;   // an I/O call failed: the file's end is unknown until reopened
  Term current_term_ = 0; // the latest term and vote saved, for a rewritten log
  std::optional<ReplicaID> voted_for_;
};

// ================================================================================================
// The wire format.
// ================================================================================================

// The wire format: compact, versioned, little-endian, explicit lengths. decode returns nullopt
// for anything that is not exactly encode(m) for some message (a prefix, a trailing byte, an
// overlong varint, an unknown version or type, a length beyond the input), and never allocates
// more than the input's size justifies. A transport adds its own framing. Format and versions:
// at the head of the wire format's section in raft.cpp.
std::string encode(const Message& message);
std::optional<Message> decode(std::string_view bytes);

} // namespace raft

#endif
