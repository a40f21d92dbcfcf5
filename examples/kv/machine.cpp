// machine.cpp: the Inbox and the Machine. See machine.hpp.
#include "machine.hpp"

#include <algorithm>
#include <initializer_list>
#include <random>
#include <stdexcept>

namespace kv {

namespace {

// Empties one of the Inbox's queues, under its lock.
template <class T> std::vector<T> take(std::mutex& mutex, std::vector<T>& queue) {
  std::lock_guard<std::mutex> lock(mutex);
  return std::exchange(queue, {});
}

} // namespace

Outcome Inbox::submit(Command command, raft::Duration timeout) {
  auto request = std::make_shared<Request>();
  request->command = std::move(command);
  request->give_up = raft::Clock::now() + timeout;
  std::future<Outcome> outcome = request->outcome.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return Outcome{};
    (request->command.op == Op::Get ? reads_ : writes_).push_back(request);
  }
  waker_.wake(); // after the push: the replica thread, once awake, is sure to see the request
  if (outcome.wait_until(request->give_up) != std::future_status::ready) return Outcome{};
  return outcome.get();
}

TransferOutcome Inbox::transfer(raft::ReplicaID to, raft::Duration timeout) {
  auto request = std::make_shared<TransferRequest>();
  request->to = to;
  std::future<TransferOutcome> outcome = request->outcome.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return TransferOutcome::Unknown;
    transfers_.push_back(request);
  }
  waker_.wake();
  if (outcome.wait_for(timeout) != std::future_status::ready) return TransferOutcome::Unknown;
  return outcome.get();
}

ChangeOutcome Inbox::change(raft::MembershipChange change, raft::ReplicaID replica,
                            raft::Duration timeout) {
  auto request = std::make_shared<ChangeRequest>();
  request->change = change;
  request->replica = replica;
  request->give_up = raft::Clock::now() + timeout;
  std::future<ChangeOutcome> outcome = request->outcome.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return ChangeOutcome{};
    changes_.push_back(request);
  }
  waker_.wake();
  if (outcome.wait_until(request->give_up) != std::future_status::ready) return ChangeOutcome{};
  return outcome.get();
}

void Inbox::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
}

std::vector<std::shared_ptr<Request>> Inbox::take_writes() { return take(mutex_, writes_); }

std::vector<std::shared_ptr<Request>> Inbox::take_reads() { return take(mutex_, reads_); }

std::vector<std::shared_ptr<TransferRequest>> Inbox::take_transfers() {
  return take(mutex_, transfers_);
}

std::vector<std::shared_ptr<ChangeRequest>> Inbox::take_changes() { return take(mutex_, changes_); }

namespace {

// A random start for transition ids, from 64 bits of the system's randomness. Its low 62 bits:
// counting up from there never reaches 2^63, where read ids start, nor wraps around to 0, the
// no-op's id.
std::uint64_t random_first_id() {
  std::random_device random;
  std::uint64_t bits = (std::uint64_t(random()) << 32) ^ random();
  return (bits >> 2) | 1;
}

bool contains(const std::vector<raft::ReplicaID>& ids, raft::ReplicaID id) {
  return std::binary_search(ids.begin(), ids.end(), id);
}

const char* describe(raft::MembershipChange change) {
  switch (change) {
  case raft::MembershipChange::AddLearner: return "add as a learner";
  case raft::MembershipChange::AddVoter: return "add as a voter";
  case raft::MembershipChange::Remove: return "remove";
  }
  return "?";
}

// Why the leader refused a change: raft::Replica only says that it did. Its reasons are the
// configuration (which the change was measured against: the leader's, when it took the change),
// another change under way, and an AddVoter whose learner did not catch up, the only refusal
// that comes after Queued.
std::string refusal(const ChangeRequest& request) {
  const raft::Configuration& config = request.before;
  std::string replica = "replica " + std::to_string(request.replica);
  bool voter = contains(config.voters, request.replica);
  bool learner = contains(config.learners, request.replica);
  if (request.queued)
    return replica + " did not catch up with the leader's log in time: it stays a learner";
  switch (request.change) {
  case raft::MembershipChange::AddLearner:
    if (voter || learner) return replica + " is a " + (voter ? "voter" : "learner") + " already";
    break;
  case raft::MembershipChange::AddVoter:
    if (voter) return replica + " is a voter already";
    break;
  case raft::MembershipChange::Remove:
    if (!voter && !learner) return replica + " is not a member";
    if (voter && config.voters.size() == 1) return replica + " is the only voter";
    break;
  }
  return "another membership change is under way: retry once it is done";
}

// The configuration an applied change made: the one it was measured against, changed.
raft::Configuration changed(const ChangeRequest& request) {
  raft::Configuration config = request.before;
  auto remove = [&](std::vector<raft::ReplicaID>& ids) {
    ids.erase(std::remove(ids.begin(), ids.end(), request.replica), ids.end());
  };
  remove(config.voters), remove(config.learners);
  if (request.change != raft::MembershipChange::Remove) {
    auto& ids =
        request.change == raft::MembershipChange::AddVoter ? config.voters : config.learners;
    ids.insert(std::upper_bound(ids.begin(), ids.end(), request.replica), request.replica);
  }
  return config;
}

} // namespace

