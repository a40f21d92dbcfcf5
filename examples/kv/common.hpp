// common.hpp: small helpers that the server's parts share: a log, addresses, numbers.
#ifndef KV_COMMON_HPP
#define KV_COMMON_HPP

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kv {

// Writes one line to stderr, prefixed with the time of day.
void log(const char* format, ...) __attribute__((format(printf, 1, 2)));

struct Address {
  std::string host; // an IPv4 address such as 127.0.0.1
  std::uint16_t port = 0;
};
std::optional<Address> parse_address(std::string_view text); // "127.0.0.1:7001"
std::string to_string(const Address& address);

// Where each replica listens, for Raft and for clients (HTTP). A replica's Raft address is the
// one listed for it, or else, given a base address HOST:PORT, HOST:PORT+id for an id below
// client_port_offset: the replicas added to a running cluster are found that way. Its client
// address is the one listed for it, or else its Raft address with the port plus
// client_port_offset (so with a base, no Raft port is another replica's client port).
// Immutable: any thread may read it.
class AddressBook {
public:
  static constexpr std::uint16_t client_port_offset = 1000;
  AddressBook(std::map<std::uint64_t, Address> raft, std::map<std::uint64_t, Address> client,
              std::optional<Address> base);
  std::optional<Address> raft(std::uint64_t id) const;   // nullopt: unknown
  std::optional<Address> client(std::uint64_t id) const; // nullopt: unknown
  const std::map<std::uint64_t, Address>& listed() const { return raft_; }

private:
  std::map<std::uint64_t, Address> raft_, client_;
  std::optional<Address> base_;
};

// A decimal number of at most 19 digits (so it fits in 64 bits), nothing else: no sign, no spaces.
std::optional<std::uint64_t> parse_decimal(std::string_view text);

} // namespace kv

#endif
