// http_api.hpp: the store's interface for clients, in HTTP, on cpp-httplib's threads.
//
//   GET    /kv/<key>      200 and the value, with the key's revision as ETag; 404 if absent
//   PUT    /kv/<key>      the body is the value; 200 with the new revision as ETag
//   DELETE /kv/<key>      200; 404 if absent
//   GET    /debug/state   this replica's view, in JSON: leader, term, indexes, a digest of the map
//   POST   /admin/transfer?to=<id>
//                         hands the leadership to replica <id> (the dissertation's §3.10): 202
//                         once the leader has started the transfer (its outcome shows in
//                         /debug/state within an election timeout), 200 if <id> leads already,
//                         400 if <id> is not a number or not a replica of this cluster.
//                         Send "Content-Length: 0" (curl -d '' ...): httplib reads a POST without
//                         it until the connection closes
//
// Compare-and-set: a PUT or DELETE with `If-Match: "<revision>"` applies only if the key still
// has that revision, and with `If-None-Match: *` only if the key is absent; otherwise 412.
// At-most-once writes: with headers `X-Client-Id: <name>` and `X-Sequence: <n>` (n = 1, 2, 3...
// for each client, one write at a time), a retry of sequence n gets the first answer and
// changes nothing; an older n gets 409.
// Every answer is linearizable. Writes go through the Raft log. A GET does not: the leader
// serves it as a ReadIndex read (raft::Replica::read), from its store once a majority has
// confirmed it still leads and it has applied every write committed before the GET arrived; a
// GET costs a heartbeat round, not a log entry or an fsync.
// A follower answers 307 with the leader's address (curl -L follows it); any replica answers 503
// with Retry-After while there is no leader, or when it cannot tell the outcome in time. A write
// that a leader refuses because it is handing its leadership over (or has just lost it) is
// answered 503 "not applied", or 307 once the new leader is known: either way, it was not
// applied, and a retry is safe.
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
  // own until destroyed. `client_addresses` are every replica's HTTP addresses, for redirects;
  // their ids are the replicas of the cluster.
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
  void transfer(const httplib::Request& req, httplib::Response& res);
  bool route_to_leader(const httplib::Request& req, httplib::Response& res,
                       bool write = false) const;
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
