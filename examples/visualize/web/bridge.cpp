// bridge.cpp: the visualizer's Simulation, compiled to WebAssembly for page.js. The page calls
// these C functions; each answers with a string (JSON for state), valid until the next call.
//
// The run goes as in the terminal: frames of `advance_to(now + speed)` until the scenario's end,
// then `finish()`, which runs the checks "at the end"; afterwards play goes on freely. The
// scenarios are the shipped files, embedded under /scenarios (see web.mk), parsed by scenario.cpp.
#include "../visualize.hpp"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

using namespace visualize;

namespace {

// The one run on the page.
struct Run {
  std::unique_ptr<Simulation> simulation;
  std::string title;
  Time end = Time::max(); // of the scenario; Time::max() in free play
  bool ended = false;
  bool paused = false; // a `pause` command stopped playback
};

Run& run() {
  static Run the_run;
  return the_run;
}

const char* answer(std::string text) {
  static std::string kept;
  kept = std::move(text);
  return kept.c_str();
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

double ms(Time time) { return std::chrono::duration<double, std::milli>(time).count(); }

void check_end() {
  Run& r = run();
  if (r.ended || r.simulation->now() < r.end) return;
  r.ended = true;
  r.simulation->finish();
}

// What a replica is in the configuration of the leader (or, with none, in its own): "voter",
// "learner" or "none"; "" while it is down with no leader to ask.
std::string membership(const Simulation& simulation, ReplicaID id) {
  std::optional<raft::Configuration> configuration =
      simulation.configuration(simulation.leader().value_or(id));
  if (!configuration) return "";
  auto has = [id](const std::vector<ReplicaID>& ids) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  return has(configuration->voters) ? "voter" : has(configuration->learners) ? "learner" : "none";
}

std::string view_json(const Simulation& simulation, ReplicaID id) {
  View view = simulation.view(id);
  std::string out = "{\"id\":" + std::to_string(id) + ",\"role\":" + quoted(role_name(view.role)) +
                    ",\"member\":" + quoted(membership(simulation, id)) +
                    ",\"term\":" + std::to_string(view.term) +
                    ",\"vote\":" + (view.vote ? std::to_string(*view.vote) : "null") +
                    ",\"leader\":" + (view.leader ? std::to_string(*view.leader) : "null") +
                    ",\"commit\":" + std::to_string(view.commit) +
                    ",\"applied\":" + std::to_string(view.applied) + ",\"log\":[";
  for (std::size_t i = 0; i < view.log.size(); ++i)
    out += (i ? ",[" : "[") + std::to_string(view.log[i].term) + "," +
           (view.log[i].noop            ? "1"
            : view.log[i].configuration ? "2"
                                        : "0") +
           "]";
  return out + "]}";
}

std::string flight_json(const Flight& flight) {
  const raft::Message& message = flight.message;
  return "{\"type\":" + quoted(sim::name(message.type)) +
         ",\"from\":" + std::to_string(message.from) + ",\"to\":" + std::to_string(message.to) +
         ",\"term\":" + std::to_string(message.term) +
         ",\"entries\":" + std::to_string(message.entries.size()) +
         ",\"granted\":" + (message.vote_granted ? "true" : "false") +
         ",\"sent\":" + std::to_string(ms(flight.sent)) +
         ",\"arrives\":" + std::to_string(ms(flight.arrives)) + "}";
}

const char* event_kind(Event::Kind kind) {
  switch (kind) {
  case Event::Kind::Story: return "story";
  case Event::Kind::Command: return "command";
  case Event::Kind::Say: return "say";
  case Event::Kind::Check: return "check";
  }
  return "story";
}

} // namespace

extern "C" {

// The shipped scenarios' names, one a line, sorted.
const char* web_scenarios() {
  std::vector<std::string> names;
  if (DIR* dir = opendir("/scenarios")) {
    while (dirent* entry = readdir(dir)) {
      std::string file = entry->d_name;
      const std::string suffix = ".scenario";
      if (file.size() > suffix.size() && file.rfind(suffix) == file.size() - suffix.size())
        names.push_back(file.substr(0, file.size() - suffix.size()));
    }
    closedir(dir);
  }
  std::sort(names.begin(), names.end());
  std::string out;
  for (const std::string& name : names) out += name + "\n";
  return answer(out);
}

// Starts a run: a shipped scenario by name, or free play ("") with `replicas` replicas and
// `seed`. Returns "" or what is wrong.
const char* web_load(const char* scenario_name, int replicas, int seed) {
  try {
    Scenario scenario;
    Run fresh;
    std::string name = scenario_name;
    if (!name.empty()) {
      scenario = parse_scenario("/scenarios/" + name + ".scenario", std::nullopt);
      fresh.end = scenario_end(scenario);
      fresh.title = name;
    } else {
      scenario.settings.replicas = static_cast<std::size_t>(replicas);
      scenario.settings.seed = static_cast<std::uint64_t>(seed);
      fresh.title = "free play";
    }
    fresh.simulation = std::make_unique<Simulation>(scenario.settings);
    for (const auto& [time, command] : scenario.commands) fresh.simulation->schedule(time, command);
    for (const Check& check : scenario.checks) fresh.simulation->add_check(check);
    run() = std::move(fresh);
    return answer("");
  } catch (const std::exception& error) { return answer(error.what()); }
}

// One frame: `speed_ms` of simulated time, as the terminal's frame loop plays it.
void web_advance(double speed_ms) {
  Run& r = run();
  if (!r.simulation) return;
  Simulation& simulation = *r.simulation;
  Time speed =
      std::chrono::duration_cast<Time>(std::chrono::duration<double, std::milli>(speed_ms));
  simulation.advance_to(r.ended ? simulation.now() + speed
                                : std::min(r.end, simulation.now() + speed));
  if (simulation.take_pause_request()) r.paused = true;
  check_end();
}

// One event: the next step of the simulation, whenever it falls.
void web_step() {
  Run& r = run();
  if (!r.simulation) return;
  r.simulation->step();
  r.simulation->take_pause_request();
  check_end();
}

// A command, as in a scenario or at the terminal's ':' prompt, run at once. Returns "" or what
// is wrong with it.
const char* web_command(const char* text) {
  Run& r = run();
  if (!r.simulation) return answer("no run");
  try {
    Command command = parse_command(text, r.simulation->size());
    r.simulation->schedule(r.simulation->now(), command);
    r.simulation->step(); // at once, at the same simulated time
    r.simulation->take_pause_request();
    check_end();
    return answer("");
  } catch (const std::exception& error) { return answer(error.what()); }
}

// The colour of a term, as in the terminal and the timeline.
const char* web_term_colour(int term) { return term_colour_html(static_cast<Term>(term)); }

// Whether a `pause` command asked playback to stop since the last call.
int web_take_pause() { return std::exchange(run().paused, false) ? 1 : 0; }

// Everything the page draws, with the narration from event `from` on.
const char* web_state(int from) {
  Run& r = run();
  if (!r.simulation) return answer("null");
  const Simulation& simulation = *r.simulation;
  std::string out =
      "{\"title\":" + quoted(r.title) + ",\"now\":" + std::to_string(ms(simulation.now())) +
      ",\"end\":" + (r.end == Time::max() ? "null" : std::to_string(ms(r.end))) +
      ",\"ended\":" + (r.ended ? "true" : "false") +
      ",\"leader\":" + (simulation.leader() ? std::to_string(*simulation.leader()) : "null") +
      ",\"replicas\":[";
  for (ReplicaID id = 1; id <= simulation.size(); ++id)
    out += (id > 1 ? "," : "") + view_json(simulation, id);
  out += "],\"flights\":[";
  std::vector<Flight> flights = simulation.in_flight();
  for (std::size_t i = 0; i < flights.size(); ++i) out += (i ? "," : "") + flight_json(flights[i]);
  out += "],\"cuts\":[";
  bool first = true;
  for (const auto& [a, b] : simulation.cuts()) {
    out += (first ? "[" : ",[") + std::to_string(a) + "," + std::to_string(b) + "]";
    first = false;
  }
  out += "],\"violations\":[";
  for (std::size_t i = 0; i < simulation.violations().size(); ++i)
    out += (i ? "," : "") + quoted(simulation.violations()[i]);
  out += "],\"results\":[";
  for (std::size_t i = 0; i < simulation.results().size(); ++i) {
    const CheckResult& result = simulation.results()[i];
    out += (i ? ",{" : "{") + std::string("\"text\":") + quoted(result.check.text) +
           ",\"passed\":" + (result.passed ? "true" : "false") +
           ",\"detail\":" + quoted(result.detail) + "}";
  }
  out += "],\"events_total\":" + std::to_string(simulation.events().size()) + ",\"events\":[";
  const std::vector<Event>& events = simulation.events();
  for (std::size_t i = std::min<std::size_t>(std::max(from, 0), events.size()); i < events.size();
       ++i)
    out += std::string(i > static_cast<std::size_t>(from) ? "," : "") +
           "{\"time\":" + std::to_string(to_ms(events[i].time)) +
           ",\"kind\":" + quoted(event_kind(events[i].kind)) +
           ",\"text\":" + quoted(events[i].text) + "}";
  return answer(out + "]}");
}

} // extern "C"
