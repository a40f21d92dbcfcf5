// The Replica's public contract beyond the paper: constructor checks, bad input, transition
// reports, the leader callback, next_deadline() and determinism.
#include "harness.hpp"

#include <stdexcept>

using namespace harness;

namespace {

void construct(ReplicaID id, std::vector<ReplicaID> peers, Duration heartbeat, Duration min,
               Duration max) {
  Journal journal;
  FakeCluster cluster(id, peers, journal);
  RecordingStateMachine machine;
  raft::Replica replica(id, peers, cluster, machine, kNoop, heartbeat, {min, max});
}

// The fields a replica without snapshots fills in.
bool same(const Message& a, const Message& b) {
  return a.type == b.type && a.from == b.from && a.to == b.to && a.term == b.term &&
         a.last_log_index == b.last_log_index && a.last_log_term == b.last_log_term &&
         a.vote_granted == b.vote_granted && a.prev_log_index == b.prev_log_index &&
         a.prev_log_term == b.prev_log_term && a.entries.size() == b.entries.size() &&
         a.leader_commit == b.leader_commit && a.success == b.success &&
         a.match_index == b.match_index && a.conflict_index == b.conflict_index &&
         a.conflict_term == b.conflict_term;
}

} // namespace

TEST_SUITE("Replica API: construction") {
  TEST_CASE("the constructor rejects its own id among the peers and duplicate peers") {
    CHECK_THROWS_AS(construct(1, {2, 1, 3}, kHeartbeat, kElectionMin, kElectionMax),
                    std::invalid_argument);
    CHECK_THROWS_AS(construct(1, {2, 3, 2}, kHeartbeat, kElectionMin, kElectionMax),
                    std::invalid_argument);
  }

  TEST_CASE("the constructor rejects timeouts that are inverted, zero or not above the heartbeat") {
    CHECK_THROWS_AS(construct(1, {2, 3}, kHeartbeat, 300ms, 150ms), std::invalid_argument);
    CHECK_THROWS_AS(construct(1, {2, 3}, 150ms, 150ms, 300ms), std::invalid_argument);
    CHECK_THROWS_AS(construct(1, {2, 3}, 200ms, 150ms, 300ms), std::invalid_argument);
    CHECK_THROWS_AS(construct(1, {2, 3}, 0ms, kElectionMin, kElectionMax), std::invalid_argument);
  }

  TEST_CASE("a new replica is a follower of term 0 that knows no leader and sends nothing") {
    CHECK_NOTHROW(construct(1, {2, 3}, kHeartbeat, kElectionMin, kElectionMax));
    CHECK_NOTHROW(construct(1, {}, kHeartbeat, kElectionMin, kElectionMax));
    Node node(1, {2, 3});
    node.poll();
    CHECK(node->id() == 1);
    CHECK(node->current_term() == 0);
    CHECK_FALSE(node->is_leader());
    CHECK(node->leader() == std::nullopt);
    CHECK(node->commit_index() == 0);
    CHECK(node->last_applied() == 0);
    CHECK(node->last_log_index() == 0);
    CHECK(node.cluster.sent.empty());
  }
}

TEST_SUITE("Replica API: bad input") {
  TEST_CASE("a replica ignores messages addressed to another replica") {
    Node node(1, {2, 3});
    node.receive(request_vote(2, 3, 7, 0, 0));
    node.receive(append_entries(2, 4, 7, 0, 0, {entry(7, 1)}, 1));

    CHECK(node.cluster.sent.empty());
    CHECK(node->current_term() == 0);
    CHECK(node->last_log_index() == 0);
    CHECK(node->leader() == std::nullopt);
  }

  TEST_CASE("a replica takes requests from outside its configuration but no answers (§4.1)") {
    Node node(1, {2, 3});
    node.cluster.peers_extra = {9}; // a leader or candidate of a configuration it has not seen
    node.receive(append_entries(9, 1, 7, 0, 0, {entry(7, 1)}, 1));
    CHECK(node.take_reply().success);
    CHECK(node->leader() == 9);
    CHECK(node->last_log_index() == 1);

    node.crash();
    win_election(node);
    node.receive(append_response(9, 1, 8, true, 2));
    node.receive(vote(9, 1, 8, true));
    CHECK(node->is_leader());
    CHECK(node->current_term() == 8);
    CHECK(node->commit_index() == 0); // 9's acknowledgement does not count
  }
}

