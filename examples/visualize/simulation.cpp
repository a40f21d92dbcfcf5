// simulation.cpp: N raft::Replica objects in one process, on a simulated clock, over the tests'
// simulated network (sim::Network of tests/cluster.hpp), which delays, loses and cuts messages as
// we say. Nothing here reads the real clock: the same settings and commands give the same run,
// step for step.
#include "visualize.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace visualize {

// ---- Small helpers ----

long long to_ms(Time time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time).count();
}

std::string format_ms(Time time) { return std::to_string(to_ms(time)) + " ms"; }

const char* role_name(Role role) {
  switch (role) {
  case Role::Follower: return "follower";
  case Role::Candidate: return "candidate";
  case Role::Leader: return "leader";
  case Role::Down: return "down";
  }
  return "?";
}

bool operator==(const View& a, const View& b) {
  auto cells = [](const std::vector<Cell>& x, const std::vector<Cell>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(), [](const Cell& p, const Cell& q) {
      return p.term == q.term && p.noop == q.noop && p.configuration == q.configuration;
    });
  };
  return a.role == b.role && a.term == b.term && a.vote == b.vote && a.leader == b.leader &&
         a.commit == b.commit && a.applied == b.applied && cells(a.log, b.log);
}

namespace {

std::string name(ReplicaID id) { return "S" + std::to_string(id); }

std::string names(const std::set<ReplicaID>& ids) {
  std::string text;
  for (ReplicaID id : ids) text += (text.empty() ? "" : ", ") + name(id);
  return text;
}

// "#4", "#4..#6" or "#4, #7": the transitions a client sent.
std::string transition_list(const std::vector<std::uint64_t>& ids) {
  if (ids.size() > 1 && ids.back() - ids.front() + 1 == ids.size())
    return "#" + std::to_string(ids.front()) + "..#" + std::to_string(ids.back());
  std::string text;
  for (std::uint64_t id : ids) text += (text.empty() ? "#" : ", #") + std::to_string(id);
  return text;
}

bool compare(std::uint64_t value, const std::string& op, std::uint64_t against) {
  if (op == "==") return value == against;
  if (op == "!=") return value != against;
  if (op == "<") return value < against;
  if (op == "<=") return value <= against;
  if (op == ">") return value > against;
  return value >= against;
}

// A whole number of milliseconds, rounded up: replicas are polled on the millisecond.
Time ceil_ms(Time time) { return std::chrono::ceil<std::chrono::milliseconds>(time); }

const raft::Transition kNoop{0, ""}; // no client transition has id 0

} // namespace

// ---- What we watch ----

void WatchedStorage::save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) {
  term = current_term;
  vote = voted_for;
  MemoryStorage::save_term_and_vote(current_term, voted_for);
}

void WatchedStorage::save_entries(Index first, const raft::Entry* begin, const raft::Entry* end) {
  log.resize(std::min<std::size_t>(log.size(), first > 0 ? first - 1 : 0));
  for (const raft::Entry* entry = begin; entry != end; ++entry)
    log.push_back(Cell{entry->term, entry->transition == kNoop && !entry->configuration,
                       entry->configuration != nullptr});
  MemoryStorage::save_entries(first, begin, end);
}

// ---- The replicas' surroundings ----

// What we keep of a replica beside what the cluster keeps (its storage, state machine, transport
// and Replica, in its slot).
struct Simulation::Node {
  Time clock_offset{};          // how far its clock runs ahead of the simulation's
  std::optional<Term> campaign; // the term of the last RequestVote it sent
  std::set<ReplicaID> votes;    // the votes granted to it in that term
  bool joining = false;         // added by `add`: a leader brings it in (§4.1)
  View seen;                    // as of the last step
  std::vector<Segment> segments;
};

// The transport of one replica, which also counts the votes of its campaign.
class Simulation::Port : public sim::Endpoint {
public:
  Port(ReplicaID id, sim::Network& network, Node& node) : Endpoint(id, network), node_(node) {}
  void send_message(ReplicaID to, const raft::Message& message) override {
    if (message.type == MessageType::RequestVote && node_.campaign != message.term) {
      node_.campaign = message.term;
      node_.votes = {id_};
    }
    Endpoint::send_message(to, message);
  }
  std::vector<raft::Message> receive_messages() override {
    std::vector<raft::Message> messages = Endpoint::receive_messages();
    for (const raft::Message& message : messages)
      if (message.type == MessageType::RequestVoteResponse && message.vote_granted &&
          node_.campaign == message.term)
        node_.votes.insert(message.from);
    return messages;
  }

private:
  Node& node_;
};

