// tests/sim_membership.cpp: membership changes (raft.hpp, Membership changes) in whole clusters on
// the simulated clock of tests/simulator.hpp, scripted: growing and shrinking under load with
// crashes, partitions and message loss, removing the leader, replacing a replica, a learner that
// is down, a restart of every replica, a configuration that reaches a replica by snapshot,
// refusals, removed replicas that keep running, and the counter-examples of the 2015 bug in
// single-server changes. Every check of simulator.hpp runs at every poll. The random schedule of
// changes is in tests/simulator.cpp, with the other random runs.
//
// Each scenario runs over seeds 1..kSeeds (timeouts and delays are drawn from the seed).
//   SIM_SCENARIO_SEED=n   runs each scenario with seed n only; a failure prints the command
//   SIM_TRACE=1           prints what happens; 2 adds every message
#include "simulator.hpp"

#include <doctest/doctest.h>

using namespace sim;
using raft::Configuration;
using raft::MembershipChange;

namespace {

constexpr std::uint64_t kSeeds = 10;
constexpr Duration kMaxElection = 100ms; // Simulator::Settings' default

std::vector<std::uint64_t> scenario_seeds(std::uint64_t count) {
  if (std::uint64_t seed = environment_number("SIM_SCENARIO_SEED", 0)) return {seed};
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t seed = 1; seed <= count; ++seed) seeds.push_back(seed);
  return seeds;
}

// The command that replays this test case with one seed, traced.
std::string replay(std::uint64_t seed) {
  std::string name = doctest::getContextOptions()->currentTest->m_name;
  std::replace(name.begin(), name.end(), ',', '?'); // a comma separates -tc filters
  return text("replay: SIM_SCENARIO_SEED=", seed, " SIM_TRACE=1 build/tests -tc='", name,
              "' --no-skip");
}

// Runs `body` on a new Simulator of `settings` for each of scenario_seeds(count); a failure
// names the seed and the command that replays it.
void for_each_seed(std::uint64_t count, const Simulator::Settings& settings,
                   const std::function<void(Simulator&)>& body) {
  for (std::uint64_t seed : scenario_seeds(count)) {
    CAPTURE(seed);
    INFO(replay(seed));
    Simulator sim(seed, settings);
    body(sim);
  }
}
void for_each_seed(const Simulator::Settings& settings,
                   const std::function<void(Simulator&)>& body) {
  for_each_seed(kSeeds, settings, body);
}

// The role a change completes.
Role role_after(MembershipChange change) {
  return change == MembershipChange::AddLearner ? Role::Learner
         : change == MembershipChange::AddVoter ? Role::Voter
                                                : Role::None;
}

Configuration committed(const Simulator& sim) { return sim.history().committed_configuration(); }

// A client that proposes a transition to whoever leads every `gap`. Call it from the predicate of
// Simulator::run_until; it never ends a run by itself.
class Load {
public:
  Load(Simulator& sim, Duration gap) : sim_(sim), gap_(gap) {}
  bool operator()() {
    std::optional<ReplicaID> leader = sim_.leader();
    if (leader && sim_.now() >= next_) {
      ids_.push_back(sim_.propose(*leader));
      next_ = sim_.now() + gap_;
    }
    return false;
  }
  const std::vector<std::uint64_t>& ids() const { return ids_; }

private:
  Simulator& sim_;
  const Duration gap_;
  Clock::time_point next_{};
  std::vector<std::uint64_t> ids_;
};

// Faults at set times after the script starts (the first call), each an action on the
// simulator, run in the order of their times whatever the order they were added in; repair()
// heals the network and restarts every crashed replica not stopped for good.
class Script {
public:
  explicit Script(Simulator& sim) : sim_(sim) {}
  Script& at(Duration after, std::function<void()> action) {
    auto later =
        std::upper_bound(actions_.begin(), actions_.end(), after,
                         [](Duration time, const auto& other) { return time < other.first; });
    actions_.insert(later, {after, std::move(action)});
    return *this;
  }
  bool operator()() {
    if (!start_) start_ = sim_.now();
    for (; next_ < actions_.size() && sim_.now() >= *start_ + actions_[next_].first; ++next_)
      actions_[next_].second();
    return false;
  }
  void repair() {
    sim_.heal();
    for (ReplicaID id : sim_.ids()) sim_.restart(id);
  }

private:
  Simulator& sim_;
  std::vector<std::pair<Duration, std::function<void()>>> actions_;
  std::size_t next_ = 0;
  std::optional<Clock::time_point> start_;
};

// A running follower of the current leader among `among`, if there is one.
std::optional<ReplicaID> follower_among(const Simulator& sim, const std::vector<ReplicaID>& among) {
  std::optional<ReplicaID> leader = sim.leader();
  for (ReplicaID id : among)
    if (sim.is_up(id) && id != leader) return id;
  return std::nullopt;
}

// Cuts the leader off from everyone else, if there is one.
void isolate_leader(Simulator& sim) {
  if (std::optional<ReplicaID> leader = sim.leader())
    sim.partition({{*leader}, all_but(sim, {*leader})});
}

// scenario(replicas) with 5% of the messages lost and 2% duplicated.
Simulator::Settings lossy(std::size_t replicas) {
  Simulator::Settings settings = scenario(replicas);
  settings.faults.loss = 0.05;
  settings.faults.duplication = 0.02;
  return settings;
}

