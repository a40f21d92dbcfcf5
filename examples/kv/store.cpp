// store.cpp: commands and the map they change. See store.hpp.
#include "store.hpp"

namespace kv {

namespace {

// A byte format for commands and snapshots: integers as 8 bytes little-endian, strings after
// their length. Simple rather than compact: the Raft log already holds it in a compact frame.
class Writer {
public:
  void u8(std::uint8_t value) { bytes_.push_back(static_cast<char>(value)); }
  void u64(std::uint64_t value) {
    for (int i = 0; i < 8; ++i) u8(static_cast<std::uint8_t>(value >> (8 * i)));
  }
  void str(std::string_view value) {
    u64(value.size());
    bytes_.append(value);
  }
  std::string take() { return std::move(bytes_); }

private:
  std::string bytes_;
};

// Reads what Writer wrote. A read past the end, or a length beyond what is left, sets failed()
// instead of reading out of bounds: the bytes may come from a damaged or hostile source.
class Reader {
public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  std::uint8_t u8() {
    if (!need(1)) return 0;
    return static_cast<std::uint8_t>(bytes_[position_++]);
  }
  std::uint64_t u64() {
    if (!need(8)) return 0;
    std::uint64_t value = 0;
    for (int i = 0; i < 8; ++i)
      value |= std::uint64_t(static_cast<std::uint8_t>(bytes_[position_++])) << (8 * i);
    return value;
  }
  std::string str() {
    std::uint64_t size = u64();
    if (!need(size)) return {};
    std::string value(bytes_.substr(position_, size));
    position_ += size;
    return value;
  }
  void fail() { failed_ = true; }
  bool failed() const { return failed_; }
  bool at_end() const { return position_ == bytes_.size(); }

private:
  bool need(std::uint64_t size) {
    if (failed_ || size > bytes_.size() - position_) failed_ = true;
    return !failed_;
  }
  std::string_view bytes_;
  std::size_t position_ = 0;
  bool failed_ = false;
};

constexpr std::uint8_t command_version = 1;
constexpr std::uint8_t snapshot_version = 1;

void write_result(Writer& out, const Result& result) {
  out.u8(static_cast<std::uint8_t>(result.status));
  out.str(result.value);
  out.u64(result.revision);
}

Result read_result(Reader& in) {
  Result result;
  std::uint8_t status = in.u8();
  if (status > static_cast<std::uint8_t>(Result::Status::StaleSequence)) in.fail();
  result.status = static_cast<Result::Status>(status);
  result.value = in.str();
  result.revision = in.u64();
  return result;
}

// splitmix64's finalizer: spreads the bits of a hash so that summing many of them stays fair.
std::uint64_t mix(std::uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a over the key's length, the key and the value, so that ("ab", "c") != ("a", "bc").
std::uint64_t hash_item(const std::string& key, const std::string& value) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  auto add = [&](unsigned char byte) { hash = (hash ^ byte) * 0x100000001b3ULL; };
  for (int i = 0; i < 8; ++i) add(static_cast<unsigned char>(key.size() >> (8 * i)));
  for (char c : key) add(static_cast<unsigned char>(c));
  for (char c : value) add(static_cast<unsigned char>(c));
  return mix(hash);
}

} // namespace

std::string encode_command(const Command& command) {
  Writer out;
  out.u8(command_version);
  out.u8(static_cast<std::uint8_t>(command.op));
  out.str(command.key);
  out.str(command.value);
  out.u8(command.if_revision.has_value());
  out.u64(command.if_revision.value_or(0));
  out.str(command.client_id);
  out.u64(command.sequence);
  return out.take();
}

std::optional<Command> decode_command(std::string_view bytes) {
  Reader in(bytes);
  if (in.u8() != command_version) return std::nullopt;
  Command command;
  std::uint8_t op = in.u8();
  if (op < static_cast<std::uint8_t>(Op::Get) || op > static_cast<std::uint8_t>(Op::Delete))
    return std::nullopt;
  command.op = static_cast<Op>(op);
  command.key = in.str();
  command.value = in.str();
  bool conditional = in.u8() != 0;
  std::uint64_t revision = in.u64();
  if (conditional) command.if_revision = revision;
  command.client_id = in.str();
  command.sequence = in.u64();
  if (in.failed() || !in.at_end()) return std::nullopt;
  return command;
}

Result Store::get(const std::string& key) const {
  auto it = items_.find(key);
  if (it == items_.end()) return Result{Result::Status::NotFound, "", 0};
  return Result{Result::Status::Ok, it->second.value, it->second.revision};
}

Result Store::apply(const Command& command) {
  // Servers no longer log GETs, but logs written by earlier versions may hold some.
  if (command.op == Op::Get) return get(command.key);
  // Reads need no deduplication: reading twice changes nothing.
  if (command.client_id.empty() || command.sequence == 0) return write(command);
  auto session = sessions_.find(command.client_id);
  if (session != sessions_.end()) {
    if (command.sequence == session->second.sequence) return session->second.result; // a retry
    if (command.sequence < session->second.sequence)
      return Result{Result::Status::StaleSequence, "", 0};
  }
  Result result = write(command);
  sessions_[command.client_id] = Session{command.sequence, result};
  return result;
}

Result Store::write(const Command& command) {
  auto it = items_.find(command.key);
  std::uint64_t current = it == items_.end() ? 0 : it->second.revision;
  if (command.if_revision && *command.if_revision != current)
    return Result{Result::Status::PreconditionFailed, "", current};
  if (command.op == Op::Delete) {
    if (it == items_.end()) return Result{Result::Status::NotFound, "", 0};
    erase(command.key);
    return Result{Result::Status::Ok, "", 0};
  }
  put(command.key, command.value);
  return Result{Result::Status::Ok, "", revision_};
}

void Store::put(const std::string& key, const std::string& value) {
  auto [it, inserted] = items_.try_emplace(key);
  if (!inserted) digest_ -= hash_item(key, it->second.value);
  it->second = Item{value, ++revision_};
  digest_ += hash_item(key, value);
}

void Store::erase(const std::string& key) {
  auto it = items_.find(key);
  digest_ -= hash_item(key, it->second.value);
  items_.erase(it);
  ++revision_;
}

std::string Store::serialize() const {
  Writer out;
  out.u8(snapshot_version);
  out.u64(revision_);
  out.u64(items_.size());
  for (const auto& [key, item] : items_) {
    out.str(key);
    out.str(item.value);
    out.u64(item.revision);
  }
  out.u64(sessions_.size());
  for (const auto& [client, session] : sessions_) {
    out.str(client);
    out.u64(session.sequence);
    write_result(out, session.result);
  }
  return out.take();
}

bool Store::restore(std::string_view bytes) {
  Reader in(bytes);
  Store restored;
  if (in.u8() != snapshot_version) return false;
  restored.revision_ = in.u64();
  // Each count is checked against the bytes actually read, so a forged count cannot make this
  // loop run (or allocate) beyond the input's size.
  for (std::uint64_t n = in.u64(); n > 0 && !in.failed(); --n) {
    std::string key = in.str();
    std::string value = in.str();
    std::uint64_t revision = in.u64();
    restored.digest_ += hash_item(key, value);
    restored.items_[std::move(key)] = Item{std::move(value), revision};
  }
  for (std::uint64_t n = in.u64(); n > 0 && !in.failed(); --n) {
    std::string client = in.str();
    Session session;
    session.sequence = in.u64();
    session.result = read_result(in);
    restored.sessions_[std::move(client)] = std::move(session);
  }
  if (in.failed() || !in.at_end()) return false;
  *this = std::move(restored);
  return true;
}

} // namespace kv
