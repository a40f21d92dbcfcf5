// examples/kv/bench/etcd.cpp: item 8, examples/kv against a 3-member etcd on the same machine, both
// loaded by wrk over loopback, point by point, one system after the other.
#include "etcd.hpp"
#include "tcp.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace etcd_bench {
namespace {

using Wall = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int members = 3;
const int connection_counts[] = {1, 16, 64};

// The first line a command prints, or "" if it does not run.
std::string first_line_of(const std::string& command) {
  std::string line;
  if (FILE* pipe = ::popen((command + " 2>/dev/null").c_str(), "r")) {
    char buffer[256];
    if (std::fgets(buffer, sizeof buffer, pipe)) line = buffer;
    ::pclose(pipe);
  }
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

bool on_path(const char* program) {
  return std::system(format("command -v %s >/dev/null 2>&1", program).c_str()) == 0;
}

// One request on a new connection, "Connection: close", read to the end: the status and body,
// or status 0.
std::pair<int, std::string> http(int port, const std::string& method, const std::string& path,
                                 const std::string& body) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (fd >= 0) ::close(fd);
    return {0, ""};
  }
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  std::string answer;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size())) {
    char chunk[4096];
    for (ssize_t n; (n = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) answer.append(chunk, n);
  }
  ::close(fd);
  if (answer.compare(0, 9, "HTTP/1.1 ") != 0) return {0, ""};
  std::size_t end = answer.find("\r\n\r\n");
  return {std::atoi(answer.c_str() + 9), end == std::string::npos ? "" : answer.substr(end + 4)};
}

// What one system needs: how to find its leader, and the wrk scripts that load it.
struct System {
  std::string name;
  std::vector<int> client_ports;
  std::function<std::optional<int>(int port)> leader_of; // the leader's index 1..3, as this one
                                                         // sees it
  std::string write_request, read_request;               // Lua: the body of request() for wrk
};

// The leader every member names, as the index of its client port; nullopt after `patience`.
std::optional<int> agreed_leader(const System& system, std::chrono::seconds patience) {
  for (Wall::time_point deadline = Wall::now() + patience; Wall::now() < deadline;
       std::this_thread::sleep_for(100ms)) {
    std::optional<int> agreed;
    for (int port : system.client_ports) {
      std::optional<int> leader = system.leader_of(port);
      if (!leader || (agreed && agreed != leader)) {
        agreed.reset();
        break;
      }
      agreed = leader;
    }
    if (agreed) return agreed;
  }
  return std::nullopt;
}

// base64 in Lua, for etcd's JSON gateway, and what every script shares: a per-thread id (set by
// setup) and a done() that prints one line the bench reads.
const char* lua_common = R"(
local b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function base64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set('tid', threads)
end
counter = 0
value = string.rep('v', 16)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT %d %d %d %d %d %d %d %d\n', summary.requests, summary.duration,
    e.connect + e.read + e.write, e.status, e.timeout, latency:percentile(50),
    latency:percentile(99), latency.max))
end
)";

struct Point {
  double ops = 0, p50_ms = 0, p99_ms = 0;
  long long errors = 0; // connect, read and write errors, statuses >= 400, timeouts
  bool ran = false;
};

// wrk against `port` for `seconds`; `prefix` names the keys this run writes (KEY in the request).
Point run_wrk(const std::string& directory, int port, const std::string& request,
              const std::string& prefix, int connections, double seconds,
              std::vector<std::string>& notes) {
  std::string script = directory + "/load.lua";
  {
    std::ofstream out(script);
    out << lua_common << "prefix = '" << prefix << "'\nrequest = function()\n"
        << "  counter = counter + 1\n  local key = prefix .. '-t' .. tid .. '-' .. counter\n"
        << request << "\nend\n";
  }
  int threads = std::min(connections, 2);
  std::string command = format("wrk -t%d -c%d -d%.0fs --timeout 5s -s %s http://127.0.0.1:%d/",
                               threads, connections, seconds, script.c_str(), port);
  Point point;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return point;
  char line[512];
  std::string output;
  while (std::fgets(line, sizeof line, pipe)) {
    output += line;
    long long requests, duration_us, socket_errors, status_errors, timeouts, p50, p99, max;
    if (std::sscanf(line, "RESULT %lld %lld %lld %lld %lld %lld %lld %lld", &requests, &duration_us,
                    &socket_errors, &status_errors, &timeouts, &p50, &p99, &max) == 8) {
      point.ran = duration_us > 0;
      point.ops = (requests - status_errors) / (duration_us / 1e6);
      point.p50_ms = p50 / 1000.0, point.p99_ms = p99 / 1000.0;
      point.errors = socket_errors + status_errors + timeouts;
    }
  }
  ::pclose(pipe);
  if (!point.ran) notes.push_back("etcd item: wrk gave no result: " + output.substr(0, 200));
  return point;
}

} // namespace

