// §5.1 terms and §5.2 leader election: the rules of Figure 2 for all servers, followers and
// candidates, and the RequestVote receiver.
#include "harness.hpp"

using namespace harness;

TEST_SUITE("§5.1 Terms") {
  TEST_CASE("a higher term in a request makes a follower adopt it and forget its vote") {
    Node follower(1, {2, 3});
    follower.receive(request_vote(2, 1, 1, 0, 0));
    CHECK(follower.take_reply().vote_granted);

    follower.receive(request_vote(3, 1, 2, 0, 0));
    Message reply = follower.take_reply();
    CHECK(reply.vote_granted); // votedFor was reset with the new term
    CHECK(reply.term == 2);
    CHECK(follower->current_term() == 2);
    CHECK(follower.storage.load().voted_for == 3);
  }

  TEST_CASE("a higher term in a response makes a candidate step down") {
    Node candidate(1, {2, 3});
    candidate.time_out();
    REQUIRE(candidate->current_term() == 1);

    candidate.receive(vote(2, 1, 5, false));
    CHECK(candidate->current_term() == 5);
    CHECK(candidate.storage.load().current_term == 5);
    CHECK(candidate.storage.load().voted_for == std::nullopt);
    candidate.receive(vote(3, 1, 5, true)); // a follower counts no votes
    CHECK_FALSE(candidate->is_leader());
  }

  TEST_CASE("a higher term in a response makes a leader step down") {
    Node leader(1, {2, 3});
    win_election(leader);

    leader.receive(append_response(2, 1, 3, false, 0));
    CHECK_FALSE(leader->is_leader());
    CHECK(leader->current_term() == 3);
    CHECK(leader->leader() == std::nullopt);
    CHECK(leader.cluster.leaders.back() == std::nullopt);
  }

  TEST_CASE("a higher term in AppendEntries makes a leader follow the new leader") {
    Node leader(1, {2, 3});
    win_election(leader); // term 1, the no-op at index 1
    leader.take_sent();

    leader.receive(append_entries(2, 1, 2, 1, 1));
    Message reply = leader.take_reply();
    CHECK(reply.type == MessageType::AppendEntriesResponse);
    CHECK(reply.success);
    CHECK(reply.term == 2);
    CHECK_FALSE(leader->is_leader());
    CHECK(leader->leader() == 2);
    CHECK(leader.cluster.leaders.back() == 2);
  }
}

