// examples/kv/bench/etcd.hpp: item 8 of `make bench`, examples/kv against etcd on the same machine.
#ifndef BENCH_ETCD_HPP
#define BENCH_ETCD_HPP

#include <string>
#include <vector>

namespace etcd_bench {

// Starts a 3-member etcd and three `kv_server` processes on loopback, data on the disk of /tmp,
// and loads each cluster's leader with wrk: writes of a fresh key per request, then
// linearizable reads, at 1, 16 and 64 connections, `seconds` per point. Returns the table and
// its method, ready to print; empty (with a note in `notes`) when etcd or wrk is missing or a
// cluster did not start.
std::string measure(const std::string& kv_server, double seconds, std::vector<std::string>& notes);

} // namespace etcd_bench

#endif
