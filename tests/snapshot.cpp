// §7 Log compaction: snapshots every snapshot_delta entries, InstallSnapshot in chunks, restart
// from snapshot plus log, and a log that stays bounded.
#include "raft.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <deque>
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

// Replicas in one process; a message sent in one round is delivered `delay` later (the next
// round, by default), unless `drop` says otherwise or either end is down.
struct Sim {
  struct Link : raft::Cluster {
    Sim* cluster;
    ReplicaID id;
    Link(Sim* cluster, ReplicaID id) : cluster(cluster), id(id) {}
    void send_message(ReplicaID to, const Message& m) override {
      if (cluster->down.count(id) || cluster->down.count(to) || (cluster->drop && cluster->drop(m)))
        return;
      cluster->in_flight.emplace(cluster->now + cluster->delay, m);
    }
    std::vector<Message> receive_messages() override { return std::exchange(inbox, {}); }
    bool halt() const override { return false; }
    void register_leader(std::optional<ReplicaID>) override {}
    std::vector<Message> inbox;
  };
  struct Node {
    std::unique_ptr<Link> link;
    std::unique_ptr<Machine> machine;
    raft::MemoryStorage storage;
    std::unique_ptr<raft::Replica> replica;
    Index snapshot_index = 0; // of the latest snapshot created or installed
  };

  std::vector<ReplicaID> ids;
  raft::Options options;
  std::map<ReplicaID, Node> nodes;
  std::set<ReplicaID> down;
  std::function<bool(const Message&)> drop;
  std::multimap<raft::Clock::time_point, Message> in_flight; // by delivery time
  raft::Duration delay = 1ms;
  raft::Clock::time_point now{};

  Sim(std::vector<ReplicaID> ids, Index snapshot_delta, std::size_t chunk_bytes = 1 << 20)
      : ids(ids) {
    options.snapshot_delta = snapshot_delta;
    options.snapshot_chunk_bytes = chunk_bytes;
    for (ReplicaID id : ids) boot(id);
  }

  // Builds (or rebuilds, after a crash) a replica over its surviving storage.
  void boot(ReplicaID id, std::optional<Snapshot> initial = std::nullopt) {
    Node& node = nodes[id];
    node.replica.reset();
    node.link = std::make_unique<Link>(this, id);
    node.machine = std::make_unique<Machine>();
    node.machine->initial = initial;
    std::vector<ReplicaID> peers;
    for (ReplicaID peer : ids)
      if (peer != id) peers.push_back(peer);
    raft::Options o = options;
    o.seed = id;
    o.storage = &node.storage;
    node.replica = std::make_unique<raft::Replica>(id, peers, *node.link, *node.machine, noop, 10ms,
                                                   std::make_pair(50ms, 100ms), o);
  }

  // One round: deliver what is due (with `faults`, a random part of it, in random order; the
  // rest waits a round more), then poll every live replica once and check safety.
  void round() {
    now += 1ms;
    std::vector<Message> arriving;
    for (auto m = in_flight.begin(); m != in_flight.end() && m->first <= now;)
      arriving.push_back(std::move(m->second)), m = in_flight.erase(m);
    if (faults) std::shuffle(arriving.begin(), arriving.end(), *faults);
    for (Message& m : arriving) {
      if (faults && (*faults)() % 4 == 0)
        in_flight.emplace(now + 1ms, std::move(m)); // delayed: reordered
      else
        nodes[m.to].link->inbox.push_back(std::move(m));
    }
    for (auto& [id, node] : nodes) {
      if (down.count(id)) continue;
      node.replica->poll(now);
      Machine& m = *node.machine;
      if (!m.created.empty()) node.snapshot_index = std::max(node.snapshot_index, m.created.back());
      if (!m.installed.empty())
        node.snapshot_index = std::max(node.snapshot_index, m.installed.back());
      check_safety(id, node);
    }
  }

  // Every replica's state after its first n transitions is the same (the hash of the sequence),
  // at most one leader per term, and a commit index never moves back within one lifetime.
  void check_safety(ReplicaID id, Node& node) {
    auto [state, fresh] = states.emplace(node.machine->count, node.machine->hash);
    REQUIRE_MESSAGE(state->second == node.machine->hash,
                    "replicas disagree after " << state->first << " transitions");
    if (node.replica->is_leader()) {
      auto [leader, first] = leaders.emplace(node.replica->current_term(), id);
      REQUIRE_MESSAGE(leader->second == id, "two leaders in term " << leader->first);
    }
    REQUIRE(node.replica->commit_index() >= commits[node.machine.get()]);
    commits[node.machine.get()] = node.replica->commit_index();
  }

