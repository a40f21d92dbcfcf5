// scenario.cpp: the scenario file format. One thing a line; '#' starts a comment.
//
//   replicas 5                 settings, before or between the commands: replicas, seed,
//   seed 8                     heartbeat, election 150ms..300ms, delay 10ms[..20ms], loss 5%,
//   delay 10ms                 batch (entries in one AppendEntries), end (when the run stops)
//   at 300ms crash 2           a command at a simulated time (see parse_command)
//   at 395ms expect commit 1 < 2      a check at a time, after everything at that time happened
//   expect never committed 2 term 2   a check at the end of the run (see parse_check)
#include "visualize.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace visualize {
namespace {

std::vector<std::string> split(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

std::uint64_t number(const std::string& word, const char* what) {
  char* end = nullptr;
  unsigned long long value = std::strtoull(word.c_str(), &end, 10);
  if (word.empty() || *end != '\0' || word[0] == '-')
    throw std::runtime_error(std::string("expected ") + what + ", not '" + word + "'");
  return value;
}

// "300ms", "1.5s" or "300" (milliseconds).
Time duration(const std::string& word) {
  char* end = nullptr;
  double value = std::strtod(word.c_str(), &end);
  std::string unit = end ? end : "";
  if (word.empty() || end == word.c_str() || value < 0 ||
      (unit != "ms" && unit != "s" && !unit.empty()))
    throw std::runtime_error("expected a time such as 300ms, not '" + word + "'");
  double ms = unit == "s" ? value * 1000 : value;
  return std::chrono::milliseconds(static_cast<long long>(ms + 0.5));
}

// "10ms..20ms" or "10ms": a range of durations.
std::pair<Time, Time> duration_range(const std::string& word) {
  std::size_t dots = word.find("..");
  if (dots == std::string::npos) return {duration(word), duration(word)};
  std::string low = word.substr(0, dots), high = word.substr(dots + 2);
  if (low.find_first_not_of("0123456789.") == std::string::npos) low += "ms";
  std::pair<Time, Time> range{duration(low), duration(high)};
  if (range.first > range.second) throw std::runtime_error("the range '" + word + "' is inverted");
  return range;
}

ReplicaID replica(const std::string& word, std::size_t replicas) {
  std::uint64_t id = number(word, "a replica number");
  if (id < 1 || id > replicas)
    throw std::runtime_error("there is no replica " + word + " in a cluster of " +
                             std::to_string(replicas));
  return id;
}

// "1,2,3", "1, 2 3" or "S1,S2": the replicas named; "all" is the empty list.
std::vector<ReplicaID> replica_list(std::string text, std::size_t replicas) {
  std::replace(text.begin(), text.end(), ',', ' ');
  std::vector<ReplicaID> ids;
  for (std::string word : split(text)) {
    if (word == "all") return {};
    if (word[0] == 'S' || word[0] == 's') word.erase(0, 1);
    ids.push_back(replica(word, replicas));
  }
  if (ids.empty()) throw std::runtime_error("expected replica numbers such as 1,2,3");
  return ids;
}

// "2-3": a link between two replicas.
std::vector<ReplicaID> link(const std::string& word, std::size_t replicas) {
  std::size_t dash = word.find('-');
  if (dash == std::string::npos) throw std::runtime_error("expected a link such as 1-3");
  ReplicaID a = replica(word.substr(0, dash), replicas);
  ReplicaID b = replica(word.substr(dash + 1), replicas);
  if (a == b) throw std::runtime_error("a link joins two different replicas");
  return {a, b};
}

void expect_words(const std::vector<std::string>& words, std::size_t count, const char* usage) {
  if (words.size() != count) throw std::runtime_error(std::string("usage: ") + usage);
}

const char* const kOps[] = {"==", "!=", "<=", ">=", "<", ">"};

std::string op(const std::string& word) {
  for (const char* known : kOps)
    if (word == known) return word;
  throw std::runtime_error("expected one of == != < <= > >=, not '" + word + "'");
}

// The checks, after "expect":
//   leader 3 | leader any | leader none [term 4]   the live leader of the highest term
//   role 1,2 follower|candidate|leader|down
//   term|commit|applied|length 1,2|all OP N        OP is one of == != < <= > >=
//   entry 2 term 3 on 1,2,3|all                    those replicas hold entry 2, of term 3
//   abandoned OP N                                 transitions reported Abandoned, in all
//   ever leader [3] [in term 4]                    at some time until then
//   never leader [3] [in term 4]
//   ever committed 2 term 2                        some replica committed index 2 of term 2
//   never committed 2 term 2
Check parse_check(const std::string& text, std::size_t replicas) {
  std::vector<std::string> words = split(text);
  Check check;
  for (const std::string& word : words) check.text += (check.text.empty() ? "" : " ") + word;
  check.text = "expect " + check.text;
  if (words.empty()) throw std::runtime_error("expect what?");
  const std::string& what = words[0];
  auto term_suffix = [&](std::size_t from) { // "[in] term N" at the end, if present
    if (words.size() > from && words[from] == "in") ++from;
    if (words.size() == from) return;
    if (words.size() != from + 2 || words[from] != "term")
      throw std::runtime_error("expected 'term N' at the end");
    check.term = number(words[from + 1], "a term");
  };
  if (what == "leader") {
    check.kind = Check::Kind::Leader;
    if (words.size() < 2) throw std::runtime_error("usage: expect leader N|any|none [term T]");
    if (words[1] == "none")
      check.none = true;
    else if (words[1] != "any")
      check.leader = replica(words[1], replicas);
    term_suffix(2);
  } else if (what == "role") {
    expect_words(words, 3, "expect role 1,2|all follower|candidate|leader|down");
    check.kind = Check::Kind::Role;
    check.replicas = replica_list(words[1], replicas);
    check.role = words[2];
    if (check.role != "follower" && check.role != "candidate" && check.role != "leader" &&
        check.role != "down")
      throw std::runtime_error("no such role: " + check.role);
  } else if (what == "term" || what == "commit" || what == "applied" || what == "length") {
    expect_words(words, 4, "expect term|commit|applied|length 1,2|all OP N");
    check.kind = Check::Kind::Number;
    check.field = what;
    check.replicas = replica_list(words[1], replicas);
    check.op = op(words[2]);
    check.value = number(words[3], "a number");
  } else if (what == "entry") {
    if (words.size() != 6 || words[2] != "term" || words[4] != "on")
      throw std::runtime_error("usage: expect entry I term T on 1,2,3|all");
    check.kind = Check::Kind::Entry;
    check.index = number(words[1], "an index");
    check.term = number(words[3], "a term");
    check.replicas = replica_list(words[5], replicas);
    if (check.index == 0) throw std::runtime_error("log indexes start at 1");
  } else if (what == "abandoned") {
    expect_words(words, 3, "expect abandoned OP N");
    check.kind = Check::Kind::Abandoned;
    check.op = op(words[1]);
    check.value = number(words[2], "a number");
  } else if ((what == "ever" || what == "never") && words.size() >= 2 && words[1] == "leader") {
    check.kind = what == "ever" ? Check::Kind::EverLeader : Check::Kind::NeverLeader;
    std::size_t next = 2;
    if (words.size() > 2 && words[2] != "in" && words[2] != "term")
      check.leader = replica(words[next++], replicas);
    term_suffix(next);
  } else if ((what == "ever" || what == "never") && words.size() >= 2 && words[1] == "committed") {
    if (words.size() != 5 || words[3] != "term")
      throw std::runtime_error("usage: expect " + what + " committed I term T");
    check.kind = what == "ever" ? Check::Kind::EverCommitted : Check::Kind::NeverCommitted;
    check.index = number(words[2], "an index");
    check.term = number(words[4], "a term");
  } else {
    throw std::runtime_error("unknown check '" + what +
                             "': leader, role, term, commit, applied, length, entry, abandoned, "
                             "ever/never leader, ever/never committed");
  }
  return check;
}

// Drops a comment: from a '#' that starts a word, outside double quotes.
std::string strip_comment(const std::string& line) {
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '"') quoted = !quoted;
    if (line[i] == '#' && !quoted &&
        (i == 0 || std::isspace(static_cast<unsigned char>(line[i - 1]))))
      return line.substr(0, i);
  }
  return line;
}

} // namespace

