// tcp_cluster.cpp: raft::Cluster over non-blocking TCP sockets and poll(2). See tcp_cluster.hpp.
#include "tcp_cluster.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace kv {

using namespace std::chrono_literals;

namespace {

// A peer that cannot be reached is tried again after 50 ms, then 100 ms, ... up to 1 s, so a
// replica that is down costs its peers a few connection attempts a second, not a busy loop.
constexpr raft::Duration first_backoff = 50ms;
constexpr raft::Duration max_backoff = 1s;
// Messages wait in a peer's buffer while its socket is full; past this size new ones are
// dropped (Raft sends them again), so a stalled peer cannot make us run out of memory.
constexpr std::size_t max_buffered_bytes = 64 << 20;
// At most this many accepted connections; a new one beyond it closes the oldest, so idle or
// hostile connections can never lock out a replica that reconnects.
constexpr std::size_t max_incoming = 32;
// A peer that is not in the configuration is forgotten once nothing was sent to it for this
// long: a replica removed from the cluster is not dialed forever.
constexpr raft::Duration idle_peer_lifetime = 10s;
// At most this much is read from one connection per wake, so one busy peer cannot starve the
// others or the replica.
constexpr std::size_t max_read_per_wake = 4 << 20;

std::string errno_text() { return std::strerror(errno); }

sockaddr_in to_sockaddr(const Address& address) {
  sockaddr_in result{};
  result.sin_family = AF_INET;
  result.sin_port = htons(address.port);
  ::inet_pton(AF_INET, address.host.c_str(), &result.sin_addr);
  return result;
}

std::string peer_name_of(int fd) {
  sockaddr_in address{};
  socklen_t size = sizeof address;
  char host[INET_ADDRSTRLEN] = "?";
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0)
    ::inet_ntop(AF_INET, &address.sin_addr, host, sizeof host);
  return std::string(host) + ":" + std::to_string(ntohs(address.sin_port));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Writes what the socket takes without blocking. False: the connection is broken.
bool flush(int fd, std::string& out, std::size_t& sent) {
  while (sent < out.size()) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return false;
    }
  }
  // Forget what was sent once all of it is, or once it passes 1 MiB: erasing from the front
  // copies the rest, too costly to do after every partial write.
  if (sent == out.size() || sent > (1 << 20)) {
    out.erase(0, sent);
    sent = 0;
  }
  return true;
}

// Reads what has arrived without blocking. False: the peer closed the connection, or it broke.
bool read_available(int fd, std::string& in) {
  char buffer[64 << 10];
  for (std::size_t total = 0; total < max_read_per_wake;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      in.append(buffer, static_cast<std::size_t>(n));
      total += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true;
    } else {
      return false; // n == 0: end of stream
    }
  }
  return true;
}

std::uint32_t read_u32_le(const char* bytes) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i)
    value |= std::uint32_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return value;
}

} // namespace

// ---- Waker ----

Waker::Waker() {
  if (::pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2: " + errno_text());
}

Waker::~Waker() {
  close_fd(pipe_[0]);
  close_fd(pipe_[1]);
}

void Waker::wake() {
  char byte = 1;
  // A full pipe means a wake-up is pending already: nothing is lost by ignoring EAGAIN.
  ssize_t ignored = ::write(pipe_[1], &byte, 1);
  (void)ignored;
}

void Waker::drain() {
  char buffer[256];
  while (::read(pipe_[0], buffer, sizeof buffer) > 0) {}
}

// ---- Framing ----

void append_frame(std::string& out, std::string_view payload) {
  std::uint32_t size = static_cast<std::uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(size >> (8 * i)));
  out.append(payload);
}

bool take_frames(std::string& in, std::vector<raft::Message>& messages) {
  std::size_t position = 0;
  bool good = true;
  while (in.size() - position >= 4) {
    std::size_t size = read_u32_le(in.data() + position);
    if (size > max_frame_bytes) {
      good = false; // refused as soon as its length is read, before its body is buffered
      break;
    }
    if (in.size() - position - 4 < size) break; // the rest has not arrived yet
    std::optional<raft::Message> message = raft::decode({in.data() + position + 4, size});
    if (!message) {
      good = false;
      break;
    }
    messages.push_back(std::move(*message));
    position += 4 + size;
  }
  in.erase(0, position);
  return good;
}

// ---- TcpCluster ----

TcpCluster::TcpCluster(raft::ReplicaID self, AddressBook book, Waker& waker)
    : self_(self), book_(std::move(book)), waker_(waker) {
  for (const auto& [id, address] : book_.listed())
    if (id != self) add_peer(id);
  std::optional<Address> own = book_.raft(self);
  if (!own) throw std::runtime_error("no address to listen on for Raft");
  listen_on(*own);
}