  Node* leader() {
    for (auto& [id, node] : nodes)
      if (!down.count(id) && node.replica->is_leader()) return &node;
    return nullptr;
  }

  Node& elect() {
    for (int i = 0; i < 1000 && !leader(); ++i) round();
    REQUIRE(leader());
    return *leader();
  }

  // Proposes `count` transitions to the leader, `per_round` at a time, and runs until every live
  // replica has applied them all.
  void commit(std::uint64_t count, std::uint64_t per_round = 100,
              std::function<void()> after_round = {}) {
    std::uint64_t first = next_id;
    next_id += count;
    for (std::uint64_t id = first; id < next_id || !converged(); round()) {
      if (Node* l = leader())
        for (std::uint64_t n = 0; n < per_round && id < next_id; ++n, ++id)
          l->machine->pending.push_back({id, std::string(16, 'x')});
      if (after_round) after_round();
      REQUIRE(now.time_since_epoch() < 10000s);
    }
  }

  bool converged() {
    Node* l = leader();
    if (!l || l->machine->count + 1 < next_id) return false;
    for (auto& [id, node] : nodes)
      if (!down.count(id) &&
          (node.machine->count != l->machine->count || node.machine->hash != l->machine->hash))
        return false;
    return true;
  }

  std::uint64_t next_id = 1;
  std::mt19937_64* faults = nullptr;
  std::map<std::uint64_t, std::uint64_t> states; // transitions applied -> hash of them
  std::map<raft::Term, ReplicaID> leaders;       // term -> its leader
  std::map<const Machine*, Index> commits;       // a lifetime's last commit index
};

Machine& leader_machine(Sim& cluster) {
  Sim::Node* leader = cluster.leader();
  REQUIRE(leader);
  return *leader->machine;
}

} // namespace