// The state machine holds nothing: what we show is the log. It hands over the client's
// transitions and passes on what becomes of them.
class Simulation::Machine : public raft::StateMachine {
public:
  Machine(Simulation& simulation, ReplicaID id) : simulation_(simulation), id_(id) {}
  std::vector<raft::Transition> pending;

  void apply_transition(const raft::Transition&) override {}
  std::vector<raft::Transition> get_pending_transitions() override {
    return std::exchange(pending, {});
  }
  void register_transition_state(std::uint64_t transition, raft::TransitionState state,
                                 raft::AbandonReason reason) override {
    simulation_.reports_.push_back(Report{id_, transition, state, reason});
  }

private:
  Simulation& simulation_;
  ReplicaID id_;
};

// The replicas on the tests' simulated cluster: each over a WatchedStorage that survives its
// crashes, with a new Port and Machine in each lifetime. The simulation keeps the time and polls
// the replicas itself, each on its own clock.
class Simulation::Replicas : public sim::Cluster<Machine, WatchedStorage, Port, Node> {
public:
  explicit Replicas(Simulation& simulation)
      : Cluster(simulation.settings_.seed,
                {simulation.settings_.heartbeat,
                 {simulation.settings_.election_min, simulation.settings_.election_max}},
                options(simulation.settings_), kNoop, 0, raft::Clock::time_point{}),
        simulation_(simulation) {}
  using Cluster::add_slot;
  using Cluster::build;
  using Cluster::set_now;
  using Cluster::slot;
  using Cluster::start;

private:
  static raft::Options options(const Settings& settings) {
    raft::Options options;
    options.max_entries_per_message = settings.batch;
    options.pre_vote = false;     // the elections of §5.2, which the scenarios narrate
    options.check_quorum = false; // and leaders of §5 alone: a cut-off leader leads on
    return options;
  }
  std::unique_ptr<Port> make_host(Slot& slot) override {
    return std::make_unique<Port>(slot.id, network(), slot);
  }
  std::unique_ptr<Machine> make_machine(Slot& slot) override {
    return std::make_unique<Machine>(simulation_, slot.id);
  }
  std::vector<ReplicaID> peers_of(const Slot& slot) override {
    return slot.joining ? std::vector<ReplicaID>{} : Cluster::peers_of(slot);
  }
  raft::Options options_for(Slot& slot) override {
    raft::Options options = options_;
    options.seed = simulation_.settings_.seed * 1000 + slot.id * 10 + slot.lifetimes + 1;
    options.storage = &slot.storage;
    options.joining = slot.joining;
    return options;
  }
  void built(Slot& slot) override {
    slot.campaign.reset();
    slot.votes.clear();
  }

  Simulation& simulation_;
};

auto& Simulation::node(ReplicaID id) const { return cluster_->slot(id); }

// ---- Construction ----

Simulation::Simulation(const Settings& settings)
    : settings_(settings), cluster_(std::make_unique<Replicas>(*this)) {
  if (settings.replicas < 1 || settings.replicas > 9)
    throw std::runtime_error("the cluster must have 1 to 9 replicas");
  sim::Network& network = cluster_->network();
  network.faults = {settings.delay_min, settings.delay_max, settings.loss, 0};
  network.on_send = [this](std::uint64_t copy, ReplicaID, ReplicaID, const raft::Message& message,
                           std::optional<raft::Clock::time_point> due) {
    sent(copy, message, due);
  };
  network.on_arrival = [this](std::uint64_t copy, bool reachable) { arrived(copy, reachable); };
  cluster_->start(settings.replicas);
  for (ReplicaID id = 1; id <= settings.replicas; ++id) {
    boot(id);
    node(id).seen = view(id);
    node(id).segments.push_back(Segment{now_, node(id).seen.role, node(id).seen.term});
  }
}

Simulation::~Simulation() = default;

std::size_t Simulation::size() const { return cluster_->ids().size(); }
Time Simulation::delay_min() const { return cluster_->network().faults.min_delay; }
Time Simulation::delay_max() const { return cluster_->network().faults.max_delay; }
double Simulation::loss() const { return cluster_->network().faults.loss; }