TcpCluster::~TcpCluster() {
  close_fd(listener_);
  for (Peer& peer : peers_) close_fd(peer.link.fd);
  for (Connection& connection : incoming_) close_fd(connection.fd);
}

TcpCluster::Peer* TcpCluster::find_peer(raft::ReplicaID id) {
  auto peer = std::find_if(peers_.begin(), peers_.end(), [&](const Peer& p) { return p.id == id; });
  return peer == peers_.end() ? nullptr : &*peer;
}

// The new peer is dialed at the next wait_until.
TcpCluster::Peer* TcpCluster::add_peer(raft::ReplicaID id) {
  std::optional<Address> address = book_.raft(id);
  if (id == self_ || !address) return nullptr;
  Peer peer;
  peer.id = id;
  peer.address = *address;
  peer.backoff = first_backoff;
  peer.last_send = raft::Clock::now();
  peers_.push_back(std::move(peer));
  return &peers_.back();
}

void TcpCluster::track(const raft::Configuration& configuration) {
  for (Peer& peer : peers_) peer.member = false;
  for (const auto* ids : {&configuration.voters, &configuration.learners}) {
    for (raft::ReplicaID id : *ids) {
      if (id == self_) continue;
      Peer* peer = find_peer(id);
      if (!peer && !(peer = add_peer(id))) {
        log("no address for replica %llu: start the servers with --peer-base, or list it in "
            "--peers",
            (unsigned long long)id);
        continue;
      }
      peer->member = true;
      peer->last_send = raft::Clock::now(); // once removed, it is kept a while longer
    }
  }
}

void TcpCluster::forget_idle_peers(raft::Clock::time_point now) {
  auto idle = [&](Peer& peer) {
    if (peer.member || now < peer.last_send + idle_peer_lifetime) return false;
    if (peer.link.fd >= 0)
      log("closing the connection to replica %llu, no longer a member",
          (unsigned long long)peer.id);
    close_fd(peer.link.fd);
    return true;
  };
  peers_.erase(std::remove_if(peers_.begin(), peers_.end(), idle), peers_.end());
}

void TcpCluster::listen_on(const Address& address) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener_ < 0) throw std::runtime_error("socket: " + errno_text());
  int yes = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  sockaddr_in local = to_sockaddr(address);
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::listen(listener_, SOMAXCONN) != 0) // a burst of connections must not overflow it
    throw std::runtime_error("listen on " + to_string(address) + ": " + errno_text());
}

// Sends are fire-and-forget, as the Cluster contract allows: a message to a peer we are not
// connected to, or whose buffer is full, is dropped, and Raft's retries make up for it.
// A message to a replica we do not know yet has it dialed, and is dropped like the others.
void TcpCluster::send_message(raft::ReplicaID to, const raft::Message& message) {
  Peer* peer = find_peer(to);
  if (!peer) peer = add_peer(to);
  if (!peer) return;
  peer->last_send = raft::Clock::now();
  if (!peer->connected) return;
  std::string bytes = raft::encode(message);
  if (bytes.size() > max_frame_bytes) {
    log("dropping a message of %zu bytes to replica %llu: over the frame limit", bytes.size(),
        (unsigned long long)to);
    return;
  }
  Connection& link = peer->link;
  if (link.out.size() - link.sent + bytes.size() > max_buffered_bytes) return;
  append_frame(link.out, bytes);
  if (!flush(link.fd, link.out, link.sent)) drop_link(*peer, "send: " + errno_text());
}

std::vector<raft::Message> TcpCluster::receive_messages() { return std::exchange(inbox_, {}); }

void TcpCluster::register_leader(std::optional<raft::ReplicaID> leader) {
  if (!leader)
    log("no leader known");
  else if (*leader == self_)
    log("this replica is the leader");
  else
    log("replica %llu is the leader", (unsigned long long)*leader);
}

// Sleep until the earliest of: the replica's deadline, a peer's reconnection time.
raft::Clock::time_point TcpCluster::next_wake(raft::Clock::time_point deadline) const {
  for (const Peer& peer : peers_)
    if (peer.link.fd < 0) deadline = std::min(deadline, peer.retry_at);
  return deadline;
}

