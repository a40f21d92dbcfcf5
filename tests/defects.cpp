// Defects found in review, one test each: a FileStorage object that a replica is rebuilt over, a
// FileStorage after an I/O error, data a killed process wrote but never synced, and terms that no
// correct peer sends (0, and one that cannot be incremented).
#include "harness.hpp"

#include <cerrno>
#include <csignal>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace harness;

namespace {

// Every fdatasync in this test binary goes through the definition below, which counts it and,
// while `fail_fdatasync` is set, fails it as a process killed between write and fdatasync would
// never have made it: the bytes are written, only the page cache holds them.
int fdatasync_calls = 0;
bool fail_fdatasync = false;

} // namespace

extern "C" int fdatasync(int fd) {
  ++fdatasync_calls;
  if (fail_fdatasync) {
    errno = EIO;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_fdatasync, fd));
}

namespace {

using raft::FileStorage;

std::size_t file_size(const std::string& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return static_cast<std::size_t>(status.st_size);
}

// A FakeCluster that also runs `check` on every message the replica sends.
class CheckedCluster : public FakeCluster {
public:
  using FakeCluster::FakeCluster;
  std::function<void(const Message&)> check = [](const Message&) {};
  void send_message(ReplicaID to, const Message& message) override {
    check(message);
    FakeCluster::send_message(to, message);
  }
};

// Like harness::Node, but over a Storage the test owns, so that it can be a FileStorage.
class Host {
public:
  Host(ReplicaID id, std::vector<ReplicaID> peers, raft::Storage& storage)
      : cluster(id, peers, journal), id_(id), peers_(std::move(peers)) {
    options_.storage = &storage;
    options_.seed = 1000 + id;
    build();
  }

  raft::Replica* operator->() { return replica_.get(); }
  void receive(Message message) {
    cluster.inbox.push_back(std::move(message));
    replica_->poll(now);
  }
  Message take_reply() {
    std::vector<Message> sent = std::exchange(cluster.sent, {});
    REQUIRE(sent.size() == 1);
    return sent[0];
  }
  // A crash: the Replica and its state machine are lost, the storage object survives.
  void crash() {
    replica_.reset();
    machine_ = std::make_unique<RecordingStateMachine>();
    build();
  }

  Clock::time_point now = kStart;
  Journal journal;
  CheckedCluster cluster;

private:
  void build() {
    replica_ = std::make_unique<raft::Replica>(id_, peers_, cluster, *machine_, kNoop, kHeartbeat,
                                               std::pair{kElectionMin, kElectionMax}, options_);
  }

  ReplicaID id_;
  std::vector<ReplicaID> peers_;
  raft::Options options_ = paper_elections();
  std::unique_ptr<RecordingStateMachine> machine_ = std::make_unique<RecordingStateMachine>();
  std::unique_ptr<raft::Replica> replica_;
};

// While alive, a write that would take a file past `bytes` writes up to there and then fails with
// EFBIG (SIGXFSZ ignored): a disk that fills up in the middle of a write.
class FileSizeLimit {
public:
  explicit FileSizeLimit(std::size_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    saved_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, saved_handler_);
  }

private:
  rlimit saved_{};
  void (*saved_handler_)(int) = SIG_DFL;
};

constexpr Term kLastTerm = std::numeric_limits<Term>::max();

Message pre_vote_request(ReplicaID from, ReplicaID to, Term term) {
  Message m = request_vote(from, to, term, 0, 0);
  m.pre_vote = true;
  return m;
}

} // namespace

