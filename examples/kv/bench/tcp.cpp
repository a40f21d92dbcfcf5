// examples/kv/bench/tcp.cpp: three kv-server processes on loopback, and clients that write through
// their HTTP interface, one request at a time per keep-alive connection, as examples/kv documents
// it.
#include "tcp.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

std::string format(const char* pattern, ...) {
  char buffer[512];
  va_list arguments;
  va_start(arguments, pattern);
  std::vsnprintf(buffer, sizeof buffer, pattern, arguments);
  va_end(arguments);
  return buffer;
}

// 1234567.8 -> "1,234,568"
std::string grouped(double value) {
  if (!std::isfinite(value)) return "n/a";
  std::string digits = format("%.0f", std::fabs(value)), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

pid_t spawn(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv; // built before fork: the child only makes system calls
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) ::dup2(out, 1), ::dup2(out, 2);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

namespace {

bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return free;
}

} // namespace

std::optional<int> free_base_port(const std::vector<int>& offsets, int count) {
  std::mt19937_64 random(std::random_device{}());
  for (int attempt = 0; attempt < 200; ++attempt) {
    int base = 20000 + static_cast<int>(random() % 10000);
    bool free = true;
    for (int n = 1; n <= count && free; ++n)
      for (int offset : offsets) free = free && port_free(base + offset + n);
    if (free) return base;
  }
  return std::nullopt;
}

