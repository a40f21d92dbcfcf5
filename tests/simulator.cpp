// tests/simulator.cpp: whole clusters on a simulated clock (tests/simulator.hpp).
//
// First a few scripted scenarios, then random faults over many seeds: crashes and restarts,
// partitions, loss, duplication and reordering, with clients proposing all along, and (for most
// seeds) snapshots every few entries, sent in small chunks. After the faults stop, a leader must
// emerge and every replica must apply a new proposal; then every replica must hold the state of
// the whole committed sequence, and every transition a running replica reported Queued must have
// its outcome there (Applied, Abandoned, or committed under a snapshot it set).
//
//   SIM_SEEDS=n   run seeds 1..n (default 300)
//   SIM_SEED=n    run only seed n
//   SIM_TRACE=1   print what happens (elections, crashes, partitions, commits); 2 adds messages
//   make sim SEED=n   replays seed n with a trace
#include "simulator.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <exception>

using namespace sim;

namespace {

// ---- Reading the environment ----

std::uint64_t environment_number(const char* variable, std::uint64_t otherwise) {
  const char* value = std::getenv(variable);
  return value && *value ? std::strtoull(value, nullptr, 10) : otherwise;
}

int trace_level() { return static_cast<int>(environment_number("SIM_TRACE", 0)); }
bool replaying_one_seed() { return environment_number("SIM_SEED", 0) != 0; }

std::vector<std::uint64_t> seeds_to_run() {
  if (replaying_one_seed()) return {environment_number("SIM_SEED", 0)};
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t seed = 1; seed <= environment_number("SIM_SEEDS", 300); ++seed)
    seeds.push_back(seed);
  return seeds;
}

// ---- Helpers for the scripted scenarios ----

// A fault-free network; the scenarios add their faults by hand. `make sim` replays a random seed,
// so the scenarios stay quiet then.
Simulator::Settings scenario(std::size_t replicas) {
  Simulator::Settings settings;
  settings.replicas = replicas;
  settings.trace = replaying_one_seed() ? 0 : trace_level();
  return settings;
}

void require_progress(const Simulator& sim, bool done, const std::string& waiting_for) {
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
  REQUIRE_MESSAGE(done, text("timed out waiting for ", waiting_for, "; ", sim.describe()));
}

ReplicaID elect(Simulator& sim) {
  require_progress(sim, sim.run_until([&] { return sim.leader().has_value(); }, 2s), "a leader");
  return *sim.leader();
}

std::vector<std::uint64_t> propose(Simulator& sim, ReplicaID to, int count) {
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < count; ++i) ids.push_back(sim.propose(to));
  return ids;
}

bool all_committed(const Simulator& sim, const std::vector<std::uint64_t>& ids) {
  return std::all_of(ids.begin(), ids.end(),
                     [&](std::uint64_t id) { return sim.history().is_committed(id); });
}

// Runs until every replica has applied the whole committed sequence, `ids` included.
void settle(Simulator& sim, const std::vector<std::uint64_t>& ids) {
  bool settled = sim.run_until([&] { return all_committed(sim, ids) && sim.all_caught_up(); }, 2s);
  require_progress(sim, settled, "every replica to apply the proposals");
}

// While `down` is crashed, the others elect a leader if they need one and commit more.
void progress_without(Simulator& sim, ReplicaID down) {
  std::vector<std::uint64_t> ids = propose(sim, elect(sim), 3);
  require_progress(sim, sim.run_until([&] { return all_committed(sim, ids); }, 2s),
                   text("commits while r", down, " is down"));
}

std::vector<ReplicaID> all_but(const Simulator& sim, const std::vector<ReplicaID>& excluded) {
  std::vector<ReplicaID> others;
  for (ReplicaID id : sim.ids())
    if (std::find(excluded.begin(), excluded.end(), id) == excluded.end()) others.push_back(id);
  return others;
}