TEST_SUITE("Defects") {
  // A crash is simulated by a new Replica over the same Storage object: it must recover the term
  // and vote, or it could vote twice in one term.
  TEST_CASE("a replica rebuilt over the same FileStorage object recovers its term and vote") {
    TempDir dir;
    FileStorage storage(dir.path);
    Host voter(1, {2, 3}, storage);
    voter.receive(request_vote(2, 1, 5, 0, 0));
    REQUIRE(voter.take_reply().vote_granted);

    voter.crash();
    CHECK(voter->current_term() == 5);
    voter.receive(request_vote(3, 1, 5, 0, 0));
    CHECK_FALSE(voter.take_reply().vote_granted);
    voter.receive(request_vote(2, 1, 5, 0, 0)); // the candidate it voted for may ask again
    CHECK(voter.take_reply().vote_granted);
  }

  // ... and the entries it acknowledged, or a leader would count a copy that is gone.
  TEST_CASE("a replica rebuilt over the same FileStorage object recovers its log") {
    TempDir dir;
    FileStorage storage(dir.path);
    Host follower(1, {2, 3}, storage);
    follower.receive(append_entries(2, 1, 1, 0, 0, make_log({{3, 1}})));
    REQUIRE(follower.take_reply().match_index == 3);

    follower.crash();
    CHECK(follower->current_term() == 1);
    CHECK(follower->last_log_index() == 3);
    follower.receive(append_entries(2, 1, 1, 3, 1)); // the leader's next heartbeat matches
    Message reply = follower.take_reply();
    CHECK(reply.success);
    CHECK(reply.match_index == 3);
  }

  // load() is called by every Replica built over the storage: each gets the durable state.
  TEST_CASE("FileStorage::load returns the same state at every call") {
    TempDir dir;
    FileStorage storage(dir.path);
    storage.save_term_and_vote(4, 2);
    append(storage, 1, make_log({{2, 1}, {1, 4}}));
    storage.sync();
    for (int call = 0; call < 2; ++call) {
      CAPTURE(call);
      raft::Storage::State state = storage.load();
      CHECK(state.current_term == 4);
      CHECK(state.voted_for == std::optional<ReplicaID>(2));
      CHECK(transitions_of(state.entries) == transitions_of(make_log({{2, 1}, {1, 4}})));
    }
  }

  // A write that failed half way left a partial record at the end of the file: writing the same
  // records again after it would bury it in the middle of the log, where it reads as damage.
  TEST_CASE("a FileStorage that failed an I/O call refuses further calls until reopened") {
    TempDir dir;
    {
      FileStorage storage(dir.path);
      storage.save_term_and_vote(1, std::nullopt);
      append(storage, 1, make_log({{2, 1}}));
      storage.sync();
      std::size_t synced = file_size(dir.file("log"));
      append(storage, 3, {entry(1, 3), entry(1, 4)});
      {
        FileSizeLimit limit(synced + 3);
        CHECK_THROWS_AS(storage.sync(), std::runtime_error);
      }
      REQUIRE(file_size(dir.file("log")) == synced + 3); // a partial record at the end

      CHECK_THROWS_AS(storage.sync(), std::runtime_error);
      CHECK_THROWS_AS(append(storage, 5, {entry(1, 5)}), std::runtime_error);
      CHECK_THROWS_AS(storage.save_term_and_vote(2, std::nullopt), std::runtime_error);
      CHECK_THROWS_AS(storage.load(), std::runtime_error);
      CHECK_THROWS_AS(storage.sync(), std::runtime_error);
    }
    std::optional<raft::Storage::State> state;
    CHECK_NOTHROW(state = FileStorage(dir.path).load()); // the torn record is cut off
    REQUIRE(state);
    CHECK(state->current_term == 1);
    CHECK(transitions_of(state->entries) == transitions_of(make_log({{2, 1}})));
  }

  // A process killed between write and fdatasync leaves its records in the page cache, where the
  // next process reads them back; a power cut would still erase them. Acknowledging them (or
  // speaking in the term they hold) before they are synced could lose a committed entry.
  TEST_CASE("a replica rebuilt over storage holding unsynced entries syncs them before "
            "acknowledging") {
    TempDir dir;
    std::vector<Entry> log = make_log({{3, 1}});
    {
      FileStorage storage(dir.path);
      Host follower(1, {2, 3}, storage);
      fail_fdatasync = true;
      CHECK_THROWS_AS(follower.receive(append_entries(2, 1, 1, 0, 0, log)), std::runtime_error);
      fail_fdatasync = false;
      CHECK(follower.cluster.sent.empty());
    }
    int synced_before_reopen = fdatasync_calls;
    FileStorage storage(dir.path);
    Host follower(1, {2, 3}, storage);
    follower.cluster.check = [&](const Message&) {
      CHECK_MESSAGE(fdatasync_calls > synced_before_reopen, "sent before the log was synced");
    };
    REQUIRE(follower->last_log_index() == 3); // read back from the page cache

    follower.receive(append_entries(2, 1, 1, 0, 0, log)); // the leader sends them again
    Message reply = follower.take_reply();
    CHECK(reply.success);
    CHECK(reply.match_index == 3);
  }

  // Terms start at 1 (§5.1): a leader of term 0 cannot exist, so its AppendEntries is bad input.
  TEST_CASE("an AppendEntries of term 0 names no leader and appends nothing") {
    Node follower(1, {2, 3});
    follower.receive(append_entries(2, 1, 0, 0, 0, make_log({{2, 0}}), 2));

    CHECK(follower->leader() == std::nullopt);
    for (const std::optional<ReplicaID>& leader : follower.cluster.leaders) CHECK_FALSE(leader);
    CHECK(follower->last_log_index() == 0);
    CHECK(follower->commit_index() == 0);
    CHECK(follower.machine().applied.empty());
    CHECK(follower->current_term() == 0);
    for (const Message& m : of_type(follower.take_sent(), MessageType::AppendEntriesResponse))
      CHECK_FALSE(m.success); // ignored, or rejected
  }

  // Nor can a candidate of term 0 exist: its RequestVote is ignored or refused.
  TEST_CASE("a RequestVote of term 0 is not granted") {
    Node voter(1, {2, 3});
    voter.receive(request_vote(2, 1, 0, 0, 0));

    for (const Message& m : of_type(voter.take_sent(), MessageType::RequestVoteResponse))
      CHECK_FALSE(m.vote_granted);
    CHECK(voter.storage.load().voted_for == std::nullopt);
  }

  // The one message of term 0 a correct replica sends: a fresh voter's pre-vote answer.
  TEST_CASE("a pre-vote answer of term 0 still counts, so a fresh cluster elects a leader") {
    Node candidate(1, {2, 3}, {}, raft::Options{});
    Node voter(2, {1, 3}, {}, raft::Options{});
    candidate.time_out();
    deliver(candidate, voter);
    std::vector<Message> answers = of_type(voter.cluster.sent, MessageType::RequestVoteResponse);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0].pre_vote);
    CHECK(answers[0].vote_granted);
    CHECK(answers[0].term == 0);

    deliver(voter, candidate);
    CHECK(candidate->current_term() == 1); // a real election now
    deliver(candidate, voter);
    deliver(voter, candidate);
    CHECK(candidate->is_leader());
  }

  // A term that cannot be incremented is bad input: adopting it would leave no term to campaign
  // in, and incrementing it would wrap to 0. current_term() never decreases.
  TEST_CASE("a message of term UINT64_MAX is ignored and the term never moves back") {
    Node node(1, {2, 3});
    std::vector<Term> terms{node->current_term()};
    node.receive(append_entries(2, 1, kLastTerm, 0, 0, make_log({{1, kLastTerm}})));
    terms.push_back(node->current_term());
    CHECK(node->current_term() < kLastTerm);
    CHECK(node->leader() != std::optional<ReplicaID>(2));
    CHECK(node->last_log_index() == 0);
    node.take_sent();

    node.receive(request_vote(3, 1, kLastTerm, 0, 0));
    terms.push_back(node->current_term());
    CHECK(node->current_term() < kLastTerm);
    for (const Message& m : of_type(node.take_sent(), MessageType::RequestVoteResponse))
      CHECK_FALSE(m.vote_granted);

    node.time_out();
    terms.push_back(node->current_term());
    CHECK(node->current_term() > 0);
    for (ReplicaID peer : node.peers) // not wedged: it can still win a later term
      if (!node->is_leader()) node.receive(vote(peer, 1, node->current_term(), true));
    terms.push_back(node->current_term());
    CHECK(node->is_leader());
    CAPTURE(terms);
    CHECK(std::is_sorted(terms.begin(), terms.end()));
  }

  TEST_CASE("a replica in the last term but one does not wrap its term to 0 when it times out") {
    Node node(1, {2, 3}, stored(kLastTerm - 1));
    for (int round = 0; round < 3; ++round) {
      CAPTURE(round);
      node.time_out();
      CHECK(node->current_term() >= kLastTerm - 1);
      for (const Message& m : node.take_sent()) CHECK(m.term >= kLastTerm - 1);
    }
    CHECK(node.storage.load().current_term >= kLastTerm - 1);
  }

  // A pre-vote request asks for the next term: none is left to ask for.
  TEST_CASE("a pre-vote request of term UINT64_MAX is refused") {
    Node voter(1, {2, 3}, stored(kLastTerm - 1), raft::Options{});
    voter.receive(pre_vote_request(2, 1, kLastTerm));
    for (const Message& m : of_type(voter.take_sent(), MessageType::RequestVoteResponse))
      CHECK_FALSE(m.vote_granted);
  }

  // A leader's configurations list each replica once, in ascending order, with some voter; one
  // that does not (a voter twice would count twice toward a majority) comes from no correct
  // leader, in an entry or in a snapshot, and is ignored.
  TEST_CASE("a configuration no correct leader writes is ignored, in an entry or a snapshot") {
    using Ids = std::vector<ReplicaID>;
    for (const raft::Configuration& bad :
         {raft::Configuration{Ids{1, 2, 2}, {}}, raft::Configuration{Ids{3, 1, 2}, {}},
          raft::Configuration{Ids{1, 2}, Ids{2}}, raft::Configuration{Ids{1, 2}, Ids{4, 3}},
          raft::Configuration{{}, Ids{1, 2}}}) {
      Node follower(1, {2, 3});
      std::vector<Entry> entries = make_log({{2, 1}});
      entries[1].configuration = std::make_shared<raft::Configuration>(bad);
      follower.receive(append_entries(2, 1, 1, 0, 0, entries, 2));
      CHECK(follower->last_log_index() == 0);
      CHECK(follower->configuration() == raft::Configuration{{1, 2, 3}, {}});

      Message install = message(MessageType::InstallSnapshot, 2, 1, 1);
      install.last_included_index = 5, install.last_included_term = 1;
      install.configuration = bad, install.data = "state", install.done = true;
      follower.receive(install);
      CHECK(follower->last_log_index() == 0);
      CHECK(follower->commit_index() == 0);
      CHECK(follower->configuration() == raft::Configuration{{1, 2, 3}, {}});
      CHECK(follower.machine().applied.empty());
    }
    Node follower(1, {2, 3}); // the same entry with a configuration a leader writes is taken
    std::vector<Entry> entries = make_log({{2, 1}});
    entries[1].configuration =
        std::make_shared<raft::Configuration>(raft::Configuration{Ids{1, 2, 3}, Ids{4}});
    follower.receive(append_entries(2, 1, 1, 0, 0, entries, 2));
    CHECK(follower->last_log_index() == 2);
    CHECK(follower->configuration() == raft::Configuration{{1, 2, 3}, {4}});
  }
}
