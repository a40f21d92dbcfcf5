// tests/cluster.hpp: the one deterministic simulated cluster, shared by the simulator
// (tests/simulator.hpp, which layers the safety checks on top), tests/snapshot.cpp, the bench
// (bench/bench.cpp, which runs it without checks) and the visualizer (examples/visualize, which
// keeps the time and draws what the network carries).
//
// Replicas share one simulated clock. A Network carries their messages with random delays, loss
// and duplication, splits them into partitions, fails or slows single links, and loses what is
// sent to a crashed replica. A Cluster owns the replicas: each has a storage that outlives its
// crashes, as a disk outlives a process; crash() drops the rest and restart() builds a new Replica
// over that storage. One seeded generator drives all of it, so a seed replays the identical run.
//
// Two ways to run it: step() is event-driven (poll whoever has mail or a deadline due, then move
// the clock to the next event), round() polls every running replica in id order and moves the
// clock by a fixed step (the bench's and tests/snapshot.cpp's lockstep).
#ifndef TESTS_CLUSTER_HPP
#define TESTS_CLUSTER_HPP

#include "raft.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace sim {

using namespace std::chrono_literals;
using raft::Clock;
using raft::Duration;
using raft::Message;
using raft::ReplicaID;

// A seeded generator with the few draws the simulation needs, written out because the standard
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

