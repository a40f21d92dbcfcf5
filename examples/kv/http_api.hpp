// http_api.hpp: the store's interface for clients, in HTTP, on cpp-httplib's threads.
//
//   GET    /kv/<key>      200 and the value, with the key's revision as ETag; 404 if absent
//   PUT    /kv/<key>      the body is the value; 200 with the new revision as ETag
//   DELETE /kv/<key>      200; 404 if absent
//   GET    /debug/state   this replica's view, in JSON: leader, term, indexes, a digest of the map
//
// Compare-and-set: a PUT or DELETE with `If-Match: "<revision>"` applies only if the key still
// has that revision, and with `If-None-Match: *` only if the key is absent; otherwise 412.
// At-most-once writes: with headers `X-Client-Id: <name>` and `X-Sequence: <n>` (n = 1, 2, 3...
// for each client, one write at a time), a retry of sequence n gets the first answer and
// changes nothing; an older n gets 409.
// Every command, reads included, goes through the Raft log, so every answer is linearizable.
// A follower answers 307 with the leader's address (curl -L follows it); any replica answers 503
// with Retry-After while there is no leader, or when it cannot tell the outcome in time.
#ifndef KV_HTTP_API_HPP
#define KV_HTTP_API_HPP

#include "common.hpp"
#include "machine.hpp"

#include <map>
#include <memory>
#include <thread>

namespace httplib {
class Server;
struct Request;
struct Response;
} // namespace httplib

namespace kv {

// Limits on what a client may send.
constexpr std::size_t max_key_bytes = 1024;
constexpr std::size_t max_value_bytes = 64 << 10;
constexpr std::size_t max_client_id_bytes = 128;

class HttpApi {
public:
  // Listens on `address` (throws std::runtime_error if it cannot) and serves on threads of its
  // own until destroyed. `client_addresses` are every replica's HTTP addresses, for redirects.
  HttpApi(raft::ReplicaID self, const Address& address,
          std::map<raft::ReplicaID, Address> client_addresses, Inbox& inbox, Machine& machine,
          const StatusBoard& board);
  // Stops in an order that leaves no client waiting: no new commands, an answer for every
  // command still waiting, then the threads. Call it on the replica's thread, after its loop.
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

private:
  void serve(Op op, const httplib::Request& req, httplib::Response& res);
  bool route_to_leader(const httplib::Request& req, httplib::Response& res) const;
  void show_state(httplib::Response& res) const;

  const raft::ReplicaID self_;
  const std::map<raft::ReplicaID, Address> client_addresses_;
  Inbox& inbox_;
  Machine& machine_;
  const StatusBoard& board_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

} // namespace kv

#endif