// Runs until a replica of `group` leads the highest term in the group, and returns it. A leader
// cut off in an older term does not count.
ReplicaID elect_among(Simulator& sim, const std::vector<ReplicaID>& group) {
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

// ---- Random faults ----

// How one seed's run misbehaves, drawn from the seed.
struct ChaosPlan {
  Simulator::Settings settings;
  Duration fault_phase; // faults happen during this first part of the run
  bool crashes = false;
  bool partitions = false;
  Duration client_gap; // the mean time between two client requests
};

ChaosPlan plan_for(std::uint64_t seed) {
  Random random(seed ^ 0x5eed'5eed'5eed'5eedULL); // not the simulator's own stream
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
  plan.settings.pre_vote = random.chance(0.75); // else elections as in §5.2 alone
  // Snapshots every 5 to 50 entries, most of the time, in chunks of 16 to 256 bytes: a transfer
  // of MachineState::kBytes takes 2 to 17 of them.
  plan.settings.snapshot_delta = random.chance(0.25) ? 0 : 5 + random.below(46);
  plan.settings.snapshot_chunk_bytes = 16 + random.below(241);
  return plan;
}

std::string describe(const ChaosPlan& plan) {
  const Simulator::Settings& settings = plan.settings;
  return text(std::fixed, std::setprecision(1), settings.replicas, " replicas, delays 1-",
              milliseconds(settings.faults.max_delay), " ms, loss ", settings.faults.loss * 100,
              "%, duplication ", settings.faults.duplication * 100, "%, ",
              settings.max_entries_per_message, " entries per message, ",
              settings.max_messages_in_flight, " in flight", settings.pre_vote ? ", pre-vote" : "",
              plan.crashes ? ", crashes" : "", plan.partitions ? ", partitions" : "",
              settings.snapshot_delta
                  ? text(", snapshots every ", settings.snapshot_delta, " entries in chunks of ",
                         settings.snapshot_chunk_bytes, " bytes")
                  : std::string(", no snapshots"),
              ", ", milliseconds(plan.fault_phase), " ms of faults");
}

// Drives one run: clients and faults at random times, then the liveness check.
class Chaos {
public:
  Chaos(Simulator& sim, ChaosPlan plan) : sim_(sim), plan_(std::move(plan)) {}

  void run_faults() {
    Clock::time_point end = now() + plan_.fault_phase;
    Clock::time_point next_client = now();
    Clock::time_point next_fault = now() + random().between(10ms, 200ms);
    while (!sim_.failed() && now() < end) {
      Clock::time_point until = std::min({end, next_client, next_fault, next_repair()});
      while (!sim_.failed() && now() < until) step_with_crashes(until);
      if (now() >= next_client) {
        propose_some();
        next_client = now() + random().between(1ms, 2 * plan_.client_gap);
      }
      repair_due();
      if (now() >= next_fault) {
        inject_fault();
        next_fault = now() + random().between(10ms, 200ms);
      }
    }
  }

  // Heals everything, then requires a leader and a new proposal applied on every replica within
  // liveness_bound(). At that point every replica holds the state of the whole committed sequence
  // and every transition queued in a lifetime still running has its outcome.
  void check_liveness() {
    sim_.history().trace("faults stop: partitions healed, replicas restarted, no more loss");
    sim_.heal();
    for (ReplicaID id : sim_.ids()) sim_.restart(id);
    sim_.network().faults.loss = 0;
    Duration bound = liveness_bound();
    Clock::time_point limit = now() + bound;
    std::vector<std::uint64_t> markers;
    std::optional<std::pair<ReplicaID, Term>> asked; // the leader and term last given a marker
    while (!sim_.failed() && !(sim_.all_caught_up() && any_committed(markers))) {
      if (now() >= limit)
        return sim_.history().fail("no progress within ", milliseconds(bound),
                                   " ms after the faults stopped");
      if (std::optional<ReplicaID> leader = sim_.leader()) {
        std::pair<ReplicaID, Term> current{*leader, sim_.replica(*leader).current_term()};
        if (asked != current) markers.push_back(sim_.propose(*leader));
        asked = current;
      }
      sim_.run_until(std::min(limit, now() + 1ms));
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
    for (ReplicaID id : sim_.ids()) {
      longest_log = std::max(longest_log, sim_.replica(id).last_log_index());
      highest_term = std::max(highest_term, sim_.replica(id).current_term());
    }
    Index entries_per_round_trip =
        settings.max_entries_per_message * settings.max_messages_in_flight;
    Index round_trips = 20 + highest_term + longest_log / entries_per_round_trip;
    if (settings.snapshot_delta)
      round_trips += MachineState::kBytes / settings.snapshot_chunk_bytes + 1;
    return 10 * settings.election_timeout.second +
           static_cast<Duration::rep>(round_trips) * 2 * settings.faults.max_delay;
  }
  Random& random() { return sim_.random(); }

  bool any_committed(const std::vector<std::uint64_t>& ids) const {
    return std::any_of(ids.begin(), ids.end(),
                       [&](std::uint64_t id) { return sim_.history().is_committed(id); });
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
    std::uint64_t kind = random().below(3); // 2: a quiet spell
    if (kind == 0 && plan_.crashes) crash_one();
    if (kind == 1 && plan_.partitions && !heal_at_) partition_randomly();
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

  Simulator& sim_;
  const ChaosPlan plan_;
  std::map<ReplicaID, Clock::time_point> restart_at_; // crashed replicas and when they return
  std::optional<Clock::time_point> heal_at_;          // set while partitioned
};

struct RunResult {
  std::string failure; // empty: every check passed
  std::string fingerprint;
};

RunResult run_chaos(std::uint64_t seed, int trace) {
  ChaosPlan plan = plan_for(seed);
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
  return {failure, sim.fingerprint()};
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

  TEST_CASE("simulator: the same seed gives the identical run") {
    RunResult first = run_chaos(42, 0);
    RunResult again = run_chaos(42, 0);
    RunResult other = run_chaos(43, 0);
    CHECK(first.fingerprint == again.fingerprint);
    CHECK(first.failure == again.failure);
    CHECK(first.fingerprint != other.fingerprint);
  }

  TEST_CASE("simulator: safety and liveness under faults across many seeds") {
    int trace = trace_level();
    for (std::uint64_t seed : seeds_to_run()) {
      RunResult result = run_chaos(seed, trace);
      if (!result.failure.empty())
        FAIL_CHECK(text(result.failure, "\n  replay: make sim SEED=", seed));
    }
  }

} // TEST_SUITE
