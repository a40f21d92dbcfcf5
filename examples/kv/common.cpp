// common.cpp: see common.hpp.
#include "common.hpp"

#include <arpa/inet.h>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace kv {

void log(const char* format, ...) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm local{};
  ::localtime_r(&now.tv_sec, &local);
  char line[1024];
  int prefix = std::snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld ", local.tm_hour,
                             local.tm_min, local.tm_sec, now.tv_nsec / 1000000);
  va_list arguments;
  va_start(arguments, format);
  std::vsnprintf(line + prefix, sizeof line - prefix, format, arguments);
  va_end(arguments);
  std::fprintf(stderr, "%s\n", line); // one call per line, so threads do not interleave
}

std::optional<Address> parse_address(std::string_view text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  Address address;
  address.host = std::string(text.substr(0, colon));
  in_addr ignored{};
  if (::inet_pton(AF_INET, address.host.c_str(), &ignored) != 1) return std::nullopt;
  std::optional<std::uint64_t> port = parse_decimal(text.substr(colon + 1));
  if (!port || *port == 0 || *port > 65535) return std::nullopt;
  address.port = static_cast<std::uint16_t>(*port);
  return address;
}

std::string to_string(const Address& address) {
  return address.host + ":" + std::to_string(address.port);
}

AddressBook::AddressBook(std::map<std::uint64_t, Address> raft,
                         std::map<std::uint64_t, Address> client, std::optional<Address> base)
    : raft_(std::move(raft)), client_(std::move(client)), base_(std::move(base)) {}

std::optional<Address> AddressBook::raft(std::uint64_t id) const {
  if (auto listed = raft_.find(id); listed != raft_.end()) return listed->second;
  if (!base_ || id == 0 || id >= client_port_offset || id > 65535u - base_->port)
    return std::nullopt;
  return Address{base_->host, std::uint16_t(base_->port + id)};
}

std::optional<Address> AddressBook::client(std::uint64_t id) const {
  if (auto listed = client_.find(id); listed != client_.end()) return listed->second;
  std::optional<Address> address = raft(id);
  if (!address || address->port > 65535 - client_port_offset) return std::nullopt;
  address->port = std::uint16_t(address->port + client_port_offset);
  return address;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

} // namespace kv
