// §7 Log compaction: snapshots every snapshot_delta entries, InstallSnapshot in chunks, restart
// from snapshot plus log, and a log that stays bounded.
#include "cluster.hpp"
#include "harness.hpp"
#include "raft.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

namespace {

using namespace std::chrono_literals;
using raft::Index;
using raft::Message;
using raft::MessageType;
using raft::ReplicaID;
using raft::Snapshot;

const raft::Transition noop{0, ""};

// The replicated state is small: how many transitions were applied and a hash of their ids in
// order, so two replicas agree exactly when they applied the same sequence. `padding` makes its
// snapshots as large as a test wants.
struct Machine : raft::StateMachine {
  std::uint64_t count = 0, hash = 0;
  std::string padding;
  std::vector<raft::Transition> pending;
  std::vector<Index> created, installed; // last_included_index of create_snapshot / set_snapshot
  std::optional<Snapshot> initial;       // what get_snapshot returns

  void apply_transition(const raft::Transition& t) override {
    if (t == noop) return;
    ++count;
    hash = hash * 1000003 + t.id;
  }
  std::vector<raft::Transition> get_pending_transitions() override { return std::move(pending); }
  void register_transition_state(std::uint64_t, raft::TransitionState,
                                 raft::AbandonReason) override {}
  std::optional<Snapshot> get_snapshot() override { return initial; }
  Snapshot create_snapshot(Index index, raft::Term term) override {
    created.push_back(index);
    return Snapshot{
        index, term, {}, std::to_string(count) + " " + std::to_string(hash) + " " + padding};
  }
  void set_snapshot(const Snapshot& snapshot) override {
    installed.push_back(snapshot.last_included_index);
    std::size_t space = snapshot.data.find(' '), second = snapshot.data.find(' ', space + 1);
    count = std::stoull(snapshot.data.substr(0, space));
    hash = std::stoull(snapshot.data.substr(space + 1, second - space - 1));
    padding = snapshot.data.substr(second + 1);
  }
};

// The shared simulated cluster (tests/cluster.hpp) in lockstep: every running replica is polled
// once a round, the clock moves 1 ms a round, and a message arrives `delay` after it was sent (the
// next round, by default). Every poll is checked for safety.
struct Record {
  Index snapshot_index = 0; // of the latest snapshot created or installed, over all lifetimes
  Index commit_index = 0;   // as of the last poll in this lifetime
};

class Sim : public sim::Cluster<Machine, raft::MemoryStorage, sim::Endpoint, Record> {
public:
  Sim(std::size_t replicas, Index snapshot_delta, std::size_t chunk_bytes = 1 << 20)
      : Cluster(1, {}, options(snapshot_delta, chunk_bytes), noop) {
    set_delay(1ms);
    start(replicas);
  }

  void round() { Cluster::round(1ms); }
  void set_delay(raft::Duration delay) { network().faults = {delay, delay, 0, 0}; }
  Index snapshot_index(ReplicaID id) const { return slot(id).snapshot_index; }

  // A crash and a restart over the surviving storage: the state machine starts afresh.
  void reboot(ReplicaID id) {
    crash(id);
    restart(id);
  }

  ReplicaID elect() {
    for (int i = 0; i < 1000 && !leader(); ++i) round();
    REQUIRE(leader());
    return *leader();
  }

  // Proposes `count` transitions to the leader, `per_round` at a time, and runs until every
  // running replica has applied them all.
  void commit(std::uint64_t count, std::uint64_t per_round = 100,
              std::function<void()> after_round = {}) {
    std::uint64_t first = next_id;
    next_id += count;
    for (std::uint64_t id = first; id < next_id || !converged(); round()) {
      if (std::optional<ReplicaID> l = leader())
        for (std::uint64_t n = 0; n < per_round && id < next_id; ++n, ++id)
          machine(*l).pending.push_back({id, std::string(16, 'x')});
      if (after_round) after_round();
      REQUIRE(now() - kStart < 10000s);
    }
  }

  bool converged() const {
    std::optional<ReplicaID> l = leader();
    if (!l || machine(*l).count + 1 < next_id) return false;
    for (ReplicaID id : ids())
      if (is_up(id) &&
          (machine(id).count != machine(*l).count || machine(id).hash != machine(*l).hash))
        return false;
    return true;
  }

  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::uint64_t> states; // transitions applied -> hash of them
  std::map<raft::Term, ReplicaID> leaders;       // term -> its leader

private:
  static raft::Options options(Index snapshot_delta, std::size_t chunk_bytes) {
    raft::Options options;
    options.snapshot_delta = snapshot_delta;
    options.snapshot_chunk_bytes = chunk_bytes;
    return options;
  }
  raft::Options options_for(Slot& slot) override {
    raft::Options options = Cluster::options_for(slot);
    options.seed = slot.id;
    return options;
  }
  void built(Slot& slot) override { slot.commit_index = 0; }