TEST_SUITE("§5.2 Leader election") {
  TEST_CASE("a follower that hears nothing for an election timeout becomes a candidate") {
    Node follower(1, {2, 3}, stored(2, make_log({{1, 1}, {2, 2}})));
    follower.poll();
    follower.advance(kElectionMin - 1ms);
    CHECK(follower.take_sent().empty()); // not before the shortest timeout
    CHECK(follower->current_term() == 2);

    follower.advance(kElectionMax - kElectionMin + 2ms);
    CHECK(follower->current_term() == 3);
    CHECK_FALSE(follower->is_leader());
    CHECK(follower.storage.load().voted_for == 1); // it votes for itself
    check_vote_requests(follower.take_sent(), {2, 3}, 3, 3, 2);
  }

  TEST_CASE("a candidate that receives votes from a majority becomes leader") {
    Node candidate(1, {2, 3, 4, 5});
    candidate.time_out();

    candidate.receive(vote(2, 1, 1, true));
    CHECK_FALSE(candidate->is_leader()); // 2 of 5
    candidate.receive(vote(3, 1, 1, true));
    CHECK(candidate->is_leader()); // 3 of 5
    CHECK(candidate->leader() == 1);
    CHECK(candidate.cluster.leaders.back() == 1);
  }

  TEST_CASE("a candidate counts a duplicated vote once") {
    Node candidate(1, {2, 3, 4, 5});
    candidate.time_out();

    candidate.receive(vote(2, 1, 1, true));
    candidate.receive(vote(2, 1, 1, true));
    candidate.receive(vote(2, 1, 1, true));
    CHECK_FALSE(candidate->is_leader());
  }

  TEST_CASE("a candidate ignores a vote granted in an earlier term") {
    Node candidate(1, {2, 3});
    candidate.time_out();
    candidate.time_out(); // a second election, in term 2
    REQUIRE(candidate->current_term() == 2);

    candidate.receive(vote(2, 1, 1, true));
    CHECK_FALSE(candidate->is_leader());
    CHECK(candidate->current_term() == 2);
  }

  TEST_CASE("a candidate that hears from a leader of its term becomes its follower") {
    Node candidate(1, {2, 3});
    candidate.time_out();
    candidate.take_sent();

    candidate.receive(append_entries(2, 1, 1, 0, 0));
    CHECK(candidate.take_reply().success);
    CHECK(candidate->leader() == 2);
    CHECK(candidate->current_term() == 1);
    candidate.receive(vote(3, 1, 1, true)); // too late: it no longer campaigns
    CHECK_FALSE(candidate->is_leader());
  }

  TEST_CASE("a candidate whose election times out starts a new election in the next term") {
    Node candidate(1, {2, 3});
    candidate.time_out();
    candidate.take_sent();

    candidate.advance(kElectionMax + 1ms);
    CHECK(candidate->current_term() == 2);
    CHECK(candidate.storage.load().voted_for == 1);
    std::vector<Message> sent = candidate.take_sent();
    CHECK(count(sent, MessageType::RequestVote, 2) == 1);
    CHECK(count(sent, MessageType::RequestVote, 3) == 1);
    for (const Message& m : sent) CHECK(m.term == 2);
  }

  TEST_CASE("a follower that hears from its leader in time does not campaign") {
    Node follower(1, {2, 3});
    follower.poll();
    for (int i = 0; i < 20; ++i) { // 20 * 90 ms, far beyond any election timeout
      follower.advance(kElectionMin - 10ms);
      follower.receive(append_entries(2, 1, 1, 0, 0));
      CHECK(of_type(follower.take_sent(), MessageType::RequestVote).empty());
    }
    CHECK(follower->current_term() == 1);
    CHECK(follower->leader() == 2);
    CHECK(follower.cluster.leaders == std::vector<std::optional<ReplicaID>>{2});
  }

  TEST_CASE("a new leader appends a no-op and sends AppendEntries from the end of its log to all") {
    Node candidate(1, {2, 3}, stored(1, make_log({{3, 1}})));
    candidate.time_out();
    candidate.take_sent();

    candidate.receive(vote(2, 1, 2, true));
    REQUIRE(candidate->is_leader());
    CHECK(candidate->last_log_index() == 4);
    std::vector<Message> sent = candidate.take_sent();
    CHECK(count(sent, MessageType::AppendEntries, 2) == 1);
    CHECK(count(sent, MessageType::AppendEntries, 3) == 1);
    for (const Message& m : of_type(sent, MessageType::AppendEntries)) {
      CHECK(m.term == 2);
      CHECK(m.leader_commit == 0);
      CHECK(m.prev_log_index >= 3); // nextIndex starts just past the leader's log
      CHECK(m.entries.size() <= 1);
      if (!m.entries.empty()) CHECK(m.entries[0].transition == kNoop);
      if (!m.entries.empty()) CHECK(m.entries[0].term == 2);
    }
  }

  TEST_CASE("an idle leader sends each follower one AppendEntries per heartbeat timeout") {
    Node leader(1, {2, 3}); // 3 never answers
    Node follower(2, {1, 3});
    elect(leader, follower);
    settle(leader, follower);
    leader.take_sent();

    for (int beat = 0; beat < 20; ++beat) {
      leader.advance(kHeartbeat / 2);
      CHECK(leader.cluster.sent.empty());
      leader.advance(kHeartbeat / 2);
      CHECK(count(leader.cluster.sent, MessageType::AppendEntries, 2) == 1);
      CHECK(count(leader.cluster.sent, MessageType::AppendEntries, 3) == 1);
      round_trip(leader, follower);
      leader.take_sent();
    }
    CHECK(follower.take_sent().empty());
    CHECK(follower->current_term() == 1);
  }

  TEST_CASE("a one-replica cluster elects itself after its first election timeout") {
    Node solo(1, {});
    solo.propose({{1, "a"}});
    solo.poll();
    CHECK(solo.machine().reports ==
          std::vector<Report>{{1, TransitionState::Abandoned, AbandonReason::NotLeader}});
    solo.advance(kElectionMin - 1ms);
    CHECK_FALSE(solo->is_leader());

    solo.advance(kElectionMax - kElectionMin + 2ms);
    CHECK(solo->is_leader());
    CHECK(solo->current_term() == 1);
    CHECK(solo->leader() == 1);
    solo.poll();
    CHECK(solo->commit_index() == 1); // its own no-op, a majority of one
    CHECK(solo.machine().applied == std::vector<Transition>{kNoop});
  }
}

