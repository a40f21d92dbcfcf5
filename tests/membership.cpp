// §4 Membership changes, one replica at a time: learners, AddVoter's catch-up, removal of the
// leader, roll-back of an uncommitted configuration, joining replicas and the known fix to
// single-server changes (a leader appends a change only once an entry of its term committed).
#include "harness.hpp"

#include <map>
#include <set>

using namespace harness;
using raft::Configuration;
using raft::MembershipChange;

namespace {

// Replicas 1 to n as voters and, for ids from n + 1 to `joining`, replicas built with
// Options::joining; messages go to whoever is up, after each poll of its sender.
struct Group {
  std::map<ReplicaID, std::unique_ptr<Node>> nodes;
  std::set<ReplicaID> down;

  Group(ReplicaID voters, ReplicaID joining = 0) {
    std::vector<ReplicaID> everyone;
    for (ReplicaID id = 1; id <= std::max(voters, joining); ++id) everyone.push_back(id);
    for (ReplicaID id = 1; id <= std::max(voters, joining); ++id) {
      std::vector<ReplicaID> peers;
      for (ReplicaID peer = 1; peer <= voters; ++peer)
        if (peer != id && id <= voters) peers.push_back(peer);
      raft::Options options = paper_elections();
      options.joining = id > voters;
      nodes[id] = std::make_unique<Node>(id, peers, raft::MemoryStorage{}, options);
      for (ReplicaID other : everyone)
        if (other != id && std::count(peers.begin(), peers.end(), other) == 0)
          nodes[id]->cluster.peers_extra.push_back(other);
    }
    for (auto& [id, node] : nodes) node->poll();
  }
  Node& operator[](ReplicaID id) { return *nodes.at(id); }

  // Delivers until nothing is in flight; messages to a replica that is down are lost.
  void settle() {
    for (int round = 0; round < 200; ++round) {
      bool moved = false;
      for (auto& [id, node] : nodes)
        for (Message& m : node->take_sent())
          if (nodes.count(m.to) && !down.count(m.to) && !down.count(id)) {
            nodes[m.to]->cluster.inbox.push_back(std::move(m));
            moved = true;
          }
      if (!moved) return;
      for (auto& [id, node] : nodes)
        if (!down.count(id)) node->poll();
    }
    FAIL("messages never settled");
  }
  // Moves every clock on, a heartbeat at a time, delivering everything between.
  void advance(Duration elapsed) {
    for (; elapsed > Duration::zero(); elapsed -= kHeartbeat) {
      for (auto& [id, node] : nodes)
        if (!down.count(id)) node->advance(kHeartbeat);
      settle();
    }
  }
  // Replica `id` times out first and wins; everything settles.
  void elect(ReplicaID id) {
    Node& node = (*this)[id];
    node.now += kElectionMax + 1ms;
    for (auto& [other, peer] : nodes) peer->now = node.now;
    node.poll();
    settle();
    REQUIRE(node->is_leader());
    advance(kHeartbeat);
  }
  void propose(ReplicaID leader, std::uint64_t id) {
    (*this)[leader].propose({{id, "value " + std::to_string(id)}});
    (*this)[leader].poll();
    settle();
  }
  // Whether transition `id`, proposed to `leader`, commits within three heartbeats.
  bool commits(ReplicaID leader, std::uint64_t id) {
    propose(leader, id);
    advance(3 * kHeartbeat);
    return reported((*this)[leader].machine(), id, TransitionState::Committed);
  }
  // `leader` is asked for a change of `kind` to `replica` as request `id`; three heartbeats follow.
  void change(ReplicaID leader, std::uint64_t id, MembershipChange kind, ReplicaID replica) {
    (*this)[leader]->change_membership(id, kind, replica);
    (*this)[leader].poll();
    advance(3 * kHeartbeat);
  }
};

} // namespace