// The commands, from a scenario line after "at TIME", a key, or the ':' prompt:
//   crash 2 | crash leader       the replica stops; its storage survives
//   restart 2 | restart all      a new Replica over the same storage, with a fresh state machine
//   timeout 3 | timeout leader   its election timer fires now
//   isolate 1                    cut every link of a replica
//   partition 1,2 | 3,4,5        only replicas on the same side can talk (unnamed ones: one side)
//   cut 1-3 | heal 1-3 | heal    one link; heal alone mends every link
//   propose 3 [to 2]             a client sends 3 transitions to the leader (or to replica 2)
//   delay 10ms[..30ms] | loss 10%    the network's delay and loss from now on
//   say "text"                   a line of narration for the class
//   pause                        playback stops here (ignored by --headless)
//   transfer 3                   the leader hands leadership to replica 3 (§3.10)
//   read [at 2]                  a client's linearizable read at the leader (or at replica 2)
//   add | remove 3               a new replica joins through the leader | replica 3 leaves (§4.1)
Command parse_command(const std::string& text, std::size_t replicas) {
  std::vector<std::string> words = split(text);
  if (words.empty()) throw std::runtime_error("empty command");
  Command command;
  command.text = text.substr(text.find_first_not_of(" \t"));
  while (!command.text.empty() && std::isspace(static_cast<unsigned char>(command.text.back())))
    command.text.pop_back();
  const std::string& verb = words[0];
  using Verb = Command::Verb;
  auto target = [&](const char* usage, const char* also) {
    expect_words(words, 2, usage);
    if (words[1] == also) return ReplicaID{0};
    return replica(words[1], replicas);
  };
  if (verb == "crash") {
    command.verb = Verb::Crash;
    command.replica = target("crash N|leader", "leader");
  } else if (verb == "restart") {
    command.verb = Verb::Restart;
    command.replica = target("restart N|all", "all");
  } else if (verb == "timeout") {
    command.verb = Verb::Timeout;
    command.replica = target("timeout N|leader", "leader");
  } else if (verb == "isolate") {
    command.verb = Verb::Isolate;
    command.replica = target("isolate N|leader", "leader");
  } else if (verb == "partition") {
    command.verb = Verb::Partition;
    std::string rest = text.substr(text.find("partition") + 9);
    std::istringstream sides(rest);
    for (std::string side; std::getline(sides, side, '|');)
      command.sides.push_back(replica_list(side, replicas));
    if (command.sides.size() < 2)
      throw std::runtime_error("usage: partition 1,2 | 3,4,5 (two sides or more)");
  } else if (verb == "heal" || verb == "cut") {
    command.verb = verb == "heal" ? Verb::Heal : Verb::Cut;
    if (verb == "cut" || words.size() > 1) {
      expect_words(words, 2, verb == "cut" ? "cut A-B" : "heal [A-B]");
      command.sides.push_back(link(words[1], replicas));
    }
  } else if (verb == "propose") {
    command.verb = Verb::Propose;
    if (words.size() != 2 && (words.size() != 4 || words[2] != "to"))
      throw std::runtime_error("usage: propose N [to R]");
    command.count = number(words[1], "a count");
    if (words.size() == 4) command.replica = replica(words[3], replicas);
  } else if (verb == "delay") {
    command.verb = Verb::Delay;
    expect_words(words, 2, "delay 10ms[..30ms]");
    std::tie(command.low, command.high) = duration_range(words[1]);
    if (command.low < 1ms) throw std::runtime_error("a message takes at least 1ms");
  } else if (verb == "loss") {
    command.verb = Verb::Loss;
    expect_words(words, 2, "loss 10%");
    std::string value = words[1];
    if (!value.empty() && value.back() == '%') value.pop_back();
    command.loss = std::strtod(value.c_str(), nullptr) / 100;
    if (command.loss < 0 || command.loss > 1) throw std::runtime_error("loss is 0% to 100%");
  } else if (verb == "say") {
    command.verb = Verb::Say;
    std::string said = text.substr(text.find("say") + 3);
    said.erase(0, said.find_first_not_of(" \t"));
    if (said.size() >= 2 && said.front() == '"' && said.back() == '"')
      said = said.substr(1, said.size() - 2);
    command.text = said;
  } else if (verb == "pause") {
    command.verb = Verb::Pause;
    expect_words(words, 1, "pause");
  } else if (verb == "transfer" || verb == "remove") {
    command.verb = verb == "transfer" ? Verb::Transfer : Verb::Remove;
    expect_words(words, 2, verb == "transfer" ? "transfer N" : "remove N");
    command.replica = replica(words[1], replicas);
  } else if (verb == "read") {
    command.verb = Verb::Read;
    if (words.size() != 1 && (words.size() != 3 || words[1] != "at"))
      throw std::runtime_error("usage: read [at R]");
    if (words.size() == 3) command.replica = replica(words[2], replicas);
  } else if (verb == "add") {
    command.verb = Verb::Add;
    expect_words(words, 1, "add");
  } else {
    throw std::runtime_error("unknown command '" + verb +
                             "': crash, restart, timeout, isolate, partition, cut, heal, propose, "
                             "delay, loss, say, pause, transfer, read, add, remove");
  }
  return command;
}