raft::Clock::time_point Simulation::local_time(const Node& node) const {
  return raft::Clock::time_point{} + now_ + node.clock_offset;
}

// Starts a replica over its storage with a fresh state machine, as after a crash, and polls it
// once so that its election timer starts now.
void Simulation::boot(ReplicaID id) {
  cluster_->restart(id);
  node(id).replica->poll(local_time(node(id)));
}

// ---- Time ----

void Simulation::schedule(Time time, Command command) {
  schedule_.emplace(std::max(time, now_), std::move(command));
}

void Simulation::add_check(Check check) { checks_.push_back(std::move(check)); }

Time Simulation::next_event() const {
  Time next = Time::max();
  if (!schedule_.empty()) next = schedule_.begin()->first;
  if (raft::Clock::time_point arrival = cluster_->network().next_arrival();
      arrival != raft::Clock::time_point::max())
    next = std::min(next, arrival - raft::Clock::time_point{});
  for (ReplicaID id = 1; id <= size(); ++id) {
    const auto& node = this->node(id);
    if (!node.replica) continue;
    Time deadline = node.replica->next_deadline() - raft::Clock::time_point{} - node.clock_offset;
    next = std::min(next, std::max(ceil_ms(deadline), now_ + 1ms));
  }
  return next == Time::max() ? now_ + 1ms : next; // every replica is down: time still passes
}

void Simulation::step() {
  Time next = next_event();
  run_checks_until(next, false);
  set_clock(next);
  while (!schedule_.empty() && schedule_.begin()->first <= now_) {
    Command command = std::move(schedule_.begin()->second);
    schedule_.erase(schedule_.begin());
    apply(command);
  }
  for (ReplicaID id = 1; id <= size(); ++id)
    if (node(id).replica) node(id).replica->poll(local_time(node(id)));
  observe();
}

void Simulation::advance_to(Time time) {
  while (!pause_requested_ && next_event() <= time) step();
  if (pause_requested_) return; // stay at the moment of the pause
  run_checks_until(time, true);
  set_clock(std::max(now_, time));
}

void Simulation::set_clock(Time time) {
  now_ = time;
  cluster_->set_now(raft::Clock::time_point{} + time);
}

void Simulation::finish() {
  run_checks_until(now_, true);
  for (const Check& check : checks_) {
    CheckResult result{check, false, ""};
    if (check.at) {
      result.detail = "the run ended at " + format_ms(now_) + ", before this time";
    } else {
      std::optional<std::string> failure = evaluate(check);
      result.passed = !failure;
      result.detail = failure.value_or("");
    }
    results_.push_back(result);
    narrate(std::string(result.passed ? "ok: " : "FAILED: ") + check.text +
                (result.passed ? "" : " (" + result.detail + ")"),
            Event::Kind::Check);
  }
  checks_.clear();
}

// ---- The network ----

// What the network tells of each copy of a message, kept to draw it: a copy lost at once, or sent
// to a replica that is down, is recorded as it is sent; the others travel until they arrive.
void Simulation::sent(std::uint64_t copy, const raft::Message& message,
                      std::optional<raft::Clock::time_point> due) {
  Flight flight{message, now_, now_, copy};
  if (due) {
    flight.arrives = *due - raft::Clock::time_point{};
    in_flight_.emplace(copy, std::move(flight));
    return;
  }
  std::string fate = node(message.to).replica ? "lost" : name(message.to) + " is down";
  deliveries_.push_back(Delivery{std::move(flight), false, std::move(fate)});
}

// A cut link loses a message on arrival, as on a real network: it was cut while on its way.
void Simulation::arrived(std::uint64_t copy, bool reachable) {
  auto flight = in_flight_.find(copy);
  deliveries_.push_back(Delivery{flight->second, reachable, reachable ? "" : "link cut"});
  in_flight_.erase(flight);
}

bool Simulation::link_cut(ReplicaID a, ReplicaID b) const {
  return !cluster_->network().can_reach(a, b, MessageType::AppendEntries); // a cut stops all
}

