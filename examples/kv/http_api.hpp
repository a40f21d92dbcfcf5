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
//                         400 if <id> is not a number or not a voter of this cluster
//   POST   /admin/add-voter?id=<id>     makes replica <id> a voter: a learner first, if it is
//                                       not one, until it has caught up with the log
//   POST   /admin/add-learner?id=<id>   makes replica <id> a learner: it receives the log, and
//                                       neither votes nor counts toward a commit
//   POST   /admin/remove?id=<id>        takes replica <id> out of the cluster; a leader that
//                                       removes itself leads until the change commits
//                         Each waits for the change to take effect (up to 10 s): 200 once it
//                         is committed, with the new configuration; 409 with the reason if the
//                         leader refuses it (a voter already, not a member, the only voter,
//                         another change under way, a new voter that did not catch up); 400 if
//                         <id> is not a replica id (a number from 1 up), or, to add, one with
//                         no known address. A new voter must be running (kv-server --join) at
//                         its address, the one of --peers or of --peer-base, to catch up.
//                         Send "Content-Length: 0" (curl -d '' ...) with every POST
//   GET    /admin/configuration
//                         this replica's view of the membership, in JSON: its id, the leader,
//                         the voters and the learners of the latest configuration in its log
//
// Strict HTTP: a PUT's value is its body's bytes, whatever its Content-Type (a form too), at
// most max_value_bytes (413 above). A PUT or POST needs one Content-Length, a number: 411
// without it (or with Transfer-Encoding), 400 if it is not a number; a body that does not all
// arrive (within the 5 s read timeout, or before the client closes) is answered 400 and nothing
// is applied. A known path with another method is 405 with Allow; an unknown path 404. Every
// 4xx answer says in its body what was wrong.
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
// with Retry-After while there is no leader, or when it cannot tell the outcome in time (of a
// membership change, GET /admin/configuration on the leader then tells). A write or a
// membership change that a leader refuses because it is handing its leadership over (or has
// just lost it) is answered 503 "not applied", or 307 once the new leader is known: either way,
// it was not applied, and a retry is safe.
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
class ContentReader;
} // namespace httplib

namespace kv {

// Limits on what a client may send.
constexpr std::size_t max_key_bytes = 1024;
constexpr std::size_t max_value_bytes = 64 << 10;
constexpr std::size_t max_client_id_bytes = 128;

class HttpApi {
public:
  // Listens on `address` (throws std::runtime_error if it cannot) and serves on threads of its
  // own until destroyed. `book` gives the replicas' HTTP addresses, for redirects, and tells
  // whether a replica to add can be reached.
  HttpApi(raft::ReplicaID self, const Address& address, AddressBook book, Inbox& inbox,
          Machine& machine, const StatusBoard& board);
  // Stops in an order that leaves no client waiting: no new commands, an answer for every
  // command still waiting, then the threads. Call it on the replica's thread, after its loop.
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

private:
  void serve(Op op, const httplib::Request& req, httplib::Response& res,
             const httplib::ContentReader* content = nullptr);
  void transfer(const httplib::Request& req, httplib::Response& res);
  void change(raft::MembershipChange change, const httplib::Request& req, httplib::Response& res);
  bool route_to_leader(const httplib::Request& req, httplib::Response& res,
                       bool write = false) const;
  void show_state(httplib::Response& res) const;
  void show_configuration(httplib::Response& res) const;

  const raft::ReplicaID self_;
  const AddressBook book_;
  Inbox& inbox_;
  Machine& machine_;
  const StatusBoard& board_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

} // namespace kv

#endif
