// bench/tcp.hpp: item 7 of `make bench`, the replicated key-value store of examples/kv over TCP.
#ifndef BENCH_TCP_HPP
#define BENCH_TCP_HPP

#include <string>
#include <vector>

namespace tcp_bench {

// One configuration: `clients` threads, each with its own keep-alive HTTP connection to the
// leader, writing one key at a time for `seconds`.
struct Result {
  std::string storage; // where the data directories were, e.g. "ext4 /tmp"
  int clients = 0;
  std::vector<double> ops_per_second; // one per run
  std::vector<double> latencies_ms;   // every write of every run
  int failed = 0;                     // writes answered with anything but 200 (none expected)
};

struct Place {
  std::string label;     // how the table names it
  std::string directory; // the data directories are made under it, and removed after
};

// For each place: starts three `server` processes (build/kv-server) on free loopback ports with
// their data there, finds the leader, and measures every client count, `runs` runs of `seconds`
// each. Problems go to `notes`; a configuration that could not run has no Result.
std::vector<Result> run(const std::string& server, const std::vector<Place>& places,
                        const std::vector<int>& client_counts, int runs, double seconds,
                        std::vector<std::string>& notes);

} // namespace tcp_bench

#endif