// Streams every argument into one string: text("r", 3, " leads") == "r3 leads".
template <typename... Parts> std::string text(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

inline double milliseconds(Duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
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

// ---- The network: delays, loss, duplication, partitions, failed links, crashed receivers ----

class Network {
public:
  struct Faults {
    Duration min_delay = 1ms; // each copy of a message arrives after a delay in this range
    Duration max_delay = 20ms;
    double loss = 0;        // probability that a message is dropped
    double duplication = 0; // probability that a message arrives twice
  };

  // `now` is the cluster's clock, read at every send and delivery.
  Network(Random& random, const Clock::time_point& now) : random_(random), now_(now) {}

  Faults faults;
  std::function<void(const std::string&)> trace_to; // events, if set
  bool trace_messages = false;                      // every message sent, delivered or dropped
  // A test's own fault: a copy of a message for which it returns true is lost (asked only of
  // those that would otherwise travel).
  std::function<bool(const Message&)> drop;
  // A watcher of every copy of a message, if set (the visualizer draws them): told when it is
  // sent, with its number and when it is due, or with nothing (and no number) if it is lost at
  // once; then, by that number, whether it got through when it arrives. A copy on its way to a
  // replica that crashes never arrives.
  std::function<void(std::uint64_t copy, ReplicaID from, ReplicaID to, const Message&,
                     std::optional<Clock::time_point> due)>
      on_send;
  std::function<void(std::uint64_t copy, bool reachable)> on_arrival;

  bool is_member(ReplicaID id) const { return group_.count(id) > 0; }
  // A replica joins on the first side of any partition.
  void add_member(ReplicaID id) { group_.emplace(id, 0); }
  // Messages handed to send() so far, whatever became of them.
  std::uint64_t sent() const { return sent_; }

  void send(ReplicaID from, ReplicaID to, const Message& message) {
    ++sent_;
    std::uint64_t copies = random_.chance(faults.duplication) ? 2 : 1;
    for (std::uint64_t copy = 0; copy < copies; ++copy) {
      if (random_.chance(faults.loss) || down_.count(to) || paused_.count(to) ||
          (drop && drop(message))) {
        trace_message("drops", from, to, message);
        if (on_send) on_send(0, from, to, message, std::nullopt);
        continue;
      }
      Duration delay = random_.between(faults.min_delay, faults.max_delay);
      if (auto slow = slow_.find({from, to}); slow != slow_.end()) delay += slow->second;
      // Each inbox stays in order of arrival (ties in order of sending), so what is due is a
      // prefix; its capacity is kept from one delivery to the next.
      std::vector<InFlight>& inbox = inboxes_[to];
      InFlight in_flight{now_ + delay, next_sequence_++, from, message};
      if (on_send) on_send(in_flight.sequence, from, to, message, in_flight.due);
      auto at = std::upper_bound(
          inbox.begin(), inbox.end(), in_flight.due,
          [](Clock::time_point due, const InFlight& other) { return due < other.due; });
      inbox.insert(at, std::move(in_flight));
    }
  }

  // Removes and returns the messages for `to` that are due, in order of arrival. A message whose
  // sender is now on the other side of a partition, or over a link now blocked for it, is lost on
  // the way.
  std::vector<Message> deliver(ReplicaID to) {
    std::vector<Message> messages;
    auto inbox = inboxes_.find(to);
    if (inbox == inboxes_.end() || !has_due(to)) return messages;
    std::vector<InFlight>& queue = inbox->second;
    auto due = std::find_if(queue.begin(), queue.end(),
                            [&](const InFlight& in_flight) { return in_flight.due > now_; });
    messages.reserve(static_cast<std::size_t>(due - queue.begin()));
    for (auto in_flight = queue.begin(); in_flight != due; ++in_flight) {
      bool reachable = can_reach(in_flight->from, to, in_flight->message.type);
      trace_message(reachable ? "delivers" : "cuts", in_flight->from, to, in_flight->message);
      if (on_arrival) on_arrival(in_flight->sequence, reachable);
      if (reachable) messages.push_back(std::move(in_flight->message));
    }
    queue.erase(queue.begin(), due);
    return messages;
  }

  bool has_due(ReplicaID to) const {
    auto inbox = inboxes_.find(to);
    return inbox != inboxes_.end() && !inbox->second.empty() && inbox->second.front().due <= now_;
  }

  Clock::time_point next_arrival() const {
    Clock::time_point next = Clock::time_point::max();
    for (const auto& [to, inbox] : inboxes_)
      if (!inbox.empty() && !paused_.count(to)) next = std::min(next, inbox.front().due);
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
    trace("partition:", description);
  }
  // Heals partitions, failed links and slow links alike (what is on its way arrives as sent).
  void heal() {
    if (is_partitioned()) trace("partition healed");
    if (!blocked_.empty() || !slow_.empty()) trace("failed and slow links repaired");
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
    trace("link r", from, "->r", to, " fails", type ? text(" for ", name(*type)) : "");
  }
  // A slow link, until heal(): messages sent from `from` to `to` take `extra` longer, one way.
  void slow(ReplicaID from, ReplicaID to, Duration extra) {
    slow_[{from, to}] = extra;
    trace("link r", from, "->r", to, " slows down by ", milliseconds(extra), " ms");
  }
  // Both directions, every type: as if `a` and `b` were on two sides of a partition.
  void cut(ReplicaID a, ReplicaID b) {
    block(a, b);
    block(b, a);
  }
  // Undoes cut(a, b) alone, and any other failure of the link between them, both ways.
  void mend(ReplicaID a, ReplicaID b) {
    for (auto link = blocked_.begin(); link != blocked_.end();) {
      auto [from, to, type] = *link;
      bool between = (from == a && to == b) || (from == b && to == a);
      link = between ? blocked_.erase(link) : std::next(link);
    }
    trace("link r", a, "-r", b, " repaired");
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
  // A paused replica loses whatever is sent to it while paused; what was already on its way
  // waits for it.
  void set_paused(ReplicaID id, bool paused) {
    if (paused)
      paused_.insert(id);
    else
      paused_.erase(id);
  }

private:
  struct InFlight {
    Clock::time_point due;
    std::uint64_t sequence;
    ReplicaID from;
    Message message;
  };

  template <typename... Parts> void trace(const Parts&... parts) {
    if (trace_to) trace_to(text(parts...));
  }

  void trace_message(const char* what, ReplicaID from, ReplicaID to, const Message& message) {
    if (!trace_messages) return;
    using raft::MessageType;
    if (message.type == MessageType::InstallSnapshot ||
        message.type == MessageType::InstallSnapshotResponse)
      return trace("  net ", what, " r", from, "->r", to, " ", name(message.type), " term ",
                   message.term, " through ", message.last_included_index, " offset ",
                   message.offset, " bytes ", message.data.size(), " received ", message.received,
                   message.done ? " done" : "");
    trace("  net ", what, " r", from, "->r", to, " ", name(message.type), " term ", message.term,
          " prev ", message.prev_log_index, " entries ", message.entries.size(), " commit ",
          message.leader_commit, message.success || message.vote_granted ? " yes" : "");
  }

  static constexpr int kAnyType = -1;

  Random& random_;
  const Clock::time_point& now_;
  std::map<ReplicaID, std::vector<InFlight>> inboxes_; // each in order of arrival
  std::map<ReplicaID, int> group_; // partition group of each member; all 0 when healed
  std::set<std::tuple<ReplicaID, ReplicaID, int>> blocked_;  // failed links: from, to, type
  std::map<std::pair<ReplicaID, ReplicaID>, Duration> slow_; // slow links: the extra delay
  std::set<ReplicaID> down_;
  std::set<ReplicaID> paused_;
  std::uint64_t next_sequence_ = 0;
  std::uint64_t sent_ = 0;
};

// ---- The transport one replica sees: the Cluster interface over the network ----

class Endpoint : public raft::Cluster {
public:
  Endpoint(ReplicaID id, Network& network) : id_(id), network_(network) {}

  void send_message(ReplicaID to, const Message& message) override {
    ++messages_sent_;
    network_.send(id_, to, message);
  }
  std::vector<Message> receive_messages() override { return network_.deliver(id_); }
  bool halt() const override { return false; }
  void register_leader(std::optional<ReplicaID> leader) override { registered_leader_ = leader; }

  std::optional<ReplicaID> registered_leader() const { return registered_leader_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

protected:
  const ReplicaID id_;
  Network& network_;
  std::optional<ReplicaID> registered_leader_;
  std::uint64_t messages_sent_ = 0;
};

// ---- The cluster: replicas over the network, each with a storage that outlives crashes ----

struct NoExtra {};

// Machine: the state machine, built afresh for each lifetime; Storage: the storage that survives
// crashes; Host: the transport, an Endpoint; Extra: whatever a user of the cluster keeps per
// replica beside them. Used as it is, it builds each part from (id, network) or by default; a
// derived class may build them otherwise and act around each poll through the hooks below.
template <class Machine, class Storage = raft::MemoryStorage, class Host = Endpoint,
          class Extra = NoExtra>
class Cluster {
public:
  struct Timing {
    Duration heartbeat = 10ms;
    std::pair<Duration, Duration> election_timeout = {50ms, 100ms};
  };
  struct Slot : Extra {
    ReplicaID id = 0;
    Storage storage;
    std::unique_ptr<Host> host;
    std::unique_ptr<Machine> machine;
    std::unique_ptr<raft::Replica> replica; // null while down
    std::uint64_t lifetimes = 0;            // Replica objects built so far
    bool polled = false;                    // polled at least once in this lifetime
    bool wake = false;                      // a request for the next poll came from outside
    bool paused = false;                    // not polled, nothing reaches it, its state kept
  };

  // Starts `replicas` replicas, r1 to rN, all voters. A derived class passes 0 and calls start()
  // from its own constructor, so that its hooks build them.
  Cluster(std::uint64_t seed, Timing timing, raft::Options options, raft::Transition noop,
          std::size_t replicas = 0, Clock::time_point start = kStart)
      : timing_(timing), options_(options), noop_(std::move(noop)), random_(seed), now_(start),
        network_(random_, now_) {
    this->start(replicas);
  }
  virtual ~Cluster() = default;
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Any fixed instant will do; a large one keeps "time zero" from looking special.
  static constexpr Clock::time_point kStart = Clock::time_point(std::chrono::hours(1000));

  // ---- Time ----

  Clock::time_point now() const { return now_; }

  // One step: polls every running replica that needs it now (its deadline passed, a message
  // arrived, a request is pending), then moves the clock to the next event, but not past `end`.
  // Returns the replicas it polled.
  std::vector<ReplicaID> step(Clock::time_point end = Clock::time_point::max()) {
    std::vector<ReplicaID> polled;
    for (const auto& slot : slots_) {
      if (!running(*slot) || !needs_poll(*slot)) continue;
      poll(*slot);
      polled.push_back(slot->id);
      if (halted()) return polled;
    }
    after_step();
    Clock::time_point next = next_event();
    if (next > now_) {
      repolls_at_this_instant_ = 0;
      now_ = std::max(now_, std::min(next, end));
    } else if (++repolls_at_this_instant_ > 100) {
      stalled();
    }
    return polled;
  }

  // Lockstep: polls every running replica once, in id order, then moves the clock by `step`. A
  // message sent with no delay reaches a replica polled later in the same round.
  void round(Duration step) {
    for (const auto& slot : slots_)
      if (running(*slot)) poll(*slot);
    now_ += step;
  }

  // When the next message arrives or the next running replica wants a poll.
  Clock::time_point next_event() const {
    Clock::time_point next = network_.next_arrival();
    for (const auto& slot : slots_)
      if (running(*slot))
        next = std::min(next, slot->polled && !slot->wake ? slot->replica->next_deadline() : now_);
    return next;
  }

  // ---- Faults ----

  // The replica stops: its state machine and transport are lost, its storage is kept, and so is
  // nothing on its way to it.
  void crash(ReplicaID id) {
    Slot& crashed = slot(id);
    crashed.replica.reset(); // before the state machine and host it refers to
    crashed.machine.reset();
    crashed.host.reset();
    network_.set_down(id, true);
  }
  // A new Replica over the same storage, with a fresh state machine and transport.
  void restart(ReplicaID id) {
    if (!slot(id).replica) build(slot(id));
  }
  // The replica stops for a while, as a stopped process: it is not polled and loses what is sent
  // to it, but keeps its state and what was already on its way to it; resume() runs it again.
  void pause(ReplicaID id) {
    slot(id).paused = true;
    network_.set_paused(id, true);
  }
  void resume(ReplicaID id) {
    slot(id).paused = false;
    network_.set_paused(id, false);
  }
  void partition(const std::vector<std::vector<ReplicaID>>& groups) { network_.partition(groups); }
  void heal() { network_.heal(); }

  // ---- Observations ----

  Network& network() { return network_; }
  const Network& network() const { return network_; }
  Random& random() { return random_; }
  // Every replica ever started, running or not.
  const std::vector<ReplicaID>& ids() const { return ids_; }
  // Running: neither crashed nor paused.
  bool is_up(ReplicaID id) const { return running(slot(id)); }
  const raft::Replica& replica(ReplicaID id) const { return *slot(id).replica; }
  raft::Replica& replica(ReplicaID id) { return *slot(id).replica; }
  const Machine& machine(ReplicaID id) const { return *slot(id).machine; }
  Machine& machine(ReplicaID id) { return *slot(id).machine; }
  const Storage& storage(ReplicaID id) const { return slot(id).storage; }
  Storage& storage(ReplicaID id) { return slot(id).storage; }

  // The running replica that leads the highest term any running replica knows, if any.
  std::optional<ReplicaID> leader() const {
    std::optional<ReplicaID> leader;
    raft::Term highest = 0;
    for (const auto& slot : slots_) {
      if (!running(*slot)) continue;
      if (slot->replica->current_term() > highest) leader.reset();
      highest = std::max(highest, slot->replica->current_term());
      if (slot->replica->is_leader() && slot->replica->current_term() == highest) leader = slot->id;
    }
    return leader;
  }

protected:
  // Builds r1 to rN.
  void start(std::size_t replicas) {
    initial_replicas_ = replicas;
    for (ReplicaID id = 1; id <= replicas; ++id) build(add_slot(id));
  }

  // A new replica's place, not yet built. Its id must be the next one.
  Slot& add_slot(ReplicaID id) {
    ids_.push_back(id);
    network_.add_member(id);
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->id = id;
    return *slots_.back();
  }

  // One lifetime of a replica: a transport and a state machine, then the Replica over them and
  // the storage.
  void build(Slot& slot) {
    slot.host = make_host(slot);
    slot.machine = make_machine(slot);
    std::vector<ReplicaID> peers = peers_of(slot);
    raft::Options options = options_for(slot);
    slot.replica =
        std::make_unique<raft::Replica>(slot.id, peers, *slot.host, *slot.machine, noop_,
                                        timing_.heartbeat, timing_.election_timeout, options);
    ++slot.lifetimes;
    slot.polled = false;
    slot.wake = false;
    slot.paused = false;
    built(slot);
    network_.set_down(slot.id, false);
    network_.set_paused(slot.id, false);
  }

  // ---- Hooks ----

  virtual std::unique_ptr<Host> make_host(Slot& slot) {
    if constexpr (std::is_constructible_v<Host, ReplicaID, Network&>)
      return std::make_unique<Host>(slot.id, network_);
    else
      return nullptr; // a derived class builds it
  }
  virtual std::unique_ptr<Machine> make_machine(Slot&) {
    if constexpr (std::is_default_constructible_v<Machine>)
      return std::make_unique<Machine>();
    else
      return nullptr; // a derived class builds it
  }
  // The initial voters but itself.
  virtual std::vector<ReplicaID> peers_of(const Slot& slot) {
    std::vector<ReplicaID> peers;
    for (ReplicaID id = 1; id <= initial_replicas_; ++id)
      if (id != slot.id) peers.push_back(id);
    return peers;
  }
  // The options given, the slot's storage, and a seed drawn from the cluster's generator.
  virtual raft::Options options_for(Slot& slot) {
    raft::Options options = options_;
    options.seed = random_.next() | 1; // never 0, which would mean "seed from random_device"
    options.storage = &slot.storage;
    return options;
  }
  virtual void built(Slot&) {}
  virtual bool has_request(const Slot&) const { return false; } // a reason to poll now
  virtual void before_poll(Slot&) {}
  virtual void after_poll(Slot&) {}
  virtual void after_step() {}                  // every replica due was polled
  virtual bool halted() const { return false; } // stops a step at once
  // More than 100 steps could not move the clock: some deadline never moves. Steps over it.
  virtual void stalled() {
    now_ += 1us;
    repolls_at_this_instant_ = 0;
  }

  Slot& slot(ReplicaID id) { return *slots_.at(id - 1); }
  const Slot& slot(ReplicaID id) const { return *slots_.at(id - 1); }
  const std::vector<std::unique_ptr<Slot>>& slots() const { return slots_; }

  // The clock itself, for whatever reads it as it moves (a History).
  const Clock::time_point& clock() const { return now_; }
  // For a derived class that keeps the time and polls the replicas itself (the visualizer, whose
  // replicas each read a clock of their own).
  void set_now(Clock::time_point now) { now_ = now; }

  const Timing timing_;
  const raft::Options options_;

private:
  static bool running(const Slot& slot) { return slot.replica && !slot.paused; }

  // A replica is polled when its deadline passes, a message arrives or a request is pending,
  // which the contract says is enough; once at the start of each lifetime; and at once after a
  // request from outside (wake).
  bool needs_poll(const Slot& slot) const {
    return !slot.polled || slot.wake || slot.replica->next_deadline() <= now_ ||
           network_.has_due(slot.id) || has_request(slot);
  }

  void poll(Slot& slot) {
    before_poll(slot);
    slot.replica->poll(now_);
    slot.polled = true;
    slot.wake = false;
    after_poll(slot);
  }

  const raft::Transition noop_;
  Random random_;
  Clock::time_point now_;
  Network network_;
  std::size_t initial_replicas_ = 0;
  std::vector<ReplicaID> ids_;               // ids_[i] == i + 1
  std::vector<std::unique_ptr<Slot>> slots_; // slots_[id - 1]; never moved: storage is referenced
  int repolls_at_this_instant_ = 0;          // steps that could not move the clock
};

} // namespace sim

#endif
