// machine.hpp: where the HTTP threads meet the replica's thread.
//
// raft::Replica is single-threaded: every StateMachine method runs on the thread that polls it.
// The HTTP server, though, answers each client on a thread of its own. The two meet here, in
// two places, and nowhere else:
//
//   HTTP thread                               replica thread
//   -----------                               --------------
//   Inbox::submit(write) ---- queue ------>   Machine::get_pending_transitions() -> the log
//     waits on a future                       Machine::apply_transition() -> Store::apply()
//     <-------------- promise --------------  Machine::register_transition_state(Applied)
//
//   Inbox::submit(GET) ------ queue ------>   Machine::take_requests() -> Replica::read()
//     waits on a future                         (between polls; nothing goes to the log)
//     <-------------- promise --------------  Machine::register_transition_state(Applied)
//                                               -> Store::get(), read in that callback
//
//   Inbox::transfer(to) ----- queue ------>   Machine::take_requests()
//     <-------------- promise --------------    -> Replica::transfer_leadership(to)
//
//   Inbox::change(...) ------ queue ------>   Machine::take_requests()
//     waits on a future                         -> Replica::change_membership(id, ...)
//     <-------------- promise --------------  Machine::register_transition_state(Applied)
//
//   StatusBoard::read()    <-- a copy -----   StatusBoard::publish(), after every poll
//
// Both are guarded by a mutex. The Inbox also wakes the replica thread (a Waker), so that a new
// request is handled at once rather than at the next heartbeat.
#ifndef KV_MACHINE_HPP
#define KV_MACHINE_HPP

#include "raft.hpp"
#include "store.hpp"
#include "tcp_cluster.hpp"

#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace kv {

// What became of a command.
struct Outcome {
  enum class Kind {
    Applied,   // committed and applied: `result` is the answer
    NotLeader, // this replica was not the leader: nothing was proposed
    Lost,      // a new leader overwrote it: it will never be applied
    Unknown,   // no answer in time: it may or may not be applied (retry with the same sequence)
  };
  Kind kind = Kind::Unknown;
  Result result;
};

// A command on its way through the log, shared by the HTTP thread that waits for it and the
// replica thread that completes it.
struct Request {
  Command command;
  std::promise<Outcome> outcome;   // set once, by the replica thread
  raft::Clock::time_point give_up; // when the HTTP thread stops waiting
  std::optional<Result> result;    // set by apply_transition, handed over when Applied
};

// What became of a request to hand the leadership over.
enum class TransferOutcome {
  Started,   // this replica led, and has asked `to` to take over: the outcome shows in leader()
  NotLeader, // this replica was not the leader: nothing was done
  Unknown,   // no answer in time, or the replica is shutting down
};

struct TransferRequest {
  raft::ReplicaID to = 0;
  std::promise<TransferOutcome> outcome; // set once, by the replica thread
};

// What became of a membership change.
struct ChangeOutcome {
  enum class Kind {
    Applied,   // the configuration it made is committed, and the leader applied it
    NotLeader, // this replica was not the leader, or stopped leading first: nothing was done
    Refused,   // the leader will not make this change now: `reason` says why
    Lost,      // a new leader overwrote it: it will never take effect
    Unknown,   // no answer in time: the configuration tells whether it took effect
  };
  Kind kind = Kind::Unknown;
  std::string reason;                // Refused: why, in a few words
  raft::Configuration configuration; // Applied: the configuration it made
};

struct ChangeRequest {
  raft::MembershipChange change = raft::MembershipChange::AddVoter;
  raft::ReplicaID replica = 0;
  std::promise<ChangeOutcome> outcome; // set once, by the replica thread
  raft::Clock::time_point give_up;     // when the HTTP thread stops waiting
  raft::Configuration before;          // the leader's configuration when it took the change
  bool queued = false;                 // the leader reported it Queued: it took the change on
};