std::set<std::pair<ReplicaID, ReplicaID>> Simulation::cuts() const {
  std::set<std::pair<ReplicaID, ReplicaID>> cuts;
  for (ReplicaID a = 1; a <= size(); ++a)
    for (ReplicaID b = a + 1; b <= size(); ++b)
      if (link_cut(a, b)) cuts.insert({a, b});
  return cuts;
}

std::vector<Flight> Simulation::in_flight() const {
  std::vector<Flight> flights;
  for (const auto& [copy, flight] : in_flight_) flights.push_back(flight);
  std::stable_sort(flights.begin(), flights.end(),
                   [](const Flight& a, const Flight& b) { return a.arrives < b.arrives; });
  return flights;
}

// ---- Commands ----

void Simulation::apply(const Command& command) {
  using Verb = Command::Verb;
  auto done = [this](std::string label, std::string text) {
    narrate(std::move(text), Event::Kind::Command, std::move(label));
  };
  ReplicaID target = command.replica;
  sim::Network& network = cluster_->network();
  bool needs_target =
      command.verb == Verb::Crash || command.verb == Verb::Timeout || command.verb == Verb::Isolate;
  if (needs_target && target == 0) {
    std::optional<ReplicaID> current = leader();
    if (!current) return done(command.text, command.text + ": there is no leader");
    target = *current;
  }
  switch (command.verb) {
  case Verb::Crash: {
    auto& node = this->node(target);
    if (!node.replica) return done("crash " + name(target), name(target) + " is already down");
    cluster_->crash(target); // and what was on its way to it is lost
    for (auto flight = in_flight_.begin(); flight != in_flight_.end();) {
      if (flight->second.message.to != target) {
        ++flight;
        continue;
      }
      flight->second.arrives = now_;
      deliveries_.push_back(Delivery{flight->second, false, name(target) + " is down"});
      flight = in_flight_.erase(flight);
    }
    return done("crash " + name(target),
                name(target) + " crashes. Its storage keeps its term, vote and log");
  }
  case Verb::Restart: {
    for (ReplicaID id = 1; id <= size(); ++id) {
      if (node(id).replica || (target != 0 && id != target)) continue;
      boot(id);
      done("restart " + name(id), name(id) + " restarts from its storage: term " +
                                      std::to_string(node(id).storage.term) + ", " +
                                      std::to_string(node(id).storage.log.size()) +
                                      " entries, commit index 0 until a leader tells it more");
    }
    return;
  }
  case Verb::Timeout: {
    auto& node = this->node(target);
    if (!node.replica)
      return done("timeout " + name(target), name(target) + " is down: no timer to fire");
    node.clock_offset += settings_.election_max + 1ms; // its clock jumps past any deadline
    return done("timeout " + name(target), name(target) + "'s election timer fires now");
  }
  case Verb::Isolate:
    for (ReplicaID other = 1; other <= size(); ++other)
      if (other != target) network.cut(target, other);
    return done("isolate " + name(target), name(target) + " is isolated: its links are cut");
  case Verb::Partition: {
    std::vector<std::vector<ReplicaID>> sides = command.sides;
    std::vector<ReplicaID> rest; // replicas on no side form one more side
    for (ReplicaID id = 1; id <= size(); ++id)
      if (std::none_of(sides.begin(), sides.end(), [id](const std::vector<ReplicaID>& side) {
            return std::count(side.begin(), side.end(), id) > 0;
          }))
        rest.push_back(id);
    if (!rest.empty()) sides.push_back(rest);
    network.heal(); // the sides are cut links, so that `heal A-B` can mend one of them
    std::string text;
    for (std::size_t i = 0; i < sides.size(); ++i) {
      text += i ? " | " : "";
      for (ReplicaID id : sides[i]) text += name(id) + (id == sides[i].back() ? "" : " ");
      for (std::size_t j = i + 1; j < sides.size(); ++j)
        for (ReplicaID a : sides[i])
          for (ReplicaID b : sides[j]) network.cut(a, b);
    }
    return done("partition " + text, "a partition: " + text);
  }
  case Verb::Heal:
    if (command.sides.empty()) {
      network.heal();
      return done("heal", "heal: every link works again");
    } else {
      ReplicaID a = command.sides[0][0], b = command.sides[0][1];
      network.mend(a, b);
      return done("heal " + name(a) + "-" + name(b),
                  "the link " + name(a) + "-" + name(b) + " works again");
    }
  case Verb::Cut: {
    ReplicaID a = command.sides[0][0], b = command.sides[0][1];
    network.cut(a, b);
    return done("cut " + name(a) + "-" + name(b),
                "the link " + name(a) + "-" + name(b) + " is cut: no message crosses it");
  }
  case Verb::Propose: return propose(command.count, target);
  case Verb::Delay:
    network.faults.min_delay = command.low;
    network.faults.max_delay = command.high;
    return done(command.text, "the network: " + command.text);
  case Verb::Loss:
    network.faults.loss = command.loss;
    return done(command.text, "the network: " + command.text);
  case Verb::Say: return narrate(command.text, Event::Kind::Say);
  case Verb::Pause: pause_requested_ = true; return done("pause", "pause");
  case Verb::Transfer: {
    std::optional<ReplicaID> current = leader();
    if (!current) return done(command.text, command.text + ": there is no leader");
    if (*current == target) return done(command.text, name(target) + " leads already");
    node(*current).replica->transfer_leadership(target);
    return done("transfer to " + name(target),
                name(*current) + " hands over to " + name(target) + ": it brings " + name(target) +
                    "'s log up to date, then tells it to campaign at once (TimeoutNow)");
  }
  case Verb::Read: return read(target);
  case Verb::Add: return add_replica();
  case Verb::Remove:
    return change_membership(raft::MembershipChange::Remove, target,
                             name(target) + " leaves the configuration");
  }
}

