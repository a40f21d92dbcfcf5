// A 5-replica cluster in one process, on a simulated clock: it elects a leader, commits
// transitions, loses its leader, elects another, and converges. Run it with `make demo`.
//
// Each replica's state machine is a bank account: a transition "deposit 10" adds 10 to the
// balance. Raft makes every replica apply the same deposits in the same order, so all balances
// agree in the end.
#include "raft.hpp"

#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <string>

using namespace std::chrono_literals;

// The state machine: a balance, and the deposits a client wants replicated.
class Account : public raft::StateMachine {
public:
  long balance = 0;
  std::vector<raft::Transition> pending;

  void apply_transition(const raft::Transition& transition) override {
    if (!transition.data.empty()) balance += std::stol(transition.data.substr(8));
  }
  std::vector<raft::Transition> get_pending_transitions() override { return std::move(pending); }
  void register_transition_state(std::uint64_t, raft::TransitionState,
                                 raft::AbandonReason) override {}
};

// The transport: one inbox per replica. A replica marked down neither sends nor receives.
struct Network {
  std::map<raft::ReplicaID, std::deque<raft::Message>> inbox;
  std::map<raft::ReplicaID, bool> down;
  std::size_t delivered = 0;
};

class InMemoryCluster : public raft::Cluster {
public:
  InMemoryCluster(raft::ReplicaID id, Network& network) : id_(id), network_(network) {}
  void send_message(raft::ReplicaID to, const raft::Message& message) override {
    if (!network_.down[id_] && !network_.down[to]) network_.inbox[to].push_back(message);
  }
  std::vector<raft::Message> receive_messages() override {
    std::vector<raft::Message> messages(network_.inbox[id_].begin(), network_.inbox[id_].end());
    network_.inbox[id_].clear();
    network_.delivered += messages.size();
    return messages;
  }
  bool halt() const override { return false; }
  void register_leader(std::optional<raft::ReplicaID> leader) override {
    if (leader && *leader != id_)
      std::printf("  replica %llu now follows leader %llu\n", (unsigned long long)id_,
                  (unsigned long long)*leader);
  }

private:
  raft::ReplicaID id_;
  Network& network_;
};

struct Node {
  std::unique_ptr<Account> account;
  std::unique_ptr<InMemoryCluster> cluster;
  raft::MemoryStorage storage; // survives a crash, like a disk
  std::unique_ptr<raft::Replica> replica;
};

const std::vector<raft::ReplicaID> ids = {1, 2, 3, 4, 5};
Network network;
std::map<raft::ReplicaID, Node> nodes;
raft::Clock::time_point now; // the simulated clock

void boot(raft::ReplicaID id) {
  Node& node = nodes[id];
  node.account = std::make_unique<Account>();
  node.cluster = std::make_unique<InMemoryCluster>(id, network);
  std::vector<raft::ReplicaID> peers;
  for (raft::ReplicaID peer : ids)
    if (peer != id) peers.push_back(peer);
  raft::Options options;
  options.seed = id; // deterministic: the same run every time
  options.storage = &node.storage;
  node.replica = std::make_unique<raft::Replica>(id, peers, *node.cluster, *node.account,
                                                 raft::Transition{0, ""}, 50ms,
                                                 std::make_pair(150ms, 300ms), options);
}

long long millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
}

std::optional<raft::ReplicaID> leader() {
  for (auto& [id, node] : nodes)
    if (!network.down[id] && node.replica->is_leader()) return id;
  return std::nullopt;
}

// Advances the clock 1 ms at a time, polling every live replica, until `done` or a time limit.
template <class Done> void run(Done done, const char* what) {
  for (int step = 0; step < 10000 && !done(); ++step) {
    now += 1ms;
    for (auto& [id, node] : nodes)
      if (!network.down[id]) node.replica->poll(now);
  }
  std::printf("  [t = %lld ms] %s\n", millis(), what);
}

bool all_applied(raft::Index index) {
  for (auto& [id, node] : nodes)
    if (!network.down[id] && node.replica->last_applied() < index) return false;
  return true;
}

void show() {
  for (auto& [id, node] : nodes)
    std::printf("  replica %llu: %-9s term %llu, log up to %llu, committed %llu, balance %ld\n",
                (unsigned long long)id,
                network.down[id]            ? "(down)"
                : node.replica->is_leader() ? "leader"
                                            : "follower",
                (unsigned long long)node.replica->current_term(),
                (unsigned long long)node.replica->last_log_index(),
                (unsigned long long)node.replica->commit_index(), node.account->balance);
}

// A client sends `count` deposits to the leader `at`; runs until every live replica applied them.
void deposit(raft::ReplicaID at, int count, std::uint64_t& next_id, const char* what) {
  for (int i = 0; i < count; ++i, ++next_id)
    nodes[at].account->pending.push_back({next_id, "deposit " + std::to_string(10 * (i + 1))});
  raft::Index target = nodes[at].replica->last_log_index() + count;
  run([&] { return all_applied(target); }, what);
  show();
}

int main() {
  std::printf(
      "Five replicas start as followers in term 0. Each waits for a random election\n"
      "timeout between 150 and 300 ms; the first to time out asks the others whether\n"
      "they would vote for it (a pre-vote, which changes nothing), then for their votes.\n");
  for (raft::ReplicaID id : ids) boot(id);
  run([] { return leader().has_value(); }, "a leader is elected");
  raft::ReplicaID first = *leader();
  std::printf("Replica %llu won a majority of votes in term %llu. It appends a no-op entry to\n"
              "start its term, and sends heartbeats so nobody else starts an election.\n",
              (unsigned long long)first, (unsigned long long)nodes[first].replica->current_term());
  show();

  std::printf("\nA client sends 5 deposits to the leader. The leader appends them to its log,\n"
              "sends them to every follower, and commits them once a majority has stored them.\n");
  std::uint64_t next_id = 1;
  deposit(first, 5, next_id, "every replica has applied the deposits");

  std::printf("\nThe leader, replica %llu, crashes. Its followers stop hearing heartbeats; after\n"
              "an election timeout one of them wins a pre-vote and becomes a candidate for a\n"
              "new term.\n",
              (unsigned long long)first);
  network.down[first] = true;
  run([] { return leader().has_value(); }, "a new leader is elected");
  raft::ReplicaID second = *leader();
  std::printf("Replica %llu is the new leader, in term %llu. Its log holds every committed\n"
              "deposit: Raft only elects a candidate whose log is at least as up to date.\n",
              (unsigned long long)second,
              (unsigned long long)nodes[second].replica->current_term());

  std::printf("\nThe client sends 3 more deposits, now to the new leader; four replicas are a\n"
              "majority of five, so they commit without the crashed one.\n");
  deposit(second, 3, next_id, "the four live replicas have applied them");

  std::printf("\nReplica %llu restarts with an empty state machine. It recovers its term, vote\n"
              "and log from its storage, learns of the new leader, receives the entries it\n"
              "missed, and replays every committed deposit.\n",
              (unsigned long long)first);
  network.down[first] = false;
  boot(first);
  raft::Index target = nodes[second].replica->last_log_index();
  run([&] { return all_applied(target); }, "all five replicas have applied everything");
  show();

  long expected = nodes[second].account->balance;
  for (auto& [id, node] : nodes)
    if (node.account->balance != expected) {
      std::printf("\nThe replicas disagree: this is a bug.\n");
      return 1;
    }
  std::printf("\nAll five replicas agree: balance %ld, after %zu messages. Converged.\n", expected,
              network.delivered);
}
