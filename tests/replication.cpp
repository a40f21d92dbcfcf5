// §5.3 log replication: the leader's rules of Figure 2 and the AppendEntries receiver.
#include "harness.hpp"

using namespace harness;

namespace {

const Transition kA{101, "a"}, kB{102, "b"}, kC{103, "c"};

// A leader (1) elected with the vote of a real follower (2), both up to date; 3 stays silent.
struct Pair {
  Node leader{1, {2, 3}};
  Node follower{2, {1, 3}};
  Pair() {
    elect(leader, follower);
    settle(leader, follower);
    leader.take_sent();
  }
};

// Round trips, counted, until the leader has committed its whole log.
int trips_until_all_committed(Node& leader, Node& follower) {
  int trips = 0;
  while (leader->commit_index() < leader->last_log_index()) {
    round_trip(leader, follower);
    ++trips;
    REQUIRE(trips < 50);
  }
  return trips;
}

} // namespace

TEST_SUITE("§5.3 Log replication: the leader") {
  TEST_CASE("a leader queues pending transitions and sends them in one AppendEntries at once") {
    Pair pair;
    pair.leader.propose({kA, kB, kC});
    pair.leader.poll();

    CHECK(pair.leader.machine().ids(TransitionState::Queued) ==
          std::vector<std::uint64_t>{101, 102, 103});
    CHECK(pair.leader->last_log_index() == 4);
    std::vector<Message> sent = pair.leader.take_sent();
    REQUIRE(count(sent, MessageType::AppendEntries, 2) == 1);
    for (const Message& m : sent) {
      if (m.to != 2) continue;
      CHECK(m.term == 1);
      CHECK(m.prev_log_index == 1);
      CHECK(m.prev_log_term == 1);
      CHECK(transitions_of(m.entries) == std::vector<Transition>{kA, kB, kC});
      for (const Entry& e : m.entries) CHECK(e.term == 1);
    }
  }

  TEST_CASE("a leader commits and applies an entry of its term once a majority stores it") {
    Pair pair;
    pair.leader.propose({kA, kB, kC});
    pair.leader.poll();
    CHECK(pair.leader->commit_index() == 1); // the no-op, committed while settling
    CHECK(pair.leader.machine().applied == std::vector<Transition>{kNoop});

    round_trip(pair.leader, pair.follower);
    CHECK(pair.leader->commit_index() == 4);
    CHECK(pair.leader->last_applied() == 4);
    CHECK(pair.leader.machine().applied == std::vector<Transition>{kNoop, kA, kB, kC});
    std::vector<std::uint64_t> ids{101, 102, 103};
    CHECK(pair.leader.machine().ids(TransitionState::Committed) == ids);
    CHECK(pair.leader.machine().ids(TransitionState::Applied) == ids);
  }

  TEST_CASE("a leader in a five-replica cluster waits for two followers before committing") {
    Node leader(1, {2, 3, 4, 5});
    win_election(leader); // with the votes of 2 and 3
    Node second(2, {1, 3, 4, 5});
    settle(leader, second);
    CHECK(second->last_log_index() == 1);
    CHECK(leader->commit_index() == 0); // two of five store the no-op
    CHECK(leader.machine().applied.empty());

    Node third(3, {1, 2, 4, 5});
    leader.advance(kHeartbeat);
    settle(leader, third);
    CHECK(leader->commit_index() == 1);
    CHECK(leader.machine().applied == std::vector<Transition>{kNoop});
  }

  TEST_CASE("a leader catches up a follower hundreds of entries behind in a few round trips") {
    Node leader(1, {2, 3}, stored(1, make_log({{400, 1}})));
    Node follower(2, {1, 3}, stored(1, make_log({{50, 1}})));
    elect(leader, follower); // term 2, its no-op at 401

    int trips = trips_until_all_committed(leader, follower);
    CHECK(trips <= 4);
    CHECK(leader->commit_index() == 401);
    CHECK(follower->last_log_index() == 401);
  }

  TEST_CASE("a leader repairs a divergent follower in a few round trips") {
    // Both agree on 100 entries of term 1. The leader then holds 100 of term 2 and 100 of term
    // 3; the follower 250 of term 2, of which the last 150 never reached the leader.
    std::vector<Entry> leader_log = make_log({{100, 1}, {100, 2}, {100, 3}});
    Node leader(1, {2, 3}, stored(3, leader_log));
    Node follower(2, {1, 3}, stored(2, make_log({{100, 1}, {250, 2}})));
    elect(leader, follower); // term 4, its no-op at 301

    int trips = trips_until_all_committed(leader, follower);
    CHECK(trips <= 4);
    CHECK(follower->last_log_index() == 301);
    leader.advance(kHeartbeat);
    settle(leader, follower);
    leader_log.push_back({4, kNoop});
    CHECK(follower.machine().applied == transitions_of(leader_log));
    CHECK(leader.machine().applied == transitions_of(leader_log));
  }

  TEST_CASE("an AppendEntries carries at most max_entries_per_message entries") {
    raft::Options options = paper_elections();
    options.max_entries_per_message = 2;
    Node leader(1, {2, 3}, {}, options);
    Node follower(2, {1, 3});
    elect(leader, follower);
    settle(leader, follower);
    leader.propose({{1, "1"}, {2, "2"}, {3, "3"}, {4, "4"}, {5, "5"}});
    leader.poll();

    for (int trip = 0; trip < 20 && follower->last_log_index() < 6; ++trip) {
      for (const Message& m : of_type(leader.cluster.sent, MessageType::AppendEntries))
        CHECK(m.entries.size() <= 2);
      round_trip(leader, follower);
    }
    CHECK(follower->last_log_index() == 6);
  }

  TEST_CASE("a leader reports a burst Queued at once and appends at most a window per poll") {
    raft::Options options = paper_elections();
    options.max_entries_per_message = 2;
    options.max_messages_in_flight = 2; // a window of 4 entries
    Node leader(1, {2, 3}, {}, options);
    win_election(leader); // the no-op at index 1
    std::vector<Transition> burst;
    for (std::uint64_t id = 1; id <= 10; ++id) burst.push_back({id, std::to_string(id)});
    leader.propose(burst);
    leader.poll();
    CHECK(leader.machine().ids(TransitionState::Queued).size() == 10);
    CHECK(leader->last_log_index() == 5);
    CHECK(leader->next_deadline() == leader.now); // more to append: poll again at once
    leader.poll();
    CHECK(leader->last_log_index() == 9);
    leader.poll();
    CHECK(leader->last_log_index() == 11);
    CHECK(leader->next_deadline() > leader.now);
    CHECK(leader.storage.load().entries.size() == 11);
  }

  TEST_CASE("a leader that steps down abandons what it accepted but never appended, NotLeader") {
    raft::Options options = paper_elections();
    options.max_entries_per_message = 2;
    options.max_messages_in_flight = 1; // a window of 2 entries
    Node leader(1, {2, 3}, {}, options);
    win_election(leader);
    leader.propose({{1, "1"}, {2, "2"}, {3, "3"}, {4, "4"}, {5, "5"}});
    leader.poll(); // indexes 2 and 3 hold transitions 1 and 2
    REQUIRE(leader->last_log_index() == 3);
    leader.receive(append_entries(2, 1, 2, 0, 0));
    CHECK_FALSE(leader->is_leader());
    std::vector<Report> abandoned;
    for (const Report& r : leader.machine().reports)
      if (r.state == TransitionState::Abandoned) abandoned.push_back(r);
    CHECK(abandoned ==
          std::vector<Report>{{3, TransitionState::Abandoned, AbandonReason::NotLeader},
                              {4, TransitionState::Abandoned, AbandonReason::NotLeader},
                              {5, TransitionState::Abandoned, AbandonReason::NotLeader}});
    leader.poll();
    CHECK(leader->next_deadline() > leader.now);
  }

  TEST_CASE("a message limit of SIZE_MAX means no limit") {
    raft::Options options = paper_elections();
    options.max_entries_per_message = SIZE_MAX;
    options.max_messages_in_flight = 1;
    Node leader(1, {2, 3}, {}, options);
    Node follower(2, {1, 3});
    elect(leader, follower);
    settle(leader, follower);
    leader.propose({{1, "1"}});
    leader.poll();
    settle(leader, follower);
    CHECK(leader->commit_index() == 2);
    CHECK(follower->last_log_index() == 2);
  }

  TEST_CASE("limits so large that a window overflows mean no limit") {
    raft::Options options = paper_elections();
    options.max_entries_per_message = std::size_t{1} << 63;
    options.max_messages_in_flight = 2; // the product is 2^64: 0, were it not saturated
    Node leader(1, {2, 3}, {}, options);
    Node follower(2, {1, 3});
    elect(leader, follower);
    leader.propose({{1, "1"}, {2, "2"}, {3, "3"}});
    leader.poll();
    CHECK(leader->last_log_index() == 4);
    settle(leader, follower);
    CHECK(follower->last_log_index() == 4);
    CHECK(leader->commit_index() == 4);
  }

  TEST_CASE("a leader ignores duplicated and reordered responses") {
    Pair pair;
    pair.leader.propose({kA});
    pair.leader.poll();
    deliver(pair.leader, pair.follower);
    std::vector<Message> first = pair.follower.take_sent(); // acknowledges index 2
    pair.leader.propose({kB});
    pair.leader.poll();
    deliver(pair.leader, pair.follower);
    std::vector<Message> second = pair.follower.take_sent(); // acknowledges index 3

    for (const std::vector<Message>* batch : {&second, &first, &second, &first})
      for (const Message& m : *batch) pair.leader.receive(m);
    CHECK(pair.leader->commit_index() == 3);

    pair.leader.propose({kC});
    pair.leader.poll();
    settle(pair.leader, pair.follower);
    pair.leader.advance(kHeartbeat);
    settle(pair.leader, pair.follower);
    CHECK(pair.leader->commit_index() == 4);
    CHECK(pair.follower.machine().applied == std::vector<Transition>{kNoop, kA, kB, kC});
  }

  // A transition overwritten in the log that queued it may still commit from another replica's
  // log (the new leader's entry might never commit), so its fate is known once its index commits.
  TEST_CASE("a queued transition that a new leader overwrites is abandoned as ConflictWithLeader") {
    Node old_leader(1, {2, 3});
    win_election(old_leader); // term 1, the no-op at index 1
    old_leader.propose({kA}); // index 2, never replicated
    old_leader.poll();
    REQUIRE(old_leader.machine().ids(TransitionState::Queued) == std::vector<std::uint64_t>{101});
    old_leader.take_sent();

    // Leader 2 of term 2 holds the no-op of term 1 and its own at index 2, and commits both.
    old_leader.receive(append_entries(2, 1, 2, 0, 0, {{1, kNoop}, {2, kNoop}}));
    CHECK(old_leader.take_reply().success);
    old_leader.receive(append_entries(2, 1, 2, 2, 2, {}, 2));
    CHECK(old_leader.machine().reports.back() ==
          Report{101, TransitionState::Abandoned, AbandonReason::ConflictWithLeader});
    CHECK(old_leader.machine().ids(TransitionState::Committed).empty());
    CHECK(old_leader.machine().applied == std::vector<Transition>{kNoop, kNoop});
  }

  TEST_CASE("an overwritten transition that commits after all is never reported a conflict") {
    Node old_leader(1, {2, 3, 4, 5});
    win_election(old_leader); // term 1, the no-op at index 1
    old_leader.propose({kA}); // index 2; say it reached replica 3 only
    old_leader.poll();
    old_leader.take_sent();

    // Leader 2 of term 2, elected by 2, 4 and 5, overwrites index 2 here and nowhere else; then
    // leader 3 of term 3, elected by 3, 4 and 5, restores kA at index 2 and commits it.
    old_leader.receive(append_entries(2, 1, 2, 1, 1, {{2, kNoop}}));
    old_leader.receive(append_entries(3, 1, 3, 1, 1, {{1, kA}, {3, kNoop}}, 3));
    CHECK(old_leader->commit_index() == 3);
    CHECK(old_leader.machine().applied == std::vector<Transition>{kNoop, kA, kNoop});
    CHECK(old_leader.machine().ids(TransitionState::Committed) == std::vector<std::uint64_t>{101});
    CHECK(old_leader.machine().ids(TransitionState::Abandoned).empty());
  }
}

