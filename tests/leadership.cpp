// Leadership beyond Figure 2: check-quorum (the dissertation's §6.2) with its vote check
// (§4.2.3), leader transfer (§3.10) and linearizable reads (ReadIndex and leases, §6.4).
#include "harness.hpp"

using namespace harness;

namespace {

// Node 1 leads nodes 2 and 3 (both real), with its no-op committed and applied everywhere.
struct Three {
  Node a, b, c;
  Three(raft::Options options = paper_elections())
      : a(1, {2, 3}, {}, options), b(2, {1, 3}, {}, options), c(3, {1, 2}, {}, options) {
    b.poll(), c.poll(); // all start together
    a.time_out();
    b.now = c.now = a.now;
    deliver(a, b), deliver(a, c);
    deliver(b, a), deliver(c, a);
    REQUIRE(a->is_leader());
    settle();
  }
  // Delivers between every pair until nothing is left in flight.
  void settle() {
    for (int round = 0; round < 100; ++round)
      if (round_trip(a, b) + round_trip(a, c) + round_trip(b, c) == 0) return;
    FAIL("messages never settled");
  }
  // Moves every clock on by `elapsed`, a heartbeat at a time, delivering everything between.
  void advance(Duration elapsed) {
    for (Duration step = std::min(elapsed, kHeartbeat); elapsed > Duration::zero();
         elapsed -= step, step = std::min(elapsed, kHeartbeat)) {
      for (Node* node : {&a, &b, &c}) node->advance(step);
      settle();
    }
  }
  // The leader's next heartbeat round, answered.
  void heartbeat_round() {
    a.advance(kHeartbeat);
    settle();
  }
};

raft::Options lease_reads() {
  raft::Options options = paper_elections();
  options.lease_reads = true;
  return options;
}

} // namespace

TEST_SUITE("§6.2 Check-quorum") {
  TEST_CASE("check-quorum: a leader that hears from no majority steps down within two timeouts") {
    Node leader(1, {2, 3});
    win_election(leader);
    Clock::time_point elected = leader.now;
    for (; leader->is_leader(); leader.advance(kHeartbeat)) leader.take_sent();
    CHECK(leader.now - elected <= 2 * kElectionMax);
    CHECK(leader->current_term() == 1);      // it only steps down: no new term
    CHECK(leader->leader() == std::nullopt); // and names no leader
  }

  TEST_CASE("check-quorum: a leader that a majority answers stays leader") {
    Three cluster;
    cluster.advance(10 * kElectionMax);
    CHECK(cluster.a->is_leader());
    CHECK(cluster.a->current_term() == 1);
  }

  TEST_CASE("check-quorum off: a leader cut off from everyone keeps leading") {
    raft::Options options = paper_elections();
    options.check_quorum = false;
    Node leader(1, {2, 3}, {}, options);
    win_election(leader);
    leader.advance(10 * kElectionMax);
    CHECK(leader->is_leader());
  }

  TEST_CASE("§4.2.3: a follower that heard from a leader ignores a higher-term RequestVote") {
    Three cluster;
    cluster.b.receive(request_vote(3, 2, 7, 100, 1));
    CHECK(cluster.b.take_sent().empty());
    CHECK(cluster.b->current_term() == 1); // the term does not move either
    CHECK(cluster.b->leader() == 1);
  }

  TEST_CASE("§4.2.3: after the minimum election timeout without a leader, the vote is granted") {
    Three cluster;
    cluster.b.advance(kElectionMin + 1ms);
    cluster.b.take_sent();
    cluster.b.receive(request_vote(3, 2, 7, 100, 1));
    CHECK(cluster.b.take_reply().vote_granted);
    CHECK(cluster.b->current_term() == 7);
  }

  TEST_CASE("§4.2.3: a leader ignores a higher-term RequestVote while check-quorum holds it") {
    Three cluster;
    cluster.a.receive(request_vote(3, 1, 7, 100, 1));
    CHECK(cluster.a->is_leader());
    CHECK(cluster.a->current_term() == 1);
  }
}

