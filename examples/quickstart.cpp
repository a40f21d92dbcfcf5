// Three replicas of a counter in one process, over an in-memory network.
#include "raft.hpp"
#include <cstdio>
#include <map>
#include <memory>

using namespace std::chrono_literals;
std::map<raft::ReplicaID, std::vector<raft::Message>> mailboxes; // the "network"

struct Counter : raft::StateMachine { // the replicated state
  long value = 0;
  std::vector<raft::Transition> pending; // what clients asked this replica for
  void apply_transition(const raft::Transition& t) override { value += t.data.size(); }
  std::vector<raft::Transition> get_pending_transitions() override { return std::move(pending); }
  void register_transition_state(std::uint64_t id, raft::TransitionState state,
                                 raft::AbandonReason) override {
    if (state == raft::TransitionState::Committed)
      std::printf("transition %llu committed\n", (unsigned long long)id);
  }
};

struct Network : raft::Cluster { // delivers every message on the next poll
  raft::ReplicaID id;
  explicit Network(raft::ReplicaID id) : id(id) {}
  void send_message(raft::ReplicaID to, const raft::Message& m) override {
    mailboxes[to].push_back(m);
  }
  std::vector<raft::Message> receive_messages() override {
    return std::exchange(mailboxes[id], {});
  }
  bool halt() const override { return false; }
  void register_leader(std::optional<raft::ReplicaID> leader) override {
    if (leader == id) std::printf("replica %llu is the leader\n", (unsigned long long)id);
  }
};

int main() {
  std::vector<raft::ReplicaID> ids = {1, 2, 3};
  std::map<raft::ReplicaID, Counter> counters;
  std::map<raft::ReplicaID, std::unique_ptr<Network>> networks;
  std::vector<std::unique_ptr<raft::Replica>> replicas;
  for (raft::ReplicaID id : ids) {
    std::vector<raft::ReplicaID> peers;
    for (raft::ReplicaID peer : ids)
      if (peer != id) peers.push_back(peer);
    networks[id] = std::make_unique<Network>(id);
    replicas.push_back(std::make_unique<raft::Replica>(
        id, peers, *networks[id], counters[id], raft::Transition{0, ""}, 50ms,
        std::make_pair(150ms, 300ms), raft::Options{id}));
  }
  raft::Clock::time_point now = raft::Clock::now(); // a simulated clock: 1 ms per step
  for (std::uint64_t step = 1; step <= 1000; ++step, now += 1ms)
    for (auto& replica : replicas) {
      if (replica->is_leader() && step % 100 == 0) // a client asks the leader for "+3"
        counters[replica->id()].pending.push_back({step, "+++"});
      replica->poll(now);
    }
  for (raft::ReplicaID id : ids)
    std::printf("replica %llu: %ld\n", (unsigned long long)id, counters[id].value);
}