  // Every replica's state after its first n transitions is the same (the hash of the sequence),
  // at most one leader per term, and a commit index never moves back within one lifetime.
  void after_poll(Slot& slot) override {
    const Machine& m = *slot.machine;
    if (!m.created.empty()) slot.snapshot_index = std::max(slot.snapshot_index, m.created.back());
    if (!m.installed.empty())
      slot.snapshot_index = std::max(slot.snapshot_index, m.installed.back());
    auto [state, fresh] = states.emplace(m.count, m.hash);
    REQUIRE_MESSAGE(state->second == m.hash,
                    "replicas disagree after " << state->first << " transitions");
    if (slot.replica->is_leader()) {
      auto [leader, first] = leaders.emplace(slot.replica->current_term(), slot.id);
      REQUIRE_MESSAGE(leader->second == slot.id, "two leaders in term " << leader->first);
    }
    REQUIRE(slot.replica->commit_index() >= slot.commit_index);
    slot.commit_index = slot.replica->commit_index();
  }
};

Machine& leader_machine(Sim& cluster) {
  std::optional<ReplicaID> leader = cluster.leader();
  REQUIRE(leader);
  return cluster.machine(*leader);
}

// Pads every state machine's snapshots with `padding` bytes, elects a leader, and pauses a
// follower while `count` transitions are committed (`per_round` at a time), then resumes it.
// Returns the follower, now behind the leader's snapshot.
ReplicaID lagging_follower(Sim& cluster, std::size_t padding, std::uint64_t count,
                           std::uint64_t per_round = 100) {
  for (ReplicaID id : cluster.ids()) cluster.machine(id).padding = std::string(padding, 'p');
  ReplicaID follower = cluster.elect() == 1 ? 2 : 1;
  cluster.pause(follower);
  cluster.commit(count, per_round);
  cluster.resume(follower);
  return follower;
}

} // namespace