TEST_SUITE("§3.10 Leader transfer") {
  TEST_CASE("transfer to an up-to-date follower: it leads in the next term, nothing is lost") {
    Three cluster;
    cluster.a.propose({{1, "x"}});
    cluster.a.poll();
    cluster.settle();
    REQUIRE(cluster.b->commit_index() == 2);
    cluster.a->transfer_leadership(2);
    cluster.a.poll();
    std::vector<Message> sent = cluster.a.take_sent();
    REQUIRE(count(sent, MessageType::TimeoutNow, 2) == 1);
    cluster.b.cluster.inbox = of_type(sent, MessageType::TimeoutNow);
    cluster.b.poll();
    std::vector<Message> requests = of_type(cluster.b.take_sent(), MessageType::RequestVote);
    REQUIRE(requests.size() == 2);
    CHECK_FALSE(requests[0].pre_vote); // skips Pre-Vote
    CHECK(requests[0].transfer);       // and says why, so the §4.2.3 check lets it through
    cluster.b.cluster.sent = requests;
    cluster.settle();
    CHECK(cluster.b->is_leader());
    CHECK(cluster.b->current_term() == 2);
    CHECK_FALSE(cluster.a->is_leader());
    CHECK(cluster.a->leader() == 2);
    cluster.advance(kHeartbeat);
    CHECK(cluster.b->commit_index() == 3); // its no-op; index 2 kept
    CHECK(cluster.c.machine().applied.size() == 3);
  }

  TEST_CASE("transfer to a follower hundreds of entries behind catches it up first") {
    Three cluster;
    std::vector<Transition> batch;
    for (std::uint64_t id = 1; id <= 300; ++id) batch.push_back({id, "x"});
    cluster.a.propose(batch);
    cluster.a.poll();
    cluster.a.take_sent(); // lost: node 2 is now 300 entries behind
    deliver(cluster.a, cluster.c);
    cluster.a->transfer_leadership(2);
    cluster.a.poll();
    CHECK(count(cluster.a.cluster.sent, MessageType::TimeoutNow, 2) == 0); // not yet
    for (int i = 0; i < 20 && !cluster.b->is_leader(); ++i) cluster.advance(kHeartbeat);
    CHECK(cluster.b->is_leader());
    CHECK(cluster.b->current_term() == 2);
    CHECK(cluster.b->last_log_index() == 302); // two no-ops and the 300
  }

  TEST_CASE("transfer to a crashed target is given up and the leader commits again") {
    Three cluster;
    cluster.a->transfer_leadership(2);
    cluster.a.propose({{7, "during"}});
    cluster.a.poll();
    CHECK(reported(cluster.a.machine(), 7, TransitionState::Abandoned, AbandonReason::NotLeader));
    for (int i = 0; i * kHeartbeat <= kElectionMax; ++i) {
      cluster.a.advance(kHeartbeat);
      for (Message& m : cluster.a.take_sent())
        if (m.to == 3) cluster.c.cluster.inbox.push_back(m); // 2 is down
      cluster.c.poll();
      deliver(cluster.c, cluster.a);
    }
    REQUIRE(cluster.a->is_leader());
    cluster.a.propose({{8, "after"}});
    cluster.a.poll();
    for (int i = 0; i < 3; ++i) deliver(cluster.a, cluster.c), deliver(cluster.c, cluster.a);
    CHECK(reported(cluster.a.machine(), 8, TransitionState::Applied));
    CHECK(cluster.a->current_term() == 1);
  }

  TEST_CASE("transfer on a follower, or to a stranger or to itself, does nothing") {
    Three cluster;
    cluster.b->transfer_leadership(3);
    cluster.a->transfer_leadership(9);
    cluster.a->transfer_leadership(1);
    cluster.a.propose({{5, "x"}});
    cluster.a.poll();
    CHECK(reported(cluster.a.machine(), 5, TransitionState::Queued));
    CHECK(count(cluster.a.take_sent(), MessageType::TimeoutNow, 3) == 0);
    CHECK(count(cluster.b.take_sent(), MessageType::TimeoutNow, 3) == 0);
  }
}