TEST_SUITE("§4 Membership changes") {
  TEST_CASE("AddLearner: the learner gets the log but never counts toward a commit") {
    Group group(3, 4);
    group.elect(1);
    CHECK(group[4]->configuration() == Configuration{}); // joining: none until a leader's log
    group[1]->change_membership(100, MembershipChange::AddLearner, 4);
    group[1].poll();
    group.advance(5 * kHeartbeat);
    CHECK(reported(group[1].machine(), 100, TransitionState::Applied));
    CHECK(reported(group[4].machine(), 100, TransitionState::Applied)); // on every replica
    CHECK(group[1]->configuration() == Configuration{{1, 2, 3}, {4}});
    CHECK(group[4]->configuration() == Configuration{{1, 2, 3}, {4}});
    group.propose(1, 7);
    group.advance(kHeartbeat);
    CHECK(group[4].machine().applied.back().id == 7);
    group.down = {2, 3}; // the learner and the leader are no majority
    CHECK_FALSE(group.commits(1, 8));
  }

  TEST_CASE("AddVoter of a new replica: a learner first, promoted once caught up; one report") {
    Group group(3, 4);
    group.elect(1);
    for (std::uint64_t id = 1; id <= 50; ++id) group.propose(1, id);
    group[1]->change_membership(100, MembershipChange::AddVoter, 4);
    group[1].poll();
    CHECK(reported(group[1].machine(), 100, TransitionState::Queued));
    group.advance(10 * kHeartbeat);
    CHECK(group[1]->configuration() == Configuration{{1, 2, 3, 4}, {}});
    CHECK(group[4]->configuration() == Configuration{{1, 2, 3, 4}, {}});
    CHECK(std::count_if(group[1].machine().reports.begin(), group[1].machine().reports.end(),
                        [](const Report& r) { return r.id == 100; }) == 3); // Q, C, A
    CHECK(group[4].machine().applied.size() == group[1].machine().applied.size());
    group.down = {2, 3}; // now 1 and 4 are two of four: no majority
    CHECK_FALSE(group.commits(1, 51));
  }

  TEST_CASE("AddVoter under a steady write load: a catch-up round starts a heartbeat round") {
    // Entries sent at least once per heartbeat keep every heartbeat from falling due, so the
    // learner's answer to a round started for its catch-up (§4.2.1) must not wait for one.
    Group group(3, 4);
    group.elect(1);
    group.change(1, 100, MembershipChange::AddLearner, 4);
    group[1]->change_membership(101, MembershipChange::AddVoter, 4);
    for (std::uint64_t id = 1;
         id <= 100 && !reported(group[1].machine(), 101, TransitionState::Applied); ++id) {
      group[1].propose({{id, "value"}});
      for (auto& [replica, node] : group.nodes) node->advance(kHeartbeat / 2);
      group.settle();
    }
    CHECK(reported(group[1].machine(), 101, TransitionState::Applied));
    CHECK(group[1]->configuration() == Configuration{{1, 2, 3, 4}, {}});
  }

  TEST_CASE("AddVoter of a learner that never answers is refused and it stays a learner") {
    Group group(3, 4);
    group.elect(1);
    group.change(1, 100, MembershipChange::AddLearner, 4);
    group.down = {4};
    group[1]->change_membership(101, MembershipChange::AddVoter, 4);
    group[1].poll();
    group.advance(11 * kElectionMax);
    CHECK(reported(group[1].machine(), 101, TransitionState::Abandoned, AbandonReason::Refused));
    CHECK(group[1]->configuration() == Configuration{{1, 2, 3}, {4}});
  }

  TEST_CASE("changes that cannot be made are refused; on a follower, NotLeader") {
    Group group(3, 4);
    group.elect(1);
    group[1]->change_membership(1, MembershipChange::AddLearner, 4);
    group[1]->change_membership(2, MembershipChange::AddLearner, 5); // one at a time
    group[1].poll();
    CHECK(reported(group[1].machine(), 2, TransitionState::Abandoned, AbandonReason::Refused));
    group.advance(3 * kHeartbeat);
    group[1]->change_membership(3, MembershipChange::AddVoter, 2);   // a voter already
    group[1]->change_membership(4, MembershipChange::AddLearner, 2); // no demotion
    group[1]->change_membership(5, MembershipChange::AddLearner, 4); // a learner already
    group[1]->change_membership(6, MembershipChange::Remove, 9);     // not a member
    group[2]->change_membership(7, MembershipChange::Remove, 3);     // not the leader
    group[1].poll(), group[2].poll();
    for (std::uint64_t id : {3, 4, 5, 6})
      CHECK(reported(group[1].machine(), id, TransitionState::Abandoned, AbandonReason::Refused));
    CHECK(reported(group[2].machine(), 7, TransitionState::Abandoned, AbandonReason::NotLeader));
  }

  TEST_CASE("removing the last voter is refused") {
    Node node(1, {});
    node.time_out();
    REQUIRE(node->is_leader());
    node->change_membership(9, MembershipChange::Remove, 1);
    node.poll();
    CHECK(reported(node.machine(), 9, TransitionState::Abandoned, AbandonReason::Refused));
  }

  TEST_CASE("a change waits, Queued, until an entry of the leader's term commits") {
    Group group(3);
    Node& leader = group[1];
    for (ReplicaID id : {1, 2, 3}) group[id].now += kElectionMax + 1ms;
    leader.poll(); // campaigns
    for (Message& m : leader.take_sent()) group[m.to].receive(m);
    for (ReplicaID id : {2, 3})
      for (Message& m : group[id].take_sent()) leader.cluster.inbox.push_back(m);
    leader.poll();
    REQUIRE(leader->is_leader());
    leader.take_sent(); // its no-op reaches nobody: nothing of its term has committed
    leader->change_membership(50, MembershipChange::Remove, 3);
    leader.poll();
    CHECK(reported(leader.machine(), 50, TransitionState::Queued));
    CHECK(leader->configuration() == Configuration{{1, 2, 3}, {}}); // not appended yet
    CHECK(leader->last_log_index() == 1);
    group.advance(3 * kHeartbeat); // the no-op commits, then the change goes in and commits
    CHECK(leader->configuration() == Configuration{{1, 2}, {}});
    CHECK(reported(leader.machine(), 50, TransitionState::Applied));
  }

  TEST_CASE("a configuration takes effect when appended and is rolled back when truncated") {
    Node follower(2, {1, 3});
    Entry change{1, Transition{60, ""},
                 std::make_shared<Configuration>(Configuration{{1, 2, 3}, {4}})};
    follower.receive(append_entries(1, 2, 1, 0, 0, {entry(1, 1), change}));
    CHECK(follower->configuration() == Configuration{{1, 2, 3}, {4}});
    follower.receive(append_entries(3, 2, 2, 1, 1, {entry(2, 2)})); // a new leader overwrites
    CHECK(follower->configuration() == Configuration{{1, 2, 3}, {}});
  }

  TEST_CASE("a removed leader leads until its removal commits, without counting itself") {
    Group group(3);
    group.elect(1);
    group[1]->change_membership(70, MembershipChange::Remove, 1);
    group[1].poll();
    CHECK(group[1]->configuration() == Configuration{{2, 3}, {}});
    CHECK(group[1]->is_leader());
    group.down = {3}; // 1's own copy must not count: 2 alone is not a majority of {2, 3}
    group.settle();
    CHECK(group[1]->is_leader());
    CHECK(group[1]->commit_index() < group[1]->last_log_index());
    group.down = {};
    group.advance(3 * kHeartbeat);
    CHECK_FALSE(group[1]->is_leader());
    CHECK(group[2]->commit_index() == group[2]->last_log_index()); // the removal reached them
    group.advance(3 * kElectionMax);
    CHECK((group[2]->is_leader() || group[3]->is_leader()));
    CHECK_FALSE(group[1]->is_leader()); // no longer a voter: it never campaigns
  }

  TEST_CASE("a removed replica that keeps running does not disrupt the cluster (§4.2.3)") {
    Group group(3);
    group.elect(1);
    group.change(1, 71, MembershipChange::Remove, 3);
    REQUIRE(group[1]->configuration() == Configuration{{1, 2}, {}});
    Term term = group[1]->current_term();
    group.advance(10 * kElectionMax); // 3 hears nothing more; whatever it sends changes nothing
    CHECK(group[1]->is_leader());
    CHECK(group[1]->current_term() == term);
  }

  TEST_CASE("a replica that believes it is a learner still votes when asked") {
    Node learner(4, {}, {}, [] {
      raft::Options options = paper_elections();
      options.joining = true;
      return options;
    }());
    learner.cluster.peers_extra = {1, 2, 3};
    Entry change{1, Transition{60, ""},
                 std::make_shared<Configuration>(Configuration{{1, 2, 3}, {4}})};
    learner.receive(append_entries(1, 4, 1, 0, 0, {change}));
    learner.advance(kElectionMax + 1ms);
    CHECK(of_type(learner.take_sent(), MessageType::RequestVote).empty()); // never campaigns
    learner.receive(request_vote(2, 4, 2, 1, 1));
    CHECK(learner.take_reply().vote_granted);
  }

  TEST_CASE("the configuration survives a restart and a snapshot") {
    Group group(3, 4);
    group.elect(1);
    group.change(1, 80, MembershipChange::AddLearner, 4);
    group[4].crash();
    CHECK(group[4]->configuration() == Configuration{{1, 2, 3}, {4}});
    group[1].crash();
    CHECK(group[1]->configuration() == Configuration{{1, 2, 3}, {4}});
  }
}
