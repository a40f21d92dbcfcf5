// FileStorage: what is written comes back after a reopen, a crash at any byte loses nothing that
// was reported durable, and damage is either cut off (a torn tail) or reported, never silent.
#include "harness.hpp"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using harness::append;
using harness::TempDir;
using raft::Entry;
using raft::FileStorage;
using raft::Index;
using raft::Snapshot;

Entry entry(raft::Term term, Index index) {
  return Entry{term, raft::Transition{index, "entry " + std::to_string(index)}};
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The error message must name the file and an offset.
void check_clear_error(const std::string& directory, const std::string& file) {
  try {
    FileStorage storage(directory);
    FAIL("no error for a damaged " << file);
  } catch (const std::runtime_error& error) {
    std::string what = error.what();
    CHECK(what.find(file) != std::string::npos);
  }
}

// Writes a log holding term 1 and entries 1 and 2, synced, and returns its bytes.
std::string two_entry_log(const TempDir& dir) {
  {
    FileStorage storage(dir.path);
    storage.save_term_and_vote(1, std::nullopt);
    append(storage, 1, {entry(1, 1), entry(1, 2)});
    storage.sync();
  }
  return read_bytes(dir.file("log"));
}

} // namespace

TEST_SUITE("FileStorage") {
  TEST_CASE("term, vote and entries written and synced come back after a reopen") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(7, 3);
      append(storage, 1, {entry(1, 1), entry(2, 2), entry(7, 3)});
      storage.sync();
    }
    FileStorage storage(dir.path);
    raft::Storage::State state = storage.load();
    CHECK(state.current_term == 7);
    CHECK(state.voted_for == std::optional<raft::ReplicaID>(3));
    REQUIRE(state.entries.size() == 3);
    CHECK(state.entries[2].term == 7);
    CHECK(state.entries[2].transition == entry(7, 3).transition);
    CHECK_FALSE(state.snapshot);
  }

  TEST_CASE("a write replaces the log from its first index on") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(3, std::nullopt);
      append(storage, 1, {entry(1, 1), entry(1, 2), entry(1, 3)});
      append(storage, 2, {entry(3, 2)});
      storage.sync();
    }
    raft::Storage::State state = FileStorage(dir.path).load();
    REQUIRE(state.entries.size() == 2);
    CHECK(state.entries[1].term == 3);
    CHECK_FALSE(state.voted_for);
  }

  TEST_CASE("nothing buffered reaches the disk before sync") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(1, std::nullopt);
      storage.sync();
      append(storage, 1, {entry(1, 1)});
    } // destroyed without sync: a crash before the write was acknowledged
    CHECK(FileStorage(dir.path).load().entries.empty());
  }

  TEST_CASE("a snapshot drops the entries it covers, on disk too") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(2, std::nullopt);
      for (Index i = 1; i <= 100; ++i) append(storage, i, {entry(2, i)});
      storage.sync();
      std::vector<Entry> rest;
      for (Index i = 91; i <= 100; ++i) rest.push_back(entry(2, i));
      storage.save_snapshot(Snapshot{90, 2, {{1, 2, 3}, {4}}, "state at 90"}, rest.data(),
                            rest.data() + rest.size());
      append(storage, 101, {entry(2, 101)});
      storage.sync();
    }
    CHECK(read_bytes(dir.file("log")).size() < 1000); // 11 entries, not 101
    raft::Storage::State state = FileStorage(dir.path).load();
    REQUIRE(state.snapshot);
    CHECK(state.snapshot->last_included_index == 90);
    CHECK(state.snapshot->configuration == raft::Configuration{{1, 2, 3}, {4}});
    CHECK(state.snapshot->data == "state at 90");
    REQUIRE(state.entries.size() == 11);
    CHECK(state.entries[0].transition == entry(2, 91).transition);
  }

  // Some filesystems grow a file before the data lands, so a crash can leave zeros at its end.
  TEST_CASE("zero bytes at the end, with or without a torn record before them, are cut off") {
    TempDir dir;
    const std::string log = two_entry_log(dir);
    for (std::size_t zeros : {1, 2, 3, 100, 4096}) {
      CAPTURE(zeros);
      write_bytes(dir.file("log"), log + std::string(zeros, '\0'));
      CHECK(FileStorage(dir.path).load().entries.size() == 2);
      CHECK(read_bytes(dir.file("log")) == log);
      write_bytes(dir.file("log"), log.substr(0, log.size() - 3) + std::string(zeros, '\0'));
      CHECK(FileStorage(dir.path).load().entries.size() == 1);
    }
    write_bytes(dir.file("log"), log + std::string(100, '\0') + "\x01");
    CHECK_THROWS_AS(FileStorage{dir.path}, std::runtime_error); // not zeros to the end: damage
  }

  TEST_CASE("a torn last record is cut off and the storage goes on") {
    TempDir dir;
    std::string log = two_entry_log(dir);
    write_bytes(dir.file("log"), log.substr(0, log.size() - 3));
    {
      FileStorage storage(dir.path);
      CHECK(storage.load().entries.size() == 1);
      append(storage, 2, {entry(1, 2), entry(1, 3)});
      storage.sync();
    }
    CHECK(FileStorage(dir.path).load().entries.size() == 3);
  }

  TEST_CASE("a bad CRC in the middle of the log is an error naming the file and offset") {
    TempDir dir;
    std::size_t first_entry = 0, second_entry = 0; // where their records start
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(1, std::nullopt);
      storage.sync();
      first_entry = read_bytes(dir.file("log")).size();
      append(storage, 1, {entry(1, 1)});
      storage.sync();
      second_entry = read_bytes(dir.file("log")).size();
      append(storage, 2, {entry(1, 2), entry(1, 3)});
      storage.sync();
    }
    std::string log = read_bytes(dir.file("log"));
    log[second_entry - 1] ^= 0x40; // the last byte of the first entry's record
    write_bytes(dir.file("log"), log);
    try {
      FileStorage storage(dir.path);
      FAIL("damage went unnoticed");
    } catch (const std::runtime_error& error) {
      std::string what = error.what();
      CHECK(what.find(dir.file("log")) != std::string::npos);
      CHECK(what.find("offset " + std::to_string(first_entry)) != std::string::npos);
    }
  }

  TEST_CASE("a file of another format is an error, not an empty log") {
    TempDir dir;
    write_bytes(dir.file("log"), "this is not a raft log");
    check_clear_error(dir.path, "log");
    write_bytes(dir.file("log"), "");
    check_clear_error(dir.path, "log");
  }

  TEST_CASE("a replica over FileStorage recovers term, vote and log after a restart") {
    // Covered end to end by tests/recovery.cpp for MemoryStorage; here the bytes go to disk.
    TempDir dir;
    using Machine = harness::RecordingStateMachine;
    harness::Journal journal;
    harness::FakeCluster cluster(1, {}, journal); // a replica alone: it sends nothing
    using namespace std::chrono_literals;
    // The replica a process started with `seed` builds over the directory's FileStorage.
    auto start = [&](FileStorage& storage, Machine& machine, std::uint64_t seed) {
      raft::Options options;
      options.seed = seed;
      options.storage = &storage;
      return raft::Replica(1, {}, cluster, machine, harness::kNoop, 10ms, {50ms, 100ms}, options);
    };
    raft::Clock::time_point now{};
    raft::Term term = 0;
    {
      FileStorage storage(dir.path);
      Machine machine;
      raft::Replica replica = start(storage, machine, 1);
      for (int i = 0; i < 20 && !replica.is_leader(); ++i) replica.poll(now += 10ms);
      REQUIRE(replica.is_leader());
      machine.pending = {{1, "a"}, {2, "b"}};
      replica.poll(now += 1ms);
      CHECK(machine.applied.size() == 3); // the no-op and both transitions
      term = replica.current_term();
    }
    FileStorage storage(dir.path);
    Machine machine;
    raft::Replica replica = start(storage, machine, 2);
    CHECK(replica.current_term() == term);
    CHECK(replica.last_log_index() == 3);
    for (int i = 0; i < 20 && machine.applied.size() < 4; ++i) replica.poll(now += 10ms);
    REQUIRE(machine.applied.size() == 4); // replayed, plus the new term's no-op
    CHECK(machine.applied[1].data == "a");
    CHECK(machine.applied[2].data == "b");
  }

  // A child process appends through FileStorage and writes to a pipe the last index it has
  // synced; the parent kills it with SIGKILL at a random moment and reopens the directory.
  TEST_CASE("after SIGKILL at random moments, every entry reported durable is recovered") {
    std::mt19937_64 random(42);
    for (int trial = 0; trial < 200; ++trial) {
      TempDir dir;
      int fds[2];
      REQUIRE(::pipe(fds) == 0);
      pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        ::close(fds[0]);
        FileStorage storage(dir.path);
        raft::Storage::State state = storage.load();
        storage.save_term_and_vote(1, std::nullopt);
        for (Index index = 1;; ++index) {
          append(storage, index, {entry(1, index)});
          if (index % 3 == 0) append(storage, index + 1, {entry(1, index + 1)}), ++index;
          if (index % 50 == 0) { // the snapshot and the ten entries after it
            std::vector<Entry> rest;
            for (Index i = index - 9; i <= index; ++i) rest.push_back(entry(1, i));
            storage.save_snapshot(Snapshot{index - 10, 1, {{1}, {}}, "s"}, rest.data(),
                                  rest.data() + rest.size());
          }
          storage.sync();
          if (::write(fds[1], &index, sizeof index) != sizeof index) ::_exit(1);
        }
      }
      ::close(fds[1]);
      ::usleep(static_cast<useconds_t>(random() % 20000));
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      Index durable = 0;
      for (Index index; ::read(fds[0], &index, sizeof index) == sizeof index;) durable = index;
      ::close(fds[0]);
      FileStorage storage(dir.path);
      raft::Storage::State state = storage.load();
      Index start = state.snapshot ? state.snapshot->last_included_index : 0;
      INFO("trial " << trial << ": durable " << durable << ", snapshot " << start);
      CHECK(start + state.entries.size() >= durable);
      for (std::size_t i = 0; i < state.entries.size(); ++i)
        REQUIRE(state.entries[i].transition == entry(1, start + 1 + i).transition);
    }
  }

  // Damage anywhere: the reopen either recovers a valid prefix of what was written or throws
  // std::runtime_error; it never crashes and never returns entries that were not written.
  TEST_CASE("byte flips and truncations at random offsets recover a prefix or report an error") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(4, 2);
      for (Index i = 1; i <= 60; ++i) append(storage, i, {entry(4, i)});
      storage.sync();
      std::vector<Entry> rest;
      for (Index i = 21; i <= 60; ++i) rest.push_back(entry(4, i));
      storage.save_snapshot(Snapshot{20, 4, {{1, 2}, {}}, "snapshot data"}, rest.data(),
                            rest.data() + rest.size());
      append(storage, 61, {entry(4, 61)});
      storage.sync();
    }
    std::string original = read_bytes(dir.file("log"));
    std::mt19937_64 random(7);
    int recovered = 0, reported = 0;
    for (int trial = 0; trial < 1000; ++trial) {
      std::string damaged = original;
      std::size_t offset = random() % damaged.size();
      if (trial % 2)
        damaged[offset] ^= static_cast<char>(1 + random() % 255);
      else
        damaged.resize(offset);
      write_bytes(dir.file("log"), damaged);
      try {
        raft::Storage::State state = FileStorage(dir.path).load();
        // A cut loses the records after it: term and vote first, then the snapshot, then entries.
        REQUIRE((state.current_term == 4 || !state.snapshot));
        REQUIRE((state.snapshot || state.entries.empty()));
        if (state.snapshot) CHECK(state.snapshot->data == "snapshot data");
        for (std::size_t i = 0; i < state.entries.size(); ++i)
          REQUIRE(state.entries[i].transition == entry(4, 21 + i).transition);
        ++recovered;
      } catch (const std::runtime_error& error) {
        INFO(std::string(error.what()));
        REQUIRE(std::string(error.what()).find(dir.file("log")) != std::string::npos);
        ++reported;
      }
    }
    CHECK(recovered > 0);
    CHECK(reported > 0);
  }
}
