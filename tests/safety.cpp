// §5.4 safety: the election restriction, the commit rule for earlier terms (Figure 8), and the
// properties of Figure 3 that a single leader and follower can show.
#include "harness.hpp"

using namespace harness;

TEST_SUITE("§5.4.1 Election restriction") {
  // The voter's log: indices 1-2 of term 1, 3-4 of term 2.
  const std::vector<Entry> kVoterLog = make_log({{2, 1}, {2, 2}});

  TEST_CASE("a replica denies its vote to a candidate whose last entry has an older term") {
    Node voter(1, {2, 3}, stored(2, kVoterLog));
    voter.receive(request_vote(2, 1, 3, 10, 1)); // longer, but older

    Message reply = voter.take_reply();
    CHECK_FALSE(reply.vote_granted);
    CHECK(reply.term == 3);                                // it still adopts the newer term
    CHECK(voter.storage.load().voted_for == std::nullopt); // and has not voted in it

    voter.receive(request_vote(3, 1, 3, 4, 2)); // so an up-to-date candidate still can win it
    CHECK(voter.take_reply().vote_granted);
  }

  TEST_CASE("a replica denies its vote to a candidate with the same last term and a shorter log") {
    Node voter(1, {2, 3}, stored(2, kVoterLog));
    voter.receive(request_vote(2, 1, 3, 3, 2));
    CHECK_FALSE(voter.take_reply().vote_granted);
  }

  TEST_CASE("a replica grants its vote to a candidate whose log is at least as up to date") {
    Node voter(1, {2, 3}, stored(2, kVoterLog));
    voter.receive(request_vote(2, 1, 3, 4, 2)); // the same log
    CHECK(voter.take_reply().vote_granted);

    voter.receive(request_vote(3, 1, 4, 1, 3)); // shorter, but its last term is newer
    CHECK(voter.take_reply().vote_granted);
  }
}

TEST_SUITE("§5.4.2 Committing entries from previous terms") {
  TEST_CASE("a leader commits entries of earlier terms only through an entry of its own term") {
    // Figure 8: index 2 (term 2) reaches a majority in term 3, yet must not count as committed
    // until the leader's own no-op (index 3, term 3) does. One entry per message lets the
    // follower acknowledge index 2 on its own.
    raft::Options options = paper_elections();
    options.max_entries_per_message = 1;
    std::vector<Entry> log = make_log({{1, 1}, {1, 2}});
    Node leader(1, {2, 3}, stored(2, log), options);
    Node follower(2, {1, 3}, stored(2, {log[0]}));
    elect(leader, follower); // term 3

    Index acknowledged = 0;
    bool saw_only_index_2 = false;
    for (int trip = 0; trip < 10 && leader->commit_index() < 3; ++trip) {
      deliver(leader, follower);
      for (const Message& m : follower.take_sent()) { // one at a time
        if (m.success) acknowledged = std::max(acknowledged, m.match_index);
        leader.receive(m);
        if (acknowledged < 3) CHECK(leader->commit_index() == 0);
        if (acknowledged == 2) saw_only_index_2 = true;
      }
    }
    CHECK(saw_only_index_2);
    CHECK(leader->commit_index() == 3);
    log.push_back({3, kNoop});
    CHECK(leader.machine().applied == transitions_of(log));
  }
}

TEST_SUITE("§5.4 Safety properties") {
  TEST_CASE("a leader never deletes or overwrites entries in its own log") {
    std::vector<Entry> log = make_log({{3, 1}});
    Node leader(1, {2, 3}, stored(1, log));
    win_election(leader); // term 2, the no-op at index 4

    // Each peer rejects every AppendEntries with an odd hint: a term the leader never saw, an
    // index past its log, the first index, no hint at all, the leader's own term.
    std::vector<std::pair<Term, Index>> hints{{7, 1}, {0, 1000}, {1, 1}, {0, 0}, {2, 3}};
    for (auto [conflict_term, conflict_index] : hints) {
      for (const Message& request : of_type(leader.take_sent(), MessageType::AppendEntries)) {
        CHECK(request.prev_log_index <= leader->last_log_index());
        Message reply = append_response(request.to, 1, 2, false, 0, conflict_term, conflict_index);
        reply.prev_log_index = request.prev_log_index;
        leader.cluster.inbox.push_back(reply);
      }
      leader.advance(kHeartbeat);
    }
    CHECK(leader->is_leader());
    CHECK(leader->last_log_index() == 4);
    CHECK(leader->commit_index() == 0);
    log.push_back({2, kNoop});
    CHECK(transitions_of(leader.storage.load().entries) == transitions_of(log));
  }

  TEST_CASE("a replica applies only committed entries") {
    Node leader(1, {2, 3}); // its peers never answer
    win_election(leader);
    leader.propose({{7, "x"}, {8, "y"}});
    leader.advance(kHeartbeat);
    leader.advance(kHeartbeat);

    CHECK(leader->commit_index() == 0);
    CHECK(leader.machine().applied.empty());
    CHECK(leader.machine().ids(TransitionState::Queued) == std::vector<std::uint64_t>{7, 8});
    CHECK(leader.machine().ids(TransitionState::Committed).empty());

    Node follower(2, {1, 3});
    follower.receive(append_entries(1, 2, 1, 0, 0, make_log({{2, 1}}), 0));
    CHECK(follower.machine().applied.empty());
  }

  TEST_CASE("a leader and its follower apply the same entries in the same order") {
    std::vector<Entry> leader_log = make_log({{3, 1}, {3, 2}});
    Node leader(1, {2, 3}, stored(2, leader_log));
    Node follower(2, {1, 3}, stored(2, make_log({{3, 1}, {6, 2}})));
    // Both hold indices 1-6; the follower also holds 7-9 of term 2, which never reached the
    // leader. The follower's log is longer, so it denies its vote and 3 elects the leader.
    leader.time_out();
    leader.receive(vote(3, 1, 3, true));
    REQUIRE(leader->is_leader());
    leader.propose({{7, "x"}, {8, "y"}});
    leader.poll();
    settle(leader, follower);
    leader.advance(kHeartbeat);
    settle(leader, follower);

    leader_log.push_back({3, kNoop});
    leader_log.push_back({3, {7, "x"}});
    leader_log.push_back({3, {8, "y"}});
    CHECK(leader->commit_index() == 9);
    CHECK(follower->commit_index() == 9);
    CHECK(leader.machine().applied == transitions_of(leader_log));
    CHECK(follower.machine().applied == transitions_of(leader_log));
  }
}
