// kv-server: one replica of a replicated key-value store, with an HTTP interface for clients.
//
//   kv-server --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data DIR
//             [--client-port 8001] [--client-peers 1=127.0.0.1:8001,2=...,3=...]
//
// The parts, each in its own file:
//   store       the map and the commands that change it (no Raft, no threads)
//   machine     the raft::StateMachine, and the two places where HTTP threads meet the replica
//   tcp_cluster the raft::Cluster: messages over TCP, driven by poll(2)
//   http_api    the HTTP interface (GET, PUT, DELETE on /kv/<key>, POST /admin/transfer), on
//               cpp-httplib's threads
//   server      this file: the command line, and the replica's loop on the main thread
//
// Threads: the main thread runs the raft::Replica and owns everything Raft touches (the
// Replica, the TcpCluster, the Machine and its Store). The HTTP threads reach them only through
// the Inbox (commands, reads and transfers in, outcomes out) and the StatusBoard (a copy of the
// replica's state).
#include "common.hpp"
#include "http_api.hpp"
#include "machine.hpp"
#include "raft.hpp"
#include "tcp_cluster.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using kv::Address;

// ---- Settings ----

constexpr raft::Duration heartbeat = 50ms;
constexpr std::pair<raft::Duration, raft::Duration> election_timeout{250ms, 500ms};
constexpr raft::Index snapshot_every = 1000; // entries: bounds the log on disk and in memory
// With at most 256 entries in one AppendEntries, the largest message stays under the frame
// limit, so the transport never has to drop a message for its size (Raft would send it again
// and again, and the follower would never catch up).
constexpr std::size_t max_entries_per_message = 256;
static_assert((kv::max_key_bytes + kv::max_value_bytes + kv::max_client_id_bytes + 128) *
                      max_entries_per_message <
                  kv::max_frame_bytes,
              "an AppendEntries full of the largest commands must fit in one frame");
constexpr std::uint16_t client_port_offset = 1000; // default client port: raft port + 1000

// ---- The command line ----

struct Flags {
  raft::ReplicaID id = 0;
  std::map<raft::ReplicaID, Address> peers;        // raft addresses, this replica's included
  std::map<raft::ReplicaID, Address> client_peers; // HTTP addresses, this replica's included
  std::string data;
};

[[noreturn]] void usage(const char* problem) {
  if (problem) std::fprintf(stderr, "kv-server: %s\n", problem);
  std::fprintf(stderr,
               "usage: kv-server --id N --peers ID=HOST:PORT,... --data DIR\n"
               "                 [--client-port PORT] [--client-peers ID=HOST:PORT,...]\n"
               "  --peers         every replica's Raft address, this one's included\n"
               "  --data          the directory for this replica's log and snapshot\n"
               "  --client-port   the HTTP port (default: this replica's Raft port + %d)\n"
               "  --client-peers  every replica's HTTP address, for redirects to the leader\n"
               "                  (default: the host of --peers, each Raft port + %d)\n",
               client_port_offset, client_port_offset);
  std::exit(2);
}