Machine::Machine(Inbox& inbox)
    : inbox_(inbox), next_id_(random_first_id()),
      next_change_id_((std::uint64_t(1) << 62) + (random_first_id() >> 1)) {}

// A GET is a ReadIndex read (the dissertation's §6.4): the Replica reports it Queued, and then
// Applied once a majority has confirmed that this replica still leads and the store has applied
// every write committed before the GET arrived; register_transition_state reads the store then.
// A transfer starts only on the leader; elsewhere transfer_leadership() would do nothing.
void Machine::take_requests(raft::Replica& replica) {
  for (std::shared_ptr<Request>& request : inbox_.take_reads()) {
    std::uint64_t id = next_read_id_++;
    reads_.emplace(id, std::move(request));
    replica.read(id);
  }
  for (std::shared_ptr<TransferRequest>& request : inbox_.take_transfers()) {
    if (!replica.is_leader()) {
      request->outcome.set_value(TransferOutcome::NotLeader);
      continue;
    }
    log("handing the leadership to replica %llu", (unsigned long long)request->to);
    replica.transfer_leadership(request->to);
    request->outcome.set_value(TransferOutcome::Started);
  }
  for (std::shared_ptr<ChangeRequest>& request : inbox_.take_changes()) {
    if (!replica.is_leader()) {
      request->outcome.set_value(ChangeOutcome{ChangeOutcome::Kind::NotLeader, {}, {}});
      continue;
    }
    std::uint64_t id = next_change_id_++;
    request->before = replica.configuration();
    log("asked to %s replica %llu", describe(request->change),
        (unsigned long long)request->replica);
    replica.change_membership(id, request->change, request->replica);
    changes_.emplace(id, std::move(request));
  }
}

// Polled by the Replica at every pass. Whatever we return here is reported back, on this same
// thread, as Queued (we are the leader) or Abandoned/NotLeader, before poll() returns.
std::vector<raft::Transition> Machine::get_pending_transitions() {
  std::vector<raft::Transition> transitions;
  for (std::shared_ptr<Request>& request : inbox_.take_writes()) {
    std::uint64_t id = next_id_++;
    transitions.push_back(raft::Transition{id, encode_command(request->command)});
    in_flight_.emplace(id, std::move(request));
  }
  return transitions;
}

void Machine::register_transition_state(std::uint64_t id, raft::TransitionState state,
                                        raft::AbandonReason reason) {
  if (auto read = reads_.find(id); read != reads_.end()) {
    switch (state) {
    case raft::TransitionState::Queued:
    case raft::TransitionState::Committed: return; // keep waiting for Applied
    case raft::TransitionState::Applied:           // the store may be read now, and not before
      return finish(reads_, read,
                    Outcome{Outcome::Kind::Applied, store_.get(read->second->command.key)});
    case raft::TransitionState::Abandoned: // no longer the leader: it cannot vouch for its store
      return finish(reads_, read, Outcome{Outcome::Kind::NotLeader, {}});
    }
  }
  if (auto change = changes_.find(id); change != changes_.end()) {
    ChangeRequest& request = *change->second;
    switch (state) {
    case raft::TransitionState::Queued: request.queued = true; return;
    case raft::TransitionState::Committed: return; // keep waiting for Applied
    case raft::TransitionState::Applied:
      log("%s replica %llu: done", describe(request.change), (unsigned long long)request.replica);
      return finish(changes_, change, {ChangeOutcome::Kind::Applied, {}, changed(request)});
    case raft::TransitionState::Abandoned:
      if (reason == raft::AbandonReason::Refused) {
        std::string why = refusal(request);
        log("%s replica %llu: refused: %s", describe(request.change),
            (unsigned long long)request.replica, why.c_str());
        return finish(changes_, change, {ChangeOutcome::Kind::Refused, why, {}});
      }
      return finish(changes_, change,
                    {reason == raft::AbandonReason::NotLeader ? ChangeOutcome::Kind::NotLeader
                                                              : ChangeOutcome::Kind::Lost,
                     {},
                     {}});
    }
  }
  auto request = in_flight_.find(id);
  if (request == in_flight_.end()) return; // not ours, or its HTTP thread gave up on it
  switch (state) {
  case raft::TransitionState::Queued:
  case raft::TransitionState::Committed: return; // keep waiting for Applied
  case raft::TransitionState::Applied:
    return finish(in_flight_, request,
                  Outcome{Outcome::Kind::Applied, request->second->result.value()});
  case raft::TransitionState::Abandoned:
    return finish(in_flight_, request,
                  Outcome{reason == raft::AbandonReason::NotLeader ? Outcome::Kind::NotLeader
                                                                   : Outcome::Kind::Lost,
                          {}});
  }
}

