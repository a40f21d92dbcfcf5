// http_api.cpp: the HTTP interface. See http_api.hpp.
#include "http_api.hpp"

#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include <sys/socket.h>

namespace kv {

namespace {

using namespace std::chrono_literals;

// How long an HTTP thread waits for its command's outcome before it answers 503. Long enough
// for a commit in a healthy cluster; short enough that a client soon tries elsewhere.
constexpr raft::Duration request_timeout = 3s;
// A membership change waits longer: adding a voter waits for it to catch up, which the leader
// gives up on after 10 maximum election timeouts (5 s).
constexpr raft::Duration change_timeout = 10s;
// The HTTP threads: as many client connections are served at once; more wait for a thread.
constexpr std::size_t http_threads = 256;

// "1, 2, 3"
std::string id_list(const std::vector<raft::ReplicaID>& ids) {
  std::string text;
  for (raft::ReplicaID id : ids) text += (text.empty() ? "" : ", ") + std::to_string(id);
  return text;
}

// "voters 1, 2, 3; learners 4" (or "learners none")
std::string describe(const raft::Configuration& config) {
  return "voters " + (config.voters.empty() ? "none" : id_list(config.voters)) + "; learners " +
         (config.learners.empty() ? "none" : id_list(config.learners));
}

// "\"voters\": [1, 2, 3], \"learners\": []"
std::string configuration_json(const raft::Configuration& config) {
  return "\"voters\": [" + id_list(config.voters) + "], \"learners\": [" +
         id_list(config.learners) + "]";
}

const char* const unknown_path =
    "unknown path: use /kv/<key>, /debug/state, GET /admin/configuration, or POST "
    "/admin/transfer?to=<id>, /admin/add-voter?id=<id>, /admin/add-learner?id=<id> or "
    "/admin/remove?id=<id>\n";

const char* const value_too_long = "the value is too long: at most 65536 bytes\n";

void unavailable(httplib::Response& res, const char* why) {
  res.status = 503;
  res.set_header("Retry-After", "1");
  res.set_content(why, "text/plain");
}

// Each parse_ function reads a part of the request into `command`, and returns nullptr, or what
// is wrong with the request.

// If-Match: "17" (or 17) -> 17; If-None-Match: * -> 0, the revision of an absent key.
const char* parse_condition(const httplib::Request& req, Command& command) {
  if (req.has_header("If-Match") && req.has_header("If-None-Match"))
    return "use If-Match or If-None-Match, not both\n";
  if (req.has_header("If-Match")) {
    std::string tag = req.get_header_value("If-Match");
    if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"')
      tag = tag.substr(1, tag.size() - 2);
    command.if_revision = parse_decimal(tag);
    if (!command.if_revision) return "If-Match must be a revision, such as \"17\"\n";
  }
  if (req.has_header("If-None-Match")) {
    if (req.get_header_value("If-None-Match") != "*") return "If-None-Match must be *\n";
    command.if_revision = 0;
  }
  return nullptr;
}

const char* parse_client(const httplib::Request& req, Command& command) {
  if (req.has_header("X-Client-Id") != req.has_header("X-Sequence"))
    return "X-Client-Id and X-Sequence go together\n";
  if (!req.has_header("X-Client-Id")) return nullptr;
  command.client_id = req.get_header_value("X-Client-Id");
  if (command.client_id.empty() || command.client_id.size() > max_client_id_bytes)
    return "X-Client-Id must have 1 to 128 bytes\n";
  std::optional<std::uint64_t> sequence = parse_decimal(req.get_header_value("X-Sequence"));
  if (!sequence || *sequence == 0) return "X-Sequence must be a number: 1, 2, 3...\n";
  command.sequence = *sequence;
  return nullptr;
}

// Turns a request into a command, or answers 400 and returns nullopt. A PUT's value is read
// here, through `content` (the body is not read before: see check_request).
std::optional<Command> parse_command(Op op, const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader* content) {
  Command command;
  command.op = op;
  command.key = req.matches[1];
  const char* problem = nullptr;
  if (command.key.size() > max_key_bytes) problem = "the key is too long: at most 1024 bytes\n";
  if (op == Op::Put && content) {
    // check_request has made sure of one Content-Length, a number of at most max_value_bytes.
    std::size_t length = parse_decimal(req.get_header_value("Content-Length")).value_or(0);
    command.value.reserve(length);
    bool received = (*content)([&command](const char* data, std::size_t size) {
      command.value.append(data, size);
      return command.value.size() <= max_value_bytes;
    });
    // Too long (httplib skipped it), or not all of it came (the client stopped sending, or
    // closed): nothing is applied.
    if (!received || command.value.size() != length) {
      bool too_long = res.status == 413 || length > max_value_bytes;
      res.status = too_long ? 413 : 400;
      res.set_content(too_long ? value_too_long
                               : "the body ended before Content-Length bytes: nothing applied\n",
                      "text/plain");
      return std::nullopt;
    }
  }
  if (!problem) problem = parse_condition(req, command);
  if (!problem) problem = parse_client(req, command);
  if (!problem) return command;
  res.status = 400;
  res.set_content(problem, "text/plain");
  return std::nullopt;
}

void reply(const Command& command, const Result& result, httplib::Response& res) {
  Op op = command.op;
  if (result.revision != 0) res.set_header("ETag", '"' + std::to_string(result.revision) + '"');
  switch (result.status) {
  case Result::Status::Ok:
    res.status = 200; // a write answers with its new revision, in ETag, and an empty body
    if (op == Op::Get) res.set_content(result.value, "application/octet-stream");
    return;
  case Result::Status::NotFound:
    res.status = 404;
    return res.set_content("no such key\n", "text/plain");
  case Result::Status::PreconditionFailed:
    res.status = 412;
    return res.set_content(command.if_revision == 0 ? "the key exists (If-None-Match: *)\n"
                                                    : "the key's revision is not the one of "
                                                      "If-Match\n",
                           "text/plain");
  case Result::Status::StaleSequence:
    res.status = 409;
    return res.set_content("this client has made a newer write already\n", "text/plain");
  }
}

// httplib answers its own errors (a request it cannot parse, a request line too long, a body
// that does not arrive) with an empty body; say what went wrong. Our own error answers have a
// body already.
void explain_error(httplib::Response& res) {
  if (!res.body.empty()) return;
  switch (res.status) {
  case 400:
    return res.set_content("malformed HTTP/1.1 request: the request line or a header could not be "
                           "read, or the body did not arrive (methods: GET, PUT, DELETE, POST)\n",
                           "text/plain");
  case 404: return res.set_content(unknown_path, "text/plain");
  case 413: return res.set_content(value_too_long, "text/plain");
  case 414:
    return res.set_content("the request line is too long: a key has at most 1024 bytes\n",
                           "text/plain");
  default:
    return res.set_content("refused with status " + std::to_string(res.status) + "\n",
                           "text/plain");
  }
}

// The paths, and the methods each takes.
const char* allowed_methods(const std::string& path) {
  if (path.size() > 4 && path.compare(0, 4, "/kv/") == 0) return "GET, PUT, DELETE";
  if (path == "/debug/state" || path == "/admin/configuration") return "GET";
  for (const char* post :
       {"/admin/transfer", "/admin/add-voter", "/admin/add-learner", "/admin/remove"})
    if (path == post) return "POST";
  return nullptr;
}

bool allows(const char* methods, const std::string& method) {
  std::string list = std::string(", ") + methods + ",";
  return list.find(" " + (method == "HEAD" ? std::string("GET") : method) + ",") !=
         std::string::npos;
}

// Runs before httplib reads a body: what is wrong with the request line and headers is answered
// here, so that nothing is read, let alone applied, of a request refused. Handled: answered.
httplib::Server::HandlerResponse check_request(const httplib::Request& req,
                                               httplib::Response& res) {
  auto refuse = [&res](int status, const std::string& why) {
    res.status = status;
    res.set_content(why, "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  };
  const char* methods = allowed_methods(req.path);
  if (!methods) return refuse(404, unknown_path);
  if (!allows(methods, req.method)) {
    res.set_header("Allow", methods);
    return refuse(405, req.path + " takes " + methods + ", not " + req.method + "\n");
  }
  if (req.method != "PUT" && req.method != "POST")
    return httplib::Server::HandlerResponse::Unhandled;
  // A body must say its length: without Content-Length httplib would read until the client
  // closes the connection, and apply what came by then.
  if (req.has_header("Transfer-Encoding"))
    return refuse(411, "send the body with Content-Length, not Transfer-Encoding\n");
  if (!req.has_header("Content-Length"))
    return refuse(411, req.method + " needs a Content-Length header (curl -d sends one)\n");
  std::optional<std::uint64_t> length = parse_decimal(req.get_header_value("Content-Length"));
  if (!length || req.get_header_value_count("Content-Length") != 1) {
    return refuse(400, "Content-Length must be one number of bytes\n");
  }
  // A value over the limit: 413 without reading it if the client waits for "100 Continue" (curl
  // does, for large bodies); otherwise httplib reads the body to skip it and answers 413.
  if (req.method == "PUT" && *length > max_value_bytes &&
      req.get_header_value("Expect") == "100-continue")
    return refuse(413, value_too_long);
  if (req.has_header("Content-Encoding") && req.get_header_value("Content-Encoding") != "identity")
    return refuse(415, "send the value as it is, with no Content-Encoding\n");
  // httplib would parse these; the value is the body's bytes, whatever their type says.
  if (req.get_header_value("Content-Type").find("multipart/form-data") == 0)
    return refuse(415,
                  "send the value as the body (curl --data-binary), not as multipart/form-data "
                  "(curl -F)\n");
  return httplib::Server::HandlerResponse::Unhandled;
}

} // namespace

HttpApi::HttpApi(raft::ReplicaID self, const Address& address, AddressBook book, Inbox& inbox,
                 Machine& machine, const StatusBoard& board)
    : self_(self), book_(std::move(book)), inbox_(inbox), machine_(machine), board_(board),
      server_(std::make_unique<httplib::Server>()) {
  httplib::Server& server = *server_;
  // check_request answers a wrong method or an unknown path, and a bad Content-Length, before
  // any of these runs; PUT reads its body itself, as a content reader, so that httplib does not
  // parse it by its Content-Type (a form would be limited to 8 KiB).
  server.set_pre_routing_handler(check_request);
  server.set_expect_100_continue_handler([](const auto& req, auto& res) {
    return check_request(req, res) == httplib::Server::HandlerResponse::Handled ? res.status : 100;
  });
  server.Get("/kv/(.+)", [this](const auto& req, auto& res) { serve(Op::Get, req, res); });
  server.Put("/kv/(.+)",
             [this](const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& content) { serve(Op::Put, req, res, &content); });
  server.Delete("/kv/(.+)", [this](const auto& req, auto& res) { serve(Op::Delete, req, res); });
  server.Get("/debug/state", [this](const auto&, auto& res) { show_state(res); });
  server.Post("/admin/transfer", [this](const auto& req, auto& res) { transfer(req, res); });
  using raft::MembershipChange;
  server.Post("/admin/add-voter",
              [this](const auto& req, auto& res) { change(MembershipChange::AddVoter, req, res); });
  server.Post("/admin/add-learner", [this](const auto& req, auto& res) {
    change(MembershipChange::AddLearner, req, res);
  });
  server.Post("/admin/remove",
              [this](const auto& req, auto& res) { change(MembershipChange::Remove, req, res); });
  server.Get("/admin/configuration", [this](const auto&, auto& res) { show_configuration(res); });
  server.set_error_handler([](const auto&, auto& res) { explain_error(res); });
  server.set_exception_handler([](const auto&, auto& res, std::exception_ptr) {
    res.status = 500;
    res.set_content("internal error\n", "text/plain");
  });

  // httplib gives each open connection a thread of the pool, and an idle keep-alive connection
  // keeps its thread: with fewer threads than busy connections, the others wait for a thread
  // until one closes (up to the keep-alive timeout: 1 s at the tail). So many threads, mostly
  // asleep, and idle connections let go after a second.
  server.new_task_queue = [] { return new httplib::ThreadPool(http_threads); };
  server.set_keep_alive_timeout(1);
  server.set_keep_alive_max_count(100000);
  server.set_read_timeout(5, 0);
  server.set_tcp_nodelay(true); // httplib writes head and body apart: don't wait for an ACK
  server.set_payload_max_length(max_value_bytes);
  // httplib listens with a backlog of 5: when more clients connect at once, the kernel drops
  // their handshakes and they wait a retransmission (200 ms to seconds). Listen again, on the
  // same socket, with the system's largest backlog.
  int listening = -1;
  server.set_socket_options([&listening](int fd) {
    httplib::default_socket_options(fd);
    listening = fd;
  });
  if (!server.bind_to_port(address.host, address.port) || ::listen(listening, SOMAXCONN) != 0)
    throw std::runtime_error("cannot listen for clients on " + to_string(address));
  thread_ = std::thread([&server] { server.listen_after_bind(); });
  // stop() does nothing to a server that has not started running, and the destructor would then
  // wait forever for the thread: wait until it runs (it does at once, or within milliseconds).
  for (int i = 0; i < 1000 && !server.is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HttpApi::~HttpApi() {
  inbox_.close();
  machine_.abandon_all();
  server_->stop();
  thread_.join();
}

// Runs on an HTTP thread: everything it learns of the replica comes from the board and the
// outcome of its command.
void HttpApi::serve(Op op, const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader* content) {
  std::optional<Command> command = parse_command(op, req, res, content);
  if (!command || !route_to_leader(req, res, op != Op::Get)) return;
  Command sent = *command; // for the answer: the store's result says what, this says why
  sent.value.clear();
  Outcome outcome = inbox_.submit(std::move(*command), request_timeout);
  switch (outcome.kind) {
  case Outcome::Kind::Applied: return reply(sent, outcome.result, res);
  case Outcome::Kind::NotLeader: // a transfer is under way, or the leadership moved meanwhile
    if (route_to_leader(req, res, op != Op::Get))
      unavailable(res, op == Op::Get ? "the leadership is changing: retry\n"
                                     : "the leadership is changing, not applied: retry\n");
    return;
  case Outcome::Kind::Lost: return unavailable(res, "the leader changed, not applied: retry\n");
  case Outcome::Kind::Unknown:
    return unavailable(res, op == Op::Get
                                ? "no answer in time: retry\n"
                                : "no outcome in time: retry (with the same X-Sequence)\n");
  }
}

// POST /admin/transfer?to=<id>. Runs on an HTTP thread; the leader's thread starts the transfer
// and the outcome (the new leader) shows in /debug/state, as in every replica's leader().
void HttpApi::transfer(const httplib::Request& req, httplib::Response& res) {
  std::optional<std::uint64_t> to;
  if (req.get_param_value_count("to") == 1) to = parse_decimal(req.get_param_value("to"));
  std::vector<raft::ReplicaID> voters = board_.read().configuration.voters;
  if (!to || !std::binary_search(voters.begin(), voters.end(), *to)) {
    res.status = 400;
    return res.set_content(
        "to must be the id of a voter of this cluster: " + id_list(voters) + "\n", "text/plain");
  }
  if (!route_to_leader(req, res)) return;
  std::string target = "replica " + std::to_string(*to);
  if (*to == self_) {
    res.status = 200;
    return res.set_content(target + " leads already\n", "text/plain");
  }
  switch (inbox_.transfer(*to, request_timeout)) {
  case TransferOutcome::Started:
    res.status = 202;
    return res.set_content("replica " + std::to_string(self_) + " is handing its leadership to " +
                               target + ": GET /debug/state shows the leader\n",
                           "text/plain");
  case TransferOutcome::NotLeader:
    if (route_to_leader(req, res)) unavailable(res, "the leadership is changing: retry\n");
    return;
  case TransferOutcome::Unknown: return unavailable(res, "no answer in time: retry\n");
  }
}

// POST /admin/add-voter, /admin/add-learner or /admin/remove with ?id=<id>. Runs on an HTTP
// thread; the leader's thread hands the change to the Replica, and the answer waits for its
// outcome: Applied, or why not.
void HttpApi::change(raft::MembershipChange change, const httplib::Request& req,
                     httplib::Response& res) {
  std::optional<std::uint64_t> id;
  if (req.get_param_value_count("id") == 1) id = parse_decimal(req.get_param_value("id"));
  auto bad_request = [&res](const std::string& why) {
    res.status = 400;
    res.set_content(why, "text/plain");
  };
  if (!id || *id == 0) return bad_request("id must be the id of a replica: a number from 1 up\n");
  std::string replica = "replica " + std::to_string(*id);
  if (change != raft::MembershipChange::Remove && !book_.raft(*id))
    return bad_request("no address is known for " + replica +
                       ": start the servers with --peer-base, or list it in --peers\n");
  if (!route_to_leader(req, res, true)) return;
  ChangeOutcome outcome = inbox_.change(change, *id, change_timeout);
  switch (outcome.kind) {
  case ChangeOutcome::Kind::Applied: {
    const char* what = change == raft::MembershipChange::AddVoter     ? " is a voter"
                       : change == raft::MembershipChange::AddLearner ? " is a learner"
                                                                      : " is removed";
    return res.set_content(replica + what + ": " + describe(outcome.configuration) + "\n",
                           "text/plain");
  }
  case ChangeOutcome::Kind::NotLeader:
    if (route_to_leader(req, res, true))
      unavailable(res, "the leadership is changing, not applied: retry\n");
    return;
  case ChangeOutcome::Kind::Refused:
    res.status = 409;
    return res.set_content(outcome.reason + "\n", "text/plain");
  case ChangeOutcome::Kind::Lost:
    return unavailable(res, "the leader changed, not applied: retry\n");
  case ChangeOutcome::Kind::Unknown:
    return unavailable(res, "no outcome in time: GET /admin/configuration on the leader tells "
                            "whether it took effect\n");
  }
}

// True if this replica is the leader and should serve the request; otherwise answers with a
// redirect to the leader (307, unlike 302, keeps the method and body: a PUT stays a PUT) or, if
// no leader is known, 503 (saying, for a `write`, that it was not applied).
bool HttpApi::route_to_leader(const httplib::Request& req, httplib::Response& res,
                              bool write) const {
  std::optional<raft::ReplicaID> leader = board_.read().leader;
  if (leader == self_) return true;
  if (!leader) {
    unavailable(res, write ? "no leader yet, not applied: retry\n" : "no leader yet: retry\n");
    return false;
  }
  std::string leader_name = "the leader is replica " + std::to_string(*leader);
  std::optional<Address> leader_address = book_.client(*leader);
  if (!leader_address) {
    unavailable(res,
                (leader_name + ", whose address this replica does not know: ask it\n").c_str());
    return false;
  }
  std::string address = to_string(*leader_address);
  res.status = 307;
  res.set_header("Location", "http://" + address + req.target);
  res.set_content(leader_name + " at " + address + "\n", "text/plain");
  return false;
}

void HttpApi::show_state(httplib::Response& res) const {
  Status status = board_.read();
  char json[512];
  std::snprintf(json, sizeof json,
                "{\"id\": %llu, \"leader\": %llu, \"term\": %llu, \"commit_index\": %llu, "
                "\"last_applied\": %llu, \"last_log_index\": %llu, \"keys\": %zu, "
                "\"revision\": %llu, \"digest\": \"%016llx\", ",
                (unsigned long long)status.id, (unsigned long long)status.leader.value_or(0),
                (unsigned long long)status.term, (unsigned long long)status.commit_index,
                (unsigned long long)status.last_applied, (unsigned long long)status.last_log_index,
                status.keys, (unsigned long long)status.revision,
                (unsigned long long)status.digest);
  res.set_content(json + configuration_json(status.configuration) + "}\n", "application/json");
}

void HttpApi::show_configuration(httplib::Response& res) const {
  Status status = board_.read();
  res.set_content("{\"id\": " + std::to_string(status.id) +
                      ", \"leader\": " + std::to_string(status.leader.value_or(0)) + ", " +
                      configuration_json(status.configuration) + "}\n",
                  "application/json");
}

} // namespace kv