// The queues from HTTP threads to the replica thread.
class Inbox {
public:
  explicit Inbox(Waker& waker) : waker_(waker) {}
  // Any thread: hands `command` to the replica (a write is proposed to the log, a GET becomes a
  // linearizable read) and waits for its outcome, at most `timeout`.
  Outcome submit(Command command, raft::Duration timeout);
  // Any thread: asks the replica to hand its leadership to `to`, and waits at most `timeout` for
  // the replica thread to take the request (not for the new leader).
  TransferOutcome transfer(raft::ReplicaID to, raft::Duration timeout);
  // Any thread: asks the replica to change the membership, and waits for the outcome, at most
  // `timeout`.
  ChangeOutcome change(raft::MembershipChange change, raft::ReplicaID replica,
                       raft::Duration timeout);
  // Refuses further requests (they answer Unknown at once): the replica is shutting down.
  void close();
  // The replica thread: everything submitted since the last call, oldest first.
  std::vector<std::shared_ptr<Request>> take_writes();
  std::vector<std::shared_ptr<Request>> take_reads();
  std::vector<std::shared_ptr<TransferRequest>> take_transfers();
  std::vector<std::shared_ptr<ChangeRequest>> take_changes();

private:
  Waker& waker_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<Request>> writes_;
  std::vector<std::shared_ptr<Request>> reads_;
  std::vector<std::shared_ptr<TransferRequest>> transfers_;
  std::vector<std::shared_ptr<ChangeRequest>> changes_;
  bool closed_ = false;
};

// The raft::StateMachine: writes go from the Inbox into the log, and from the log into the
// Store; GETs go from the Inbox to Replica::read(), and are answered from the Store once the
// Replica reports the read Applied. All of it runs on the replica's thread.
class Machine : public raft::StateMachine {
public:
  explicit Machine(Inbox& inbox);

  // Between polls: hands the Replica the reads, leader transfers and membership changes the
  // HTTP threads asked for. They take effect in the next poll.
  void take_requests(raft::Replica& replica);

  std::vector<raft::Transition> get_pending_transitions() override;
  void register_transition_state(std::uint64_t id, raft::TransitionState state,
                                 raft::AbandonReason reason) override;
  void apply_transition(const raft::Transition& transition) override;
  std::optional<raft::Snapshot> get_snapshot() override;
  raft::Snapshot create_snapshot(raft::Index last_included_index,
                                 raft::Term last_included_term) override;
  void set_snapshot(const raft::Snapshot& snapshot) override;

  // Forgets the requests whose HTTP thread has stopped waiting. Raft reports the fate of almost
  // every transition, but not all (see README.md, "Snapshots"), so without this a request could
  // stay in flight forever.
  void forget_expired(raft::Clock::time_point now);
  // Answers every request still waiting, at shutdown.
  void abandon_all();

  const Store& store() const { return store_; }

private:
  using InFlight = std::map<std::uint64_t, std::shared_ptr<Request>>;
  using Changes = std::map<std::uint64_t, std::shared_ptr<ChangeRequest>>;
  static void finish(InFlight& requests, InFlight::iterator request, Outcome outcome);
  static void finish(Changes& changes, Changes::iterator change, ChangeOutcome outcome);

  Inbox& inbox_;
  Store store_;
  // The writes this replica proposed, by transition id. Ids increase, so the oldest come
  // first. They are only ever compared with ids this process proposed, and the log holds ids of
  // other replicas and of earlier runs of this one too: starting from a random number makes a
  // clash with those as unlikely as guessing a 62-bit number.
  InFlight in_flight_;
  std::uint64_t next_id_;
  // The GETs handed to Replica::read(), by read id. Read ids share their space with transition
  // ids, which are all below 2^63 (they start below 2^62 and count up); read ids are 2^63 and up,
  // so a read is never mistaken for a transition of any replica, or the other way round.
  InFlight reads_;
  std::uint64_t next_read_id_ = std::uint64_t(1) << 63;
  // The membership changes handed to Replica::change_membership(), by change id. A change is
  // reported under its id on every replica that applies it, as a transition is: change ids start
  // at a random number from 2^62 to 2^62 + 2^61 and count up, above the transition ids of every
  // replica and below the read ids.
  Changes changes_;
  std::uint64_t next_change_id_;
};

// What the HTTP threads may know of the replica: a copy of its state after the latest poll.
struct Status {
  raft::ReplicaID id = 0;
  std::optional<raft::ReplicaID> leader;
  raft::Term term = 0;
  raft::Index commit_index = 0;
  raft::Index last_applied = 0;
  raft::Index last_log_index = 0;
  std::size_t keys = 0;
  std::uint64_t revision = 0;
  std::uint64_t digest = 0;
  raft::Configuration configuration; // the latest in the log
};

class StatusBoard {
public:
  // The replica thread, after every poll.
  void publish(const raft::Replica& replica, const Store& store);
  // Any thread.
  Status read() const;

private:
  mutable std::mutex mutex_;
  Status status_;
};

} // namespace kv

#endif