// The faults of the growing and shrinking scenarios: a follower among replicas 1 to 3 crashes
// at 6 ms and returns at 80 ms, the leader is cut off in a minority at 150 ms until the network
// heals at 450 ms, and whoever leads at 500 ms crashes and returns at 600 ms.
Script crashes_and_partitions(Simulator& sim) {
  auto crashed = std::make_shared<std::optional<ReplicaID>>();
  Script faults(sim);
  faults.at(5ms,
            [&sim, crashed] {
              *crashed = follower_among(sim, {1, 2, 3});
            })
      .at(6ms, [&sim, crashed] { sim.crash(**crashed); })
      .at(80ms, [&sim, crashed] { sim.restart(**crashed); })
      .at(150ms, [&sim] { isolate_leader(sim); })
      .at(450ms, [&sim] { sim.heal(); })
      .at(500ms, [&sim, crashed] { *crashed = sim.leader(); })
      .at(501ms, [&sim, crashed] { *crashed ? sim.crash(**crashed) : void(); })
      .at(600ms, [&sim, crashed] { *crashed ? sim.restart(**crashed) : void(); });
  return faults;
}

// Asks whoever leads for `change` of `target`, as an operator would, until the committed
// configuration shows it: again when the request was turned away (NotLeader, ConflictWithLeader,
// Refused while another change was under way) or the replica asked crashed, at most every 10 ms.
// `during` runs after every step (a load, faults). Returns the ids of the requests.
std::vector<std::uint64_t> change_until_done(Simulator& sim, MembershipChange change,
                                             ReplicaID target,
                                             const std::function<void()>& during = {},
                                             Duration timeout = 5s) {
  std::vector<std::uint64_t> ids;
  ReplicaID asked_at = 0;
  std::uint64_t lifetime = 0;
  Clock::time_point last_ask{};
  auto done = [&] { return role_in(committed(sim), target) == role_after(change); };
  auto waiting = [&] {
    if (ids.empty() || !sim.is_up(asked_at) || sim.lifetime(asked_at) != lifetime) return false;
    return sim.machine(asked_at).state_of(ids.back()) != TransitionState::Abandoned;
  };
  bool completed = sim.run_until(
      [&] {
        if (during) during();
        if (done()) return true;
        std::optional<ReplicaID> leader = sim.leader();
        if (leader && !waiting() && sim.now() >= last_ask + 10ms) {
          asked_at = *leader;
          lifetime = sim.lifetime(asked_at);
          last_ask = sim.now();
          ids.push_back(sim.change_membership(asked_at, change, target));
        }
        return false;
      },
      timeout);
  require_progress(sim, completed, text(name(change), " of r", target, " to commit"));
  return ids;
}

// Every replica that runs and is a member agrees with the committed configuration, which is
// `expected`; then the end of a run: every member holds the whole committed sequence, and every
// request it queued has its outcome.
void check_end(Simulator& sim, const Configuration& expected) {
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
  CHECK_MESSAGE(committed(sim) == expected,
                text("committed ", show(committed(sim)), ", expected ", show(expected)));
  for (ReplicaID id : sim.members())
    if (sim.is_up(id))
      CHECK_MESSAGE(sim.replica(id).configuration() == expected,
                    text("r", id, ": ", show(sim.replica(id).configuration())));
  sim.check_final_states();
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
}

// Proposes a transition to whoever leads, and again to whoever leads then each time the replica
// asked crashes or turns it away, until it is committed and `also` (if given) holds.
void commit_one(Simulator& sim, Duration timeout, const std::string& what,
                const std::function<bool()>& also = {}) {
  ReplicaID asked = elect(sim);
  std::uint64_t marker = sim.propose(asked);
  bool done = sim.run_until(
      [&] {
        bool lost =
            !sim.is_up(asked) || sim.machine(asked).state_of(marker) == TransitionState::Abandoned;
        if (lost && sim.leader() && !sim.history().is_committed(marker))
          marker = sim.propose(asked = *sim.leader()); // turned away: ask who leads now
        return sim.history().is_committed(marker) && (!also || also());
      },
      timeout);
  require_progress(sim, done, what);
}

// Commits a proposal once the faults are over, with every member caught up.
void settle_all(Simulator& sim) {
  commit_one(sim, 3s, "every member to catch up",
             [&] { return sim.all_caught_up() && sim.changes_settled(); });
}

// While `down` are crashed, the others elect a leader and commit.
void commits_without(Simulator& sim, const std::vector<ReplicaID>& down) {
  for (ReplicaID id : down) sim.crash(id);
  commit_one(sim, 2s, "a commit with some voters down");
  for (ReplicaID id : down) sim.restart(id);
}

// Removed replicas stop for good once their removal commits, but for `kept`.
void stop_removed(Simulator& sim, const std::vector<ReplicaID>& kept = {}) {
  for (ReplicaID id : sim.history().ever_members())
    if (!is_member(committed(sim), id) && !sim.is_stopped(id) &&
        std::find(kept.begin(), kept.end(), id) == kept.end())
      sim.stop(id);
}

