// Figure 2's persistent state: what a replica saves before it speaks, and what it recovers when
// it is rebuilt over the same storage after a crash.
#include "harness.hpp"

using namespace harness;

TEST_SUITE("Figure 2 Persistent state") {
  TEST_CASE("a replica saves its term and vote before its vote leaves") {
    Node voter(1, {2, 3});
    voter.receive(request_vote(2, 1, 4, 0, 0));

    CHECK(voter.take_reply().vote_granted);
    CHECK(voter.storage.load().current_term == 4);
    CHECK(voter.storage.load().voted_for == 2);
    CHECK(sends_wait_for_sync(voter.journal));
  }

  TEST_CASE("a candidate saves its new term and its own vote before requesting votes") {
    Node candidate(1, {2, 3});
    candidate.time_out();

    CHECK(candidate.take_sent().size() == 2);
    CHECK(candidate.storage.load().current_term == 1);
    CHECK(candidate.storage.load().voted_for == 1);
    CHECK(sends_wait_for_sync(candidate.journal));
  }

  TEST_CASE("a follower saves entries before it acknowledges them") {
    std::vector<Entry> log = make_log({{3, 1}});
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, log));

    CHECK(follower.take_reply().match_index == 3);
    CHECK(transitions_of(follower.storage.load().entries) == transitions_of(log));
    CHECK(sends_wait_for_sync(follower.journal));
  }
}

TEST_SUITE("Crash recovery") {
  TEST_CASE("a rebuilt replica does not vote for a second candidate in the same term") {
    Node voter(1, {2, 3});
    voter.receive(request_vote(2, 1, 5, 0, 0));
    REQUIRE(voter.take_reply().vote_granted);

    voter.crash();
    voter.receive(request_vote(3, 1, 5, 0, 0));
    CHECK_FALSE(voter.take_reply().vote_granted);
    voter.receive(request_vote(2, 1, 5, 0, 0)); // the candidate it voted for may ask again
    CHECK(voter.take_reply().vote_granted);
  }

  TEST_CASE("a rebuilt replica replays committed entries once it learns the commit index") {
    std::vector<Entry> log = {{1, kNoop}, entry(1, 2), entry(1, 3)};
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 1, 0, 0, log, 3));
    REQUIRE(follower.machine().applied == transitions_of(log));

    follower.crash();
    follower.poll();
    CHECK(follower.machine().applied.empty());
    follower.receive(append_entries(2, 1, 1, 3, 1, {}, 3));
    CHECK(follower->commit_index() == 3);
    CHECK(follower.machine().applied == transitions_of(log));
    CHECK(follower.machine().ids(TransitionState::Applied) ==
          std::vector<std::uint64_t>{1002, 1003});
  }

  TEST_CASE("a rebuilt leader comes back as a follower and campaigns from its recovered log") {
    Node leader(1, {2, 3}, stored(1, make_log({{2, 1}})));
    win_election(leader); // term 2, the no-op at index 3
    leader.propose({{7, "x"}});
    leader.poll();
    leader.take_sent();

    leader.crash();
    CHECK_FALSE(leader->is_leader());
    CHECK(leader->leader() == std::nullopt);
    CHECK(leader->current_term() == 2);
    CHECK(leader->last_log_index() == 4);
    CHECK(leader->commit_index() == 0);
    CHECK(leader->last_applied() == 0);
    CHECK(sends_wait_for_sync(leader.journal));

    leader.time_out();
    check_vote_requests(leader.take_sent(), leader.peers, 3, 4, 2);
  }

  TEST_CASE("a rebuilt follower catches up with its leader and applies what it missed") {
    Node leader(1, {2, 3});
    Node follower(2, {1, 3});
    elect(leader, follower);
    leader.propose({{7, "x"}});
    leader.poll();
    settle(leader, follower);

    follower.crash();
    leader.propose({{8, "y"}});
    leader.poll();
    leader.advance(kHeartbeat);
    settle(leader, follower);
    leader.advance(kHeartbeat);
    settle(leader, follower);

    std::vector<Transition> all{kNoop, {7, "x"}, {8, "y"}};
    CHECK(leader.machine().applied == all);
    CHECK(follower.machine().applied == all);
  }
}
