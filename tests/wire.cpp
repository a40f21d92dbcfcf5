// The wire format: every message survives a round trip, and anything that is not exactly
// encode(m) for some m is rejected without a crash.
#include "raft.hpp"

#include <doctest/doctest.h>

#include <random>

namespace {

using raft::Message;
using raft::MessageType;

bool same(const Message& a, const Message& b) { return raft::encode(a) == raft::encode(b); }

// One message of each type, every field it carries set to something other than its default.
std::vector<Message> samples() {
  std::vector<Message> messages;
  auto make = [&](MessageType type) -> Message& {
    Message& m = messages.emplace_back();
    m.type = type;
    m.from = 1;
    m.to = 0xFFFFFFFFFFFFFFFFull; // the largest id takes 10 bytes
    m.term = 300;
    return m;
  };
  Message& vote = make(MessageType::RequestVote);
  vote.last_log_index = 1u << 20;
  vote.last_log_term = 7;
  vote.pre_vote = true;
  Message& granted = make(MessageType::RequestVoteResponse);
  granted.vote_granted = true;
  granted.pre_vote = true;
  Message& append = make(MessageType::AppendEntries);
  append.prev_log_index = 99;
  append.prev_log_term = 5;
  append.leader_commit = 98;
  append.entries = {
      {5, {11, "first"}}, {300, {12, std::string("\0\xff binary", 9)}}, {300, {13, ""}}};
  Message& reply = make(MessageType::AppendEntriesResponse);
  reply.success = true;
  reply.prev_log_index = 99;
  reply.match_index = 102;
  reply.conflict_index = 4;
  reply.conflict_term = 3;
  Message& install = make(MessageType::InstallSnapshot);
  install.last_included_index = 1000;
  install.last_included_term = 9;
  install.configuration = {{1, 2, 3}, {4}};
  install.offset = 1 << 20;
  install.done = true;
  install.data = std::string(5000, 'x');
  Message& installed = make(MessageType::InstallSnapshotResponse);
  installed.last_included_index = 1000;
  installed.offset = 4000;
  installed.received = 5000;
  installed.done = true;
  return messages;
}

} // namespace

TEST_SUITE("Wire format") {
  TEST_CASE("every message type survives encode and decode unchanged") {
    for (const Message& m : samples()) {
      std::optional<Message> decoded = raft::decode(raft::encode(m));
      REQUIRE(decoded);
      CHECK(decoded->type == m.type);
      CHECK(decoded->from == m.from);
      CHECK(decoded->to == m.to);
      CHECK(decoded->term == m.term);
      CHECK(decoded->entries.size() == m.entries.size());
      for (std::size_t i = 0; i < m.entries.size(); ++i) {
        CHECK(decoded->entries[i].term == m.entries[i].term);
        CHECK(decoded->entries[i].transition == m.entries[i].transition);
      }
      CHECK(decoded->data == m.data);
      CHECK(decoded->configuration == m.configuration);
      CHECK(same(*decoded, m));
    }
  }

  TEST_CASE("a heartbeat is compact") {
    Message heartbeat;
    heartbeat.from = 1;
    heartbeat.to = 2;
    heartbeat.term = 5;
    heartbeat.prev_log_index = 1000;
    heartbeat.prev_log_term = 5;
    heartbeat.leader_commit = 1000;
    CHECK(raft::encode(heartbeat).size() == 12); // the figure README.md quotes
  }

  TEST_CASE("every proper prefix and any trailing byte is rejected") {
    for (const Message& m : samples()) {
      std::string bytes = raft::encode(m);
      for (std::size_t n = 0; n < bytes.size(); ++n) CHECK_FALSE(raft::decode(bytes.substr(0, n)));
      CHECK_FALSE(raft::decode(bytes + '\0'));
    }
  }

  TEST_CASE("an unknown version or type, a boolean other than 0 or 1, an overlong varint") {
    std::string vote = raft::encode(samples()[1]);
    CHECK(raft::decode(vote));
    std::string bad = vote;
    bad[0] = 3; // version 3 had no configuration in entries
    CHECK_FALSE(raft::decode(bad));
    bad[0] = 5;
    CHECK_FALSE(raft::decode(bad));
    bad = vote;
    bad[1] = 6;
    CHECK_FALSE(raft::decode(bad));
    bad = vote;
    bad.back() = 2;
    CHECK_FALSE(raft::decode(bad));
    bad = vote;
    bad.replace(2, 1, "\x81\x00"); // from = 1, written in two bytes
    CHECK_FALSE(raft::decode(bad));
  }

  TEST_CASE("a forged huge count or length is rejected before anything is allocated") {
    std::string bytes = raft::encode(samples()[2]);
    // type, from, to (10 bytes), term (2 bytes), prev index, prev term, commit, round, the count
    std::size_t count_at = 2 + 1 + 10 + 2 + 1 + 1 + 1 + 1;
    REQUIRE(bytes[count_at] == 3);
    std::string forged = bytes.substr(0, count_at) + "\xff\xff\xff\xff\xff\xff\xff\xff\x7f";
    CHECK_FALSE(raft::decode(forged));
  }

  TEST_CASE("random bytes and mutated messages decode only to what re-encodes identically") {
    std::mt19937_64 random(2024);
    std::vector<Message> messages = samples();
    int accepted = 0;
    for (int trial = 0; trial < 20000; ++trial) {
      std::string bytes;
      if (trial % 4 == 0) {
        bytes.resize(random() % 64);
        for (char& c : bytes) c = static_cast<char>(random());
        if (bytes.size() > 1) // the current version byte and a known type
          bytes[0] = raft::encode(Message{})[0], bytes[1] = static_cast<char>(random() % 6);
      } else {
        bytes = raft::encode(messages[random() % messages.size()]);
        for (int flips = 1 + random() % 3; flips > 0; --flips)
          bytes[random() % bytes.size()] = static_cast<char>(random());
      }
      if (std::optional<Message> m = raft::decode(bytes)) {
        REQUIRE(raft::encode(*m) == bytes);
        ++accepted;
      }
    }
    CHECK(accepted > 0);
  }
}
