// kv-server: one replica of a replicated key-value store, with an HTTP interface for clients.
//
//   kv-server --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data DIR
//             [--peer-base 127.0.0.1:7000] [--client-port 8001] [--client-peers 1=...,2=...]
//   kv-server --id 4 --join --peer-base 127.0.0.1:7000 --data DIR    (then, to the leader:
//             curl -d '' http://LEADER/admin/add-voter?id=4)
//
// The parts, each in its own file:
//   store       the map and the commands that change it (no Raft, no threads)
//   machine     the raft::StateMachine, and the two places where HTTP threads meet the replica
//   tcp_cluster the raft::Cluster: messages over TCP, driven by poll(2)
//   http_api    the HTTP interface (GET, PUT, DELETE on /kv/<key>, POST /admin/transfer, the
//               membership changes), on cpp-httplib's threads
//   server      this file: the command line, and the replica's loop on the main thread
//
// Threads: the main thread runs the raft::Replica and owns everything Raft touches (the
// Replica, the TcpCluster, the Machine and its Store). The HTTP threads reach them only through
// the Inbox (commands, reads, transfers and membership changes in, outcomes out) and the
// StatusBoard (a copy of the replica's state).
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
// Entries between snapshots (--snapshot-every). A snapshot serializes the whole store and
// FileStorage rewrites its log with it, inside the poll, so every request waits for it; its cost
// grows with the store, so taking one rarely is what keeps it off the tail: 100,000 entries, as
// etcd does. The log holds that many entries in memory and on disk between two snapshots.
constexpr raft::Index default_snapshot_every = 100000;
// With at most 256 entries in one AppendEntries, the largest message stays under the frame
// limit, so the transport never has to drop a message for its size (Raft would send it again
// and again, and the follower would never catch up).
constexpr std::size_t max_entries_per_message = 256;
static_assert((kv::max_key_bytes + kv::max_value_bytes + kv::max_client_id_bytes + 128) *
                      max_entries_per_message <
                  kv::max_frame_bytes,
              "an AppendEntries full of the largest commands must fit in one frame");
constexpr std::uint16_t client_port_offset = kv::AddressBook::client_port_offset;

// ---- The command line ----

struct Flags {
  raft::ReplicaID id = 0;
  std::map<raft::ReplicaID, Address> peers;        // raft addresses
  std::map<raft::ReplicaID, Address> client_peers; // HTTP addresses
  std::optional<Address> peer_base;                // the others: raft on HOST:PORT+id
  bool join = false;
  std::string data;
  raft::Index snapshot_every = default_snapshot_every;
};