Processes::~Processes() {
  using namespace std::chrono_literals;
  for (pid_t pid : pids_) ::kill(pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  for (pid_t pid : pids_)
    while (::waitpid(pid, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
}

void Processes::start(std::vector<std::string> args, const std::string& log) {
  if (pid_t pid = spawn(std::move(args), log); pid > 0) pids_.push_back(pid);
}

namespace tcp_bench {
namespace {

using Wall = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int replicas = 3;

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// HTTP/1.1 over one kept-alive connection; reconnects after any error.
class Client {
public:
  explicit Client(int port) : port_(port) {}
  ~Client() { disconnect(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The response's status, or 0 if the connection failed; the body goes to `body` if given.
  int request(const char* method, const std::string& path, const std::string& content,
              std::string* body = nullptr) {
    if (fd_ < 0 && !connect()) return 0;
    std::string message =
        std::string(method) + " " + path +
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(content.size()) +
        "\r\n\r\n" + content;
    if (!send_all(message)) return disconnect(), 0;
    std::size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
      if (!receive()) return disconnect(), 0;
    std::string head = buffer_.substr(0, end + 2);
    buffer_.erase(0, end + 4);
    std::transform(head.begin(), head.end(), head.begin(), [](char c) { return std::tolower(c); });
    if (head.compare(0, 9, "http/1.1 ") != 0) return disconnect(), 0;
    int status = std::atoi(head.c_str() + 9);
    std::size_t length = 0, at = head.find("\r\ncontent-length:");
    if (at != std::string::npos) length = std::strtoull(head.c_str() + at + 17, nullptr, 10);
    while (buffer_.size() < length)
      if (!receive()) return disconnect(), 0;
    if (body) *body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    if (head.find("\r\nconnection: close") != std::string::npos) disconnect();
    return status;
  }

private:
  bool connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address = loopback(port_);
    int one = 1;
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      return disconnect(), false;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return true;
  }
  void disconnect() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }
  bool send_all(const std::string& bytes) {
    for (std::size_t sent = 0; sent < bytes.size();) {
      ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
  bool receive() {
    char chunk[4096];
    ssize_t n;
    do n = ::recv(fd_, chunk, sizeof chunk, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  const int port_;
  int fd_ = -1;
  std::string buffer_;
};

// Three kv-server processes, stopped by the destructor.
class Servers {
public:
  Servers(const std::string& server, const std::string& directory, int base) : base_(base) {
    std::string peers;
    for (int n = 1; n <= replicas; ++n)
      peers += (n > 1 ? "," : "") + std::to_string(n) + "=127.0.0.1:" + std::to_string(base + n);
    for (int n = 1; n <= replicas; ++n) {
      std::string data = directory + "/" + std::to_string(n), log = data + ".log";
      std::vector<std::string> args = {server,    "--id",          std::to_string(n),
                                       "--peers", peers,           "--data",
                                       data,      "--client-port", std::to_string(base + 1000 + n)};
      processes_.start(std::move(args), log);
    }
  }

  int http_port(int n) const { return base_ + 1000 + n; }

  // The replica that every replica names as leader, once they agree; nullopt after `patience`.
  std::optional<int> agreed_leader(std::chrono::seconds patience) const {
    for (Wall::time_point deadline = Wall::now() + patience; Wall::now() < deadline;
         std::this_thread::sleep_for(50ms)) {
      std::optional<int> agreed;
      for (int n = 1; n <= replicas; ++n) {
        Client client(http_port(n));
        std::string state;
        int leader = 0;
        const char* field = nullptr;
        if (client.request("GET", "/debug/state", "", &state) == 200 &&
            (field = std::strstr(state.c_str(), "\"leader\": ")))
          leader = std::atoi(field + 10);
        if (leader == 0 || (agreed && *agreed != leader)) {
          agreed.reset();
          break;
        }
        agreed = leader;
      }
      if (agreed) return agreed;
    }
    return std::nullopt;
  }

private:
  const int base_;
  Processes processes_;
};

struct Written {
  std::string path, value; // a PUT answered 200
};

struct Run {
  double ops_per_second = 0;
  std::vector<double> latencies_ms;
  int failed = 0, wrong = 0;
  std::vector<Written> written;
};

constexpr int wrong_value = -1; // a GET answered 200 with another value than was written

// `clients` threads, each with its own connection, run `request(client, run, c, i)` for
// i = 0, 1, 2... one at a time for `seconds`; it returns the status (0: no connection), or
// wrong_value.
template <class Request>
Run load_for(int port, int clients, double seconds, const Request& request) {
  std::atomic<bool> stop{false};
  std::vector<Run> per_client(clients);
  std::vector<std::thread> threads;
  Wall::time_point start = Wall::now();
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      Client client(port);
      Run& run = per_client[c];
      for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        Wall::time_point sent = Wall::now();
        int status = request(client, run, c, i);
        if (status != 200) {
          ++(status == wrong_value ? run.wrong : run.failed);
          std::this_thread::sleep_for(10ms); // no leader here now, or no connection
          continue;
        }
        run.latencies_ms.push_back(
            std::chrono::duration<double, std::milli>(Wall::now() - sent).count());
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true);
  for (std::thread& thread : threads) thread.join();
  double elapsed = std::chrono::duration<double>(Wall::now() - start).count();
  Run total;
  for (Run& run : per_client) {
    total.latencies_ms.insert(total.latencies_ms.end(), run.latencies_ms.begin(),
                              run.latencies_ms.end());
    total.failed += run.failed;
    total.wrong += run.wrong;
    for (Written& w : run.written) total.written.push_back(std::move(w));
  }
  total.ops_per_second = total.latencies_ms.size() / elapsed;
  return total;
}

// `clients` threads write distinct keys with 16-byte values for `seconds`, one at a time each.
Run write_for(int port, int clients, double seconds, int round) {
  return load_for(port, clients, seconds,
                  [round](Client& client, Run& run, int c, std::uint64_t i) {
                    std::string path = "/kv/r" + std::to_string(round) + "c" + std::to_string(c) +
                                       "-" + std::to_string(i);
                    std::string value(16, static_cast<char>('a' + (c + i) % 26));
                    int status = client.request("PUT", path, value);
                    if (status == 200) run.written.push_back({std::move(path), std::move(value)});
                    return status;
                  });
}

// `clients` threads read keys that were written, each walking the list from its own offset, and
// check each value; a GET answered 200 with another value counts as wrong.
Run read_for(int port, int clients, double seconds, const std::vector<Written>& keys) {
  return load_for(port, clients, seconds, [&](Client& client, Run&, int c, std::uint64_t i) {
    const Written& key = keys[(c * keys.size() / clients + i) % keys.size()];
    std::string body;
    int status = client.request("GET", key.path, "", &body);
    return status == 200 && body != key.value ? wrong_value : status;
  });
}

// The replica's last_log_index from GET /debug/state, if it answers.
std::optional<double> last_log_index(int port) {
  Client client(port);
  std::string state;
  const char* field = nullptr;
  if (client.request("GET", "/debug/state", "", &state) != 200 ||
      !(field = std::strstr(state.c_str(), "\"last_log_index\": ")))
    return std::nullopt;
  return std::strtod(field + 18, nullptr);
}

} // namespace

std::vector<Result> run(const std::string& server, const std::vector<Place>& places,
                        const std::vector<int>& client_counts, int runs, double seconds,
                        std::vector<std::string>& notes) {
  std::vector<Result> results;
  if (::access(server.c_str(), X_OK) != 0) {
    notes.push_back("TCP: " + server + " is not there; `make bench` builds it");
    return results;
  }
  for (const Place& place : places) {
    std::string pattern = place.directory + "/raft-bench-tcp-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      notes.push_back("TCP, " + place.label + ": mkdtemp failed: " + std::strerror(errno));
      continue;
    }
    const std::string directory = pattern;
    {
      std::optional<int> base = free_base_port({0, 1000}, replicas);
      if (!base) {
        notes.push_back("TCP: no free ports found");
        break;
      }
      Servers servers(server, directory, *base);
      std::optional<int> leader = servers.agreed_leader(20s);
      if (!leader)
        notes.push_back("TCP, " + place.label + ": no leader within 20 s (logs in " + directory +
                        ")");
      int round = 0;
      std::vector<Written> written; // every key the PUTs wrote, warm-ups included
      for (const char* op : {"PUT", "GET"})
        for (int clients : client_counts) {
          if (!leader || (op[0] == 'G' && written.empty())) break;
          const int port = servers.http_port(*leader);
          auto load = [&](double duration) {
            Run run = op[0] == 'P' ? write_for(port, clients, duration, round++)
                                   : read_for(port, clients, duration, written);
            for (Written& w : run.written) written.push_back(std::move(w));
            return run;
          };
          load(0.2); // warm up
          Result result;
          result.storage = place.label;
          result.op = op;
          result.clients = clients;
          for (int r = 0; r < runs; ++r) {
            std::optional<double> before = last_log_index(port);
            Run run = load(seconds);
            std::optional<double> after = last_log_index(port);
            result.ops_per_second.push_back(run.ops_per_second);
            result.latencies_ms.insert(result.latencies_ms.end(), run.latencies_ms.begin(),
                                       run.latencies_ms.end());
            result.failed += run.failed;
            result.wrong += run.wrong;
            if (before && after && !run.latencies_ms.empty())
              result.log_entries_per_op.push_back((*after - *before) / run.latencies_ms.size());
          }
          results.push_back(result);
        }
    }
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  return results;
}

} // namespace tcp_bench
