// tests/simulator.cpp: whole clusters on a simulated clock (tests/simulator.hpp).
//
// First a few scripted scenarios (among them partial failures that check-quorum must survive, over
// one-way and per-type link failures, and leader transfers), then random faults over many seeds:
// crashes and restarts, partitions, slow links, loss, duplication and reordering, leader transfers,
// with clients proposing all along, and (for most seeds) snapshots every few entries, sent in small
// chunks; Pre-Vote and check-quorum are each off for a quarter of the seeds. After the faults
// stop, a leader must emerge and every replica must apply a new proposal; then every replica must
// hold the state of the whole committed sequence, and every transition a running replica reported
// Queued must have its outcome there (Applied, Abandoned, or committed under a snapshot it set).
// Last, the same faults with key-value clients whose puts go through the log and whose gets go
// through Replica::read, with and without lease reads: each run's history must be linearizable
// (tests/linearizability.hpp). And the same faults with membership changes drawn all along
// (scripted membership scenarios are in tests/sim_membership.cpp).
//
//   SIM_SEEDS=n   run seeds 1..n (default 300), and 1..2n/3 of the key-value runs
//   SIM_SEED=n    run only seed n (of each)
//   SIM_TRACE=1   print what happens (elections, crashes, partitions, commits); 2 adds messages
//   make sim SEED=n   replays seed n with a trace
#include "simulator.hpp"

#include "linearizability.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <exception>

using namespace sim;