// A client asks `at`, or the leader, or (with none) S1, for a read (ReadIndex, §6.4).
void Simulation::read(ReplicaID at) {
  if (at == 0) at = leader().value_or(1);
  std::uint64_t id = next_transition_++;
  reads_.insert(id);
  auto& node = this->node(at);
  if (node.replica) node.replica->read(id);
  narrate("a client asks " + name(at) + " for a linearizable read #" + std::to_string(id) +
              (node.replica ? "" : ", but it is down"),
          Event::Kind::Command, "read #" + std::to_string(id) + " at " + name(at));
}

// A new replica starts empty, knowing no configuration, and the leader adds it: a learner first,
// a voter once it has caught up (§4.2.1).
void Simulation::add_replica() {
  if (size() >= 9) return narrate("add: a cluster has at most 9 replicas");
  auto& added = cluster_->add_slot(size() + 1);
  added.joining = true;
  cluster_->build(added);
  boot(added.id);
  added.seen = view(added.id);
  added.segments.push_back(Segment{now_, added.seen.role, added.seen.term});
  narrate(name(added.id) + " starts, empty, with no configuration: it waits for a leader");
  change_membership(raft::MembershipChange::AddVoter, added.id,
                    name(added.id) + " joins, a learner until it catches up, then a voter");
}

// A membership change (§4.1), asked of the leader; what becomes of it is told in flush_reports.
void Simulation::change_membership(raft::MembershipChange change, ReplicaID replica,
                                   std::string what) {
  std::optional<ReplicaID> current = leader();
  std::uint64_t id = next_transition_++;
  std::string label = "change #" + std::to_string(id) + " (" + what + ")";
  if (!current) return narrate(label + ": there is no leader to ask", Event::Kind::Command, label);
  changes_[id] = what;
  node(*current).replica->change_membership(id, change, replica);
  narrate("a client asks " + name(*current) + " for " + label, Event::Kind::Command, label);
}

// A client sends `count` transitions to `to`, or to the leader, or (with none) to S1.
void Simulation::propose(std::uint64_t count, ReplicaID to) {
  if (to == 0) to = leader().value_or(1);
  std::vector<std::uint64_t> ids;
  auto& node = this->node(to);
  for (std::uint64_t i = 0; i < count; ++i, ++next_transition_) {
    ids.push_back(next_transition_);
    if (node.machine)
      node.machine->pending.push_back({next_transition_, "#" + std::to_string(next_transition_)});
  }
  narrate("a client sends " + transition_list(ids) + " to " + name(to) +
              (node.replica ? "" : ", which is down: they are lost"),
          Event::Kind::Command, "propose " + transition_list(ids) + " to " + name(to));
}

// ---- Watching: what changed in this step ----