void TcpCluster::wait_until(raft::Clock::time_point deadline) {
  forget_idle_peers(raft::Clock::now());
  // One pollfd per socket, in this order: the waker, the listener, our link to each peer (in
  // the order of peers_), then the accepted connections (in the order of incoming_).
  std::vector<pollfd> fds;
  fds.push_back({waker_.fd(), POLLIN, 0});
  fds.push_back({listener_, POLLIN, 0});
  for (const Peer& peer : peers_) {
    short events = 0;
    if (peer.link.fd >= 0 && !peer.connected) events = POLLOUT; // connect() completes
    if (peer.connected) events = POLLIN | (peer.link.out.size() > peer.link.sent ? POLLOUT : 0);
    fds.push_back({peer.link.fd, events, 0}); // a negative fd is ignored by poll(2)
  }
  for (const Connection& connection : incoming_) fds.push_back({connection.fd, POLLIN, 0});

  // Round up: waking a little early would only make the caller poll for nothing and wait again.
  raft::Clock::time_point now = raft::Clock::now();
  raft::Clock::time_point wake = next_wake(deadline);
  auto timeout = wake <= now ? 0ms : std::chrono::ceil<std::chrono::milliseconds>(wake - now);
  int ready = ::poll(fds.data(), fds.size(),
                     static_cast<int>(std::min<std::int64_t>(timeout.count(), 60 * 60 * 1000)));
  if (ready < 0 && errno != EINTR) log("poll: %s", errno_text().c_str());

  if (fds[0].revents) waker_.drain();
  std::size_t slot = 2;
  for (Peer& peer : peers_) service_link(peer, fds[slot++].revents);
  for (Connection& connection : incoming_)
    if (fds[slot++].revents) read_incoming(connection);
  incoming_.erase(std::remove_if(incoming_.begin(), incoming_.end(),
                                 [](const Connection& c) { return c.fd < 0; }),
                  incoming_.end());
  if (fds[1].revents) accept_incoming();
  connect_due_peers(raft::Clock::now());
}

void TcpCluster::accept_incoming() {
  for (;;) {
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        log("accept: %s", errno_text().c_str());
      return;
    }
    if (incoming_.size() >= max_incoming) {
      log("too many connections: closing the oldest, from %s", incoming_.front().peer_name.c_str());
      close_fd(incoming_.front().fd);
      incoming_.erase(incoming_.begin());
    }
    Connection connection;
    connection.fd = fd;
    connection.peer_name = peer_name_of(fd);
    incoming_.push_back(std::move(connection));
  }
}

void TcpCluster::read_incoming(Connection& connection) {
  bool open = read_available(connection.fd, connection.in);
  if (!take_frames(connection.in, inbox_)) {
    log("closing the connection from %s: a frame is too large or malformed",
        connection.peer_name.c_str());
    close_fd(connection.fd);
  } else if (!open) {
    close_fd(connection.fd); // the peer went away: it will dial again
  }
}

void TcpCluster::connect_due_peers(raft::Clock::time_point now) {
  for (Peer& peer : peers_)
    if (peer.link.fd < 0 && peer.retry_at <= now) connect_peer(peer, now);
}

void TcpCluster::connect_peer(Peer& peer, raft::Clock::time_point now) {
  // Whatever happens below, a failure retries after the backoff, which doubles each time.
  peer.retry_at = now + peer.backoff;
  peer.backoff = std::min(peer.backoff * 2, max_backoff);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return log("socket: %s", errno_text().c_str());
  int yes = 1; // small messages (votes, heartbeats) should leave at once, not wait for Nagle
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
  sockaddr_in remote = to_sockaddr(peer.address);
  peer.link = Connection{};
  peer.link.fd = fd;
  peer.link.peer_name = to_string(peer.address);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) == 0)
    return finish_connect(peer);
  if (errno != EINPROGRESS) close_fd(peer.link.fd); // refused at once: retry later, quietly
}

void TcpCluster::finish_connect(Peer& peer) {
  peer.connected = true;
  peer.backoff = first_backoff;
  log("connected to replica %llu at %s", (unsigned long long)peer.id, peer.link.peer_name.c_str());
}

void TcpCluster::service_link(Peer& peer, short events) {
  if (peer.link.fd < 0 || events == 0) return;
  if (!peer.connected) { // connect() in progress: POLLOUT or an error says how it ended
    int error = 0;
    socklen_t size = sizeof error;
    ::getsockopt(peer.link.fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0 || (events & (POLLERR | POLLHUP)) != 0)
      close_fd(peer.link.fd); // not up yet (the peer is probably down): retry quietly
    else
      finish_connect(peer);
    return;
  }
  // We never read on our own link: readable means the peer closed it (or sent what it must not).
  if (events & (POLLIN | POLLERR | POLLHUP)) return drop_link(peer, "closed by the peer");
  if ((events & POLLOUT) && !flush(peer.link.fd, peer.link.out, peer.link.sent))
    drop_link(peer, "send: " + errno_text());
}

void TcpCluster::drop_link(Peer& peer, const std::string& why) {
  log("lost the connection to replica %llu (%s)", (unsigned long long)peer.id, why.c_str());
  close_fd(peer.link.fd);
  peer.link = Connection{};
  peer.connected = false;
  peer.retry_at = raft::Clock::now() + peer.backoff;
}

} // namespace kv