TEST_SUITE("§7 Log compaction") {
  TEST_CASE("a replica snapshots every snapshot_delta applied entries and drops the log before") {
    Sim cluster(3, 100);
    cluster.elect();
    cluster.commit(1000);
    for (ReplicaID id : cluster.ids()) {
      const std::vector<Index>& created = cluster.machine(id).created;
      REQUIRE(created.size() >= 9);
      for (std::size_t i = 1; i < created.size(); ++i) CHECK(created[i] - created[i - 1] >= 100);
      raft::Storage::State state = cluster.storage(id).load();
      REQUIRE(state.snapshot);
      CHECK(state.snapshot->configuration == raft::Configuration{{1, 2, 3}, {}});
      CHECK(state.entries.size() <= 200);
    }
  }

  TEST_CASE("a follower that was down for 10,000 entries catches up by InstallSnapshot") {
    Sim cluster(3, 1000);
    ReplicaID follower = lagging_follower(cluster, 0, 10000);
    cluster.commit(10);
    CHECK(cluster.machine(follower).installed.size() == 1);
    CHECK(cluster.machine(follower).count == 10010);
  }

  TEST_CASE("a new empty replica catches up by InstallSnapshot") {
    Sim cluster(3, 500);
    cluster.crash(3); // never polled: it has an empty storage and has acknowledged nothing
    cluster.elect();
    cluster.commit(3000);
    cluster.restart(3);
    cluster.commit(10);
    CHECK(cluster.machine(3).installed.size() == 1);
    CHECK(cluster.machine(3).count == 3010);
  }

  TEST_CASE("snapshots travel in chunks of at most snapshot_chunk_bytes, resumed after loss") {
    Sim cluster(3, 200, 1000);
    ReplicaID follower = lagging_follower(cluster, 50000, 1000);
    std::mt19937_64 random(5);
    std::size_t chunks = 0, largest = 0;
    std::set<std::uint64_t> offsets;
    cluster.network().drop = [&](const Message& m) {
      if (m.type != MessageType::InstallSnapshot) return false;
      ++chunks;
      largest = std::max(largest, m.data.size());
      offsets.insert(m.offset);
      return random() % 3 == 0; // a third of the chunks are lost
    };
    cluster.commit(10);
    CHECK(largest <= 1000);
    CHECK(offsets.size() >= 50);    // 50,000 bytes of padding in chunks of 1,000
    CHECK(chunks > offsets.size()); // some were sent again
    CHECK(cluster.machine(follower).installed.size() == 1);
    CHECK(cluster.machine(follower).padding.size() == 50000);
  }

  TEST_CASE("a lagging follower catches up under steady load while the leader keeps compacting") {
    // A transfer of 50 chunks takes about 100 rounds; the leader snapshots every 5 rounds. The
    // transfer keeps its snapshot to the end and the leader keeps the log after it.
    Sim cluster(3, 50, 1000);
    ReplicaID follower = lagging_follower(cluster, 50000, 1000, 10);
    const raft::Replica& leader = cluster.replica(*cluster.leader());
    std::size_t transfers = 0;
    cluster.network().drop = [&](const Message& m) {
      transfers += m.type == MessageType::InstallSnapshot && m.offset == 0 && !m.data.empty();
      return false;
    };
    std::uint64_t id = cluster.next_id;
    for (int round = 0; round < 1000; ++round, cluster.round())
      for (int n = 0; n < 10; ++n) leader_machine(cluster).pending.push_back({id++, "x"});
    cluster.next_id = id;
    CHECK(transfers == 1);
    CHECK(cluster.machine(follower).installed.size() == 1);
    CHECK(cluster.replica(follower).commit_index() + 100 >= leader.commit_index()); // in pipeline
    cluster.commit(10, 10);
  }

  TEST_CASE("a snapshot transfer sends each chunk once when the round trip exceeds the heartbeat") {
    // 15 ms each way and a heartbeat of 10 ms: heartbeats while a chunk is in flight carry no
    // bytes, and late answers to them do not start another chain of chunks.
    Sim cluster(3, 200, 1000);
    ReplicaID follower = lagging_follower(cluster, 50000, 1000);
    cluster.set_delay(15ms);
    std::size_t chunks = 0;
    std::set<std::uint64_t> offsets;
    cluster.network().drop = [&](const Message& m) {
      if (m.type == MessageType::InstallSnapshot && !m.data.empty())
        ++chunks, offsets.insert(m.offset);
      return false;
    };
    cluster.commit(10);
    CHECK(cluster.machine(follower).installed.size() == 1);
    CHECK(offsets.size() == 51); // 50,000 bytes of padding and the counts, in chunks of 1,000
    CHECK(chunks == offsets.size());
  }

  TEST_CASE("a transfer without progress for an election timeout starts over from the latest") {
    // Paused from the start, replica 3 never answers the new leader's probe, so the leader starts
    // a transfer to it, and goes on compacting while it hears nothing: past that transfer's
    // snapshot, since it makes no progress. On its return the follower gets a later snapshot in
    // one transfer, not the first one (which the log no longer follows) and then another.
    Sim cluster(3, 50, 1000);
    for (ReplicaID id : cluster.ids()) cluster.machine(id).padding = std::string(50000, 'p');
    cluster.pause(3);
    cluster.elect();
    cluster.commit(3000, 10); // 300 rounds of 1 ms; the maximum election timeout is 100 ms
    cluster.resume(3);
    std::set<Index> transferred; // the snapshots whose first chunk was sent after its return
    cluster.network().drop = [&](const Message& m) {
      if (m.type == MessageType::InstallSnapshot && m.offset == 0 && !m.data.empty())
        transferred.insert(m.last_included_index);
      return false;
    };
    cluster.commit(10, 10);
    CHECK(transferred.size() == 1);
    CHECK(cluster.machine(3).installed.size() == 1);
    CHECK(*transferred.begin() > 2500);
  }

  TEST_CASE("every replica restarted in turn recovers from its snapshot and log suffix") {
    Sim cluster(3, 100);
    cluster.elect();
    cluster.commit(550);
    for (ReplicaID id : {1, 2, 3}) {
      std::uint64_t count = cluster.machine(id).count;
      cluster.reboot(id); // the state machine is lost, the storage survives
      const Machine& machine = cluster.machine(id);
      REQUIRE(machine.installed.size() == 1);
      CHECK(machine.installed[0] == cluster.storage(id).load().snapshot->last_included_index);
      CHECK(machine.count <= count);
      cluster.commit(120);
      CHECK(cluster.machine(id).installed.size() == 1); // replayed from its own log
    }
  }

  TEST_CASE("a state machine's own snapshot from get_snapshot is kept and applying resumes after") {
    raft::MemoryStorage storage;
    std::vector<raft::Entry> log;
    for (std::uint64_t i = 1; i <= 8; ++i) log.push_back({1, {i, "x"}});
    storage.save_term_and_vote(1, std::nullopt);
    storage.save_entries(1, log.data(), log.data() + log.size());
    Machine machine;
    machine.initial = Snapshot{5, 1, {{1}, {}}, "5 0 "};
    harness::Journal journal;
    harness::FakeCluster silent(1, {}, journal); // a replica alone: it sends nothing
    raft::Options options;
    options.seed = 1;
    options.storage = &storage;
    raft::Replica replica(1, {}, silent, machine, noop, 10ms, {50ms, 100ms}, options);
    CHECK(machine.installed.empty()); // get_snapshot's state is already the machine's
    CHECK(replica.last_applied() == 5);
    CHECK(replica.last_log_index() == 8);
    CHECK(storage.load().snapshot->last_included_index == 5);
    raft::Clock::time_point now{};
    for (int i = 0; i < 20 && replica.last_applied() < 9; ++i) replica.poll(now += 10ms);
    CHECK(replica.last_applied() == 9); // 6, 7, 8 and the new term's no-op
    CHECK(machine.count == 3);
  }

  TEST_CASE("a follower keeps the log after an installed snapshot only where it agrees") {
    auto install = [](Index index, raft::Term term) {
      Message m;
      m.type = MessageType::InstallSnapshot;
      m.from = 2;
      m.to = 1;
      m.term = 3;
      m.last_included_index = index;
      m.last_included_term = term;
      m.configuration = {{1, 2}, {}}; // a leader's snapshot always carries one
      m.data = "4 0 ";
      m.done = true;
      return m;
    };
    for (raft::Term term : {2, 3}) {
      CAPTURE(term);
      harness::Journal journal;
      harness::FakeCluster cluster(1, {2}, journal);
      Machine machine;
      raft::Options options;
      options.seed = 1;
      raft::Replica replica(1, {2}, cluster, machine, noop, 10ms, {50ms, 100ms}, options);
      Message append;
      append.type = MessageType::AppendEntries;
      append.from = 2;
      append.to = 1;
      append.term = 2;
      for (std::uint64_t i = 1; i <= 8; ++i) append.entries.push_back({2, {i, "x"}});
      cluster.inbox = {append, install(4, term)};
      replica.poll(raft::Clock::time_point{});
      CHECK(machine.installed == std::vector<Index>{4});
      CHECK(replica.commit_index() == 4);
      CHECK(replica.last_log_index() == (term == 2 ? 8 : 4)); // kept only if term 2 is at 4
      CHECK(cluster.sent.back().type == MessageType::InstallSnapshotResponse);
      CHECK(cluster.sent.back().done);
    }
  }

  TEST_CASE("the log stays bounded: 1,000,000 transitions with snapshot_delta 1,000") {
    Sim cluster(3, 1000);
    cluster.elect();
    Index most = 0;
    cluster.commit(1000000, 250, [&] { // a steady 250 proposals per round trip of 1 ms
      for (ReplicaID id : cluster.ids())
        most = std::max(most, cluster.replica(id).last_log_index() - cluster.snapshot_index(id));
    });
    MESSAGE("most entries held by a replica: " << most);
    CHECK(most <= 2 * 1000);
    for (ReplicaID id : cluster.ids()) CHECK(cluster.machine(id).count == 1000000);
  }

  TEST_CASE("snapshots under loss, reordering and crashes keep every replica in agreement") {
    std::size_t installs = 0, terms = 0, transitions = 0;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 random(seed);
      Sim cluster(3, 50, 64);
      for (ReplicaID id : cluster.ids()) cluster.machine(id).padding = std::string(500, 'p');
      // A tenth of the messages lost, the others 1 to 3 rounds on the way, so out of order.
      cluster.network().faults = {1ms, 3ms, 0.1, 0};
      cluster.elect();
      for (int round = 1; round <= 600; ++round) {
        if (std::optional<ReplicaID> leader = cluster.leader())
          for (int n = 0; n < 3; ++n)
            cluster.machine(*leader).pending.push_back({cluster.next_id++, std::string(16, 'x')});
        ReplicaID id = 1 + random() % 3; // now and then crash a replica, or bring it back
        bool all_up = cluster.is_up(1) && cluster.is_up(2) && cluster.is_up(3);
        if (round % 40 == 0 && !cluster.is_up(id))
          cluster.restart(id);
        else if (round % 40 == 0 && all_up)
          cluster.crash(id);
        cluster.round();
      }
      for (ReplicaID id : {1, 2, 3}) cluster.restart(id); // the faults end: everyone back
      cluster.set_delay(1ms);                             // nothing lost or delayed
      auto agree = [&] {
        std::optional<ReplicaID> leader = cluster.leader();
        if (!leader ||
            cluster.replica(*leader).commit_index() != cluster.replica(*leader).last_log_index())
          return false;
        for (ReplicaID id : cluster.ids())
          if (cluster.machine(id).hash != cluster.machine(*leader).hash) return false;
        return true;
      };
      for (int round = 0; round < 5000 && !agree(); ++round) cluster.round();
      REQUIRE(agree());
      for (ReplicaID id : cluster.ids()) installs += cluster.machine(id).installed.size();
      terms += cluster.leaders.size();
      transitions += cluster.machine(*cluster.leader()).count;
    }
    MESSAGE(installs << " snapshots installed, " << terms << " terms with a leader, " << transitions
                     << " transitions applied, over 40 seeds");
    CHECK(installs > 40); // restarts from storage and catch-ups by InstallSnapshot
  }
}