void Simulation::observe() {
  flush_reports();
  for (ReplicaID id = 1; id <= size(); ++id) {
    auto& node = this->node(id);
    const View now = view(node.id);
    const View before = node.seen;
    node.seen = now;
    if (now == before) continue;
    const std::string who = name(node.id);
    if (now.role != before.role || now.term != before.term)
      node.segments.push_back(Segment{now_, now.role, now.term});
    if (now.role == Role::Leader && leaders_[now.term].insert(node.id).second &&
        leaders_[now.term].size() > 1)
      violation("two leaders in term " + std::to_string(now.term) + ": " +
                names(leaders_[now.term]));

    // The story of the step, told from this replica.
    bool alive = now.role != Role::Down && before.role != Role::Down;
    if (alive && now.role == Role::Candidate &&
        (before.role != Role::Candidate || now.term != before.term)) {
      narrate(who + " times out: it becomes a candidate for term " + std::to_string(now.term) +
              ", votes for itself and asks the others for votes");
    } else if (alive && now.role == Role::Leader && before.role != Role::Leader) {
      narrate(who + " wins term " + std::to_string(now.term) + " with votes from " +
              names(node.votes) + ", and appends a no-op to its log");
    } else if (alive && before.role != Role::Follower && now.role == Role::Follower) {
      narrate(who + " steps down to follower" +
              (now.term > before.term ? ": it saw term " + std::to_string(now.term) +
                                            (now.vote ? ", and votes for " + name(*now.vote) : "")
               : now.leader ? ": " + name(*now.leader) + " leads this term"
                            : ""));
    } else if (alive && now.term > before.term) {
      narrate(who + " learns of term " + std::to_string(now.term) +
              (now.vote ? " and votes for " + name(*now.vote) : ""));
    }
    if (alive && now.term == before.term && now.vote && !before.vote && *now.vote != node.id)
      narrate(who + " votes for " + name(*now.vote) + " in term " + std::to_string(now.term));

    // Entries replaced because they conflict with the leader's (§5.3).
    std::size_t same = 0;
    while (same < before.log.size() && same < now.log.size() &&
           before.log[same].term == now.log[same].term &&
           before.log[same].noop == now.log[same].noop)
      ++same;
    if (alive && same < before.log.size()) {
      std::string first = std::to_string(same + 1), last = std::to_string(before.log.size());
      narrate(who + (first == last ? " drops entry " + first + ": the leader's log differs there"
                                   : " drops entries " + first + ".." + last +
                                         ": the leader's log differs from there on"));
    }

    // Commits, and the safety rules they must follow.
    if (now.commit > before.commit) {
      bool leading = now.role == Role::Leader;
      commits_.push_back(CommitMark{now_, node.id, now.commit, leading});
      for (Index index = before.commit + 1; index <= now.commit; ++index) {
        Term term = now.log.at(index - 1).term;
        auto [committed, fresh] = committed_.emplace(index, term);
        if (!fresh && committed->second != term)
          violation("index " + std::to_string(index) + " was committed with term " +
                    std::to_string(committed->second) + ", and now on " + who + " with term " +
                    std::to_string(term));
        ever_committed_.insert({index, term});
      }
      Term last = now.log.at(now.commit - 1).term;
      if (leading && before.role == Role::Leader && last != now.term)
        violation(who + " committed index " + std::to_string(now.commit) + " of term " +
                  std::to_string(last) + " by counting replicas in term " +
                  std::to_string(now.term) + " (Figure 8 forbids it)");
      if (leading)
        narrate(who + " commits through index " + std::to_string(now.commit) +
                ": a majority stores it, and it is of its own term");
    }
  }
  if (std::optional<ReplicaID> current = leader()) observe_majority(*current, view(*current));
  for (; pictured_ < events_.size(); ++pictured_) // a picture for each of the scenario's words
    if (events_[pictured_].kind == Event::Kind::Say)
      for (ReplicaID id = 1; id <= size(); ++id) events_[pictured_].views.push_back(view(id));
}

