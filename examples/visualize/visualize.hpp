// visualize.hpp: the parts of the Raft visualizer (main.cpp says what it is and how to use it).
//
//   simulation.cpp  a cluster of raft::Replica objects on a simulated clock, over the tests'
//                   simulated network (tests/cluster.hpp), watched from outside after every step
//   scenario.cpp    the scenario file format: timed commands and `expect` checks
//   terminal.cpp    one frame of the film, in colour or in plain text
//   timeline.cpp    the HTML page with an SVG timeline of a run
//   main.cpp        options, the raw terminal, the frame loop and the keys
#ifndef VISUALIZE_HPP
#define VISUALIZE_HPP

#include "raft.hpp"
#include "tests/cluster.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace visualize {

using namespace std::chrono_literals;
using raft::Index;
using raft::MessageType;
using raft::ReplicaID;
using raft::Term;
using Time = raft::Duration; // simulated time since the run started

long long to_ms(Time time);       // whole milliseconds, rounded down
std::string format_ms(Time time); // "1234 ms"

// ---- What the run is made of ----

struct Settings {
  std::size_t replicas = 5; // 1 to 9, named S1 to S9
  std::uint64_t seed = 1;   // the same seed, settings and commands give the same film
  Time heartbeat = 50ms;
  Time election_min = 150ms, election_max = 300ms;
  Time delay_min = 10ms, delay_max = 20ms; // each message's delay is drawn from this range
  double loss = 0;                         // the chance that a message is lost
  std::size_t batch = 4096;                // raft::Options::max_entries_per_message
};

// A command, from a scenario file, a key, or the ':' prompt: "crash 2", "partition 1,2 | 3,4,5".
struct Command {
  enum class Verb {
    Crash,
    Restart,
    Timeout,
    Isolate,
    Partition,
    Heal,
    Cut,
    Propose,
    Delay,
    Loss,
    Say,
    Pause,
    Transfer, // leadership, to `replica`
    Read,     // a linearizable read, at `replica` or the leader
    Add,      // a new replica, S(N+1), joins through the leader
    Remove    // `replica` leaves the configuration
  };
  Verb verb = Verb::Say;
  ReplicaID replica = 0;                     // the target; 0 means "the leader" (or "all")
  std::vector<std::vector<ReplicaID>> sides; // Partition: the sides; Cut and Heal: one pair
  std::uint64_t count = 0;                   // Propose
  Time low{}, high{};                        // Delay
  double loss = 0;                           // Loss
  std::string text;                          // Say: what to say; otherwise the command as written
};

// A check: "expect commit all >= 3", "at 395ms expect entry 2 term 2 on 1,2,3".
struct Check {
  enum class Kind {
    Leader,
    Role,
    Number,
    Entry,
    Abandoned,
    EverLeader,
    NeverLeader,
    EverCommitted,
    NeverCommitted
  };
  Kind kind = Kind::Leader;
  std::string text;                // as written, for the report
  int line = 0;                    // in the scenario file; 0 for none
  std::optional<Time> at;          // when to check; none: at the end of the run
  std::vector<ReplicaID> replicas; // the subjects; empty means all live replicas
  ReplicaID leader = 0;            // Leader, EverLeader, NeverLeader: 0 means any
  bool none = false;               // Leader: "leader none"
  std::string role;                // Role: follower, candidate, leader or down
  std::string field;               // Number: term, commit, applied or length
  std::string op;                  // ==, !=, <, <=, >, >=
  std::uint64_t value = 0;         // Number, Abandoned
  Index index = 0;                 // Entry, *Committed
  Term term = 0;                   // Entry, *Committed, *Leader (0: any term)
};

struct Scenario {
  std::string name;
  Settings settings;
  std::vector<std::pair<Time, Command>> commands; // in file order; times need not be sorted
  std::vector<Check> checks;
  std::optional<Time> end; // "end 1000ms"; none: a little after the last command or check
};

// Both throw std::runtime_error naming the line and what is wrong with it. `replicas`, if given,
// replaces the file's cluster size (the command line's --replicas).
Scenario parse_scenario(const std::string& path, std::optional<std::size_t> replicas);
// When a scenario ends: its `end`, or 500 ms after its last command or timed check.
Time scenario_end(const Scenario& scenario);
Command parse_command(const std::string& text, std::size_t replicas);