// Storage::sync, or any of the user's callbacks, may throw; the poll then stops half way, so the
// replica must not go on as if it had finished.
TEST_SUITE("Replica API: exceptions") {
  class FailingStorage : public raft::MemoryStorage {
  public:
    bool fail = false;
    void sync() override {
      if (fail) throw std::runtime_error("disk full");
    }
  };

  class FailingMachine : public RecordingStateMachine {
  public:
    void apply_transition(const Transition& transition) override {
      if (transition.id == 7) throw std::runtime_error("cannot apply 7");
      RecordingStateMachine::apply_transition(transition);
    }
  };

  TEST_CASE("a poll whose storage throws sends nothing, and later polls refuse until a rebuild") {
    Journal journal;
    FakeCluster cluster(1, {2, 3}, journal);
    FailingStorage storage;
    RecordingStateMachine machine;
    raft::Options options = paper_elections();
    options.seed = 1;
    options.storage = &storage;
    auto build = [&] {
      return std::make_unique<raft::Replica>(1, std::vector<ReplicaID>{2, 3}, cluster, machine,
                                             kNoop, kHeartbeat,
                                             std::make_pair(kElectionMin, kElectionMax), options);
    };
    std::unique_ptr<raft::Replica> replica = build();
    Clock::time_point now = kStart;
    replica->poll(now);
    storage.fail = true;
    CHECK_THROWS_AS(replica->poll(now += kElectionMax + 1ms), std::runtime_error);
    CHECK(cluster.sent.empty()); // the RequestVotes waited for a sync that failed
    storage.fail = false;
    CHECK_THROWS_AS(replica->poll(now += 1ms), std::logic_error);
    CHECK(cluster.sent.empty());

    replica = build(); // as after a crash: over the same storage
    replica->poll(now += 1ms);
    replica->poll(now += kElectionMax + 1ms);
    CHECK(replica->current_term() >= 1);
    CHECK(count(cluster.sent, MessageType::RequestVote, 2) == 1);
  }

  TEST_CASE("a poll whose state machine throws leaves the replica refusing further polls") {
    Journal journal;
    FakeCluster cluster(1, {}, journal);
    FailingMachine machine;
    raft::Options options;
    options.seed = 1;
    raft::Replica replica(1, {}, cluster, machine, kNoop, kHeartbeat, {kElectionMin, kElectionMax},
                          options);
    Clock::time_point now = kStart;
    replica.poll(now);
    replica.poll(now += kElectionMax + 1ms);
    REQUIRE(replica.is_leader());
    machine.pending = {{6, "six"}, {7, "seven"}, {8, "eight"}};
    CHECK_THROWS_AS(replica.poll(now += 1ms), std::runtime_error);
    CHECK(machine.applied.size() == 2); // the no-op and 6
    CHECK_THROWS_AS(replica.poll(now += 1ms), std::logic_error);
    CHECK(machine.applied.size() == 2); // 7 is never applied twice, nor 8 before it
  }
}

TEST_SUITE("Replica API: transitions") {
  TEST_CASE("a follower or candidate abandons each pending transition as NotLeader at once") {
    Node node(1, {2, 3});
    node.propose({{1, "a"}, {2, "b"}});
    node.poll();
    CHECK(node.machine().reports ==
          std::vector<Report>{{1, TransitionState::Abandoned, AbandonReason::NotLeader},
                              {2, TransitionState::Abandoned, AbandonReason::NotLeader}});
    CHECK(node->last_log_index() == 0);

    node.time_out(); // now a candidate
    node.propose({{3, "c"}});
    node.poll();
    CHECK(node.machine().reports.back() ==
          Report{3, TransitionState::Abandoned, AbandonReason::NotLeader});
    CHECK(node->last_log_index() == 0);
  }

  TEST_CASE("a one-replica cluster queues, commits and applies its own transitions") {
    Node solo(1, {});
    solo.time_out();
    REQUIRE(solo->is_leader());
    solo.propose({{1, "a"}, {2, "b"}});
    solo.poll();
    solo.poll();

    CHECK(solo->commit_index() == 3);
    CHECK(solo.machine().applied == std::vector<Transition>{kNoop, {1, "a"}, {2, "b"}});
    std::vector<std::uint64_t> ids{1, 2};
    CHECK(solo.machine().ids(TransitionState::Queued) == ids);
    CHECK(solo.machine().ids(TransitionState::Committed) == ids);
    CHECK(solo.machine().ids(TransitionState::Applied) == ids);
    CHECK(solo.cluster.sent.empty());
  }
}