TEST_SUITE("§5.3 Log replication: the AppendEntries receiver") {
  TEST_CASE("a follower rejects AppendEntries from an older term with its current term") {
    Node follower(1, {2, 3}, stored(3));
    follower.receive(append_entries(2, 1, 2, 0, 0, {entry(2, 1)}));

    Message reply = follower.take_reply();
    CHECK(reply.type == MessageType::AppendEntriesResponse);
    CHECK_FALSE(reply.success);
    CHECK(reply.term == 3);
    CHECK(follower->last_log_index() == 0);
    CHECK(follower->leader() == std::nullopt);
  }

  TEST_CASE("a follower appends entries after a matching predecessor and acknowledges them") {
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, make_log({{2, 1}})));

    Message reply = follower.take_reply();
    CHECK(reply.success);
    CHECK(reply.term == 1);
    CHECK(reply.to == 2);
    CHECK(reply.prev_log_index == 0);
    CHECK(reply.match_index == 2);
    CHECK(follower->last_log_index() == 2);
    CHECK(follower->leader() == 2);
    CHECK(follower.cluster.leaders.back() == 2);
  }

  TEST_CASE("a follower whose log is too short rejects AppendEntries and hints its next index") {
    Node follower(1, {2, 3}, stored(1, make_log({{2, 1}})));
    follower.receive(append_entries(2, 1, 1, 1000, 1, {entry(1, 1001)}));

    Message reply = follower.take_reply();
    CHECK_FALSE(reply.success);
    CHECK(reply.prev_log_index == 1000);
    CHECK(reply.conflict_term == 0);
    CHECK(reply.conflict_index == 3);
    CHECK(follower->last_log_index() == 2);
  }

  TEST_CASE("a follower rejects a mismatched predecessor and hints the first index of its term") {
    Node follower(1, {2, 3}, stored(2, make_log({{2, 1}, {3, 2}})));
    follower.receive(append_entries(2, 1, 3, 4, 3, {entry(3, 5)}));

    Message reply = follower.take_reply();
    CHECK_FALSE(reply.success);
    CHECK(reply.term == 3);
    CHECK(reply.prev_log_index == 4);
    CHECK(reply.conflict_term == 2);
    CHECK(reply.conflict_index == 3);
    CHECK(follower->last_log_index() == 5); // a rejection changes nothing
  }

  TEST_CASE("a follower deletes a conflicting entry and all that follow it") {
    std::vector<Entry> log = make_log({{4, 1}});
    Node follower(1, {2, 3}, stored(1, log));
    follower.receive(append_entries(2, 1, 2, 2, 1, {entry(2, 3)}));

    Message reply = follower.take_reply();
    CHECK(reply.success);
    CHECK(reply.match_index == 3);
    CHECK(follower->last_log_index() == 3);
    follower.receive(append_entries(2, 1, 2, 3, 2, {}, 3));
    CHECK(follower.machine().applied ==
          std::vector<Transition>{log[0].transition, log[1].transition, entry(2, 3).transition});
  }

  TEST_CASE("a follower appends only new entries: a stale or duplicated request removes none") {
    std::vector<Entry> log = make_log({{4, 1}});
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, {log[0], log[1], log[2]}));
    follower.receive(append_entries(2, 1, 1, 0, 0, {log[0], log[1], log[2]})); // duplicated
    follower.receive(append_entries(2, 1, 1, 2, 1, {log[2], log[3]}));         // overlaps
    follower.take_sent();
    CHECK(follower->last_log_index() == 4);

    follower.receive(append_entries(2, 1, 1, 0, 0, {log[0]})); // delayed from earlier
    Message reply = follower.take_reply();
    CHECK(reply.success);
    CHECK(reply.match_index == 1);
    CHECK(follower->last_log_index() == 4);
    follower.receive(append_entries(2, 1, 1, 1, 1, {log[1], log[2]}));
    CHECK(follower.take_reply().match_index == 3);
    CHECK(follower->last_log_index() == 4);

    follower.receive(append_entries(2, 1, 1, 4, 1, {}, 4));
    CHECK(follower.machine().applied == transitions_of(log));
  }

  TEST_CASE("a follower sets its commit index to min(leaderCommit, index of last new entry)") {
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, make_log({{2, 1}}), 5));
    CHECK(follower->commit_index() == 2); // not 5: it holds only 2 entries from this leader

    follower.receive(append_entries(2, 1, 1, 2, 1, {entry(1, 3)}, 2));
    CHECK(follower->commit_index() == 2); // not 3: the leader has committed only 2
    CHECK(follower->last_log_index() == 3);

    follower.receive(append_entries(2, 1, 1, 3, 1, {}, 3));
    CHECK(follower->commit_index() == 3);
  }

  TEST_CASE("a follower does not commit entries beyond those the leader has matched") {
    // Indices 3-4 of term 2 came from a leader that crashed; leader 3 of term 3 has committed
    // other entries there, and has so far matched only through index 2.
    Node follower(1, {2, 3}, stored(2, make_log({{2, 1}, {2, 2}})));
    follower.receive(append_entries(3, 1, 3, 2, 1, {}, 4));
    CHECK(follower.take_reply().success);
    CHECK(follower->commit_index() == 2);
    CHECK(follower.machine().applied == transitions_of(make_log({{2, 1}})));
  }

  TEST_CASE("a follower's commit index never decreases") {
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, make_log({{3, 1}}), 3));
    REQUIRE(follower->commit_index() == 3);

    follower.receive(append_entries(2, 1, 1, 1, 1, {}, 1)); // an old heartbeat, delayed
    CHECK(follower.take_sent().back().success);
    CHECK(follower->commit_index() == 3);
    CHECK(follower->last_applied() == 3);
    CHECK(follower->last_log_index() == 3);
  }

  TEST_CASE("a follower applies committed entries in log order and reports each once") {
    Node follower(1, {2, 3});
    std::vector<Entry> log = {{1, kNoop}, entry(1, 2), entry(1, 3)};
    follower.receive(append_entries(2, 1, 1, 0, 0, log, 3));
    follower.receive(append_entries(2, 1, 1, 3, 1, {}, 3)); // nothing new to apply

    CHECK(follower.machine().applied == transitions_of(log));
    CHECK(follower->last_applied() == 3);
    std::vector<std::uint64_t> ids{1002, 1003};
    CHECK(follower.machine().ids(TransitionState::Committed) == ids);
    CHECK(follower.machine().ids(TransitionState::Applied) == ids);
    for (std::uint64_t id : ids) {
      auto& reports = follower.machine().reports;
      auto committed = std::find(reports.begin(), reports.end(),
                                 Report{id, TransitionState::Committed, AbandonReason::None});
      auto applied = std::find(reports.begin(), reports.end(),
                               Report{id, TransitionState::Applied, AbandonReason::None});
      CHECK(committed < applied);
    }
  }
}
