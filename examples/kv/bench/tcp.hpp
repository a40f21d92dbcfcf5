// examples/kv/bench/tcp.hpp: item 7 of `make bench`, the replicated key-value store of examples/kv
// over TCP.
#ifndef BENCH_TCP_HPP
#define BENCH_TCP_HPP

#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

// Helpers the items share (defined in tcp.cpp): printf into a string; 1234567.8 -> "1,234,568"
// ("n/a" if not finite); a child process that runs `args` (the PATH searched), its output to
// `log`, whose pid is returned (-1 if fork failed).
std::string format(const char* pattern, ...);
std::string grouped(double value);
pid_t spawn(std::vector<std::string> args, const std::string& log);

// A base port B, drawn below the kernel's ephemeral ports, such that B + offset + n is free on
// loopback now for every offset in `offsets` and n = 1..count; nullopt after 200 tries.
std::optional<int> free_base_port(const std::vector<int>& offsets, int count);

// Processes started by spawn(); the destructor stops them with SIGTERM (SIGKILL after 5 s).
class Processes {
public:
  Processes() = default;
  ~Processes();
  Processes(const Processes&) = delete;
  Processes& operator=(const Processes&) = delete;
  void start(std::vector<std::string> args, const std::string& log);

private:
  std::vector<pid_t> pids_;
};

namespace tcp_bench {

// One configuration: `clients` threads, each with its own keep-alive HTTP connection to the
// leader, writing (PUT) or reading (GET) one key at a time for `seconds`.
struct Result {
  std::string storage; // where the data directories were, e.g. "ext4 /tmp"
  std::string op;      // "PUT": new keys; "GET": keys the PUT runs wrote, value checked
  int clients = 0;
  std::vector<double> ops_per_second;     // one per run
  std::vector<double> latencies_ms;       // every request of every run answered 200
  int failed = 0;                         // requests answered with anything but 200 (none expected)
  int wrong = 0;                          // GETs answered 200 with another value than was written
  std::vector<double> log_entries_per_op; // per run: the leader's last_log_index growth / ops
};

struct Place {
  std::string label;     // how the table names it
  std::string directory; // the data directories are made under it, and removed after
};

// For each place: starts three `server` processes (build/kv-server) on free loopback ports with
// their data there, finds the leader, and measures PUT then GET at every client count, `runs` runs
// of `seconds` each. Problems go to `notes`; a configuration that could not run has no Result.
std::vector<Result> run(const std::string& server, const std::vector<Place>& places,
                        const std::vector<int>& client_counts, int runs, double seconds,
                        std::vector<std::string>& notes);

} // namespace tcp_bench

#endif