// Figure 8 made visible: an entry of an earlier term that a majority stores is still not
// committed by the leader, until an entry of its own term above it is.
void Simulation::observe_majority(ReplicaID leader, const View& view) {
  for (Index index = view.commit + 1; index <= view.log.size(); ++index) {
    Term term = view.log[index - 1].term;
    if (term >= view.term) break;
    std::set<ReplicaID> holders;
    for (ReplicaID id = 1; id <= size(); ++id)
      if (node(id).storage.log.size() >= index && node(id).storage.log[index - 1].term == term)
        holders.insert(id);
    if (2 * holders.size() <= size() || !majority_told_.insert({index, term, view.term}).second)
      continue;
    narrate("index " + std::to_string(index) + " (term " + std::to_string(term) +
            ") is on a majority, " + names(holders) + ", yet " + name(leader) +
            " does not commit it: it is not of term " + std::to_string(view.term) +
            " (§5.4.2, Figure 8)");
  }
}

// What the replicas told their state machines in this step, in a line per replica and kind.
void Simulation::flush_reports() {
  using raft::AbandonReason;
  using raft::TransitionState;
  std::vector<Report> reports = std::exchange(reports_, {});
  for (ReplicaID id = 1; id <= size(); ++id) {
    std::vector<std::uint64_t> queued, refused, overwritten;
    for (const Report& report : reports) {
      if (report.replica != id || told_as_request(report)) continue;
      if (report.state == TransitionState::Queued) queued.push_back(report.transition);
      if (report.state == TransitionState::Abandoned) {
        ++abandoned_;
        (report.reason == AbandonReason::NotLeader ? refused : overwritten)
            .push_back(report.transition);
      }
    }
    if (!queued.empty()) narrate(name(id) + " appends " + transition_list(queued) + " to its log");
    if (!refused.empty())
      narrate(name(id) + " refuses " + transition_list(refused) + ": it is not the leader");
    if (!overwritten.empty())
      narrate(name(id) + " reports " + transition_list(overwritten) +
              " abandoned: another leader's entries took their place");
  }
}

// A read's or a membership change's report, narrated here; false for a transition's.
bool Simulation::told_as_request(const Report& report) {
  using raft::TransitionState;
  const std::string who = name(report.replica), id = "#" + std::to_string(report.transition);
  const char* why = report.reason == raft::AbandonReason::NotLeader ? "it is not the leader"
                    : report.reason == raft::AbandonReason::Refused
                        ? "refused: another change is not yet committed, or it changes nothing"
                        : "another leader's entries took its place";
  if (reads_.count(report.transition)) {
    if (report.state == TransitionState::Applied)
      narrate(who + " answers read " + id + ": a majority confirmed that it still leads");
    if (report.state == TransitionState::Abandoned)
      narrate(who + " cannot serve read " + id + ": " + why);
    return true;
  }
  auto change = changes_.find(report.transition);
  if (change == changes_.end()) return false;
  if (report.state == TransitionState::Queued)
    narrate(who + " appends change " + id + " to its log: " + change->second);
  if (report.state == TransitionState::Abandoned)
    narrate(who + " gives up change " + id + " (" + change->second + "): " + why);
  if (report.state == TransitionState::Applied && changes_told_.insert(report.transition).second)
    narrate("change " + id + " is committed: " + change->second);
  return true;
}

void Simulation::narrate(std::string text, Event::Kind kind, std::string label) {
  events_.push_back(Event{now_, std::move(text), kind, std::move(label), {}});
}

void Simulation::violation(std::string text) {
  violations_.push_back(text);
  narrate("SAFETY VIOLATION: " + text, Event::Kind::Check);
}

// ---- Looking ----

View Simulation::view(ReplicaID id) const {
  const auto& node = this->node(id);
  View view;
  view.term = node.storage.term;
  view.vote = node.storage.vote;
  view.log = node.storage.log;
  if (!node.replica) {
    view.role = Role::Down;
    return view;
  }
  const raft::Replica& replica = *node.replica;
  view.term = replica.current_term();
  view.leader = replica.leader();
  view.commit = replica.commit_index();
  view.applied = replica.last_applied();
  if (node.storage.term != view.term) view.vote.reset();
  if (replica.is_leader())
    view.role = Role::Leader;
  else if (node.campaign == view.term && !view.leader)
    view.role = Role::Candidate;
  return view;
}

std::optional<ReplicaID> Simulation::leader() const {
  std::optional<ReplicaID> found;
  Term term = 0;
  for (ReplicaID id = 1; id <= size(); ++id)
    if (const auto& node = this->node(id);
        node.replica && node.replica->is_leader() && node.replica->current_term() >= term) {
      found = id;
      term = node.replica->current_term();
    }
  return found;
}

