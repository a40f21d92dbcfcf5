// common.hpp: small helpers that the server's parts share: a log, addresses, numbers.
#ifndef KV_COMMON_HPP
#define KV_COMMON_HPP

#include <cstdint>
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

// A decimal number of at most 19 digits (so it fits in 64 bits), nothing else: no sign, no spaces.
std::optional<std::uint64_t> parse_decimal(std::string_view text);

} // namespace kv

#endif