TEST_SUITE("§5.2 RequestVote receiver") {
  TEST_CASE("a replica rejects a RequestVote from an older term") {
    Node voter(1, {2, 3}, stored(3));
    voter.receive(request_vote(2, 1, 2, 0, 0));

    Message reply = voter.take_reply();
    CHECK(reply.type == MessageType::RequestVoteResponse);
    CHECK_FALSE(reply.vote_granted);
    CHECK(reply.term == 3);
    CHECK(voter->current_term() == 3);
  }

  TEST_CASE("a replica grants at most one vote per term") {
    Node voter(1, {2, 3});
    voter.receive(request_vote(2, 1, 1, 0, 0));
    Message first = voter.take_reply();
    CHECK(first.vote_granted);
    CHECK(first.term == 1);
    CHECK(first.to == 2);

    voter.receive(request_vote(3, 1, 1, 0, 0));
    CHECK_FALSE(voter.take_reply().vote_granted);
    CHECK(voter.storage.load().voted_for == 2);
  }

  TEST_CASE("a replica grants its vote again to the candidate it voted for") {
    Node voter(1, {2, 3});
    voter.receive(request_vote(2, 1, 1, 0, 0));
    CHECK(voter.take_reply().vote_granted);

    voter.receive(request_vote(2, 1, 1, 0, 0)); // a retry, or the network duplicated it
    CHECK(voter.take_reply().vote_granted);
  }

  TEST_CASE("a replica that grants a vote resets its election timer") {
    Node voter(1, {2, 3}, {}, paper_elections(), {100ms, 101ms});
    voter.poll();
    voter.advance(90ms);
    voter.receive(request_vote(2, 1, 1, 0, 0));
    CHECK(voter.take_reply().vote_granted);

    voter.advance(60ms); // past the first timeout, not past the reset one
    CHECK(voter.take_sent().empty());
    voter.advance(50ms);
    CHECK(voter->current_term() == 2);
    CHECK(count(voter.take_sent(), MessageType::RequestVote, 2) == 1);
  }

  TEST_CASE("a replica that rejects a stale RequestVote keeps its election timer") {
    Node voter(1, {2, 3}, stored(3), paper_elections(), {100ms, 101ms});
    voter.poll();
    voter.advance(90ms);
    voter.receive(request_vote(2, 1, 2, 0, 0));
    CHECK_FALSE(voter.take_reply().vote_granted);

    voter.advance(12ms); // past the first timeout
    CHECK(voter->current_term() == 4);
    CHECK(count(voter.take_sent(), MessageType::RequestVote, 2) == 1);
  }
}