TEST_SUITE("§7 Log compaction") {
  TEST_CASE("a replica snapshots every snapshot_delta applied entries and drops the log before") {
    Sim cluster({1, 2, 3}, 100);
    cluster.elect();
    cluster.commit(1000);
    for (auto& [id, node] : cluster.nodes) {
      REQUIRE(node.machine->created.size() >= 9);
      for (std::size_t i = 1; i < node.machine->created.size(); ++i)
        CHECK(node.machine->created[i] - node.machine->created[i - 1] >= 100);
      raft::Storage::State state = node.storage.load();
      REQUIRE(state.snapshot);
      CHECK(state.snapshot->configuration == raft::Configuration{{1, 2, 3}, {}});
      CHECK(state.entries.size() <= 200);
    }
  }

  TEST_CASE("a follower that was down for 10,000 entries catches up by InstallSnapshot") {
    Sim cluster({1, 2, 3}, 1000);
    raft::Replica& leader = *cluster.elect().replica;
    ReplicaID follower = leader.id() == 1 ? 2 : 1;
    cluster.down.insert(follower);
    cluster.commit(10000);
    cluster.down.erase(follower);
    cluster.commit(10);
    Sim::Node& node = cluster.nodes[follower];
    CHECK(node.machine->installed.size() == 1);
    CHECK(node.machine->count == 10010);
  }

  TEST_CASE("a new empty replica catches up by InstallSnapshot") {
    Sim cluster({1, 2, 3}, 500);
    cluster.down.insert(3); // never started: it has an empty storage and has acknowledged nothing
    cluster.elect();
    cluster.commit(3000);
    cluster.down.erase(3);
    cluster.boot(3);
    cluster.commit(10);
    CHECK(cluster.nodes[3].machine->installed.size() == 1);
    CHECK(cluster.nodes[3].machine->count == 3010);
  }

  TEST_CASE("snapshots travel in chunks of at most snapshot_chunk_bytes, resumed after loss") {
    Sim cluster({1, 2, 3}, 200, 1000);
    for (auto& [id, node] : cluster.nodes) node.machine->padding = std::string(50000, 'p');
    cluster.elect();
    ReplicaID follower = cluster.leader()->replica->id() == 1 ? 2 : 1;
    cluster.down.insert(follower);
    cluster.commit(1000);
    cluster.down.erase(follower);
    std::mt19937_64 random(5);
    std::size_t chunks = 0, largest = 0;
    std::set<std::uint64_t> offsets;
    cluster.drop = [&](const Message& m) {
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
    CHECK(cluster.nodes[follower].machine->installed.size() == 1);
    CHECK(cluster.nodes[follower].machine->padding.size() == 50000);
  }

  TEST_CASE("a lagging follower catches up under steady load while the leader keeps compacting") {
    // A transfer of 50 chunks takes about 100 rounds; the leader snapshots every 5 rounds. The
    // transfer keeps its snapshot to the end and the leader keeps the log after it.
    Sim cluster({1, 2, 3}, 50, 1000);
    for (auto& [id, node] : cluster.nodes) node.machine->padding = std::string(50000, 'p');
    raft::Replica& leader = *cluster.elect().replica;
    ReplicaID follower = leader.id() == 1 ? 2 : 1;
    cluster.down.insert(follower);
    cluster.commit(1000, 10);
    cluster.down.erase(follower);
    std::size_t transfers = 0;
    cluster.drop = [&](const Message& m) {
      transfers += m.type == MessageType::InstallSnapshot && m.offset == 0 && !m.data.empty();
      return false;
    };
    Sim::Node& node = cluster.nodes[follower];
    std::uint64_t id = cluster.next_id;
    for (int round = 0; round < 1000; ++round, cluster.round())
      for (int n = 0; n < 10; ++n) leader_machine(cluster).pending.push_back({id++, "x"});
    cluster.next_id = id;
    CHECK(transfers == 1);
    CHECK(node.machine->installed.size() == 1);
    CHECK(node.replica->commit_index() + 100 >= leader.commit_index()); // in the pipeline
    cluster.commit(10, 10);
  }

  TEST_CASE("a snapshot transfer sends each chunk once when the round trip exceeds the heartbeat") {
    // 15 ms each way and a heartbeat of 10 ms: heartbeats while a chunk is in flight carry no
    // bytes, and late answers to them do not start another chain of chunks.
    Sim cluster({1, 2, 3}, 200, 1000);
    for (auto& [id, node] : cluster.nodes) node.machine->padding = std::string(50000, 'p');
    raft::Replica& leader = *cluster.elect().replica;
    ReplicaID follower = leader.id() == 1 ? 2 : 1;
    cluster.down.insert(follower);
    cluster.commit(1000);
    cluster.down.erase(follower);
    cluster.delay = 15ms;
    std::size_t chunks = 0;
    std::set<std::uint64_t> offsets;
    cluster.drop = [&](const Message& m) {
      if (m.type == MessageType::InstallSnapshot && !m.data.empty())
        ++chunks, offsets.insert(m.offset);
      return false;
    };
    cluster.commit(10);
    CHECK(cluster.nodes[follower].machine->installed.size() == 1);
    CHECK(offsets.size() == 51); // 50,000 bytes of padding and the counts, in chunks of 1,000
    CHECK(chunks == offsets.size());
  }

  TEST_CASE("a transfer without progress for an election timeout starts over from the latest") {
    // Down from the start, replica 3 never answers the new leader's probe, so the leader starts a
    // transfer to it, and goes on compacting while it hears nothing. On its return the follower
    // gets the latest snapshot in one transfer, not the first one and then another.
    Sim cluster({1, 2, 3}, 50, 1000);
    for (auto& [id, node] : cluster.nodes) node.machine->padding = std::string(50000, 'p');
    cluster.down.insert(3);
    cluster.elect();
    cluster.commit(3000, 10); // 300 rounds of 1 ms; the maximum election timeout is 100 ms
    cluster.down.erase(3);
    std::set<Index> transferred; // the snapshots whose first chunk was sent after its return
    cluster.drop = [&](const Message& m) {
      if (m.type == MessageType::InstallSnapshot && m.offset == 0 && !m.data.empty())
        transferred.insert(m.last_included_index);
      return false;
    };
    cluster.commit(10, 10);
    CHECK(transferred.size() == 1);
    CHECK(cluster.nodes[3].machine->installed.size() == 1);
    CHECK(*transferred.begin() > 2500);
  }

  TEST_CASE("every replica restarted in turn recovers from its snapshot and log suffix") {
    Sim cluster({1, 2, 3}, 100);
    cluster.elect();
    cluster.commit(550);
    for (ReplicaID id : {1, 2, 3}) {
      std::uint64_t count = cluster.nodes[id].machine->count;
      cluster.boot(id); // a crash: the state machine is lost, the storage survives
      Machine& machine = *cluster.nodes[id].machine;
      REQUIRE(machine.installed.size() == 1);
      CHECK(machine.installed[0] == cluster.nodes[id].storage.load().snapshot->last_included_index);
      CHECK(machine.count <= count);
      cluster.commit(120);
      CHECK(cluster.nodes[id].machine->installed.size() == 1); // replayed from its own log
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
    struct Silent : raft::Cluster {
      void send_message(ReplicaID, const Message&) override {}
      std::vector<Message> receive_messages() override { return {}; }
      bool halt() const override { return false; }
      void register_leader(std::optional<ReplicaID>) override {}
    } silent;
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
    struct Recorder : raft::Cluster {
      std::vector<Message> inbox, sent;
      void send_message(ReplicaID, const Message& m) override { sent.push_back(m); }
      std::vector<Message> receive_messages() override { return std::exchange(inbox, {}); }
      bool halt() const override { return false; }
      void register_leader(std::optional<ReplicaID>) override {}
    };
    auto install = [](Index index, raft::Term term) {
      Message m;
      m.type = MessageType::InstallSnapshot;
      m.from = 2;
      m.to = 1;
      m.term = 3;
      m.last_included_index = index;
      m.last_included_term = term;
      m.data = "4 0 ";
      m.done = true;
      return m;
    };
    for (raft::Term term : {2, 3}) {
      CAPTURE(term);
      Recorder cluster;
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
    Sim cluster({1, 2, 3}, 1000);
    cluster.elect();
    Index most = 0;
    cluster.commit(1000000, 250, [&] { // a steady 250 proposals per round trip of 1 ms
      for (auto& [id, node] : cluster.nodes)
        most = std::max(most, node.replica->last_log_index() - node.snapshot_index);
    });
    MESSAGE("most entries held by a replica: " << most);
    CHECK(most <= 2 * 1000);
    for (auto& [id, node] : cluster.nodes) CHECK(node.machine->count == 1000000);
  }

  TEST_CASE("snapshots under loss, reordering and crashes keep every replica in agreement") {
    std::size_t installs = 0, terms = 0, transitions = 0;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      std::mt19937_64 random(seed);
      Sim cluster({1, 2, 3}, 50, 64);
      for (auto& [id, node] : cluster.nodes) node.machine->padding = std::string(500, 'p');
      cluster.faults = &random;
      cluster.drop = [&](const Message&) { return random() % 10 == 0; };
      cluster.elect();
      for (int round = 1; round <= 600; ++round) {
        if (Sim::Node* leader = cluster.leader())
          for (int n = 0; n < 3; ++n)
            leader->machine->pending.push_back({cluster.next_id++, std::string(16, 'x')});
        ReplicaID id = 1 + random() % 3; // now and then crash a replica, or bring it back
        if (round % 40 == 0 && cluster.down.count(id))
          cluster.down.erase(id), cluster.boot(id);
        else if (round % 40 == 0 && cluster.down.empty())
          cluster.down.insert(id);
        cluster.round();
      }
      for (ReplicaID id : {1, 2, 3}) // the faults end: everyone back, nothing lost or delayed
        if (cluster.down.count(id)) cluster.down.erase(id), cluster.boot(id);
      cluster.drop = nullptr;
      cluster.faults = nullptr;
      auto agree = [&] {
        Sim::Node* leader = cluster.leader();
        if (!leader || leader->replica->commit_index() != leader->replica->last_log_index())
          return false;
        for (auto& [id, node] : cluster.nodes)
          if (node.machine->hash != leader->machine->hash) return false;
        return true;
      };
      for (int round = 0; round < 5000 && !agree(); ++round) cluster.round();
      REQUIRE(agree());
      for (auto& [id, node] : cluster.nodes) installs += node.machine->installed.size();
      terms += cluster.leaders.size();
      transitions += cluster.leader()->machine->count;
    }
    MESSAGE(installs << " snapshots installed, " << terms << " terms with a leader, " << transitions
                     << " transitions applied, over 40 seeds");
    CHECK(installs > 40); // restarts from storage and catch-ups by InstallSnapshot
  }
}