Time scenario_end(const Scenario& scenario) {
  Time last = 0ms;
  for (const auto& [time, command] : scenario.commands) last = std::max(last, time);
  for (const Check& check : scenario.checks) last = std::max(last, check.at.value_or(0ms));
  return scenario.end.value_or(last + 500ms);
}

Scenario parse_scenario(const std::string& path, std::optional<std::size_t> replicas) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error(path + ": cannot open it");
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(strip_comment(line));

  Scenario scenario;
  scenario.name = path.substr(path.find_last_of('/') + 1);
  // The cluster size comes first, wherever the file sets it: commands name replicas.
  for (const std::string& line : lines) {
    std::vector<std::string> words = split(line);
    if (words.size() == 2 && words[0] == "replicas")
      scenario.settings.replicas = std::strtoull(words[1].c_str(), nullptr, 10);
  }
  if (replicas) scenario.settings.replicas = *replicas;
  if (scenario.settings.replicas < 1 || scenario.settings.replicas > 9)
    throw std::runtime_error(path + ": a cluster has 1 to 9 replicas");
  std::size_t size = scenario.settings.replicas;

  Settings& settings = scenario.settings;
  for (std::size_t number_of_line = 1; number_of_line <= lines.size(); ++number_of_line) {
    const std::string& line = lines[number_of_line - 1];
    std::vector<std::string> words = split(line);
    if (words.empty()) continue;
    try {
      const std::string& key = words[0];
      std::optional<Time> at;
      std::size_t start = 0; // where the command or check begins in the line
      if (key == "at") {
        if (words.size() < 3) throw std::runtime_error("usage: at TIME COMMAND");
        at = duration(words[1]);
        start = line.find(words[1], line.find("at") + 2) + words[1].size();
        words.erase(words.begin(), words.begin() + 2);
      }
      std::string rest = line.substr(start);
      if (words[0] == "expect") {
        Check check = parse_check(rest.substr(rest.find("expect") + 6), size);
        check.at = at;
        check.line = static_cast<int>(number_of_line);
        if (at) check.text = "at " + format_ms(*at) + " " + check.text;
        scenario.checks.push_back(check);
      } else if (at) {
        scenario.commands.emplace_back(*at, parse_command(rest, size));
      } else if (key == "replicas") {
        expect_words(words, 2, "replicas N");
      } else if (key == "seed") {
        expect_words(words, 2, "seed N");
        settings.seed = number(words[1], "a seed");
      } else if (key == "heartbeat") {
        expect_words(words, 2, "heartbeat 50ms");
        settings.heartbeat = duration(words[1]);
      } else if (key == "election") {
        expect_words(words, 2, "election 150ms..300ms");
        std::tie(settings.election_min, settings.election_max) = duration_range(words[1]);
      } else if (key == "delay" || key == "loss") {
        Command command = parse_command(line, size);
        if (key == "delay")
          std::tie(settings.delay_min, settings.delay_max) = {command.low, command.high};
        if (key == "loss") settings.loss = command.loss;
      } else if (key == "batch") {
        expect_words(words, 2, "batch N");
        settings.batch = number(words[1], "a number of entries");
        if (settings.batch == 0) throw std::runtime_error("batch is at least 1");
      } else if (key == "end") {
        expect_words(words, 2, "end TIME");
        scenario.end = duration(words[1]);
      } else {
        throw std::runtime_error("unknown line: settings are replicas, seed, heartbeat, "
                                 "election, delay, loss, batch, end; commands start with 'at'");
      }
    } catch (const std::runtime_error& error) {
      throw std::runtime_error(path + ":" + std::to_string(number_of_line) + ": " + error.what());
    }
  }
  return scenario;
}

} // namespace visualize