[[noreturn]] void usage(const char* problem) {
  if (problem) std::fprintf(stderr, "kv-server: %s\n", problem);
  std::fprintf(
      stderr,
      "usage: kv-server --id N (--peers ID=HOST:PORT,... | --join) --data DIR\n"
      "                 [--peer-base HOST:PORT] [--client-port PORT]\n"
      "                 [--client-peers ID=HOST:PORT,...] [--snapshot-every N]\n"
      "  --id            this replica's id, a number from 1 up\n"
      "  --peers         the first replicas' Raft addresses, this one's included. On its first\n"
      "                  start a replica takes them as the cluster's members; from then on, the\n"
      "                  members are in its data directory, changes included, and --peers only\n"
      "                  says where replicas listen\n"
      "  --join          start as no member, with no configuration, and wait for the leader to\n"
      "                  add this replica (POST /admin/add-voter?id=N or add-learner, below).\n"
      "                  --peers is then only a list of addresses. Restart a joined replica\n"
      "                  with the same flags: it finds its membership in --data\n"
      "  --peer-base     where the replicas that --peers does not list are: replica N (1 to\n"
      "                  999) listens for Raft on HOST:PORT+N, and for clients on\n"
      "                  HOST:PORT+%d+N. Give it, the same, to every replica: it is how they\n"
      "                  all find a replica added later\n"
      "  --data          the directory for this replica's log and snapshot\n"
      "  --client-port   the HTTP port (default: this replica's Raft port + %d)\n"
      "  --client-peers  replicas' HTTP addresses, for redirects to the leader\n"
      "                  (default: each replica's Raft address, with the port + %d)\n"
      "  --snapshot-every  entries applied between two snapshots (default %llu): fewer\n"
      "                  snapshots cost less, a longer log takes more memory and disk\n"
      "Example, on one host: replicas 1, 2 and 3, then a fourth added while they run:\n"
      "  kv-server --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \\\n"
      "            --peer-base 127.0.0.1:7000 --data d1          (and so on for 2 and 3)\n"
      "  kv-server --id 4 --join --peer-base 127.0.0.1:7000 --data d4\n"
      "  curl -L -d '' 'http://127.0.0.1:8001/admin/add-voter?id=4'\n"
      "Membership: POST /admin/add-voter?id=N, /admin/add-learner?id=N, /admin/remove?id=N on\n"
      "any replica (a follower redirects to the leader); GET /admin/configuration.\n",
      client_port_offset, client_port_offset, client_port_offset,
      (unsigned long long)default_snapshot_every);
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

kv::AddressBook address_book(const Flags& flags) {
  return kv::AddressBook(flags.peers, flags.client_peers, flags.peer_base);
}

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  std::optional<std::uint64_t> client_port;
  for (int i = 1; i < argc; ++i) {
    std::string name = argv[i];
    if (name == "--help" || name == "-h") usage(nullptr);
    if (name == "--join") {
      flags.join = true;
      continue;
    }
    const char* known[] = {"--id",          "--peers",     "--client-peers",  "--data",
                           "--client-port", "--peer-base", "--snapshot-every"};
    if (std::find(std::begin(known), std::end(known), name) == std::end(known))
      usage(("unknown option " + name).c_str());
    if (i + 1 == argc) usage(("missing the value of " + name).c_str());
    std::string value = argv[++i];
    if (name == "--id") flags.id = kv::parse_decimal(value).value_or(0);
    if (name == "--peers") flags.peers = parse_address_list(value);
    if (name == "--client-peers") flags.client_peers = parse_address_list(value);
    if (name == "--data") flags.data = value;
    if (name == "--snapshot-every") {
      flags.snapshot_every = kv::parse_decimal(value).value_or(0);
      if (flags.snapshot_every == 0) usage("--snapshot-every must be a number from 1 up");
    }
    if (name == "--peer-base") {
      flags.peer_base = kv::parse_address(value);
      if (!flags.peer_base) usage("--peer-base must look like 127.0.0.1:7000");
    }
    if (name == "--client-port") {
      client_port = kv::parse_decimal(value);
      if (!client_port || *client_port == 0 || *client_port > 65535) usage("bad --client-port");
    }
  }
  if (flags.id == 0 || flags.data.empty()) usage("--id and --data are required");
  if (!flags.join && flags.peers.empty()) usage("give --peers, or --join to be added later");
  if (!flags.join && !flags.peers.count(flags.id))
    usage("--peers must include this replica's --id");
  kv::AddressBook book = address_book(flags);
  if (!book.raft(flags.id))
    usage("this replica has no Raft address: list it in --peers, or give --peer-base");
  for (const auto& [id, address] : flags.client_peers)
    if (!book.raft(id)) usage("--client-peers names a replica with no Raft address");
  if (client_port) {
    Address own =
        flags.client_peers.count(flags.id) ? flags.client_peers[flags.id] : *book.raft(flags.id);
    own.port = std::uint16_t(*client_port);
    flags.client_peers[flags.id] = own;
  } else if (!book.client(flags.id)) {
    usage("this replica's Raft port + 1000 is not a port: give --client-port");
  }
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

// Tells the transport of a new configuration, and says it in the log.
void track(const raft::Configuration& configuration, kv::TcpCluster& cluster) {
  auto list = [](const std::vector<raft::ReplicaID>& ids) {
    std::string text;
    for (raft::ReplicaID id : ids) text += (text.empty() ? "" : ", ") + std::to_string(id);
    return text.empty() ? std::string("none") : text;
  };
  kv::log("configuration: voters %s; learners %s", list(configuration.voters).c_str(),
          list(configuration.learners).c_str());
  cluster.track(configuration);
}

// The host's loop: poll the replica, do the host's own work between polls, and sleep in the
// cluster until the next deadline, a message, or a request from an HTTP thread. This is what
// raft::Replica::start() does, plus the host's work: the reads, transfers and membership changes
// the HTTP threads asked for go to the replica before each poll (writes it takes itself, as
// pending transitions), and a new configuration goes to the transport after it.
void run(raft::Replica& replica, kv::TcpCluster& cluster, kv::Machine& machine,
         kv::StatusBoard& board) {
  raft::Configuration configuration; // none: a joining replica waits for one
  while (!cluster.halt()) {
    machine.take_requests(replica);
    replica.poll(raft::Clock::now());
    machine.forget_expired(raft::Clock::now());
    board.publish(replica, machine.store());
    if (!(replica.configuration() == configuration))
      track(configuration = replica.configuration(), cluster);
    cluster.wait_until(replica.next_deadline());
  }
}

int serve(const Flags& flags) {
  std::vector<raft::ReplicaID> others; // the first configuration, unless --data holds one
  for (const auto& [id, address] : flags.peers)
    if (id != flags.id && !flags.join) others.push_back(id);

  raft::FileStorage storage(flags.data);
  kv::Waker waker;
  kv::AddressBook book = address_book(flags);
  kv::TcpCluster cluster(flags.id, book, waker);
  kv::Inbox inbox(waker);
  kv::Machine machine(inbox);
  raft::Options options;
  options.storage = &storage;
  options.snapshot_delta = flags.snapshot_every;
  options.max_entries_per_message = max_entries_per_message;
  options.joining = flags.join;
  raft::Replica replica(flags.id, others, cluster, machine, raft::Transition{0, ""}, heartbeat,
                        election_timeout, options);
  kv::StatusBoard board;
  board.publish(replica, machine.store());
  Address http_address = *book.client(flags.id);
  kv::HttpApi http(flags.id, http_address, book, inbox, machine, board);

  StopOnSignal stop_on_signal(cluster);
  kv::log("replica %llu: raft on %s, clients on http://%s, data in %s%s",
          (unsigned long long)flags.id, kv::to_string(*book.raft(flags.id)).c_str(),
          kv::to_string(http_address).c_str(), flags.data.c_str(), flags.join ? ", joining" : "");
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