// A leader, a term, and whether either changed over a window: no disruption.
struct Steady {
  bool held = true;
  std::string what;
};
Steady watch_leader(Simulator& sim, Duration window, const std::function<void()>& during = {}) {
  ReplicaID leader = elect(sim);
  Term term = sim.replica(leader).current_term();
  Steady steady;
  sim.run_until(
      [&] {
        if (during) during();
        for (ReplicaID id : sim.ids())
          if (sim.is_up(id) && sim.replica(id).current_term() > term && steady.held) {
            steady.held = false;
            steady.what = text("r", id, " reached term ", sim.replica(id).current_term(),
                               " while r", leader, " led term ", term);
          }
        return false;
      },
      window);
  REQUIRE_MESSAGE(!sim.failed(), sim.failure());
  if (steady.held && (sim.leader() != leader))
    steady = {false, text("r", leader, " no longer leads")};
  return steady;
}

// ---- The 2015 counter-examples ----

// Diego Ongaro's post to raft-dev (July 2015) on single-server changes: two changes, each
// appended by the leader of a different term, can have disjoint majorities, and a committed
// entry can be lost, unless a leader appends a change only once an entry of its own term has
// committed (raft.hpp). The post's three interleavings, with O the first leader, A, B, V the
// other voters and r5, r6 replicas added as learners first:
//   add and remove: O adds r5 as a voter ({O A B V r5}, majority O V r5); the new leader removes
//                   V ({O A B}, majority A B);
//   two adds:       O adds r5 ({O A B V r5}); the new leader adds r6 ({O A B V r6}, majority
//                   A B r6);
//   two removes:    O removes A ({O B V}, majority O V); the new leader removes V ({O A B},
//                   majority A B).
// O appends its change cut off with r5 (O's side); A or B then leads a later term with V's vote.
struct Interleaving {
  const char* name;
  int learners; // r5, r6 added as learners first
  MembershipChange first;
  char first_target; // 'A', 'V', '5' or '6'
  MembershipChange second;
  char second_target;
};
const Interleaving kInterleavings[] = {
    {"add and remove", 1, MembershipChange::AddVoter, '5', MembershipChange::Remove, 'V'},
    {"two adds", 2, MembershipChange::AddVoter, '5', MembershipChange::AddVoter, '6'},
    {"two removes", 0, MembershipChange::Remove, 'A', MembershipChange::Remove, 'V'},
};

// Sets up the interleaving up to the new leader's change; `reach_v`: whether the new leader's
// entries reach V (its no-op can commit) or not (V only votes). Returns what the cases check.
struct CounterExample {
  ReplicaID old_leader = 0, new_leader = 0, v = 0;
  std::vector<ReplicaID> old_side, new_side;
  std::uint64_t first = 0, second = 0;
  Configuration c0, c1, c2;
  Term new_term = 0;
};
CounterExample set_up(Simulator& sim, const Interleaving& interleaving, bool reach_v) {
  CounterExample run;
  run.old_leader = elect(sim);
  std::vector<ReplicaID> others = all_but(sim, {run.old_leader});
  ReplicaID a = others[0], b = others[1];
  run.v = others[2];
  std::vector<ReplicaID> learners;
  for (int i = 0; i < interleaving.learners; ++i) {
    learners.push_back(sim.add_replica());
    change_until_done(sim, MembershipChange::AddLearner, learners.back());
  }
  settle_all(sim);
  REQUIRE(sim.leader() == run.old_leader);
  auto who = [&](char target) {
    return target == 'A' ? a : target == 'V' ? run.v : target == '5' ? learners[0] : learners[1];
  };
  run.c0 = committed(sim);
  run.c1 = changed(run.c0, interleaving.first, who(interleaving.first_target));
  run.c2 = changed(run.c0, interleaving.second, who(interleaving.second_target));
  run.old_side = {run.old_leader};
  if (!learners.empty()) run.old_side.push_back(learners[0]);
  run.new_side = all_but(sim, run.old_side);

  // O appends its change, cut off with r5 only.
  sim.partition({run.old_side, run.new_side});
  run.first =
      sim.change_membership(run.old_leader, interleaving.first, who(interleaving.first_target));
  bool appended =
      sim.run_until([&] { return sim.replica(run.old_leader).configuration() == run.c1; }, 300ms);
  require_progress(sim, appended, "the old leader to append its change");

  // A or B wins a later term with V's vote; V cannot win, and (unless reach_v) does not hear
  // from the winner.
  for (ReplicaID id : {a, b}) {
    sim.network().block(run.v, id, raft::MessageType::RequestVote);
    if (!reach_v) sim.network().block(id, run.v, raft::MessageType::AppendEntries);
  }
  run.new_leader = elect_among(sim, {a, b});
  run.new_term = sim.replica(run.new_leader).current_term();
  REQUIRE(run.new_term > sim.replica(run.old_leader).current_term());
  run.second =
      sim.change_membership(run.new_leader, interleaving.second, who(interleaving.second_target));
  return run;
}

