// machine.hpp: where the HTTP threads meet the replica's thread.
//
// raft::Replica is single-threaded: every StateMachine method runs on the thread that polls it.
// The HTTP server, though, answers each client on a thread of its own. The two meet here, in
// two places, and nowhere else:
//
//   HTTP thread                               replica thread
//   -----------                               --------------
//   Inbox::submit(command) ---- queue ---->   Machine::get_pending_transitions() -> the log
//     waits on a future                       Machine::apply_transition() -> Store::apply()
//     <-------------- promise --------------  Machine::register_transition_state(Applied)
//
//   StatusBoard::read()    <-- a copy -----   StatusBoard::publish(), after every poll
//
// Both are guarded by a mutex. The Inbox also wakes the replica thread (a Waker), so that a new
// command is proposed at once rather than at the next heartbeat.
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

// The queue from HTTP threads to the replica thread.
class Inbox {
public:
  explicit Inbox(Waker& waker) : waker_(waker) {}
  // Any thread: proposes `command` and waits for its outcome, at most `timeout`.
  Outcome submit(Command command, raft::Duration timeout);
  // Refuses further commands (submit answers Unknown at once): the replica is shutting down.
  void close();
  // The replica thread: everything submitted since the last call, oldest first.
  std::vector<std::shared_ptr<Request>> take_all();

private:
  Waker& waker_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<Request>> queue_;
  bool closed_ = false;
};

// The raft::StateMachine: commands go from the Inbox into the log, and from the log into the
// Store. All of it runs on the replica's thread.
class Machine : public raft::StateMachine {
public:
  explicit Machine(Inbox& inbox);

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
  void finish(std::map<std::uint64_t, std::shared_ptr<Request>>::iterator request, Outcome outcome);

  Inbox& inbox_;
  Store store_;
  // The requests this replica proposed, by transition id. Ids increase, so the oldest come
  // first. They are only ever compared with ids this process proposed, and the log holds ids of
  // other replicas and of earlier runs of this one too: starting from a random number makes a
  // clash with those as unlikely as guessing a 63-bit number.
  std::map<std::uint64_t, std::shared_ptr<Request>> in_flight_;
  std::uint64_t next_id_;
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