// "1=127.0.0.1:7001,2=127.0.0.1:7002" -> {1: 127.0.0.1:7001, 2: 127.0.0.1:7002}
std::map<raft::ReplicaID, Address> parse_address_list(std::string_view text) {
  std::map<raft::ReplicaID, Address> result;
  while (!text.empty()) {
    std::string_view item = text.substr(0, text.find(','));
    text.remove_prefix(std::min(text.size(), item.size() + 1));
    std::size_t equals = item.find('=');
    std::optional<std::uint64_t> id = kv::parse_decimal(item.substr(0, equals));
    std::optional<Address> address;
    if (equals != std::string_view::npos) address = kv::parse_address(item.substr(equals + 1));
    if (!id || *id == 0 || !address || !result.emplace(*id, *address).second)
      usage("a list of addresses must look like 1=127.0.0.1:7001,2=127.0.0.1:7002");
  }
  return result;
}

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  std::optional<std::uint64_t> client_port;
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--help" || name == "-h") usage(nullptr);
    const char* known[] = {"--id", "--peers", "--client-peers", "--data", "--client-port"};
    if (std::find(std::begin(known), std::end(known), name) == std::end(known))
      usage(("unknown option " + name).c_str());
    if (i + 1 == argc) usage(("missing the value of " + name).c_str());
    std::string value = argv[++i];
    if (name == "--id") flags.id = kv::parse_decimal(value).value_or(0);
    if (name == "--peers") flags.peers = parse_address_list(value);
    if (name == "--client-peers") flags.client_peers = parse_address_list(value);
    if (name == "--data") flags.data = value;
    if (name == "--client-port") {
      client_port = kv::parse_decimal(value);
      if (!client_port || *client_port == 0 || *client_port > 65535) usage("bad --client-port");
    }
  }
  if (flags.id == 0 || flags.peers.empty() || flags.data.empty())
    usage("--id, --peers and --data are required");
  if (!flags.peers.count(flags.id)) usage("--peers must include this replica's --id");
  for (const auto& [id, address] : flags.client_peers)
    if (!flags.peers.count(id)) usage("--client-peers names a replica that --peers does not");
  for (const auto& [id, address] : flags.peers) // the default client addresses
    if (!flags.client_peers.count(id))
      flags.client_peers[id] =
          Address{address.host, std::uint16_t(address.port + client_port_offset)};
  if (client_port) flags.client_peers[flags.id].port = std::uint16_t(*client_port);
  return flags;
}

// ---- The replica's thread ----

// SIGINT and SIGTERM stop the replica's loop cleanly, for as long as this object lives.
class StopOnSignal {
public:
  explicit StopOnSignal(kv::TcpCluster& cluster) {
    cluster_ = &cluster;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }
  ~StopOnSignal() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    cluster_ = nullptr;
  }

private:
  static void on_signal(int) {
    if (cluster_) cluster_->request_halt(); // an atomic store and a write(2): signal-safe
  }
  static inline kv::TcpCluster* cluster_ = nullptr;
};

// The host's loop: poll the replica, do the host's own work between polls, and sleep in the
// cluster until the next deadline, a message, or a request from an HTTP thread. This is what
// raft::Replica::start() does, plus the host's work: the reads and transfers the HTTP threads
// asked for go to the replica before each poll (writes it takes itself, as pending transitions).
void run(raft::Replica& replica, kv::TcpCluster& cluster, kv::Machine& machine,
         kv::StatusBoard& board) {
  while (!cluster.halt()) {
    machine.take_requests(replica);
    replica.poll(raft::Clock::now());
    machine.forget_expired(raft::Clock::now());
    board.publish(replica, machine.store());
    cluster.wait_until(replica.next_deadline());
  }
}

int serve(const Flags& flags) {
  std::vector<raft::ReplicaID> others;
  for (const auto& [id, address] : flags.peers)
    if (id != flags.id) others.push_back(id);

  raft::FileStorage storage(flags.data);
  kv::Waker waker;
  kv::TcpCluster cluster(flags.id, flags.peers, waker);
  kv::Inbox inbox(waker);
  kv::Machine machine(inbox);
  raft::Options options;
  options.storage = &storage;
  options.snapshot_delta = snapshot_every;
  options.max_entries_per_message = max_entries_per_message;
  raft::Replica replica(flags.id, others, cluster, machine, raft::Transition{0, ""}, heartbeat,
                        election_timeout, options);
  kv::StatusBoard board;
  board.publish(replica, machine.store());
  const Address& http_address = flags.client_peers.at(flags.id);
  kv::HttpApi http(flags.id, http_address, flags.client_peers, inbox, machine, board);

  StopOnSignal stop_on_signal(cluster);
  kv::log("replica %llu: raft on %s, clients on http://%s, data in %s",
          (unsigned long long)flags.id, kv::to_string(flags.peers.at(flags.id)).c_str(),
          kv::to_string(http_address).c_str(), flags.data.c_str());
  run(replica, cluster, machine, board);
  kv::log("stopping");
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  Flags flags = parse_flags(argc, argv);
  std::signal(SIGPIPE, SIG_IGN); // a client that hangs up must not kill the server
  try {
    return serve(flags);
  } catch (const std::exception& error) {
    kv::log("fatal: %s", error.what());
    return 1;
  }
}