TEST_SUITE("§6.4 Linearizable reads") {
  TEST_CASE("ReadIndex: a read on a follower is abandoned with NotLeader") {
    Three cluster;
    cluster.b->read(40);
    cluster.b.poll();
    CHECK(cluster.b.machine().reports ==
          std::vector<Report>{{40, TransitionState::Abandoned, AbandonReason::NotLeader}});
  }

  TEST_CASE("ReadIndex: a read is Applied after one heartbeat round, and never grows the log") {
    Three cluster;
    Index last = cluster.a->last_log_index();
    cluster.a->read(41);
    cluster.a.poll();
    CHECK(cluster.a.machine().reports ==
          std::vector<Report>{{41, TransitionState::Queued, AbandonReason::None}});
    std::vector<Message> heartbeats = cluster.a.take_sent();
    CHECK(count(heartbeats, MessageType::AppendEntries, 2) == 1); // the round goes out at once
    CHECK(count(heartbeats, MessageType::AppendEntries, 3) == 1);
    cluster.a.cluster.sent = heartbeats;
    deliver(cluster.a, cluster.b);
    deliver(cluster.b, cluster.a); // one answer and the leader make a majority
    CHECK(reported(cluster.a.machine(), 41, TransitionState::Applied));
    CHECK_FALSE(reported(cluster.a.machine(), 41, TransitionState::Committed));
    CHECK(cluster.a->last_log_index() == last);
  }

  TEST_CASE("ReadIndex: a late answer to an earlier round does not confirm a newer read") {
    Three cluster;
    cluster.a.advance(kHeartbeat); // a heartbeat round
    std::vector<Message> old_round = cluster.a.take_sent();
    cluster.a->read(42);
    cluster.a.poll();
    cluster.a.take_sent(); // the read's round is lost
    cluster.b.cluster.inbox = old_round;
    cluster.b.poll();
    deliver(cluster.b, cluster.a);
    CHECK_FALSE(reported(cluster.a.machine(), 42, TransitionState::Applied));
    cluster.heartbeat_round(); // the next round confirms it
    CHECK(reported(cluster.a.machine(), 42, TransitionState::Applied));
  }

  TEST_CASE("ReadIndex: a read on a brand-new leader waits for its no-op to commit") {
    Node a(1, {2, 3}), b(2, {1, 3});
    a.time_out();
    deliver(a, b);
    deliver(b, a);
    REQUIRE(a->is_leader());
    a.take_sent(); // the no-op is lost
    a->read(43);
    a.poll();
    std::vector<Message> round = a.take_sent();
    for (Message& m : round) m.entries.clear(); // answers that confirm leadership, not the no-op
    for (Message& m : round)
      if (m.to == 2) b.cluster.inbox.push_back(m);
    b.poll();
    for (Message& m : b.take_sent()) a.cluster.inbox.push_back(m);
    a.poll();
    CHECK_FALSE(reported(a.machine(), 43, TransitionState::Applied));
    a.advance(kHeartbeat);
    for (int i = 0; i < 3; ++i) round_trip(a, b);
    CHECK(a->commit_index() == 1);
    CHECK(reported(a.machine(), 43, TransitionState::Applied));
  }

  TEST_CASE("ReadIndex: a leader that steps down abandons its reads with NotLeader") {
    Three cluster;
    cluster.a->read(44);
    cluster.a.poll();
    cluster.a.take_sent();
    cluster.a.receive(append_entries(2, 1, 5, 1, 1));
    CHECK(reported(cluster.a.machine(), 44, TransitionState::Abandoned, AbandonReason::NotLeader));
  }

  TEST_CASE("lease reads: a read within the lease needs no round; none after a transfer starts") {
    Three cluster(lease_reads());
    cluster.heartbeat_round();
    cluster.a->read(45);
    cluster.a.poll();
    CHECK(reported(cluster.a.machine(), 45, TransitionState::Applied)); // in the same poll
    cluster.a.take_sent();
    cluster.a->transfer_leadership(2);
    cluster.a->read(46);
    cluster.a.poll();
    CHECK_FALSE(reported(cluster.a.machine(), 46, TransitionState::Applied));
  }

  TEST_CASE("lease reads: the lease runs out 90% of the minimum election timeout after the round") {
    Three cluster(lease_reads());
    cluster.heartbeat_round();
    cluster.a.take_sent();
    cluster.a.now += kElectionMin * 9 / 10; // no round was answered since
    cluster.a->read(47);
    cluster.a.poll();
    CHECK_FALSE(reported(cluster.a.machine(), 47, TransitionState::Applied));
  }
}