// Runs on every replica, for every committed command, in log order: the Store changes the same
// way everywhere. Only the replica that proposed the command has someone waiting for its result.
void Machine::apply_transition(const raft::Transition& transition) {
  if (transition.data.empty()) return; // the no-op each new leader appends
  std::optional<Command> command = decode_command(transition.data);
  if (!command) {
    // Every replica sees the same bytes and skips them alike, so the stores still agree.
    log("skipping a log entry that is not a command (%zu bytes)", transition.data.size());
    return;
  }
  Result result = store_.apply(*command);
  auto request = in_flight_.find(transition.id);
  if (request != in_flight_.end()) request->second->result = std::move(result);
}

// The store lives in memory only, so at start-up it is empty: no snapshot to offer. The Replica
// then rebuilds it from the snapshot and log in FileStorage.
std::optional<raft::Snapshot> Machine::get_snapshot() { return std::nullopt; }

raft::Snapshot Machine::create_snapshot(raft::Index last_included_index,
                                        raft::Term last_included_term) {
  raft::Snapshot snapshot;
  snapshot.last_included_index = last_included_index;
  snapshot.last_included_term = last_included_term;
  snapshot.data = store_.serialize();
  return snapshot;
}

// A snapshot we cannot read would leave this replica's store different from the others': stop
// rather than serve wrong data. Throwing from here stops the Replica.
void Machine::set_snapshot(const raft::Snapshot& snapshot) {
  if (!store_.restore(snapshot.data))
    throw std::runtime_error("a snapshot at index " + std::to_string(snapshot.last_included_index) +
                             " is malformed");
  log("restored a snapshot at index %llu: %zu keys",
      (unsigned long long)snapshot.last_included_index, store_.size());
}

// Ids increase with time in each map, and every request waits as long: the oldest come first.
void Machine::forget_expired(raft::Clock::time_point now) {
  for (InFlight* requests : {&in_flight_, &reads_})
    while (!requests->empty() && requests->begin()->second->give_up < now)
      finish(*requests, requests->begin(), Outcome{});
  while (!changes_.empty() && changes_.begin()->second->give_up < now)
    finish(changes_, changes_.begin(), ChangeOutcome{});
}

void Machine::abandon_all() {
  for (InFlight* requests : {&in_flight_, &reads_})
    while (!requests->empty()) finish(*requests, requests->begin(), Outcome{});
  for (std::shared_ptr<Request>& request : inbox_.take_writes()) request->outcome.set_value({});
  for (std::shared_ptr<Request>& request : inbox_.take_reads()) request->outcome.set_value({});
  for (std::shared_ptr<TransferRequest>& request : inbox_.take_transfers())
    request->outcome.set_value(TransferOutcome::Unknown);
  while (!changes_.empty()) finish(changes_, changes_.begin(), ChangeOutcome{});
  for (std::shared_ptr<ChangeRequest>& request : inbox_.take_changes())
    request->outcome.set_value({});
}

void Machine::finish(InFlight& requests, InFlight::iterator request, Outcome outcome) {
  request->second->outcome.set_value(std::move(outcome));
  requests.erase(request);
}

void Machine::finish(Changes& changes, Changes::iterator change, ChangeOutcome outcome) {
  change->second->outcome.set_value(std::move(outcome));
  changes.erase(change);
}

void StatusBoard::publish(const raft::Replica& replica, const Store& store) {
  Status status;
  status.id = replica.id();
  status.leader = replica.leader();
  status.term = replica.current_term();
  status.commit_index = replica.commit_index();
  status.last_applied = replica.last_applied();
  status.last_log_index = replica.last_log_index();
  status.keys = store.size();
  status.revision = store.revision();
  status.digest = store.digest();
  status.configuration = replica.configuration();
  std::lock_guard<std::mutex> lock(mutex_);
  status_ = status;
}

Status StatusBoard::read() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return status_;
}

} // namespace kv