// Runs `body` on each interleaving, set up with `reach_v`, over seeds 1 to 5, on four replicas
// whose messages take up to 5 ms.
void for_each_counter_example(bool reach_v,
                              const std::function<void(Simulator&, CounterExample&)>& body) {
  Simulator::Settings settings = scenario(4);
  settings.faults.max_delay = 5ms;
  for (const Interleaving& interleaving : kInterleavings) {
    std::string interleaving_name = interleaving.name;
    CAPTURE(interleaving_name);
    for_each_seed(5, settings, [&](Simulator& sim) {
      CounterExample run = set_up(sim, interleaving, reach_v);
      body(sim, run);
    });
  }
}

// Heals the network, then cuts O's side and V, the voters of c1, off from the others; returns
// them.
std::vector<ReplicaID> isolate_voters_of_c1(Simulator& sim, const CounterExample& run) {
  std::vector<ReplicaID> voters_of_c1 = run.old_side;
  voters_of_c1.push_back(run.v);
  sim.heal();
  sim.partition({voters_of_c1, all_but(sim, voters_of_c1)});
  return voters_of_c1;
}

} // namespace

TEST_SUITE("simulator") {

  // ---- Growing and shrinking under faults ----

  // Two new replicas join as voters (each a learner first, promoted once caught up) while a
  // client proposes every 5 ms, 5% of messages are lost and 2% duplicated, a follower crashes and
  // returns, a joining replica crashes and returns, the leader is cut off in a minority and later
  // crashes: each request turned away is asked again of whoever leads. Then all five are voters,
  // agree on it, hold the whole committed sequence, and commit with two of the first three down.
  TEST_CASE("simulator: membership: a cluster grows from 3 to 5 voters under load with crashes "
            "partitions and message loss") {
    for_each_seed(lossy(3), [&](Simulator& sim) {
      elect(sim);
      Load load(sim, 5ms);
      ReplicaID four = sim.add_replica(), five = sim.add_replica();
      Script faults = crashes_and_partitions(sim);
      faults.at(300ms, [&] { sim.crash(five); }).at(400ms, [&] { sim.restart(five); });
      auto during = [&] { return load() || faults(); };
      change_until_done(sim, MembershipChange::AddVoter, four, during);
      change_until_done(sim, MembershipChange::AddVoter, five, during);
      sim.run_until(during, 700ms); // to the script's end
      faults.repair();
      settle_all(sim);
      check_end(sim, Configuration{{1, 2, 3, four, five}, {}});
      commits_without(sim, {1, 2}); // three of five: the new voters count
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
    });
  }

  // Two of five voters are removed under the same load and faults. The first removed stops for
  // good; the second keeps running, and over twenty election timeouts after the faults it does not
  // disrupt the three: their leader and term stay. They commit with one of them down.
  TEST_CASE("simulator: membership: a cluster shrinks from 5 to 3 voters under load with crashes "
            "partitions and message loss") {
    for_each_seed(lossy(5), [&](Simulator& sim) {
      elect(sim);
      Load load(sim, 5ms);
      Script faults = crashes_and_partitions(sim);
      auto during = [&] {
        stop_removed(sim, {5});
        return load() || faults();
      };
      change_until_done(sim, MembershipChange::Remove, 4, during);
      change_until_done(sim, MembershipChange::Remove, 5, during);
      sim.run_until(during, 700ms);
      faults.repair();
      settle_all(sim);
      check_end(sim, Configuration{{1, 2, 3}, {}});
      CHECK(sim.is_stopped(4));
      REQUIRE(sim.is_up(5));
      Steady steady = watch_leader(sim, 20 * kMaxElection, [&] { load(); });
      CHECK_MESSAGE(steady.held, steady.what);
      commits_without(sim, {follower_among(sim, {1, 2, 3}).value()});
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
    });
  }

  // ---- Removing the leader, replacing a replica ----

  // raft.hpp: a leader removed from the configuration leads until that entry commits, without
  // counting itself, then steps down. It reports the change Committed and Applied; the others
  // elect a leader among themselves and go on committing; the old leader, which keeps running and
  // knows it was removed, never campaigns (Host's check) nor leads again, and the term stays.
  TEST_CASE("simulator: membership: a removed leader leads until its removal commits then steps "
            "down and the others go on") {
    for_each_seed(scenario(5), [&](Simulator& sim) {
      ReplicaID leader = elect(sim);
      Load load(sim, 3ms);
      sim.run_until(load, 50ms);
      Term term = sim.replica(leader).current_term();
      std::uint64_t change = sim.change_membership(leader, MembershipChange::Remove, leader);
      std::string broke;
      bool removed = sim.run_until(
          [&] {
            load();
            bool gone = !is_member(committed(sim), leader);
            bool leads =
                sim.replica(leader).is_leader() && sim.replica(leader).current_term() == term;
            if (broke.empty() && !gone && !leads)
              broke = text("r", leader, " stopped leading before its removal committed");
            if (broke.empty() && gone && leads)
              broke = text("r", leader, " still leads in the poll that committed its removal");
            return gone;
          },
          1s);
      require_progress(sim, removed, "the removal to commit");
      CHECK_MESSAGE(broke.empty(), broke);
      CHECK(sim.machine(leader).state_of(change) == TransitionState::Applied);
      CHECK(sim.replica(leader).configuration() == committed(sim));
      settle_all(sim);
      ReplicaID next = *sim.leader();
      CHECK(next != leader);
      CHECK(sim.replica(next).current_term() > term);
      Steady steady = watch_leader(sim, 20 * kMaxElection, [&] { load(); });
      CHECK_MESSAGE(steady.held, steady.what);
      CHECK(sim.history().leaders().rbegin()->second != leader);
      settle_all(sim);
      std::vector<ReplicaID> others = all_but(sim, {leader});
      check_end(sim, Configuration{others, {}});
    });
  }

  // A replica fails for good and a new one takes its place, in either order: added as a voter
  // first (four voters, three of them up) or the failed one removed first (two voters, both
  // needed). Under load and 5% loss. The new voter then counts: with the other old follower down,
  // the leader and it commit.
  TEST_CASE("simulator: membership: a failed replica is replaced by a new one") {
    Simulator::Settings settings = scenario(3);
    settings.faults.loss = 0.05;
    for (bool add_first : {true, false}) {
      CAPTURE(add_first);
      for_each_seed(settings, [&](Simulator& sim) {
        ReplicaID leader = elect(sim);
        Load load(sim, 5ms);
        ReplicaID failed = all_but(sim, {leader}).front();
        ReplicaID other = all_but(sim, {leader, failed}).front();
        sim.stop(failed);
        ReplicaID fresh = sim.add_replica();
        auto during = [&] { load(); };
        if (add_first) change_until_done(sim, MembershipChange::AddVoter, fresh, during);
        change_until_done(sim, MembershipChange::Remove, failed, during);
        if (!add_first) change_until_done(sim, MembershipChange::AddVoter, fresh, during);
        settle_all(sim);
        std::vector<ReplicaID> voters{leader, other, fresh};
        std::sort(voters.begin(), voters.end());
        check_end(sim, Configuration{voters, {}});
        commits_without(sim, {other});
        REQUIRE_MESSAGE(!sim.failed(), sim.failure());
      });
    }
  }

  // ---- Learners ----

  // A learner that is down, or cut off, stops nothing: the voters commit without it, even with
  // one of them down too; it catches up when it returns. It never counts: with two of three
  // voters down, the leader and the learner commit nothing.
  TEST_CASE("simulator: membership: a learner that is down does not stop commits and never "
            "counts toward one") {
    for_each_seed(scenario(3), [&](Simulator& sim) {
      ReplicaID leader = elect(sim);
      ReplicaID learner = sim.add_replica();
      change_until_done(sim, MembershipChange::AddLearner, learner);
      settle_all(sim);
      commits_without(sim, {learner});
      commits_without(sim, {learner, all_but(sim, {*sim.leader(), learner}).front()});
      sim.partition({{learner}, all_but(sim, {learner})});
      commits_without(sim, {});
      sim.heal();
      settle_all(sim);
      leader = *sim.leader();
      std::vector<ReplicaID> voters = all_but(sim, {leader, learner});
      for (ReplicaID id : voters) sim.crash(id);
      std::uint64_t stranded = sim.propose(leader);
      require_progress(sim, sim.run_for(3 * kMaxElection), "time to pass");
      CHECK_FALSE(sim.history().is_committed(stranded));
      for (ReplicaID id : voters) sim.restart(id);
      settle_all(sim);
      check_end(sim, Configuration{{1, 2, 3}, {learner}});
    });
  }

  // ---- Restarts and snapshots ----

  // raft.hpp: after the first, the configuration comes from the log and the snapshot, across
  // restarts and snapshot installs alike. With snapshots every 5 entries (chunks of 32 bytes): a
  // learner and a voter join, a first voter leaves; every replica crashes at once and restarts
  // with the configuration it had, and the new voters elect a leader. A voter down while a change
  // commits and the log is compacted past it gets the configuration in a snapshot; so does a
  // replica that joins after that.
  TEST_CASE("simulator: membership: the configuration survives a restart of every replica and "
            "reaches a replica by snapshot install") {
    Simulator::Settings settings = scenario(3);
    settings.snapshot_delta = 5;
    settings.snapshot_chunk_bytes = 32;
    for_each_seed(settings, [&](Simulator& sim) {
      ReplicaID leader = elect(sim);
      ReplicaID learner = sim.add_replica(), voter = sim.add_replica();
      ReplicaID gone = all_but(sim, {leader, learner, voter}).front();
      change_until_done(sim, MembershipChange::AddLearner, learner);
      change_until_done(sim, MembershipChange::AddVoter, voter);
      change_until_done(sim, MembershipChange::Remove, gone);
      sim.stop(gone);
      settle(sim, propose(sim, elect(sim), 12));
      Configuration before = committed(sim);
      std::map<ReplicaID, Configuration> held;
      for (ReplicaID id : sim.members()) held[id] = sim.replica(id).configuration();
      for (ReplicaID id : sim.members()) sim.crash(id);
      for (ReplicaID id : sim.members()) {
        sim.restart(id);
        CHECK_MESSAGE(sim.replica(id).configuration() == held[id],
                      text("r", id, " restarted with ", show(sim.replica(id).configuration()),
                           ", not ", show(held[id])));
      }
      ReplicaID next = elect(sim);
      CHECK(role_in(before, next) == Role::Voter);
      settle_all(sim);

      ReplicaID behind = all_but(sim, {*sim.leader(), learner, gone}).front();
      sim.crash(behind);
      ReplicaID late = sim.add_replica();
      change_until_done(sim, MembershipChange::AddLearner, late);
      Index change_index = sim.history().committed_configuration_index();
      // A leader keeps its log for a snapshot transfer that moved within an election timeout:
      // once `late` has its snapshot, two compactions go past the change.
      bool late_caught_up = sim.run_until(
          [&] { return sim.machine(late).position() == sim.history().committed().size(); }, 2s);
      require_progress(sim, late_caught_up, "the new learner to catch up");
      for (int round = 0; round < 2; ++round) {
        std::vector<std::uint64_t> more = propose(sim, elect(sim), 10);
        require_progress(sim, sim.run_until([&] { return all_committed(sim, more); }, 2s),
                         "more entries to commit");
        require_progress(sim, sim.run_for(2 * kMaxElection), "time to pass");
      }
      sim.restart(behind);
      settle_all(sim);
      ReplicaID joiner = sim.add_replica();
      change_until_done(sim, MembershipChange::AddVoter, joiner);
      settle_all(sim);
      for (ReplicaID id : {behind, joiner}) {
        CAPTURE(id);
        CHECK(sim.machine(id).snapshot_set_through() >= change_index);
        CHECK(sim.replica(id).configuration() == committed(sim));
      }
      check_end(sim, committed(sim));
    });
  }

  // ---- Two bugs these scenarios found, each failing on the code before its fix ----

  // raft.hpp: learners never vote and never count toward a commit, whoever leads. Two learners
  // join under a first leader; a transfer makes a follower F the leader of a new term; F is then
  // cut off with the two learners. F alone is one voter of three: what it proposes must not
  // commit, and the two other voters elect a leader and commit at the same indexes.
  //
  // It failed before the fix: Replica::become_leader reset every peer to Peer{id, next}, whose
  // `voter` defaulted to true, so a replica that became leader while there were learners counted
  // them as voters
  // until its configuration next changes. F commits what it proposes with its own copy and the
  // learners' (3 of the 5 "voters"), and stays leader (check-quorum counts them too); the other
  // two elect a leader that counts the learners as well and can commit nothing. The same flags
  // make a replica that led once send RequestVotes to learners and count their (pre-)votes. In
  // the random runs this lost committed entries (SIM_SEED=516: a leader elected while two
  // learners existed committed entries with their copies while the other voters lacked them,
  // and a voter without them then won a later term, which History's Leader Completeness check
  // caught) and stalled a cluster for good (SIM_SEED=161: a former leader, as pre-candidate,
  // waits for a majority that counts learners, which never answer in its term).
  TEST_CASE("simulator: membership: learners never count toward a commit also under a leader "
            "elected after they joined") {
    for_each_seed(scenario(3), [&](Simulator& sim) {
      ReplicaID first = elect(sim);
      std::vector<ReplicaID> learners{sim.add_replica(), sim.add_replica()};
      for (ReplicaID learner : learners)
        change_until_done(sim, MembershipChange::AddLearner, learner);
      settle_all(sim);
      ReplicaID next = all_but(sim, {first, learners[0], learners[1]}).front();
      sim.transfer_leadership(first, next);
      require_progress(sim, sim.run_until([&] { return sim.leader() == next; }, 1s),
                       "the transfer");
      settle_all(sim);
      std::vector<ReplicaID> cut_off{next, learners[0], learners[1]};
      sim.partition({cut_off, all_but(sim, cut_off)});
      std::uint64_t stranded = sim.propose(next);
      require_progress(sim, sim.run_for(50ms), "time to pass");
      CHECK_FALSE(sim.history().is_committed(stranded));
      std::uint64_t other = sim.propose(elect_among(sim, all_but(sim, cut_off)));
      require_progress(sim, sim.run_until([&] { return sim.history().is_committed(other); }, 1s),
                       "the two other voters to commit");
      sim.heal();
      settle_all(sim);
      check_end(sim, Configuration{{1, 2, 3}, learners});
    });
  }

  // Two voters; the leader L removes itself while cut off from the other, O: the removal is in
  // L's log only, uncommitted. L steps down (check-quorum). Once the network heals, the cluster
  // must elect a leader again and commit: L, whose log is the longer, can win with O's vote and
  // commit its removal (then O leads alone), or O can, with L's.
  //
  // It stalled for good when a replica campaigned only if its latest configuration made it a
  // voter, as L's latest ({O}, uncommitted) does not; O needs L's vote, which L refuses as O's
  // log is behind. Nothing changed either log again. Now a replica also campaigns while the
  // entry of a latest configuration that removed it is not committed on it. The random runs hit it
  // with a leader that appended its own removal and crashed or stepped down before it committed
  // (SIM_SEED=247 and 898), and (SIM_SEED=647) through a voter whose uncommitted latest
  // configuration removes it and whose term is behind: it never campaigns, so never learns the
  // newer term, and a pre-candidate does not count the pre-vote it grants in its older term.
  TEST_CASE("simulator: membership: a leader that removed itself and lost leadership before the "
            "removal committed does not stall the cluster") {
    for_each_seed(scenario(2), [&](Simulator& sim) {
      ReplicaID leader = elect(sim);
      ReplicaID other = all_but(sim, {leader}).front();
      settle(sim, propose(sim, leader, 3));
      sim.partition({{leader}, {other}});
      sim.change_membership(leader, MembershipChange::Remove, leader);
      bool stepped_down = sim.run_until([&] { return !sim.replica(leader).is_leader(); }, 1s);
      require_progress(sim, stepped_down, "the cut-off leader to step down");
      sim.heal();
      std::uint64_t marker = 0;
      bool committed_again = sim.run_until(
          [&] {
            if (std::optional<ReplicaID> now = sim.leader(); now && !marker)
              marker = sim.propose(*now);
            return marker && sim.history().is_committed(marker);
          },
          30 * kMaxElection);
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
      CHECK_MESSAGE(committed_again, sim.describe());
    });
  }

  // ---- Refusals ----

  // raft.hpp: Abandoned/Refused when a change cannot be made (another change not yet committed,
  // the role already held, Remove of a non-member, no voter left, AddLearner of a voter: no
  // demotion, AddVoter of a learner that does not catch up), Abandoned/NotLeader off the leader
  // and during a leader transfer. None changes the configuration.
  TEST_CASE("simulator: membership: changes that cannot be made are refused and change nothing") {
    for_each_seed(scenario(3), [&](Simulator& sim) {
      ReplicaID leader = elect(sim);
      std::vector<ReplicaID> followers = all_but(sim, {leader});
      ReplicaID four = sim.add_replica(), five = sim.add_replica();
      auto outcome = [&](ReplicaID at, std::uint64_t id) {
        return std::make_pair(sim.machine(at).state_of(id), sim.machine(at).abandon_reason(id));
      };
      const auto refused =
          std::make_pair(std::optional(TransitionState::Abandoned), AbandonReason::Refused);
      const auto not_leader =
          std::make_pair(std::optional(TransitionState::Abandoned), AbandonReason::NotLeader);

      // One at a time: the second and third, in the same poll as the first, are refused.
      std::uint64_t first = sim.change_membership(leader, MembershipChange::AddLearner, four);
      std::uint64_t second = sim.change_membership(leader, MembershipChange::AddLearner, five);
      std::uint64_t third = sim.change_membership(leader, MembershipChange::Remove, followers[0]);
      require_progress(sim, sim.run_for(1ms), "one poll");
      CHECK(sim.machine(leader).state_of(first) == TransitionState::Queued);
      CHECK(outcome(leader, second) == refused);
      CHECK(outcome(leader, third) == refused);
      settle_all(sim);
      REQUIRE(sim.machine(leader).state_of(first) == TransitionState::Applied);
      Configuration with_learner{{1, 2, 3}, {four}};
      REQUIRE(committed(sim) == with_learner);

      // The role already held, no member, no demotion; a follower; a transfer under way.
      std::vector<std::pair<std::uint64_t, ReplicaID>> asked{
          {sim.change_membership(leader, MembershipChange::AddVoter, followers[0]), leader},
          {sim.change_membership(leader, MembershipChange::AddLearner, followers[1]), leader},
          {sim.change_membership(leader, MembershipChange::AddLearner, four), leader},
          {sim.change_membership(leader, MembershipChange::Remove, five), leader},
          {sim.change_membership(followers[0], MembershipChange::Remove, five), followers[0]}};
      require_progress(sim, sim.run_for(1ms), "one poll");
      for (std::size_t i = 0; i < asked.size(); ++i) {
        CAPTURE(i);
        CHECK(outcome(asked[i].second, asked[i].first) == (i < 4 ? refused : not_leader));
      }
      sim.transfer_leadership(leader, followers[1]);
      std::uint64_t during = sim.change_membership(leader, MembershipChange::Remove, four);
      require_progress(sim, sim.run_for(1ms), "one poll");
      CHECK(outcome(leader, during) == not_leader);
      settle_all(sim);

      // AddVoter of a learner that is down: Queued, then refused once its catch-up rounds run
      // out; it stays a learner.
      sim.crash(four);
      leader = *sim.leader();
      std::uint64_t promote = sim.change_membership(leader, MembershipChange::AddVoter, four);
      bool given_up = sim.run_until(
          [&] { return sim.machine(leader).state_of(promote) == TransitionState::Abandoned; },
          12 * kMaxElection);
      require_progress(sim, given_up, "the promotion to be given up");
      CHECK(outcome(leader, promote) == refused);
      sim.restart(four);
      settle_all(sim);
      CHECK(committed(sim) == with_learner);

      // The last voter.
      for (ReplicaID id : all_but(sim, {leader, four, five}))
        change_until_done(sim, MembershipChange::Remove, id);
      stop_removed(sim);
      std::uint64_t last = sim.change_membership(leader, MembershipChange::Remove, leader);
      require_progress(sim, sim.run_for(1ms), "one poll");
      CHECK(outcome(leader, last) == refused);
      settle_all(sim);
      check_end(sim, Configuration{{leader}, {four}});
    });
  }

  // ---- Removed replicas ----

  // raft.hpp (§4.2.3): a removed replica that keeps running must not disrupt the cluster. A
  // removed follower never learns of its removal (its leader stops sending to it on appending the
  // change), so after an election timeout it asks for pre-votes; whoever hears a leader refuses.
  // Whether it was running along or cut off when removed, over twenty election timeouts after
  // the removal the leader and its term stay, commits go on, and its own term rises no higher.
  TEST_CASE("simulator: membership: a removed replica that keeps running does not disrupt the "
            "cluster") {
    for (bool cut_off : {false, true}) {
      CAPTURE(cut_off);
      for_each_seed(scenario(5), [&](Simulator& sim) {
        ReplicaID leader = elect(sim);
        Load load(sim, 5ms);
        ReplicaID removed = all_but(sim, {leader}).front();
        if (cut_off) sim.partition({{removed}, all_but(sim, {removed})});
        change_until_done(sim, MembershipChange::Remove, removed, [&] { load(); });
        sim.heal();
        Steady steady = watch_leader(sim, 20 * kMaxElection, [&] { load(); });
        CHECK_MESSAGE(steady.held, steady.what);
        CHECK(sim.replica(removed).current_term() <= sim.replica(*sim.leader()).current_term());
        CHECK(sim.replica(removed).configuration() == Configuration{{1, 2, 3, 4, 5}, {}});
        settle_all(sim);
        check_end(sim, Configuration{all_but(sim, {removed}), {}});
      });
    }
  }

  // ---- The 2015 counter-examples (see Interleaving) ----

  // V never gets the new leader's no-op, so it does not commit, and the new leader's change waits,
  // Queued, not in its log. O's side and V then elect a leader of a later term with a majority of
  // O's configuration, as in the post; the new leader's change is abandoned (NotLeader), never
  // committed, and O's change commits. Had the new leader appended its change at once and
  // committed it with A and B, that later leader would have overwritten a committed entry: with
  // the rule taken out of Replica::advance_change, this case fails on Simulator's check of the
  // rule, and with that check off too, on History's (two entries applied at one index).
  TEST_CASE("simulator: membership: the 2015 counter-examples: a change waits Queued until an "
            "entry of its leader's term commits so disjoint majorities never form") {
    for_each_counter_example(false, [&](Simulator& sim, CounterExample& run) {
      require_progress(sim, sim.run_for(50ms), "a few heartbeats");
      const raft::Replica& new_leader = sim.replica(run.new_leader);
      CHECK(sim.machine(run.new_leader).state_of(run.second) == TransitionState::Queued);
      CHECK(new_leader.configuration() == run.c0);                    // not appended
      CHECK(new_leader.commit_index() < new_leader.last_log_index()); // its no-op waits
      CHECK_FALSE(sim.history().is_committed(run.second));

      std::vector<ReplicaID> voters_of_c1 = isolate_voters_of_c1(sim, run);
      ReplicaID later = elect_among(sim, voters_of_c1);
      CHECK(sim.replica(later).current_term() > run.new_term);
      bool abandoned = sim.run_until(
          [&] {
            return sim.machine(run.new_leader).state_of(run.second) == TransitionState::Abandoned;
          },
          3 * kMaxElection);
      require_progress(sim, abandoned, "the new leader's change to be abandoned");
      CHECK(sim.machine(run.new_leader).abandon_reason(run.second) == AbandonReason::NotLeader);
      sim.heal();
      settle_all(sim);
      CHECK_FALSE(sim.history().is_committed(run.second));
      CHECK(sim.machine(run.old_leader).state_of(run.first) == TransitionState::Applied);
      stop_removed(sim);
      check_end(sim, run.c1);
    });
  }

  // The other branch: the new leader's no-op reaches V and commits, then its change commits
  // with a majority of its configuration. V, holding an entry of the new term, refuses its vote to
  // O's side, so O's side elects nobody in ten election timeouts, and once the network heals the
  // new leader still leads, in its term (V, removed in two of the three, does not disrupt it).
  // O's change, overwritten, is reported ConflictWithLeader on O and never commits.
  TEST_CASE("simulator: membership: the 2015 counter-examples: once an entry of the new leader's "
            "term commits its change commits and the old leader can no longer win") {
    for_each_counter_example(true, [&](Simulator& sim, CounterExample& run) {
      bool committed_second =
          sim.run_until([&] { return sim.history().is_committed(run.second); }, 1s);
      require_progress(sim, committed_second, "the new leader's change to commit");

      std::vector<ReplicaID> voters_of_c1 = isolate_voters_of_c1(sim, run);
      std::string won;
      sim.run_until(
          [&] {
            for (ReplicaID id : voters_of_c1)
              if (won.empty() && sim.replica(id).is_leader() &&
                  sim.replica(id).current_term() > run.new_term)
                won = text("r", id, " leads term ", sim.replica(id).current_term());
            return false;
          },
          10 * kMaxElection);
      REQUIRE_MESSAGE(!sim.failed(), sim.failure());
      CHECK_MESSAGE(won.empty(), won);
      sim.heal();
      require_progress(sim, sim.run_for(10 * kMaxElection), "time to pass");
      CHECK(sim.leader() == run.new_leader);
      CHECK(sim.replica(run.new_leader).current_term() == run.new_term);
      settle_all(sim);
      CHECK(sim.machine(run.old_leader).abandon_reason(run.first) ==
            AbandonReason::ConflictWithLeader);
      CHECK_FALSE(sim.history().is_committed(run.first));
      stop_removed(sim);
      check_end(sim, run.c2);
    });
  }

} // TEST_SUITE