// The dissertation's §9.6: a replica that times out first asks whether it could win, in a pre-vote
// that changes no term and no vote, and replicas that hear from a leader refuse it.
TEST_SUITE("§9.6 Pre-Vote") {
  raft::Options pre_vote() { return raft::Options{}; } // pre_vote is on by default

  Message pre_vote_request(ReplicaID from, ReplicaID to, Term term, Index last_log_index,
                           Term last_log_term) {
    Message m = request_vote(from, to, term, last_log_index, last_log_term);
    m.pre_vote = true;
    return m;
  }

  Message pre_vote_grant(ReplicaID from, ReplicaID to, Term term) {
    Message m = vote(from, to, term, true);
    m.pre_vote = true;
    return m;
  }

  TEST_CASE("a replica that times out asks for pre-votes for the next term, changing nothing") {
    Node follower(1, {2, 3}, stored(2, make_log({{1, 1}, {2, 2}})), pre_vote());
    follower.receive(append_entries(2, 1, 2, 3, 2));
    follower.take_sent();
    follower.journal.clear();
    follower.advance(kElectionMax + 1ms);

    CHECK(follower->current_term() == 2);
    CHECK(follower.storage.load().voted_for == std::nullopt);
    CHECK(std::count(follower.journal.begin(), follower.journal.end(), "save") == 0);
    CHECK(follower->leader() == std::nullopt); // it no longer hears one
    CHECK(follower.cluster.leaders.back() == std::nullopt);
    check_vote_requests(follower.take_sent(), {2, 3}, 3, 3, 2, true);
  }

  TEST_CASE("a pre-candidate with a majority of pre-votes starts a real election") {
    Node node(1, {2, 3, 4, 5}, stored(4), pre_vote());
    node.time_out();
    node.take_sent();
    node.receive(pre_vote_grant(2, 1, 4));
    CHECK(node->current_term() == 4); // 2 of 5
    CHECK(node.take_sent().empty());
    node.receive(pre_vote_grant(3, 1, 4));
    CHECK(node->current_term() == 5);
    CHECK(node.storage.load().voted_for == 1);
    CHECK(node->leader() == std::nullopt);
    std::vector<Message> sent = node.take_sent();
    CHECK(sent.size() == 4);
    for (const Message& m : sent) CHECK((m.type == MessageType::RequestVote && !m.pre_vote));
    for (ReplicaID peer : {2, 3, 4}) node.receive(vote(peer, 1, 5, true));
    CHECK(node->is_leader());
  }

  TEST_CASE("a pre-vote granted in an earlier term does not count in a later round") {
    Node node(1, {2, 3}, stored(1), pre_vote());
    node.time_out(); // a pre-candidate in term 1
    Message late = pre_vote_grant(2, 1, 1);
    node.receive(append_entries(3, 1, 2, 0, 0)); // replica 3 leads term 2
    node.take_sent();
    node.advance(kElectionMax + 1ms); // cut off from it: a pre-candidate in term 2
    node.receive(late);
    CHECK(node->current_term() == 2);
    node.receive(pre_vote_grant(2, 1, 2));
    CHECK(node->current_term() == 3);
  }

  TEST_CASE("a pre-candidate counts no real vote, and a candidate no pre-vote") {
    Node node(1, {2, 3}, {}, pre_vote());
    node.time_out();
    node.receive(vote(2, 1, 0, true));
    CHECK(node->current_term() == 0);
    node.receive(pre_vote_grant(2, 1, 0));
    REQUIRE(node->current_term() == 1); // a candidate now
    node.receive(pre_vote_grant(3, 1, 1));
    CHECK_FALSE(node->is_leader());
  }

  TEST_CASE("a replica that heard from a leader within the minimum election timeout refuses a "
            "pre-vote") {
    Node follower(1, {2, 3}, stored(1), pre_vote());
    follower.receive(append_entries(2, 1, 1, 0, 0));
    follower.take_sent();
    follower.advance(kElectionMin - 1ms);
    follower.receive(pre_vote_request(3, 1, 2, 0, 0));
    Message reply = follower.take_reply();
    CHECK(reply.pre_vote);
    CHECK_FALSE(reply.vote_granted);
    CHECK(reply.term == 1);
    CHECK(follower->current_term() == 1); // a pre-vote's term is not adopted
    CHECK(follower->leader() == 2);
  }

  TEST_CASE("a replica that heard from no leader for the minimum timeout grants a pre-vote, "
            "changing nothing") {
    Node follower(1, {2, 3}, stored(1), pre_vote(), {100ms, 200ms});
    follower.receive(append_entries(2, 1, 1, 0, 0));
    follower.take_sent();
    follower.journal.clear();
    Clock::time_point deadline = follower->next_deadline();
    follower.advance(kElectionMin);
    follower.receive(pre_vote_request(3, 1, 2, 0, 0));
    Message reply = follower.take_reply();
    CHECK(reply.pre_vote);
    CHECK(reply.vote_granted);
    CHECK(reply.term == 1);
    CHECK(follower->current_term() == 1);
    CHECK(follower.storage.load().voted_for == std::nullopt);
    CHECK(std::count(follower.journal.begin(), follower.journal.end(), "save") == 0);
    CHECK(follower->next_deadline() == deadline); // its own timer runs on
  }

  TEST_CASE("a leader refuses a pre-vote, and stays leader") {
    Node leader(1, {2, 3}, {}, pre_vote());
    leader.time_out();
    leader.receive(pre_vote_grant(2, 1, 0));
    leader.receive(vote(2, 1, 1, true));
    REQUIRE(leader->is_leader());
    leader.take_sent();
    leader.receive(append_response(2, 1, 1, true, 1)); // a majority hears it: check-quorum holds
    leader.advance(kElectionMax + 1ms);
    leader.take_sent();
    leader.receive(pre_vote_request(3, 1, 2, 1, 1));
    std::vector<Message> replies = of_type(leader.take_sent(), MessageType::RequestVoteResponse);
    REQUIRE(replies.size() == 1);
    CHECK_FALSE(replies[0].vote_granted);
    CHECK(leader->is_leader());
    CHECK(leader->current_term() == 1);
  }

  TEST_CASE("a pre-vote is refused for a term not above the voter's, or for a log behind") {
    Node voter(3, {1, 2}, stored(3, make_log({{2, 1}, {1, 3}})), pre_vote());
    voter.poll();
    voter.advance(kElectionMax + 1ms); // a pre-candidate itself, still in term 3
    voter.take_sent();
    voter.receive(pre_vote_request(2, 3, 3, 3, 3));
    CHECK_FALSE(voter.take_reply().vote_granted); // term 3 is not above the voter's
    voter.receive(pre_vote_request(2, 3, 4, 5, 2));
    CHECK_FALSE(voter.take_reply().vote_granted); // last term 2 is behind the voter's 3
    voter.receive(pre_vote_request(2, 3, 4, 3, 3));
    CHECK(voter.take_reply().vote_granted);
  }

  TEST_CASE("of two pre-candidates with equal logs, the lower id goes ahead and the other stands "
            "back") {
    Node low(1, {2, 3}, stored(2), pre_vote());
    Node high(2, {1, 3}, stored(2), pre_vote());
    low.time_out();
    high.time_out();
    low.take_sent();
    high.take_sent();
    low.receive(pre_vote_request(2, 1, 3, 0, 0));
    CHECK_FALSE(low.take_reply().vote_granted);
    high.receive(pre_vote_request(1, 2, 3, 0, 0));
    CHECK(high.take_reply().vote_granted);
    high.receive(pre_vote_grant(3, 2, 2)); // it stood back: a grant no longer counts
    CHECK(high->current_term() == 2);
    CHECK(high.take_sent().empty());
    low.receive(pre_vote_grant(3, 1, 2));
    CHECK(low->current_term() == 3); // campaigns, and the one that stood back will vote for it
    high.receive(request_vote(1, 2, 3, 0, 0));
    CHECK(high.take_reply().vote_granted);
  }

  TEST_CASE("a pre-candidate grants a pre-vote to a more up-to-date log, whatever the ids") {
    Node node(1, {2, 3}, stored(2, make_log({{1, 1}})), pre_vote());
    node.time_out();
    node.take_sent();
    node.receive(pre_vote_request(2, 1, 3, 2, 1)); // longer
    CHECK(node.take_reply().vote_granted);
    CHECK(node->current_term() == 2);
  }

  TEST_CASE("a pre-candidate that hears from the leader of its term follows it again") {
    Node node(1, {2, 3}, stored(2), pre_vote());
    node.time_out();
    node.take_sent();
    node.receive(append_entries(2, 1, 2, 0, 0));
    CHECK(node.take_reply().success);
    CHECK(node->leader() == 2);
    node.receive(pre_vote_grant(3, 1, 2)); // too late: it no longer campaigns
    CHECK(node->current_term() == 2);
  }

  TEST_CASE("a replica cut off from its leader does not depose it when it returns") {
    Node leader(1, {2, 3}, {}, pre_vote());
    Node follower(2, {1, 3}, {}, pre_vote());
    Node cut_off(3, {1, 2}, {}, pre_vote());
    leader.time_out();
    deliver(leader, follower);
    deliver(follower, leader); // a pre-vote majority
    deliver(leader, follower);
    deliver(follower, leader); // a vote majority
    REQUIRE(leader->is_leader());
    leader.take_sent();
    for (int i = 0; i < 100; ++i) { // replica 3 hears nothing for five maximum timeouts
      for (Node* node : {&leader, &follower, &cut_off}) node->now += kHeartbeat;
      leader.poll();
      cut_off.poll();
      settle(leader, follower);
      deliver(cut_off, follower); // its pre-votes reach replica 2, which hears from the leader
      deliver(follower, cut_off);
      leader.take_sent(); // all for replica 3: lost
      cut_off.take_sent();
    }
    CHECK(cut_off->current_term() == 1);
    cut_off.take_sent();
    leader.advance(kHeartbeat);
    deliver(leader, cut_off);
    deliver(cut_off, leader);
    CHECK(leader->is_leader());
    CHECK(leader->current_term() == 1);
    CHECK(cut_off->leader() == 1);
  }
}
