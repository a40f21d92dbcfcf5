// store.hpp: the replicated data of the key-value store, and the commands that change it.
//
// Nothing in this file knows about Raft, sockets or threads. A Command is what a client asks
// for; it travels through the Raft log as bytes (encode_command), and every replica applies the
// same commands in the same order to its own Store, so every Store holds the same map. Apply
// must therefore be deterministic: its result may depend only on the store and the command.
#ifndef KV_STORE_HPP
#define KV_STORE_HPP

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kv {

enum class Op : std::uint8_t { Get = 1, Put = 2, Delete = 3 };

struct Command {
  Op op = Op::Get;
  std::string key;
  std::string value; // Put only
  // Compare-and-set: apply only if the key's revision is this one (0: only if the key is absent).
  std::optional<std::uint64_t> if_revision;
  // At-most-once writes: a client numbers its writes 1, 2, 3...; a write whose number this
  // client already used is not applied again (the stored result is returned instead).
  std::string client_id; // empty: no deduplication
  std::uint64_t sequence = 0;
};

struct Result {
  enum class Status : std::uint8_t {
    Ok,
    NotFound,           // Get or Delete of a missing key
    PreconditionFailed, // if_revision did not match
    StaleSequence,      // an older write of this client, superseded by a newer one
  };
  Status status = Status::Ok;
  std::string value;          // Get: the value
  std::uint64_t revision = 0; // the key's revision after the command (0: the key is absent)
};

std::string encode_command(const Command& command);
std::optional<Command> decode_command(std::string_view bytes); // nullopt if malformed

// The state machine's data: the map, a revision per key, and the last write of every client.
class Store {
public:
  Result apply(const Command& command);
  // What a GET answers: the key's value and revision, or NotFound. It changes nothing, so a
  // replica may answer it without the log (the leader does, for a linearizable read).
  Result get(const std::string& key) const;

  // The whole state as bytes and back, for Raft snapshots. restore() leaves the store unchanged
  // and returns false if the bytes are malformed.
  std::string serialize() const;
  bool restore(std::string_view bytes);

  std::size_t size() const { return items_.size(); }
  std::uint64_t revision() const { return revision_; }
  // A hash of every key and value, independent of the order of writes: two stores holding the
  // same map have the same digest. Kept up to date at every write, so it costs nothing to read.
  std::uint64_t digest() const { return digest_; }

private:
  struct Item {
    std::string value;
    std::uint64_t revision = 0;
  };
  struct Session { // the last write of one client
    std::uint64_t sequence = 0;
    Result result;
  };

  Result write(const Command& command);
  void put(const std::string& key, const std::string& value);
  void erase(const std::string& key);

  std::map<std::string, Item> items_;
  std::map<std::string, Session> sessions_; // by client id; grows with the number of clients
  std::uint64_t revision_ = 0;              // bumped by every write that changes the map
  std::uint64_t digest_ = 0;
};

} // namespace kv

#endif
