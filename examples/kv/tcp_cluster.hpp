// tcp_cluster.hpp: a raft::Cluster over TCP for one replica per process, driven by poll(2).
//
// Each replica dials every other replica and only writes on the connections it dialed; it only
// reads on the connections it accepted. So a message from A to B always travels on A's own
// connection to B, and neither side has to work out who is at the other end of a socket.
//
// Every socket is non-blocking and all waiting happens in one place, wait_until(), which the
// replica's thread calls between polls: a slow or dead peer can delay nothing but its own
// messages, and Raft copes with a lost message by sending it again.
//
// The peers change with the configuration: track() is told each new one, and a replica that is
// not a member is dialed when there is a message for it (a leader adding it, or a replica that
// was removed and asks for votes). Addresses come from the AddressBook, so a replica added to a
// running cluster is found by its id alone. A peer that is not a member, and was sent nothing
// for a while, is forgotten.
#ifndef KV_TCP_CLUSTER_HPP
#define KV_TCP_CLUSTER_HPP

#include "common.hpp"
#include "raft.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kv {

// Wakes a thread that sleeps in poll(2): other threads (and signal handlers) call wake(), and
// the sleeping thread includes fd() in its poll set. A pipe, so wake() is async-signal-safe.
class Waker {
public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  void wake();
  void drain(); // reads what wake() wrote, so that the next poll sleeps again
  int fd() const { return pipe_[0]; }

private:
  int pipe_[2] = {-1, -1};
};

// Framing on the stream: each message is a 4-byte little-endian length, then raft::encode's
// bytes. A receiver refuses a length above this before reading any of it: it bounds the
// memory one connection can claim.
constexpr std::size_t max_frame_bytes = 32 << 20;
void append_frame(std::string& out, std::string_view payload);
// Takes every complete frame off the front of `in` and decodes it into `messages`. Returns false
// if the stream is bad: a length above max_frame_bytes, or a frame that does not decode. The
// caller then closes the connection; nothing from a bad stream is trusted after that point.
bool take_frames(std::string& in, std::vector<raft::Message>& messages);

class TcpCluster : public raft::Cluster {
public:
  // Listens on the Raft address of `self` in `book`, and dials at once every replica listed in
  // it. `waker` lets other threads cut wait_until short. Throws std::runtime_error if it cannot
  // listen.
  TcpCluster(raft::ReplicaID self, AddressBook book, Waker& waker);
  ~TcpCluster() override;
  TcpCluster(const TcpCluster&) = delete;
  TcpCluster& operator=(const TcpCluster&) = delete;

  void send_message(raft::ReplicaID to, const raft::Message& message) override;
  std::vector<raft::Message> receive_messages() override;
  bool halt() const override { return halt_requested_; }
  void register_leader(std::optional<raft::ReplicaID> leader) override;
  // Sleeps in poll(2) until the deadline, a socket is ready, or the waker fires; then does all
  // the socket work that is ready (accept, connect, read, write) without blocking.
  void wait_until(raft::Clock::time_point deadline) override;

  // The replica's latest configuration: dials its members (those with an address) and keeps
  // them; others are dropped once idle.
  void track(const raft::Configuration& configuration);

  // Makes halt() true and wakes the loop. Async-signal-safe.
  void request_halt() {
    halt_requested_ = true;
    waker_.wake();
  }

private:
  struct Connection {
    int fd = -1;
    std::string peer_name; // for the log
    std::string in;        // bytes received that do not make a whole frame yet
    std::string out;       // frames to send; the first `sent` bytes are gone already
    std::size_t sent = 0;
  };
  struct Peer { // another replica, and our connection to it
    raft::ReplicaID id = 0;
    Address address;
    Connection link;
    bool connected = false; // false while connect() is in progress (or link.fd < 0)
    raft::Clock::time_point retry_at{};
    raft::Duration backoff{};
    bool member = true;                  // in the latest configuration (or listed, until one)
    raft::Clock::time_point last_send{}; // for a peer that is not a member: when to forget it
  };

  Peer* find_peer(raft::ReplicaID id);
  Peer* add_peer(raft::ReplicaID id); // nullptr if the book has no address for it
  void forget_idle_peers(raft::Clock::time_point now);
  void listen_on(const Address& address);
  void accept_incoming();
  void read_incoming(Connection& connection);
  void connect_due_peers(raft::Clock::time_point now);
  void connect_peer(Peer& peer, raft::Clock::time_point now);
  void finish_connect(Peer& peer);
  void service_link(Peer& peer, short events);
  void drop_link(Peer& peer, const std::string& why);
  raft::Clock::time_point next_wake(raft::Clock::time_point deadline) const;

  const raft::ReplicaID self_;
  const AddressBook book_;
  Waker& waker_;
  int listener_ = -1;
  std::vector<Peer> peers_;
  std::vector<Connection> incoming_; // accepted connections, oldest first
  std::vector<raft::Message> inbox_; // decoded, waiting for receive_messages()
  std::atomic<bool> halt_requested_{false};
};

} // namespace kv

#endif