std::string measure(const std::string& kv_server, double seconds, std::vector<std::string>& notes) {
  if (!on_path("etcd") || !on_path("wrk")) {
    notes.push_back("item 8 (etcd comparison) skipped: etcd or wrk is missing; install them with "
                    "'sudo apt-get install etcd-server wrk' (make bench does, as root)");
    return "";
  }
  if (::access(kv_server.c_str(), X_OK) != 0) {
    notes.push_back("item 8: " + kv_server + " is not there; `make bench` builds it");
    return "";
  }
  char pattern[] = "/tmp/raft-bench-etcd-XXXXXX";
  if (!::mkdtemp(pattern)) {
    notes.push_back(format("item 8: mkdtemp failed: %s", std::strerror(errno)));
    return "";
  }
  const std::string directory = pattern;
  // B+1..B+3, B+11..B+13 (etcd), B+21..B+23 and B+1021..B+1023 (kv)
  std::optional<int> base = free_base_port({0, 10, 20, 1020}, members);
  if (!base) {
    notes.push_back("item 8: no free ports");
    return "";
  }
  std::string etcd_version = first_line_of("etcd --version");
  std::ostringstream out;
  {
    Processes etcd, kv;
    std::string cluster, peers;
    for (int n = 1; n <= members; ++n) {
      cluster += format("%sn%d=http://127.0.0.1:%d", n > 1 ? "," : "", n, *base + 10 + n);
      peers += format("%s%d=127.0.0.1:%d", n > 1 ? "," : "", n, *base + 20 + n);
    }
    System systems[2];
    System& e = systems[0];
    System& k = systems[1];
    e.name = "etcd", k.name = "kv";
    for (int n = 1; n <= members; ++n) {
      std::string client = format("http://127.0.0.1:%d", *base + n);
      std::string peer = format("http://127.0.0.1:%d", *base + 10 + n);
      etcd.start({"etcd", "--name", format("n%d", n), "--data-dir",
                  directory + format("/etcd%d", n), "--listen-client-urls", client,
                  "--advertise-client-urls", client, "--listen-peer-urls", peer,
                  "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster,
                  "--initial-cluster-state", "new", "--initial-cluster-token", "bench"},
                 directory + format("/etcd%d.log", n));
      e.client_ports.push_back(*base + n);
      kv.start({kv_server, "--id", std::to_string(n), "--peers", peers, "--data",
                directory + format("/kv%d", n), "--client-port", std::to_string(*base + 1020 + n)},
               directory + format("/kv%d.log", n));
      k.client_ports.push_back(*base + 1020 + n);
    }
    // etcd: a member is the leader if the leader it names is itself.
    e.leader_of = [&e](int port) -> std::optional<int> {
      auto [status, body] = http(port, "POST", "/v3/maintenance/status", "{}");
      std::size_t member = body.find("\"member_id\":\""), leader = body.find("\"leader\":\"");
      if (status != 200 || member == std::string::npos || leader == std::string::npos)
        return std::nullopt;
      std::string leader_id = body.substr(leader + 10, body.find('"', leader + 10) - leader - 10);
      for (std::size_t i = 0; i < e.client_ports.size(); ++i) {
        auto [s, b] = http(e.client_ports[i], "POST", "/v3/maintenance/status", "{}");
        if (s == 200 && b.find("\"member_id\":\"" + leader_id + "\"") != std::string::npos)
          return int(i);
      }
      return std::nullopt;
    };
    k.leader_of = [&k](int port) -> std::optional<int> {
      auto [status, body] = http(port, "GET", "/debug/state", "");
      std::size_t at = body.find("\"leader\": ");
      if (status != 200 || at == std::string::npos) return std::nullopt;
      int id = std::atoi(body.c_str() + at + 10);
      if (id < 1 || id > int(k.client_ports.size())) return std::nullopt;
      return id - 1;
    };
    // Writes: a fresh key per request, a 16-byte value. Reads: keys the 1-connection write run
    // wrote (it writes thousands), each a linearizable read: etcd's default range, kv's GET.
    // From the second: wrk calls request() once before the run, to see if it changes, and that
    // first key is never sent.
    e.write_request = "  return wrk.format('POST', '/v3/kv/put', nil, '{\"key\":\"' .. "
                      "base64(key) .. '\",\"value\":\"' .. base64(value) .. '\"}')";
    e.read_request = "  return wrk.format('POST', '/v3/kv/range', nil, '{\"key\":\"' .. "
                     "base64('w1-t1-' .. (counter % 500 + 2)) .. '\"}')";
    k.write_request = "  return wrk.format('PUT', '/kv/' .. key, nil, value)";
    k.read_request = "  return wrk.format('GET', '/kv/w1-t1-' .. (counter % 500 + 2))";

    int leaders[2];
    for (int s = 0; s < 2; ++s) {
      std::optional<int> leader = agreed_leader(systems[s], 30s);
      if (!leader) {
        notes.push_back("item 8: " + systems[s].name + " elected no leader within 30 s (logs in " +
                        directory + ")");
        return "";
      }
      leaders[s] = systems[s].client_ports[*leader];
      run_wrk(directory, leaders[s], systems[s].write_request, "warm", 16, 2, notes);
    }
    // Point by point, etcd then kv, so that a change in the machine's load meets both alike.
    Point points[2][2][3]; // [write, read][etcd, kv][connections]
    for (int op = 0; op < 2; ++op)
      for (int c = 0; c < 3; ++c)
        for (int s = 0; s < 2; ++s) {
          int connections = connection_counts[c];
          points[op][s][c] = run_wrk(directory, leaders[s],
                                     op == 0 ? systems[s].write_request : systems[s].read_request,
                                     format("w%d", connections), connections, seconds, notes);
        }

    out << "8. examples/kv against " << (etcd_version.empty() ? "etcd" : etcd_version)
        << ", 3 members each, wrk, " << format("%.0f", seconds) << " s per point\n";
    out << format("%-6s %5s  %-24s  %-24s  %-13s  %s\n", "op", "conns", "etcd ops/s, p50/p99 ms",
                  "kv ops/s, p50/p99 ms", "kv/etcd ops/s", "kv/etcd p99");
    int throughput_met = 0, tail_met = 0, total = 0;
    for (int op = 0; op < 2; ++op)
      for (int c = 0; c < 3; ++c) {
        const Point& ep = points[op][0][c];
        const Point& kp = points[op][1][c];
        auto cell = [](const Point& p) {
          return p.ran ? format("%s, %.2f/%.2f", grouped(p.ops).c_str(), p.p50_ms, p.p99_ms)
                       : std::string("did not run");
        };
        double ops_ratio = ep.ops > 0 ? kp.ops / ep.ops : NAN;
        double p99_ratio = ep.p99_ms > 0 ? kp.p99_ms / ep.p99_ms : NAN;
        ++total;
        throughput_met += ops_ratio >= 2;
        tail_met += p99_ratio <= 1;
        out << format("%-6s %5d  %-24s  %-24s  %-13s  %s\n", op == 0 ? "write" : "read",
                      connection_counts[c], cell(ep).c_str(), cell(kp).c_str(),
                      format("%.2f", ops_ratio).c_str(), format("%.2f", p99_ratio).c_str());
        for (int s = 0; s < 2; ++s)
          if (points[op][s][c].errors)
            notes.push_back(format("item 8, %s, %s, %d connections: %lld errors (socket, status "
                                   ">= 400 or timeout)",
                                   systems[s].name.c_str(), op == 0 ? "write" : "read",
                                   connection_counts[c], points[op][s][c].errors));
      }
    out << format("goals: kv ops/s >= 2x etcd's at %d of %d points; kv p99 <= etcd's at %d of %d\n",
                  throughput_met, total, tail_met, total);
  }
  out << "method: 3 etcd members (default flags: fsync on, snapshot every 100,000 entries, "
         "heartbeat 100 ms)\n"
         "   and 3 kv-server processes (build/kv-server, -O2) on loopback, all running at "
         "once, data in a fresh\n"
         "   directory under /tmp; wrk (-t1 for 1 connection, else -t2; keep-alive, one request "
         "at a time per\n"
         "   connection) against each leader, etcd first then kv at each point; writes: a fresh "
         "key per request\n"
         "   with a 16-byte value (etcd: POST /v3/kv/put, JSON; kv: PUT /kv/<key>); reads: keys "
         "2 to 501 of\n"
         "   the 1-connection write run, linearizable (etcd: POST /v3/kv/range, its default; kv: "
         "GET, through\n"
         "   read()); ops/s = answers below 400 / duration; p50/p99 = wrk's latency percentiles "
         "over every request;\n"
         "   a 2 s warm-up at 16 connections first. `make bench-etcd` runs this item alone "
         "(BENCH_SECONDS=n).\n";
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);
  return out.str();
}

} // namespace etcd_bench