namespace {

// ---- Helpers for the scripted scenarios (more in simulator.hpp) ----

// While `down` is crashed, the others elect a leader if they need one and commit more.
void progress_without(Simulator& sim, ReplicaID down) {
  std::vector<std::uint64_t> ids = propose(sim, elect(sim), 3);
  require_progress(sim, sim.run_until([&] { return all_committed(sim, ids); }, 2s),
                   text("commits while r", down, " is down"));
}

// Partitions the leader `first` with one follower, `buddy`, from the rest, and has it queue a
// transition X that reaches only `buddy`. Returns X's index and id; `buddy` and `rest` are set.
std::pair<Index, std::uint64_t> replicate_to_buddy_only(Simulator& sim, ReplicaID first,
                                                        ReplicaID& buddy,
                                                        std::vector<ReplicaID>& rest) {
  buddy = all_but(sim, {first}).front();
  rest = all_but(sim, {first, buddy});
  sim.partition({{first, buddy}, rest});
  Index x_index = sim.replica(first).last_log_index() + 1;
  std::uint64_t x = sim.propose(first);
  bool replicated =
      sim.run_until([&] { return sim.replica(buddy).last_log_index() >= x_index; }, 1s);
  require_progress(sim, replicated, "X on the buddy");
  return {x_index, x};
}

// Elects a leader among `group`, which then commits a proposal.
void settle_among(Simulator& sim, const std::vector<ReplicaID>& group) {
  std::uint64_t id = sim.propose(elect_among(sim, group));
  require_progress(sim, sim.run_until([&] { return sim.history().is_committed(id); }, 2s),
                   "the group to commit");
}

// ---- Helpers for the partial failures: check-quorum and leader transfer ----

// Each of those scenarios runs over seeds 1..kScenarioSeeds, so that its bounds hold for many
// draws of timeouts and delays, not just one.
constexpr std::uint64_t kScenarioSeeds = 20;

// A 5-replica cluster whose leader's no-op and three proposals every replica applied.
ReplicaID settled_five(Simulator& sim) {
  ReplicaID leader = elect(sim);
  settle(sim, propose(sim, leader, 3));
  return leader;
}

// Runs `fault(sim, check_quorum, leader, the four others)` on a settled 5-replica cluster
// (settled_five) of every scenario seed, with check-quorum and then without.
template <class Fault> void with_and_without_check_quorum(const Fault& fault) {
  for (bool check_quorum : {true, false})
    for (std::uint64_t seed = 1; seed <= kScenarioSeeds; ++seed) {
      CAPTURE(check_quorum);
      CAPTURE(seed);
      Simulator::Settings settings = scenario(5);
      settings.check_quorum = check_quorum;
      Simulator sim(seed, settings);
      ReplicaID leader = settled_five(sim);
      fault(sim, check_quorum, leader, all_but(sim, {leader}));
    }
}

// What happened in the `window` after a fault hit `old_leader`, measured from the fault.
struct AfterFault {
  std::optional<Duration> committed;       // a proposal made after the fault committed
  std::optional<ReplicaID> committed_by;   // who led then (it may have been proposed to another)
  std::optional<Duration> old_leader_down; // the old leader first was not leader
  bool old_leader_led_again = false;       // and then was leader again
};

// Runs for `window`, proposing a marker to each new leader (of the highest term any replica
// knows), as a client that asks whoever leads would, and watching the old leader.
AfterFault watch_after_fault(Simulator& sim, ReplicaID old_leader, Duration window) {
  Clock::time_point fault = sim.now();
  AfterFault seen;
  std::vector<std::uint64_t> markers;
  std::optional<std::pair<ReplicaID, Term>> asked;
  auto observe = [&] {
    bool leads = sim.replica(old_leader).is_leader();
    if (!leads && !seen.old_leader_down) seen.old_leader_down = sim.now() - fault;
    if (leads && seen.old_leader_down) seen.old_leader_led_again = true;
    for (std::uint64_t id : markers)
      if (!seen.committed && sim.history().is_committed(id)) {
        seen.committed = sim.now() - fault;
        seen.committed_by = sim.leader();
      }
    if (std::optional<ReplicaID> leader = sim.leader(); leader && !seen.committed) {
      std::pair<ReplicaID, Term> current{*leader, sim.replica(*leader).current_term()};
      if (asked != current) markers.push_back(sim.propose(*leader));
      asked = current;
    }
    return false; // to the window's end
  };
  sim.run_until(observe, window);
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
  return seen;
}

std::string after(const std::optional<Duration>& duration) {
  return duration ? text(milliseconds(*duration), " ms") : std::string("never");
}

// The worst of several runs, for a MESSAGE: the longest time, or "never" if one did not happen.
struct Worst {
  std::optional<Duration> time = Duration::zero();
  void add(const std::optional<Duration>& sample) {
    time = time && sample ? std::optional<Duration>(std::max(*time, *sample)) : std::nullopt;
  }
};

// ---- Random faults ----

// How one seed's run misbehaves, drawn from the seed.
struct ChaosPlan {
  Simulator::Settings settings;
  Duration fault_phase; // faults happen during this first part of the run
  bool crashes = false;
  bool partitions = false;
  bool transfers = false;  // the leader is sometimes asked to hand over to a random replica
  bool slow_links = false; // a link is sometimes slow one way
  Duration client_gap;     // the mean time between two client requests
  std::size_t clients = 0, keys = 0; // the key-value clients of a linearizability run
  bool membership = false;           // membership changes asked all along (Chaos::change_randomly)
  bool keep_removed = false;         // removed replicas keep running (else they stop for good)
};

// Draws a plan from `random`, a stream of its own (not the simulator's).
ChaosPlan plan_from(Random& random) {
  ChaosPlan plan;
  plan.settings.replicas = random.chance(0.5) ? 3 : 5;
  plan.settings.faults.max_delay = random.between(2ms, 20ms);
  plan.settings.faults.loss = random.chance(0.7) ? random.below(20) / 100.0 : 0;
  plan.settings.faults.duplication = random.chance(0.5) ? 0.05 : 0;
  const std::size_t batches[] = {1, 3, 64, 4096};
  const std::size_t windows[] = {1, 2, 8};
  plan.settings.max_entries_per_message = batches[random.below(4)];
  plan.settings.max_messages_in_flight = windows[random.below(3)];
  plan.crashes = random.chance(0.7);
  plan.partitions = random.chance(0.7);
  plan.fault_phase = random.between(1s, 2s);
  plan.client_gap = random.between(5ms, 25ms);
  plan.settings.pre_vote = random.chance(0.75);     // else elections as in §5.2 alone
  plan.settings.check_quorum = random.chance(0.75); // else a leader never steps down by itself
  plan.transfers = random.chance(0.6);
  plan.slow_links = random.chance(0.5);
  // Snapshots every 5 to 50 entries, most of the time, in chunks of 16 to 256 bytes: a transfer
  // of MachineState::kBytes takes 2 to 17 of them.
  plan.settings.snapshot_delta = random.chance(0.25) ? 0 : 5 + random.below(46);
  plan.settings.snapshot_chunk_bytes = 16 + random.below(241);
  return plan;
}

ChaosPlan plan_for(std::uint64_t seed) {
  Random random(seed ^ 0x5eed'5eed'5eed'5eedULL);
  return plan_from(random);
}

// A linearizability run: the same faults, from another stream, lease reads half of the time
// (they need check-quorum), and two to four clients on one to three keys.
ChaosPlan linearizability_plan_for(std::uint64_t seed) {
  Random random(seed ^ 0x11ea'7ab1'e000'0000ULL);
  ChaosPlan plan = plan_from(random);
  plan.settings.lease_reads = random.chance(0.5);
  plan.settings.check_quorum |= plan.settings.lease_reads;
  plan.clients = 2 + random.below(3);
  plan.keys = 1 + random.below(3);
  return plan;
}

// A run with membership changes: the same faults, from another stream, and changes drawn all
// along. Removed replicas keep running in half of the runs with Pre-Vote and check-quorum
// (raft.hpp: they must not disrupt the cluster; without those, §4.2.3 says they may), else they
// stop.
ChaosPlan membership_plan_for(std::uint64_t seed) {
  Random random(seed ^ 0x3e3b'e125'0000'0000ULL);
  ChaosPlan plan = plan_from(random);
  plan.membership = true;
  plan.keep_removed = plan.settings.pre_vote && plan.settings.check_quorum && random.chance(0.5);
  return plan;
}

std::string describe(const ChaosPlan& plan) {
  const Simulator::Settings& settings = plan.settings;
  return text(
      std::fixed, std::setprecision(1), settings.replicas, " replicas, delays 1-",
      milliseconds(settings.faults.max_delay), " ms, loss ", settings.faults.loss * 100,
      "%, duplication ", settings.faults.duplication * 100, "%, ", settings.max_entries_per_message,
      " entries per message, ", settings.max_messages_in_flight, " in flight",
      settings.pre_vote ? ", pre-vote" : "", settings.check_quorum ? ", check-quorum" : "",
      settings.lease_reads ? ", lease reads" : "", plan.crashes ? ", crashes" : "",
      plan.partitions ? ", partitions" : "", plan.transfers ? ", transfers" : "",
      plan.slow_links ? ", slow links" : "",
      settings.snapshot_delta
          ? text(", snapshots every ", settings.snapshot_delta, " entries in chunks of ",
                 settings.snapshot_chunk_bytes, " bytes")
          : std::string(", no snapshots"),
      ", ", milliseconds(plan.fault_phase), " ms of faults",
      plan.clients ? text(", ", plan.clients, " clients on ", plan.keys, " keys") : "",
      plan.membership ? ", membership changes" : "",
      plan.membership
          ? (plan.keep_removed ? ", removed replicas keep running" : ", removed replicas stop")
          : "");
}

// The clients of a run, if not the default ones (random transitions, mostly to the leader).
class Workload {
public:
  virtual ~Workload() = default;
  virtual void act() = 0; // called at each client's turn during the faults
};

// Drives one run: clients and faults at random times, then the liveness check.
class Chaos {
public:
  Chaos(Simulator& sim, ChaosPlan plan, Workload* workload = nullptr)
      : sim_(sim), plan_(std::move(plan)), workload_(workload) {}

  void run_faults() {
    Clock::time_point end = now() + plan_.fault_phase;
    Clock::time_point next_client = now();
    Clock::time_point next_fault = now() + random().between(10ms, 200ms);
    Clock::time_point next_change =
        plan_.membership ? now() + random().between(20ms, 100ms) : Clock::time_point::max();
    while (!sim_.failed() && now() < end) {
      Clock::time_point until =
          std::min({end, next_client, next_fault, next_change, next_repair()});
      while (!sim_.failed() && now() < until) {
        step_with_crashes(until);
        retire_removed();
      }
      if (now() >= next_client) {
        workload_ ? workload_->act() : propose_some();
        next_client = now() + random().between(1ms, 2 * plan_.client_gap);
      }
      repair_due();
      if (now() >= next_fault) {
        inject_fault();
        next_fault = now() + random().between(10ms, 200ms);
      }
      if (now() >= next_change) {
        change_randomly();
        next_change = now() + random().between(10ms, 150ms);
      }
    }
  }

  // What the membership changes of a run came to.
  struct MembershipStats {
    std::size_t runs = 0, asked = 0, committed = 0, started = 0, removed = 0, kept = 0;
    void add(const MembershipStats& other) {
      runs += other.runs, asked += other.asked, committed += other.committed;
      started += other.started, removed += other.removed, kept += other.kept;
    }
    std::string describe() const {
      return text(runs, " runs: ", asked, " membership changes asked, ", committed, " committed; ",
                  started, " replicas started, ", removed, " removed (", kept,
                  " of them kept running)");
    }
  };
  MembershipStats membership_stats() const {
    MembershipStats stats;
    stats.runs = 1;
    stats.asked = changes_.size();
    for (std::uint64_t id : changes_) stats.committed += sim_.history().is_committed(id);
    stats.started = sim_.ids().size() - plan_.settings.replicas;
    stats.removed = removed_.size();
    for (ReplicaID id : removed_) stats.kept += !sim_.is_stopped(id);
    return stats;
  }

  // Heals everything, then requires a leader and a new proposal applied on every replica within
  // liveness_bound(). At that point every replica holds the state of the whole committed sequence
  // and every transition queued in a lifetime still running has its outcome. The proposal is the
  // marker last given to a leader: one given to an earlier leader may commit through the next
  // one's log while that leader's own marker is still on its way. With membership changes,
  // "every replica" is every member of the latest committed configuration, and every change
  // queued on one has its outcome too.
  void check_liveness() {
    sim_.history().trace("faults stop: partitions healed, replicas restarted, no more loss");
    sim_.heal();
    for (ReplicaID id : sim_.ids()) sim_.restart(id);
    sim_.network().faults.loss = 0;
    Duration bound = liveness_bound();
    Clock::time_point limit = now() + bound;
    std::vector<std::uint64_t> markers;
    std::optional<std::pair<ReplicaID, Term>> asked; // the leader and term last given a marker
    while (!sim_.failed() &&
           !(sim_.all_caught_up() && last_committed(markers) && sim_.changes_settled())) {
      if (now() >= limit)
        return sim_.history().fail("no progress within ", milliseconds(bound),
                                   " ms after the faults stopped");
      if (std::optional<ReplicaID> leader = sim_.leader()) {
        std::pair<ReplicaID, Term> current{*leader, sim_.replica(*leader).current_term()};
        // Again if the leader turned it away, as it does while a transfer is under way.
        bool turned_away = asked == current && sim_.machine(*leader).state_of(markers.back()) ==
                                                   TransitionState::Abandoned;
        if (asked != current || turned_away) markers.push_back(sim_.propose(*leader));
        asked = current;
      }
      sim_.run_until(std::min(limit, now() + 1ms));
      retire_removed();
    }
    if (!sim_.failed()) sim_.check_final_states();
    if (!sim_.failed())
      sim_.history().trace("the end: every replica holds the state of the same ",
                           sim_.history().committed().size(), " committed entries");
  }

private:
  Clock::time_point now() const { return sim_.now(); }

  // Ten election timeouts, then round trips: twenty to spare, one per term a probe may step back
  // over, enough to send the longest log to a replica that has none of it, and with snapshots,
  // one round trip per chunk of a snapshot.
  Duration liveness_bound() const {
    const Simulator::Settings& settings = sim_.settings();
    Index longest_log = 0;
    Term highest_term = 0;
    for (ReplicaID id : running()) {
      longest_log = std::max(longest_log, sim_.replica(id).last_log_index());
      highest_term = std::max(highest_term, sim_.replica(id).current_term());
    }
    Index entries_per_round_trip =
        settings.max_entries_per_message * settings.max_messages_in_flight;
    Index round_trips = 20 + highest_term + longest_log / entries_per_round_trip;
    if (settings.snapshot_delta)
      round_trips += MachineState::kBytes / settings.snapshot_chunk_bytes + 1;
    // A membership change under way may wait for a catch-up round of up to ten timeouts.
    Duration changes = plan_.membership ? 10 * settings.election_timeout.second : Duration::zero();
    return 10 * settings.election_timeout.second + changes +
           static_cast<Duration::rep>(round_trips) * 2 * settings.faults.max_delay;
  }
  Random& random() { return sim_.random(); }

  bool last_committed(const std::vector<std::uint64_t>& ids) const {
    return !ids.empty() && sim_.history().is_committed(ids.back());
  }

  std::vector<ReplicaID> running() const {
    std::vector<ReplicaID> up;
    for (ReplicaID id : sim_.ids())
      if (sim_.is_up(id)) up.push_back(id);
    return up;
  }

  // Mostly to the leader, so that much gets committed; sometimes to anyone.
  void propose_some() {
    std::vector<ReplicaID> up = running();
    if (up.empty()) return;
    std::optional<ReplicaID> leader = sim_.leader();
    ReplicaID target = leader && random().chance(0.7) ? *leader : up[random().below(up.size())];
    for (std::uint64_t count = 1 + random().below(3); count > 0; --count) sim_.propose(target);
  }

  void inject_fault() {
    std::uint64_t kind = random().below(5); // 4: a quiet spell
    if (kind == 0 && plan_.crashes) crash_one();
    if (kind == 1 && plan_.partitions && !heal_at_) partition_randomly();
    if (kind == 2 && plan_.transfers) transfer_randomly();
    if (kind == 3 && plan_.slow_links) slow_link();
  }

  // One way, 20 to 200 ms more, until the next heal.
  void slow_link() {
    ReplicaID from = sim_.ids()[random().below(sim_.ids().size())];
    ReplicaID to = sim_.ids()[random().below(sim_.ids().size())];
    if (from == to) return;
    sim_.network().slow(from, to, random().between(20ms, 200ms));
    if (!heal_at_) heal_at_ = now() + random().between(50ms, 800ms);
  }

  // To any replica: itself (nothing happens), one that is down or cut off (given up), or one
  // that may win.
  void transfer_randomly() {
    if (std::optional<ReplicaID> leader = sim_.leader())
      sim_.transfer_leadership(*leader, sim_.ids()[random().below(sim_.ids().size())]);
  }

  // Half the time the leader, to force elections.
  void crash_one() {
    std::vector<ReplicaID> up = running();
    std::optional<ReplicaID> leader = sim_.leader();
    crash(leader && random().chance(0.5) ? *leader : up[random().below(up.size())]);
  }

  // A step, after which a replica it polled may crash: rarely, but often when the poll changed
  // its term (it voted or campaigned), so that a vote or term it failed to save would show.
  void step_with_crashes(Clock::time_point until) {
    std::vector<Term> terms_before(sim_.ids().size() + 1);
    for (ReplicaID id : running()) terms_before[id] = sim_.replica(id).current_term();
    std::vector<ReplicaID> polled = sim_.step(until);
    for (ReplicaID id : polled) {
      if (!plan_.crashes || sim_.failed() || !sim_.is_up(id)) continue;
      bool new_term = sim_.replica(id).current_term() != terms_before[id];
      if (random().chance(new_term ? 0.1 : 0.002)) crash(id);
    }
  }

  // Down for a moment (still in the same term, usually) or for a while. One replica stays up.
  void crash(ReplicaID victim) {
    if (running().size() <= 1) return;
    sim_.crash(victim);
    Duration downtime =
        random().chance(0.5) ? random().between(0ms, 20ms) : random().between(20ms, 400ms);
    restart_at_[victim] = now() + downtime;
  }

  // Random groups, or the leader cut off from the majority.
  void partition_randomly() {
    std::optional<ReplicaID> leader = sim_.leader();
    if (leader && random().chance(0.5)) return isolate(*leader);
    std::vector<std::vector<ReplicaID>> groups(2 + random().below(2));
    for (ReplicaID id : sim_.ids()) groups[random().below(groups.size())].push_back(id);
    cut(groups);
  }

  // The leader and at most a minority of followers on one side: it queues what cannot commit.
  void isolate(ReplicaID leader) {
    std::vector<ReplicaID> minority{leader}, majority;
    for (ReplicaID id : sim_.ids()) {
      if (id == leader) continue;
      bool fits = 2 * (minority.size() + 1) < sim_.ids().size();
      (fits && random().chance(0.5) ? minority : majority).push_back(id);
    }
    cut({minority, majority});
  }

  void cut(const std::vector<std::vector<ReplicaID>>& groups) {
    sim_.partition(groups);
    heal_at_ = now() + random().between(50ms, 800ms);
  }

  Clock::time_point next_repair() const {
    Clock::time_point next = heal_at_.value_or(Clock::time_point::max());
    for (const auto& [id, when] : restart_at_) next = std::min(next, when);
    return next;
  }

  void repair_due() {
    if (heal_at_ && *heal_at_ <= now()) {
      sim_.heal();
      heal_at_.reset();
    }
    for (auto due = restart_at_.begin(); due != restart_at_.end();) {
      if (due->second > now()) {
        ++due;
        continue;
      }
      sim_.restart(due->first);
      due = restart_at_.erase(due);
    }
  }

  // ---- Membership ----

  // A change asked mostly of the leader (else of anyone, which turns it away), drawn from the
  // asker's latest configuration: a new replica (or one started before and never added) as a
  // learner or a voter, a learner promoted, any member removed (the leader too, but rarely the
  // last voters), or a change that must be refused. At most 7 members and 12 replicas started.
  void change_randomly() {
    using raft::MembershipChange;
    std::vector<ReplicaID> up = running();
    if (up.empty()) return;
    std::optional<ReplicaID> leader = sim_.leader();
    ReplicaID at = leader && random().chance(0.9) ? *leader : up[random().below(up.size())];
    raft::Configuration configuration = sim_.replica(at).configuration();
    std::vector<ReplicaID> members = configuration.voters;
    members.insert(members.end(), configuration.learners.begin(), configuration.learners.end());
    std::uint64_t draw = random().below(100);
    if (draw < 45 && members.size() < 7) {
      if (!configuration.learners.empty() && random().chance(0.4))
        return ask(at, MembershipChange::AddVoter, pick(configuration.learners));
      if (std::optional<ReplicaID> newcomer = newcomer_for(configuration))
        ask(at, random().chance(0.5) ? MembershipChange::AddLearner : MembershipChange::AddVoter,
            *newcomer);
    } else if (draw < 90 && !members.empty()) {
      ReplicaID target = pick(members);
      bool few_voters = configuration.voters.size() <= 2;
      if (!few_voters || role_in(configuration, target) != Role::Voter || random().chance(0.2))
        ask(at, MembershipChange::Remove, target);
    } else { // refused, but for a change of configuration between the draw and the poll
      ReplicaID target = sim_.ids()[random().below(sim_.ids().size())];
      ask(at,
          is_member(configuration, target) ? MembershipChange::AddLearner
                                           : MembershipChange::Remove,
          target);
    }
  }

  void ask(ReplicaID at, raft::MembershipChange change, ReplicaID target) {
    changes_.push_back(sim_.change_membership(at, change, target));
  }

  ReplicaID pick(const std::vector<ReplicaID>& ids) { return ids[random().below(ids.size())]; }

  // A replica never named by a committed configuration nor by `configuration`, not stopped, or,
  // if there is none, a new one.
  std::optional<ReplicaID> newcomer_for(const raft::Configuration& configuration) {
    for (ReplicaID id : sim_.ids())
      if (!sim_.history().ever_members().count(id) && !is_member(configuration, id) &&
          !sim_.is_stopped(id))
        return id;
    if (sim_.ids().size() >= 12) return std::nullopt;
    return sim_.add_replica();
  }

  // Once a committed configuration no longer names a replica it named, that replica stops for
  // good, or, with plan.keep_removed, half of the time, keeps running (and crashing).
  void retire_removed() {
    const History& history = sim_.history();
    if (!plan_.membership || history.committed_configuration_index() == configuration_seen_) return;
    configuration_seen_ = history.committed_configuration_index();
    for (ReplicaID id : history.ever_members()) {
      if (is_member(history.committed_configuration(), id) || !removed_.insert(id).second) continue;
      if (plan_.keep_removed && random().chance(0.5)) {
        sim_.history().trace("r", id, " is removed and keeps running");
        continue;
      }
      sim_.stop(id);
      restart_at_.erase(id);
    }
  }

  Simulator& sim_;
  const ChaosPlan plan_;
  Workload* const workload_;
  std::vector<std::uint64_t> changes_; // membership changes asked
  std::set<ReplicaID> removed_;        // once members, no longer
  Index configuration_seen_ = 0;       // the committed configuration's index when last looked at
  std::map<ReplicaID, Clock::time_point> restart_at_; // crashed replicas and when they return
  std::optional<Clock::time_point> heal_at_;          // set while partitioned or a link is slow
};

struct RunResult {
  std::string failure; // empty: every check passed
  std::string fingerprint;
  Chaos::MembershipStats membership;
};

RunResult run_chaos(std::uint64_t seed, int trace, ChaosPlan plan) {
  plan.settings.trace = trace;
  Simulator sim(seed, plan.settings);
  sim.history().trace("seed ", seed, ": ", describe(plan));
  Chaos chaos(sim, plan);
  try {
    chaos.run_faults();
    if (!sim.failed()) chaos.check_liveness();
  } catch (const std::exception& error) { // MemoryStorage never fails: an exception is a bug
    sim.history().fail("a replica threw: ", error.what());
  }
  std::string failure = sim.failed() ? text(sim.failure(), "\n", sim.describe()) : "";
  return {failure, sim.fingerprint(), chaos.membership_stats()};
}

RunResult run_chaos(std::uint64_t seed, int trace) {
  return run_chaos(seed, trace, plan_for(seed));
}

// The same with membership changes drawn all along (membership_plan_for).
RunResult run_membership_chaos(std::uint64_t seed, int trace) {
  return run_chaos(seed, trace, membership_plan_for(seed));
}

// ---- Linearizability: clients of the replicated key-value store ----

// Seeds 1..n for n two thirds of SIM_SEEDS (200 by default), or SIM_SEED alone.
std::vector<std::uint64_t> linearizability_seeds() {
  if (replaying_one_seed()) return seeds_to_run();
  std::vector<std::uint64_t> seeds = seeds_to_run();
  seeds.resize(seeds.size() * 2 / 3);
  return seeds;
}

// Clients of the store in MachineState. Each has at most one request outstanding, sent to the
// replica it believes leads: at first one at random; after a NotLeader, the leader that replica
// names, or another at random; after waiting kPatience for an answer, another at random. A put is
// a transition (MachineState::put_data) of a value no other put writes; a get is Replica::read on
// that replica, and reads the store in the read's Applied callback.
//
// Each request becomes a lin::Operation with call and return times from the simulated clock. A
// put reported Applied returns then. One reported Abandoned (NotLeader or ConflictWithLeader)
// never takes effect and is left out. One with no final report - its replica crashed, or the run
// ended first - has an unknown outcome (ret kNever): it may take effect at any time after its
// call, or never. A get returns when Applied; otherwise it observed nothing and is dropped.
//
// With `local_reads`, a get reads at once the store of a random running replica instead, as a
// host that skipped read() would: the control that shows that the check can fail.
class KvClients : public Workload {
public:
  static constexpr Duration kPatience = 200ms;

  struct Stats {
    std::size_t runs = 0;
    std::size_t puts_applied = 0, puts_unknown = 0, puts_abandoned = 0;
    std::size_t gets_applied = 0, gets_at_once = 0, gets_dropped = 0;
    void add(const Stats& other) {
      runs += other.runs;
      puts_applied += other.puts_applied, puts_unknown += other.puts_unknown;
      puts_abandoned += other.puts_abandoned;
      gets_applied += other.gets_applied, gets_at_once += other.gets_at_once;
      gets_dropped += other.gets_dropped;
    }
    std::string describe() const {
      return text(runs, " runs: ", puts_applied, " puts applied, ", puts_unknown,
                  " of unknown outcome, ", puts_abandoned, " abandoned; ", gets_applied,
                  " gets served (", gets_at_once, " in the poll that took them), ", gets_dropped,
                  " dropped");
    }
  };

  KvClients(Simulator& sim, std::size_t clients, std::size_t keys, bool local_reads = false)
      : sim_(sim), keys_(keys), local_reads_(local_reads), start_(sim.now()), clients_(clients) {
    for (Client& client : clients_) client.believed = random_replica();
    sim_.on_report([this](ReplicaID replica, std::uint64_t id, TransitionState state, AbandonReason,
                          const MachineState& machine) { report(replica, id, state, machine); });
  }
  ~KvClients() override { sim_.on_report(nullptr); }
  KvClients(const KvClients&) = delete;
  KvClients& operator=(const KvClients&) = delete;

  // One client's turn: unless it is still waiting for an answer, it sends a new request.
  void act() override {
    std::size_t who = random().below(clients_.size());
    Client& client = clients_[who];
    if (client.outstanding) {
      const Request& request = requests_[*client.outstanding];
      bool lost = !sim_.is_up(request.to) || sim_.lifetime(request.to) != request.lifetime;
      if (!lost && sim_.now() < request.sent + kPatience) return;
      client.outstanding.reset(); // it gives up; an answer may still come, and then counts
      client.believed = random_replica();
    }
    if (!sim_.is_up(client.believed)) client.believed = random_replica();
    Request request;
    request.client = who;
    request.put = random().chance(0.5);
    request.key = random().below(keys_);
    request.to = client.believed;
    request.lifetime = sim_.lifetime(request.to);
    request.call = time();
    request.sent = sim_.now();
    std::size_t index = requests_.size();
    if (!request.put && local_reads_) {
      request.to = random_replica();
      request.value = sim_.machine(request.to).state().store[request.key];
      request.ret = request.call;
      request.outcome = Outcome::Done;
      requests_.push_back(request);
      return;
    }
    if (request.put) request.value = next_value_++;
    requests_.push_back(request);
    std::uint64_t id =
        request.put ? sim_.propose(request.to, MachineState::put_data(request.key, request.value))
                    : sim_.read(request.to);
    by_id_[id] = index;
    client.outstanding = index;
  }

  std::vector<lin::Operation> history() const {
    std::vector<lin::Operation> operations;
    for (const Request& request : requests_) {
      std::string key = text("k", request.key);
      if (request.put && request.outcome != Outcome::Abandoned)
        operations.push_back(
            lin::put(request.client, key, text("v", request.value), request.call, request.ret));
      if (!request.put && request.outcome == Outcome::Done) {
        std::optional<std::string> value;
        if (request.value) value = text("v", request.value);
        operations.push_back(lin::get(request.client, key, value, request.call, request.ret));
      }
    }
    return operations;
  }

  Stats stats() const {
    Stats stats;
    stats.runs = 1;
    for (const Request& request : requests_) {
      bool done = request.outcome == Outcome::Done;
      if (request.put) {
        stats.puts_applied += done;
        stats.puts_unknown += request.outcome == Outcome::Pending;
        stats.puts_abandoned += request.outcome == Outcome::Abandoned;
      } else {
        stats.gets_applied += done;
        stats.gets_at_once += done && request.ret == request.call;
        stats.gets_dropped += !done;
      }
    }
    return stats;
  }

private:
  enum class Outcome { Pending, Done, Abandoned };
  struct Request {
    std::size_t client = 0;
    bool put = false;
    std::size_t key = 0;
    std::uint64_t value = 0; // a put's value, or the value a get read (0: absent)
    ReplicaID to = 0;
    std::uint64_t lifetime = 0; // of the replica it was sent to
    lin::Time call = 0, ret = lin::kNever;
    Clock::time_point sent{};
    Outcome outcome = Outcome::Pending;
  };
  struct Client {
    ReplicaID believed = 0; // the replica it believes leads
    std::optional<std::size_t> outstanding;
  };

  Random& random() { return sim_.random(); }
  lin::Time time() const { return (sim_.now() - start_).count(); }

  ReplicaID random_replica() {
    std::vector<ReplicaID> up;
    for (ReplicaID id : sim_.ids())
      if (sim_.is_up(id)) up.push_back(id);
    return up.empty() ? sim_.ids().front() : up[random().below(up.size())];
  }

  // From inside the poll of `replica`: the callback where a host learns what became of its
  // request, and reads the store for a read.
  void report(ReplicaID replica, std::uint64_t id, TransitionState state,
              const MachineState& machine) {
    auto found = by_id_.find(id);
    if (found == by_id_.end()) return; // not a client's: the liveness check's marker
    Request& request = requests_[found->second];
    if (request.to != replica || request.outcome != Outcome::Pending) return;
    if (state == TransitionState::Applied) {
      request.outcome = Outcome::Done;
      request.ret = time();
      if (!request.put) request.value = machine.store[request.key];
    } else if (state == TransitionState::Abandoned) {
      request.outcome = Outcome::Abandoned;
    } else {
      return;
    }
    Client& client = clients_[request.client];
    if (client.outstanding != found->second) return;
    client.outstanding.reset();
    if (state == TransitionState::Abandoned) { // try the leader this replica names
      std::optional<ReplicaID> named = sim_.replica(replica).leader();
      client.believed = named && *named != replica ? *named : random_replica();
    }
  }

  Simulator& sim_;
  const std::size_t keys_;
  const bool local_reads_;
  const Clock::time_point start_;
  std::vector<Client> clients_;
  std::vector<Request> requests_;
  std::map<std::uint64_t, std::size_t> by_id_; // a transition's or read's id: its request
  std::uint64_t next_value_ = 1;
};

struct LinearizabilityResult {
  std::string failure; // empty: every check passed and the history is linearizable
  KvClients::Stats stats;
  std::string fingerprint;
};

// One run of random faults with key-value clients; its history checked by lin::check.
LinearizabilityResult run_linearizability(std::uint64_t seed, int trace, bool local_reads = false) {
  ChaosPlan plan = linearizability_plan_for(seed);
  plan.settings.trace = trace;
  Simulator sim(seed, plan.settings);
  sim.history().trace("linearizability, seed ", seed, ": ", describe(plan));
  KvClients clients(sim, plan.clients, plan.keys, local_reads);
  Chaos chaos(sim, plan, &clients);
  try {
    chaos.run_faults();
    if (!sim.failed()) chaos.check_liveness();
  } catch (const std::exception& error) { sim.history().fail("a replica threw: ", error.what()); }
  if (sim.failed())
    return {text(sim.failure(), "\n", sim.describe()), clients.stats(), sim.fingerprint()};
  lin::Result result = lin::check(clients.history());
  std::string failure =
      result.ok ? "" : text("seed ", seed, " (", describe(plan), "): ", result.explanation);
  return {failure, clients.stats(), sim.fingerprint()};
}

} // namespace

TEST_SUITE("simulator") {

  TEST_CASE("simulator: a leader is elected and proposals commit with no faults") {
    Simulator sim(1, scenario(3));
    ReplicaID leader = elect(sim);
    std::vector<std::uint64_t> ids = propose(sim, leader, 20);
    settle(sim, ids);

    CHECK(sim.leader() == leader); // nothing disturbed it
    for (std::uint64_t id : ids)
      CHECK(sim.machine(leader).state_of(id) == TransitionState::Applied);
    for (ReplicaID id : sim.ids()) {
      CHECK(sim.machine(id).applied() == sim.history().committed());
      CHECK(sim.replica(id).leader() == leader);
    }
    CHECK(sim.history().committed().size() == 21); // the leader's no-op, then the 20
  }

  TEST_CASE("simulator: a proposal to a follower is abandoned with NotLeader") {
    Simulator sim(2, scenario(3));
    ReplicaID leader = elect(sim);
    ReplicaID follower = all_but(sim, {leader}).front();
    std::uint64_t id = sim.propose(follower);
    require_progress(sim, sim.run_for(1ms), "one poll");

    CHECK(sim.machine(follower).state_of(id) == TransitionState::Abandoned);
    CHECK(sim.machine(follower).abandon_reason(id) == AbandonReason::NotLeader);
  }

  TEST_CASE("simulator: a partitioned old leader rejoins and its uncommitted entries are "
            "abandoned with ConflictWithLeader") {
    Simulator sim(3, scenario(5));
    ReplicaID old_leader = elect(sim);
    settle(sim, propose(sim, old_leader, 3));
    Term old_term = sim.replica(old_leader).current_term();

    // Alone, the old leader still accepts proposals but cannot commit them.
    sim.partition({{old_leader}, all_but(sim, {old_leader})});
    std::vector<std::uint64_t> stranded = propose(sim, old_leader, 3);
    bool elected = sim.run_until([&] { return sim.leader() && sim.leader() != old_leader; }, 2s);
    require_progress(sim, elected, "a leader among the majority");
    ReplicaID new_leader = *sim.leader();
    for (std::uint64_t id : stranded)
      CHECK(sim.machine(old_leader).state_of(id) == TransitionState::Queued);
    std::vector<std::uint64_t> accepted = propose(sim, new_leader, 5);
    require_progress(sim, sim.run_until([&] { return all_committed(sim, accepted); }, 2s),
                     "the majority to commit");

    sim.heal();
    settle(sim, accepted);
    CHECK_FALSE(sim.replica(old_leader).is_leader());
    CHECK(sim.replica(old_leader).current_term() > old_term);
    for (std::uint64_t id : stranded) {
      CHECK(sim.machine(old_leader).abandon_reason(id) == AbandonReason::ConflictWithLeader);
      CHECK_FALSE(sim.history().is_committed(id));
    }
    for (std::uint64_t id : accepted)
      CHECK(sim.machine(new_leader).state_of(id) == TransitionState::Applied);
  }

  // Pre-Vote (the dissertation's §9.6): a replica cut off for many election timeouts comes back
  // without deposing the leader that the others kept hearing. Without Pre-Vote, it does.
  TEST_CASE("simulator: with Pre-Vote, a replica cut off and back does not depose the leader") {
    for (bool pre_vote : {true, false}) {
      CAPTURE(pre_vote);
      Simulator::Settings settings = scenario(3);
      settings.pre_vote = pre_vote;
      Simulator sim(7, settings);
      ReplicaID leader = elect(sim);
      settle(sim, propose(sim, leader, 3));
      Term term = sim.replica(leader).current_term();
      ReplicaID cut = all_but(sim, {leader}).front();

      sim.partition({{cut}, all_but(sim, {cut})});
      require_progress(sim, sim.run_for(10 * settings.election_timeout.second), "time to pass");
      CHECK((sim.replica(cut).current_term() == term) == pre_vote);
      sim.heal();
      require_progress(sim, sim.run_for(5 * settings.election_timeout.second), "time to pass");
      require_progress(sim, sim.leader().has_value(), "a leader");
      if (pre_vote) {
        CHECK(sim.leader() == leader);
        CHECK(sim.replica(leader).current_term() == term);
        CHECK(sim.replica(cut).leader() == leader);
      } else {
        CHECK(sim.replica(*sim.leader()).current_term() > term); // the leader was deposed
      }
    }
  }

  TEST_CASE("simulator: an entry overwritten on the replica that queued it can still commit "
            "from another log, and is then not reported ConflictWithLeader") {
    Simulator sim(5, scenario(5));
    ReplicaID first = elect(sim);
    settle(sim, propose(sim, first, 1));

    // `first` queues X and replicates it to `buddy` only.
    ReplicaID buddy;
    std::vector<ReplicaID> rest;
    std::uint64_t x = replicate_to_buddy_only(sim, first, buddy, rest).second;

    // A leader of the other three reaches only `first`, where its no-op overwrites X.
    ReplicaID rival = elect_among(sim, rest);
    sim.partition({{first, rival}, all_but(sim, {first, rival})});
    require_progress(sim, sim.run_until([&] { return sim.replica(first).leader() == rival; }, 1s),
                     "first to follow the rival");
    require_progress(sim, sim.run_for(100ms), "a few heartbeats");

    // `buddy` still holds X: it wins among the three that never saw the rival's no-op, and
    // commits X.
    std::vector<ReplicaID> holders = all_but(sim, {first, rival});
    sim.partition({{first, rival}, holders});
    CHECK(elect_among(sim, holders) == buddy);
    require_progress(sim, sim.run_until([&] { return sim.history().is_committed(x); }, 2s),
                     "X to commit");

    sim.heal();
    settle(sim, {x});
    CHECK(sim.machine(first).state_of(x) == TransitionState::Applied);
  }

  TEST_CASE("simulator: a leader never commits an entry of an earlier term by counting replicas "
            "(Figure 8)") {
    Simulator::Settings settings = scenario(5);
    settings.max_entries_per_message = 1; // an old entry and the new no-op travel apart
    settings.max_messages_in_flight = 1;
    settings.faults.min_delay = settings.faults.max_delay = 5ms; // in order, for a clear script
    Simulator sim(6, settings);
    ReplicaID first = elect(sim);
    settle(sim, propose(sim, first, 1));

    // (a) `first` replicates X to `buddy` only.
    ReplicaID buddy;
    std::vector<ReplicaID> rest;
    Index x_index = replicate_to_buddy_only(sim, first, buddy, rest).first;

    // (b) The other three elect a rival, whose no-op at X's index is cut off at once.
    ReplicaID rival = elect_among(sim, rest);
    sim.partition({{rival}, all_but(sim, {rival})});

    // (c) A holder of X wins among the other four and sends X, then its no-op, one at a time.
    // Stop when it commits X, or when its no-op reaches one of the two that lacked X.
    ReplicaID second = elect_among(sim, all_but(sim, {rival}));
    REQUIRE((second == first || second == buddy));
    std::vector<ReplicaID> lacking = all_but(sim, {first, buddy, rival});
    auto decided = [&] {
      return sim.replica(second).commit_index() >= x_index ||
             sim.replica(lacking[0]).last_log_index() > x_index ||
             sim.replica(lacking[1]).last_log_index() > x_index;
    };
    require_progress(sim, sim.run_until(decided, 2s), "X or the no-op to spread");

    // (d) Cut off X's holders. The rival wins unless a no-op of `second` got through: had
    // `second` committed X by counting, the rival would now overwrite a committed entry.
    std::vector<ReplicaID> remaining = all_but(sim, {first, buddy});
    sim.partition({{first, buddy}, remaining});
    settle_among(sim, remaining);
    sim.heal();
    settle(sim, {});
  }

  TEST_CASE("simulator: every replica restarted in turn recovers its log from storage and "
            "replays it") {
    Simulator sim(4, scenario(3));
    settle(sim, propose(sim, elect(sim), 10));

    for (ReplicaID id : sim.ids()) {
      Term term = sim.replica(id).current_term();
      Index log = sim.replica(id).last_log_index();
      sim.crash(id);
      progress_without(sim, id);
      sim.restart(id);
      CHECK(sim.replica(id).current_term() == term);
      CHECK(sim.replica(id).last_log_index() == log);
      CHECK(sim.machine(id).applied().empty()); // a fresh state machine

      settle(sim, propose(sim, elect(sim), 2));
      CHECK(sim.machine(id).applied() == sim.history().committed());
    }
  }

  // ---- Check-quorum under partial failures (the dissertation's §6.2) ----
  //
  // Five replicas: the leader L and four followers, named by the scenario F, A, B and C (in id
  // order). Each scenario runs over kScenarioSeeds seeds. kBound: the time from the fault within
  // which a leader of the majority that can still talk must commit a proposal made after it.

  constexpr Duration kMaxElection = 100ms; // Simulator::Settings' maximum election timeout
  constexpr Duration kBound = 5 * kMaxElection;

  // The partial partition: F receives no AppendEntries from anyone (it still sends everything and
  // still receives every other type), and L is cut off, both ways, from A and B. L reaches only C
  // and cannot commit. A, B and F hear no leader, so they grant each other's pre-votes and one of
  // them wins the votes of the other two. With check-quorum, C refuses that candidate's
  // RequestVote while it hears L (§4.2.3), but L, which hears only C, steps down.
  //
  // Without check-quorum the cluster recovers too: nothing stops C from taking the candidate's
  // term, and C's answers to L then depose it. What check-quorum closes is the next scenario.
  TEST_CASE("simulator: check-quorum: a leader cut off from two replicas, while a third receives "
            "no AppendEntries, is replaced") {
    Worst commit[2], down[2];
    with_and_without_check_quorum(
        [&](Simulator& sim, bool check_quorum, ReplicaID leader, const std::vector<ReplicaID>& f) {
          REQUIRE(sim.settings().election_timeout.second == kMaxElection);
          for (ReplicaID id : sim.ids())
            if (id != f[0]) sim.network().block(id, f[0], raft::MessageType::AppendEntries);
          sim.network().cut(leader, f[1]);
          sim.network().cut(leader, f[2]);
          AfterFault seen = watch_after_fault(sim, leader, kBound);
          CHECK_MESSAGE(seen.committed, sim.describe());
          CHECK(seen.committed_by != leader);
          commit[check_quorum].add(seen.committed);
          down[check_quorum].add(seen.old_leader_down);
        });
    MESSAGE(text("a proposal commits within ", after(commit[1].time), " with check-quorum (",
                 after(commit[0].time), " without); the old leader steps down within ",
                 after(down[1].time), " (", after(down[0].time), "); bound ", after(kBound)));
  }

  // The livelock check-quorum closes: L is cut off from A and B as before, and F hears L but L
  // does not hear F (F's AppendEntriesResponses are lost). L cannot commit, with only C's answers;
  // C and F, which hear L, refuse every pre-vote, so A and B never get a third. Without
  // check-quorum nothing changes for ever. With it, L steps down, C and F stop hearing a leader
  // and a leader of A, B, C and F emerges (L may win again first: with C's and F's votes, as its
  // log is the longest, and it steps down again; hence the longer bound).
  TEST_CASE("simulator: check-quorum: without it, a leader that a follower hears but cannot "
            "answer, cut off from two others, stalls the cluster for good") {
    const Duration bound = 2 * kBound;
    Worst commit, down;
    int led_again = 0;
    with_and_without_check_quorum(
        [&](Simulator& sim, bool check_quorum, ReplicaID leader, const std::vector<ReplicaID>& f) {
          sim.network().block(f[0], leader, raft::MessageType::AppendEntriesResponse);
          sim.network().cut(leader, f[1]);
          sim.network().cut(leader, f[2]);
          Term term = sim.replica(leader).current_term();
          AfterFault seen = watch_after_fault(sim, leader, bound);
          if (check_quorum) {
            CHECK_MESSAGE(seen.committed, sim.describe());
            CHECK(seen.committed_by != leader);
            commit.add(seen.committed);
            down.add(seen.old_leader_down);
            led_again += seen.old_leader_led_again;
          } else { // the livelock: the same leader, the same term, nothing committed
            CHECK_FALSE(seen.committed);
            CHECK(sim.replica(leader).is_leader());
            for (ReplicaID id : sim.ids()) CHECK(sim.replica(id).current_term() == term);
          }
        });
    MESSAGE(text("with check-quorum a proposal commits within ", after(commit.time),
                 " and the old leader steps down within ", after(down.time), " (it led again in ",
                 led_again, " of ", kScenarioSeeds, " runs); without, nothing commits in ",
                 after(bound)));
  }

  // Its cousins. In each, a leader of the majority commits within kBound, and the old leader,
  // still cut off, stops leading within two maximum election timeouts of the cut (raft.hpp,
  // check-quorum) and does not lead again.
  TEST_CASE("simulator: check-quorum: a leader cut off from a majority steps down within two "
            "maximum election timeouts, and a leader of the majority commits") {
    struct Cousin {
      const char* name;
      std::function<void(Simulator&, ReplicaID, const std::vector<ReplicaID>&)> cut;
    };
    const Cousin cousins[] = {
        {"cut off both ways from all followers but one",
         [](Simulator& sim, ReplicaID leader, const std::vector<ReplicaID>& f) {
           for (std::size_t i = 1; i < f.size(); ++i) sim.network().cut(leader, f[i]);
         }},
        {"its outgoing links cut, the incoming kept",
         [](Simulator& sim, ReplicaID leader, const std::vector<ReplicaID>& f) {
           for (ReplicaID id : f) sim.network().block(leader, id);
         }},
        {"in a minority partition with one follower",
         [](Simulator& sim, ReplicaID leader, const std::vector<ReplicaID>& f) {
           sim.partition({{leader, f[0]}, {f[1], f[2], f[3]}});
         }},
    };
    const Duration step_down_bound = 2 * kMaxElection;
    for (const Cousin& cousin : cousins) {
      Worst commit, down;
      for (std::uint64_t seed = 1; seed <= kScenarioSeeds; ++seed) {
        CAPTURE(cousin.name);
        CAPTURE(seed);
        Simulator sim(seed, scenario(5));
        ReplicaID leader = settled_five(sim);
        cousin.cut(sim, leader, all_but(sim, {leader}));
        AfterFault seen = watch_after_fault(sim, leader, kBound);
        CHECK_MESSAGE(seen.committed, sim.describe());
        CHECK(seen.committed_by != leader);
        CHECK((seen.old_leader_down && *seen.old_leader_down <= step_down_bound));
        CHECK_FALSE(seen.old_leader_led_again);
        commit.add(seen.committed);
        down.add(seen.old_leader_down);
      }
      MESSAGE(text("leader ", cousin.name, ": a proposal commits within ", after(commit.time),
                   " (bound ", after(kBound), "); the old leader steps down within ",
                   after(down.time), " (bound ", after(step_down_bound), ")"));
    }
  }

  // ---- Leader transfer (the dissertation's §3.10) ----

  // Under a steady load (a proposal to whoever leads every 2 ms), the leader hands over to the
  // follower with the longest log. The target leads within one maximum election timeout, one
  // term later, and nothing committed is lost (History's checks, then the final states).
  // A transfer takes about three round trips (the target's last acknowledgement, TimeoutNow, the
  // votes) and more when reordered AppendEntries make the leader probe again: so the network
  // here is an order of magnitude faster than the election timeout, as Raft assumes (§5.6),
  // with delays of 1 to 5 ms. (With the default 1 to 20 ms, transfers took 31 to 88 ms.)
  TEST_CASE("simulator: leader transfer under load to an up-to-date follower") {
    Worst took;
    for (std::uint64_t seed = 1; seed <= kScenarioSeeds; ++seed) {
      CAPTURE(seed);
      Simulator::Settings settings = scenario(5);
      settings.faults.max_delay = 5ms;
      Simulator sim(seed, settings);
      ReplicaID leader = settled_five(sim);
      Clock::time_point next_proposal = sim.now();
      auto load = [&] { // proposes when due; never done by itself
        if (std::optional<ReplicaID> current = sim.leader();
            current && sim.now() >= next_proposal) {
          sim.propose(*current);
          next_proposal = sim.now() + 2ms;
        }
        return false;
      };
      sim.run_until(load, 100ms);
      std::vector<ReplicaID> followers = all_but(sim, {leader});
      ReplicaID target =
          *std::max_element(followers.begin(), followers.end(), [&](ReplicaID a, ReplicaID b) {
            return sim.replica(a).last_log_index() < sim.replica(b).last_log_index();
          });
      Term term = sim.replica(leader).current_term();
      Clock::time_point asked = sim.now();
      sim.transfer_leadership(leader, target);
      bool led =
          sim.run_until([&] { return load() || sim.replica(target).is_leader(); }, kMaxElection);
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
      CHECK_MESSAGE(led, sim.describe());
      took.add(led ? std::optional<Duration>(sim.now() - asked) : std::nullopt);
      CHECK(sim.replica(target).current_term() == term + 1);
      for (ReplicaID id : sim.ids()) CHECK(sim.replica(id).current_term() <= term + 1);
      sim.run_until(load, 100ms);
      settle(sim, {sim.propose(elect(sim))}); // after what the load left queued
      sim.check_final_states();
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
    }
    MESSAGE(text("the target of a transfer under load leads within ", after(took.time), " (bound ",
                 after(kMaxElection), ")"));
  }

  // The target is down: the transfer is given up after a maximum election timeout, proposals
  // meanwhile are turned away (NotLeader), and then the same leader, in the same term, commits.
  TEST_CASE("simulator: leader transfer to a crashed target is given up") {
    for (std::uint64_t seed = 1; seed <= kScenarioSeeds; ++seed) {
      CAPTURE(seed);
      Simulator sim(seed, scenario(5));
      ReplicaID leader = settled_five(sim);
      ReplicaID target = all_but(sim, {leader}).front();
      Term term = sim.replica(leader).current_term();
      sim.crash(target);
      sim.transfer_leadership(leader, target);
      std::uint64_t during = sim.propose(leader);
      require_progress(sim, sim.run_for(kMaxElection), "the transfer's timeout");
      CHECK(sim.machine(leader).state_of(during) == TransitionState::Abandoned);
      CHECK(sim.machine(leader).abandon_reason(during) == AbandonReason::NotLeader);
      std::uint64_t later = sim.propose(leader);
      bool committed = sim.run_until([&] { return sim.history().is_committed(later); }, 50ms);
      require_progress(sim, committed, "the leader to commit after the transfer is given up");
      CHECK(sim.leader() == leader);
      for (ReplicaID id : all_but(sim, {target})) CHECK(sim.replica(id).current_term() == term);
      sim.restart(target);
      settle(sim, {later});
      sim.check_final_states();
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
    }
  }

  TEST_CASE("simulator: the same seed gives the identical run") {
    RunResult first = run_chaos(42, 0);
    RunResult again = run_chaos(42, 0);
    RunResult other = run_chaos(43, 0);
    CHECK(first.fingerprint == again.fingerprint);
    CHECK(first.failure == again.failure);
    CHECK(first.fingerprint != other.fingerprint);
    RunResult changes = run_membership_chaos(42, 0), changes_again = run_membership_chaos(42, 0);
    CHECK(changes.fingerprint == changes_again.fingerprint);
    CHECK(changes.failure == changes_again.failure);
    LinearizabilityResult kv = run_linearizability(42, 0), kv_again = run_linearizability(42, 0);
    CHECK(kv.fingerprint == kv_again.fingerprint);
    CHECK(kv.failure == kv_again.failure);
    CHECK(kv.stats.describe() == kv_again.stats.describe());
  }

  // Lease reads and a transfer given up while its TimeoutNow is still on its way (3 replicas,
  // delays of exactly 2 ms). The link from the leader L to the target T is slow (150 ms more), so
  // T gets the TimeoutNow after L has given the transfer up (one maximum election timeout, 100 ms)
  // and taken its lease back from V's answers. T then campaigns as a transfer, which V grants at
  // once, although it answered L a moment ago. From then on, nothing reaches L (as if its
  // incoming link failed: it cannot learn of the new term). T commits a put; a read then asked of
  // L must not be served from L's lease without it.
  //
  // raft.cpp gives the lease up for the rest of the term once a transfer starts, so the read
  // waits for a heartbeat round, which the replicas that elected the target no longer answer.
  TEST_CASE("simulator: lease reads: a leader whose transfer was given up while its TimeoutNow "
            "was on its way serves no stale read") {
    if (replaying_one_seed()) return; // its failure would only muddle the replay's
    for (std::uint64_t seed = 1; seed <= 1; ++seed) {
      CAPTURE(seed);
      Simulator::Settings settings = scenario(3);
      settings.lease_reads = true;
      settings.faults.min_delay = settings.faults.max_delay = 2ms;
      Simulator sim(seed, settings);
      ReplicaID leader = elect(sim);
      settle(sim, propose(sim, leader, 3));
      ReplicaID target = all_but(sim, {leader})[0], voter = all_but(sim, {leader})[1];
      Term term = sim.replica(leader).current_term();
      sim.network().slow(leader, target, 150ms);
      sim.network().block(target, leader, raft::MessageType::RequestVote);
      sim.transfer_leadership(leader, target);
      require_progress(
          sim, sim.run_until([&] { return sim.replica(target).current_term() > term; }, 300ms),
          "the target to campaign");
      sim.network().block(voter, leader);
      sim.network().block(target, leader);
      require_progress(sim, sim.run_until([&] { return sim.replica(target).is_leader(); }, 50ms),
                       "the target to lead");
      std::uint64_t put = sim.propose(target, MachineState::put_data(0, 1));
      require_progress(
          sim,
          sim.run_until(
              [&] { return sim.machine(target).state_of(put) == TransitionState::Applied; }, 50ms),
          "the put to be applied");
      std::optional<std::uint64_t> read_value;
      std::uint64_t read = 0;
      sim.on_report([&](ReplicaID, std::uint64_t id, TransitionState state, AbandonReason,
                        const MachineState& machine) {
        if (id == read && state == TransitionState::Applied) read_value = machine.store[0];
      });
      read = sim.read(leader);
      sim.run_for(50ms);
      INFO(text("the old leader ", sim.replica(leader).is_leader() ? "still leads" : "stepped down",
                "; the read ", read_value ? text("returned ", *read_value) : "was not served"));
      CHECK_MESSAGE(!sim.failed(), sim.failure());
      CHECK((!read_value || *read_value == 1));
    }
  }

  // Task: every client's history of puts and gets, under crashes, partitions, loss, duplication,
  // reordering and leader transfers, with and without lease reads, is linearizable.
  TEST_CASE("simulator: linearizable puts and gets under faults across many seeds") {
    int trace = trace_level();
    KvClients::Stats total;
    for (std::uint64_t seed : linearizability_seeds()) {
      LinearizabilityResult result = run_linearizability(seed, trace);
      total.add(result.stats);
      if (!result.failure.empty())
        FAIL_CHECK(text(result.failure, "\n  replay: make sim SEED=", seed));
    }
    MESSAGE(total.describe());
  }

  // The control: the same runs with gets that read a random replica's store at once, skipping
  // read(), must be caught.
  TEST_CASE("simulator: the linearizability check catches gets that skip read()") {
    std::size_t caught = 0, runs = 0;
    for (std::uint64_t seed = 1; seed <= 20; ++seed, ++runs)
      caught += !run_linearizability(seed, 0, true).failure.empty();
    MESSAGE(text(caught, " of ", runs, " runs with local reads are not linearizable"));
    CHECK(caught > 0);
  }

  TEST_CASE("simulator: safety and liveness under faults across many seeds") {
    int trace = trace_level();
    for (std::uint64_t seed : seeds_to_run()) {
      RunResult result = run_chaos(seed, trace);
      if (!result.failure.empty())
        FAIL_CHECK(text(result.failure, "\n  replay: make sim SEED=", seed));
    }
  }

  // raft.hpp, Membership changes, under the faults above: changes drawn all along (a new replica
  // added as a learner or a voter, a learner promoted, any member removed, the leader included,
  // changes that must be refused), most asked of the leader; removed replicas stop for good or
  // keep running. Every check of simulator.hpp holds across configurations: one leader per term,
  // one committed sequence that every replica applies a prefix of (configuration entries
  // included, never passed to apply_transition), the configurations it commits one change apart
  // and each after an entry of its leader's term, every replica's configuration() as its log
  // says, requests only to members, the reports of every change as raft.hpp says. Once the faults
  // stop, the members of the latest committed configuration elect a leader, commit and catch up.
  //
  // Before two fixes it failed for seeds 161 and 516 of 1 to 1000 (learners counted as voters by
  // a replica that became leader while they were learners) and 247, 647 and 898 (a voter whose
  // uncommitted latest configuration removed it never campaigned, and the others needed its
  // vote). tests/sim_membership.cpp has one scripted scenario for each, with the details.
  TEST_CASE("simulator: membership: random changes under faults keep every check, and the "
            "cluster commits once the faults stop, across many seeds") {
    int trace = trace_level();
    Chaos::MembershipStats total;
    for (std::uint64_t seed : seeds_to_run()) {
      RunResult result = run_membership_chaos(seed, trace);
      total.add(result.membership);
      CHECK_MESSAGE(result.failure.empty(),
                    text(result.failure, "\n  replay: SIM_SEED=", seed,
                         " SIM_TRACE=1 build/tests -tc='*membership: random*'"));
    }
    MESSAGE(total.describe());
  }

} // TEST_SUITE