TEST_SUITE("Replica API: leader and deadlines") {
  TEST_CASE("leader() always equals the last register_leader argument") {
    Node node(1, {2, 3});
    auto agrees = [&] {
      return node.cluster.leaders.empty() ? node->leader() == std::nullopt
                                          : node->leader() == node.cluster.leaders.back();
    };
    node.receive(append_entries(2, 1, 1, 0, 0));
    CHECK(node->leader() == 2);
    CHECK(agrees());
    node.receive(request_vote(3, 1, 2, 0, 0)); // a new term: the leader is unknown
    CHECK(agrees());
    node.time_out();
    CHECK(agrees());
    node.receive(vote(2, 1, node->current_term(), true));
    CHECK(node->is_leader());
    CHECK(node->leader() == 1);
    CHECK(agrees());
  }

  TEST_CASE("next_deadline is within the election timeout, or the heartbeat for a leader") {
    Node node(1, {2, 3});
    auto within = [&](Duration limit) {
      return node->next_deadline() >= node.now && node->next_deadline() <= node.now + limit;
    };
    node.poll();
    CHECK(within(kElectionMax)); // a follower
    node.receive(append_entries(2, 1, 1, 0, 0));
    CHECK(within(kElectionMax));
    node.time_out();
    REQUIRE(node->current_term() == 2);
    CHECK(within(kElectionMax)); // a candidate
    node.receive(vote(2, 1, 2, true));
    REQUIRE(node->is_leader());
    CHECK(within(kHeartbeat));
    node.advance(kHeartbeat / 3);
    CHECK(within(kHeartbeat));
  }

  TEST_CASE("a follower polled only at next_deadline campaigns within the election timeout") {
    Node follower(1, {2, 3});
    follower.poll();
    Clock::time_point start = follower.now;
    for (int i = 0; i < 100 && follower->current_term() == 0; ++i) {
      follower.now = follower->next_deadline();
      follower.poll();
    }
    CHECK(follower->current_term() == 1);
    CHECK(follower.now - start <= kElectionMax);
    CHECK(follower.now - start >= kElectionMin);
  }

  TEST_CASE("a leader polled only at next_deadline sends a heartbeat every heartbeat timeout") {
    Node leader(1, {2, 3});
    win_election(leader);
    leader.take_sent();
    Clock::time_point last_beat = leader.now;
    int beats = 0;
    for (int i = 0; i < 1000 && beats < 10 && leader.now <= last_beat + kHeartbeat; ++i) {
      leader.now = leader->next_deadline();
      leader.poll();
      if (count(leader.take_sent(), MessageType::AppendEntries, 2) > 0) {
        CHECK(leader.now - last_beat <= kHeartbeat);
        last_beat = leader.now;
        ++beats;
      }
    }
    CHECK(beats == 10);
  }

  TEST_CASE("two replicas with the same seed and inputs behave identically") {
    Node a(1, {2, 3});
    Node b(1, {2, 3});
    for (int ms = 0; ms < 1000; ++ms) {
      a.advance(1ms);
      b.advance(1ms);
      std::vector<Message> from_a = a.take_sent(), from_b = b.take_sent();
      REQUIRE(from_a.size() == from_b.size());
      for (std::size_t i = 0; i < from_a.size(); ++i) CHECK(same(from_a[i], from_b[i]));
    }
    CHECK(a->current_term() >= 2); // the randomized timer has run out more than once
    CHECK(a->current_term() == b->current_term());
  }
}