const std::vector<Segment>& Simulation::segments(ReplicaID id) const { return node(id).segments; }

std::optional<raft::Configuration> Simulation::configuration(ReplicaID id) const {
  const auto& node = this->node(id);
  if (!node.replica) return std::nullopt;
  return node.replica->configuration();
}

bool Simulation::failed() const {
  return !violations_.empty() ||
         std::any_of(results_.begin(), results_.end(),
                     [](const CheckResult& result) { return !result.passed; });
}

// ---- Checks ----

void Simulation::run_checks_until(Time limit, bool inclusive) {
  auto due = [&](const Check& check) {
    return check.at && (*check.at < limit || (inclusive && *check.at == limit));
  };
  std::vector<Check> remaining;
  for (Check& check : checks_) {
    if (!due(check)) {
      remaining.push_back(std::move(check));
      continue;
    }
    std::optional<std::string> failure = evaluate(check);
    results_.push_back(CheckResult{check, !failure, failure.value_or("")});
    events_.push_back(Event{*check.at,
                            std::string(failure ? "FAILED: " : "ok: ") + check.text +
                                (failure ? " (" + *failure + ")" : ""),
                            Event::Kind::Check,
                            "",
                            {}});
  }
  checks_ = std::move(remaining);
}

std::vector<ReplicaID> Simulation::subjects(const Check& check) const {
  if (!check.replicas.empty()) return check.replicas;
  std::vector<ReplicaID> live;
  for (ReplicaID id = 1; id <= size(); ++id)
    if (node(id).replica) live.push_back(id);
  return live;
}

// Nothing if the check holds; otherwise what is the matter.
std::optional<std::string> Simulation::evaluate(const Check& check) const {
  using Kind = Check::Kind;
  switch (check.kind) {
  case Kind::Leader: {
    std::optional<ReplicaID> current = leader();
    if (check.none)
      return current ? std::optional<std::string>(name(*current) + " leads") : std::nullopt;
    if (!current) return "there is no leader";
    if (check.leader && *current != check.leader) return name(*current) + " leads";
    if (check.term && view(*current).term != check.term)
      return "the leader's term is " + std::to_string(view(*current).term);
    return std::nullopt;
  }
  case Kind::Role:
    for (ReplicaID id : subjects(check))
      if (role_name(view(id).role) != check.role)
        return name(id) + " is " + role_name(view(id).role);
    return std::nullopt;
  case Kind::Number:
    for (ReplicaID id : subjects(check)) {
      View v = view(id);
      std::uint64_t value = check.field == "term"      ? v.term
                            : check.field == "commit"  ? v.commit
                            : check.field == "applied" ? v.applied
                                                       : v.log.size();
      if (!compare(value, check.op, check.value))
        return name(id) + "'s " + check.field + " is " + std::to_string(value);
    }
    return std::nullopt;
  case Kind::Entry:
    for (ReplicaID id : subjects(check)) {
      View v = view(id);
      if (v.log.size() < check.index)
        return name(id) + " has no entry " + std::to_string(check.index);
      if (v.log[check.index - 1].term != check.term)
        return name(id) + "'s entry " + std::to_string(check.index) + " is of term " +
               std::to_string(v.log[check.index - 1].term);
    }
    return std::nullopt;
  case Kind::Abandoned:
    if (compare(abandoned_, check.op, check.value)) return std::nullopt;
    return std::to_string(abandoned_) + " transitions were abandoned";
  case Kind::EverLeader:
  case Kind::NeverLeader: {
    std::set<ReplicaID> led; // in the term asked about, or in any
    for (const auto& [term, ids] : leaders_)
      if (!check.term || term == check.term)
        for (ReplicaID id : ids)
          if (!check.leader || id == check.leader) led.insert(id);
    if (check.kind == Kind::EverLeader)
      return led.empty() ? std::optional<std::string>("no such leader") : std::nullopt;
    return led.empty() ? std::nullopt : std::optional<std::string>(names(led) + " led");
  }
  case Kind::EverCommitted:
  case Kind::NeverCommitted: {
    bool committed = ever_committed_.count({check.index, check.term}) > 0;
    if (committed == (check.kind == Kind::EverCommitted)) return std::nullopt;
    return committed ? "it was committed" : "it was never committed";
  }
  }
  return std::nullopt;
}

} // namespace visualize