// ---- What we see of a replica ----

enum class Role { Follower, Candidate, Leader, Down };
const char* role_name(Role role);

struct Cell { // one log entry, as the picture shows it
  Term term = 0;
  bool noop = false;          // the no-op a new leader appends (§8)
  bool configuration = false; // a membership change (§4.1)
};

// A replica seen from outside. raft.hpp does not expose the role, vote or log: the vote and the
// log are what the replica wrote to its Storage, and a replica is a candidate when it sent
// RequestVotes in its current term and neither won nor heard of a leader.
struct View {
  Role role = Role::Follower;
  Term term = 0;
  std::optional<ReplicaID> vote;   // whom it voted for in `term`
  std::optional<ReplicaID> leader; // whom it takes for the leader
  Index commit = 0, applied = 0;
  std::vector<Cell> log;
};
bool operator==(const View& a, const View& b);
inline bool operator!=(const View& a, const View& b) { return !(a == b); }

// The Storage a replica writes through, with a copy of the vote and log for the picture. It is
// a MemoryStorage: a restarted replica recovers from it, as from a disk.
class WatchedStorage : public raft::MemoryStorage {
public:
  Term term = 0;
  std::optional<ReplicaID> vote;
  std::vector<Cell> log;

  void save_term_and_vote(Term current_term, std::optional<ReplicaID> voted_for) override;
  void save_entries(Index first, const raft::Entry* begin, const raft::Entry* end) override;
};

// ---- The history of a run, for the timeline and the checks ----

struct Segment { // from `start` on, the replica had this role and term
  Time start{};
  Role role = Role::Follower;
  Term term = 0;
};

struct Flight { // a message on the network
  raft::Message message;
  Time sent{}, arrives{};   // a message lost at once arrives when it is sent
  std::uint64_t serial = 0; // send order, to break ties
};

struct Delivery { // a message's whole trip
  Flight flight;
  bool delivered = false;
  std::string fate; // why it was not delivered: "lost", "link cut", "S3 is down"
};

struct CommitMark {
  Time time{};
  ReplicaID replica = 0;
  Index commit = 0;
  bool leader = false;
};

struct Event { // one line of narration
  enum class Kind { Story, Command, Say, Check };
  Time time{};
  std::string text;
  Kind kind = Kind::Story; // Story: what the replicas did; Say: a scenario's own words
  std::string label;       // Command: short, for the timeline ("crash S2")
  std::vector<View> views; // Say: every replica at the end of that step, for the timeline
};

struct CheckResult {
  Check check;
  bool passed = false;
  std::string detail;
};

// ---- The simulation ----

class Simulation {
public:
  explicit Simulation(const Settings& settings);
  ~Simulation();
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  const Settings& settings() const { return settings_; }
  Time now() const { return now_; }
  std::size_t size() const;

  // Commands run at their time, before messages are delivered and replicas polled. A command
  // scheduled now runs at the next step, at the same time.
  void schedule(Time time, Command command);
  void add_check(Check check);

  // The earliest time something happens: a command, a message arriving, a replica's timer.
  Time next_event() const;
  // One step: jumps to next_event(), runs its commands, delivers its messages, polls every live
  // replica, and looks at what changed.
  void step();
  // Steps until `time`, then sets the clock to it; stops early after a `pause` command.
  void advance_to(Time time);
  bool take_pause_request() { return std::exchange(pause_requested_, false); }
  // Runs the checks "at the end"; a check timed after now fails: the run ended before it.
  void finish();

  // What there is to see.
  View view(ReplicaID id) const;
  std::optional<ReplicaID> leader() const; // a live leader of the highest term, if any
  std::vector<Flight> in_flight() const;   // sorted by arrival
  bool link_cut(ReplicaID a, ReplicaID b) const;
  std::set<std::pair<ReplicaID, ReplicaID>> cuts() const; // as (low, high)
  Time delay_min() const;
  Time delay_max() const;
  double loss() const;

  // The history.
  const std::vector<Event>& events() const { return events_; }
  const std::vector<Segment>& segments(ReplicaID id) const;
  // The latest configuration in a live replica's log (§4.1); none while it is down.
  std::optional<raft::Configuration> configuration(ReplicaID id) const;
  const std::vector<Delivery>& deliveries() const { return deliveries_; }
  const std::vector<CommitMark>& commits() const { return commits_; }
  const std::vector<CheckResult>& results() const { return results_; }
  const std::vector<std::string>& violations() const { return violations_; }
  bool failed() const;

private:
  struct Node;
  class Port;
  class Machine;
  class Replicas;

  auto& node(ReplicaID id) const; // the replica's slot in the cluster, with its Node
  raft::Clock::time_point local_time(const Node& node) const;
  void boot(ReplicaID id);
  void set_clock(Time time);
  void sent(std::uint64_t copy, const raft::Message& message,
            std::optional<raft::Clock::time_point> due);
  void arrived(std::uint64_t copy, bool reachable);
  void observe();
  void observe_majority(ReplicaID leader, const View& view);
  void apply(const Command& command);
  void propose(std::uint64_t count, ReplicaID to);
  void read(ReplicaID at);
  void add_replica();
  void change_membership(raft::MembershipChange change, ReplicaID replica, std::string what);
  void narrate(std::string text, Event::Kind kind = Event::Kind::Story, std::string label = "");
  void violation(std::string text);
  void run_checks_until(Time limit, bool inclusive);
  void flush_reports();
  std::optional<std::string> evaluate(const Check& check) const;
  std::vector<ReplicaID> subjects(const Check& check) const;

  Settings settings_;
  Time now_{};
  std::unique_ptr<Replicas> cluster_;         // the replicas and their network
  std::map<std::uint64_t, Flight> in_flight_; // the messages on the network, by copy number

  // Commands and checks still to come.
  std::multimap<Time, Command> schedule_;
  std::vector<Check> checks_;
  bool pause_requested_ = false;
  std::uint64_t next_transition_ = 1;

  // The history, and what the checks ask about it.
  std::vector<Event> events_;
  std::vector<Delivery> deliveries_;
  std::vector<CommitMark> commits_;
  std::vector<CheckResult> results_;
  std::vector<std::string> violations_;
  std::map<Term, std::set<ReplicaID>> leaders_; // every replica that led each term
  std::map<Index, Term> committed_;             // the term committed at each index
  std::set<std::pair<Index, Term>> ever_committed_;
  std::set<std::tuple<Index, Term, Term>> majority_told_; // narrated once: index, term, by term
  std::uint64_t abandoned_ = 0;
  std::size_t pictured_ = 0; // the events up to here have their views, where they need them
  struct Report {            // a transition's state, told during a poll, narrated after it
    ReplicaID replica;
    std::uint64_t transition;
    raft::TransitionState state;
    raft::AbandonReason reason;
  };
  std::vector<Report> reports_;
  bool told_as_request(const Report& report);    // a read's or a membership change's, narrated
  std::set<std::uint64_t> reads_;                // the ids of reads, told apart from transitions
  std::map<std::uint64_t, std::string> changes_; // membership changes asked for: what each does
  std::set<std::uint64_t> changes_told_;         // those told committed
};

// ---- Output ----

struct FrameOptions {
  bool colour = true; // ANSI colours; false: plain text
  int width = 100, height = 40;
  std::string status; // the bottom lines: running or paused, the prompt, the keys
  std::string title;  // the scenario's name
  Time speed{};       // simulated time per frame
  bool paused = false;
  bool events = true; // the last events, at the bottom (a plain film prints them as they come)
};
// The lines of one frame, without their newlines.
std::vector<std::string> render_frame(const Simulation& simulation, const FrameOptions& options);

struct TimelineOptions {
  bool all_messages = false; // include heartbeats and their replies
  std::string title;
};
void write_timeline(const std::string& path, const Simulation& simulation,
                    const TimelineOptions& options);

// The colour of a term, the same in the terminal (xterm's 256 colours) and in the HTML page.
int term_colour_256(Term term);
const char* term_colour_html(Term term);

} // namespace visualize

#endif
