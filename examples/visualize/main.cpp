// A teaching visualizer for raft.hpp: watch a cluster elect, replicate, crash and heal.
//
// It runs N replicas (5 by default) in one process on a simulated clock, over a network that
// you control, and redraws each replica's role, term, vote, log and commit index, and the
// messages in flight, a frame at a time. Poll-driven Raft is deterministic, so a seed gives a
// film: the same seed, settings and commands give the same run, frame for frame.
//
//   build/visualize                                      play with the keys
//   build/visualize examples/visualize/scenarios/figure8.scenario    watch a scenario
//   build/visualize figure8.scenario --headless --record build/figure8.html   run it to the end, in
//                                                        text, and draw its timeline
//
// Keys: space pauses, '.' steps one event, + and - change the speed, c crashes a replica, r
// restarts one, t fires its election timer, i isolates it, x cuts a link, p partitions, h heals,
// n proposes transitions, ':' takes any scenario command, q (or Ctrl-C) quits. The scenario
// format is described in scenario.cpp.
#include "visualize.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>

using namespace visualize;

namespace {

volatile std::sig_atomic_t stop_requested = 0;
void on_signal(int) { stop_requested = 1; }

const char* const kUsage = R"(usage: visualize [SCENARIO] [options]
  SCENARIO          a scenario file (see examples/visualize/scenarios); without one, free play
  --replicas N      the cluster's size, 1 to 9 (default 5, or the scenario's)
  --seed N          the run's seed (default 1, or the scenario's): same seed, same film
  --speed MS        milliseconds of simulated time per frame, 20 frames a second (default 2)
  --record FILE     write the run's timeline to FILE, one HTML page, when the run ends
  --all-messages    the timeline draws heartbeats and their replies too
  --headless        no keys, no waiting: run to the end and print the film as text
  --duration MS     how long a headless run without a scenario lasts (default 3000)
  --plain           no colours, even on a terminal
  --quiet           headless: print only the narration and the checks, no frames
Keys: space pause, . step, +/- speed, c crash, r restart, t timeout, i isolate, x cut a link,
p partition, h heal all, n propose, : any command, q quit.
)";

struct Options {
  std::string scenario;
  std::optional<std::size_t> replicas;
  std::optional<std::uint64_t> seed;
  Time speed = 2ms;
  std::string record;
  bool all_messages = false, headless = false, plain = false, quiet = false;
  Time duration = 3000ms;
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    auto milliseconds = [&](const std::string& text) {
      double ms = std::strtod(text.c_str(), nullptr);
      if (ms <= 0) throw std::runtime_error(arg + " needs a positive number of milliseconds");
      return std::chrono::duration_cast<Time>(std::chrono::duration<double, std::milli>(ms));
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--replicas") {
      options.replicas = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--seed") {
      options.seed = std::strtoull(value().c_str(), nullptr, 10);
    } else if (arg == "--speed") {
      options.speed = milliseconds(value());
    } else if (arg == "--record") {
      options.record = value();
    } else if (arg == "--duration") {
      options.duration = milliseconds(value());
    } else if (arg == "--all-messages") {
      options.all_messages = true;
    } else if (arg == "--headless") {
      options.headless = true;
    } else if (arg == "--plain") {
      options.plain = true;
    } else if (arg == "--quiet") {
      options.quiet = true;
    } else if (!arg.empty() && arg[0] != '-' && options.scenario.empty()) {
      options.scenario = arg;
    } else {
      throw std::runtime_error("unknown argument '" + arg + "' (see --help)");
    }
  }
  return options;
}

// The terminal while we play: keys arrive one at a time without echo, and frames are drawn over
// each other on the alternate screen. The destructor puts everything back, on every way out:
// q, Ctrl-C (SIGINT still stops us: the loop sees the flag and returns), SIGTERM, an exception.
class Screen {
public:
  Screen(bool keys, bool escapes) : escapes_(escapes) {
    if (keys && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~(ICANON | ECHO);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      raw_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    if (escapes_) write_all("\x1b[?1049h\x1b[?25l"); // the alternate screen; no cursor
  }
  ~Screen() {
    if (escapes_) write_all("\x1b[?25h\x1b[?1049l");
    if (raw_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  void draw(const std::vector<std::string>& lines) {
    std::string out = "\x1b[H";
    for (const std::string& line : lines) out += line + "\x1b[K\n";
    write_all(out + "\x1b[J");
  }
  static std::pair<int, int> size() { // columns, rows
    winsize size{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
      return {size.ws_col, size.ws_row};
    return {100, 40};
  }
  static void write_all(const std::string& text) {
    for (std::size_t done = 0; done < text.size();) {
      ssize_t written = ::write(STDOUT_FILENO, text.data() + done, text.size() - done);
      if (written <= 0) return;
      done += static_cast<std::size_t>(written);
    }
  }

private:
  bool escapes_;
  bool raw_ = false;
  termios saved_{};
};

// The film as text, for a pipe or a file: each event as it happens, and a frame whenever a
// replica changed, at most one a frame.
class Printer {
public:
  Printer(const Simulation& simulation, bool colour, bool frames, std::string title)
      : simulation_(simulation), colour_(colour), frames_(frames), title_(std::move(title)) {}
  void print(Time speed) {
    const std::vector<Event>& events = simulation_.events();
    for (; printed_ < events.size(); ++printed_) {
      char time[32];
      std::snprintf(time, sizeof time, "%9s  ", format_ms(events[printed_].time).c_str());
      std::cout << time << events[printed_].text << "\n";
    }
    std::vector<View> views;
    for (ReplicaID id = 1; id <= simulation_.size(); ++id) views.push_back(simulation_.view(id));
    if (frames_ && views != last_) {
      FrameOptions options;
      options.colour = colour_;
      options.width = 160;
      options.height = 12 + static_cast<int>(simulation_.size()) + 8;
      options.title = title_;
      options.speed = speed;
      options.events = false;
      std::cout << "\n";
      for (const std::string& line : render_frame(simulation_, options)) std::cout << line << "\n";
      std::cout << "\n";
    }
    last_ = views;
    std::cout.flush();
  }

private:
  const Simulation& simulation_;
  bool colour_, frames_;
  std::string title_;
  std::size_t printed_ = 0;
  std::vector<View> last_;
};

std::string summary(const Simulation& simulation) {
  std::size_t passed = 0, failed = 0;
  for (const CheckResult& result : simulation.results()) (result.passed ? passed : failed)++;
  std::string text =
      std::to_string(passed) + " checks passed, " + std::to_string(failed) + " failed";
  if (!simulation.violations().empty())
    text += ", " + std::to_string(simulation.violations().size()) + " safety violations";
  return text;
}

void print_results(const Simulation& simulation) {
  for (const CheckResult& result : simulation.results())
    if (!result.passed)
      std::cout << "FAILED: " << result.check.text << " (line " << result.check.line
                << "): " << result.detail << "\n";
  for (const std::string& violation : simulation.violations())
    std::cout << "SAFETY VIOLATION: " << violation << "\n";
  std::cout << summary(simulation) << "\n";
}

// ---- Playing with the keys ----

struct Player {
  Player(Simulation& simulation, Time end, Time speed)
      : simulation(simulation), end(end), speed(speed) {}

  Simulation& simulation;
  Time end;   // of the scenario; Time::max() in free play
  Time speed; // simulated time per frame
  bool paused = false;
  bool ended = false;
  bool quit = false;
  char waiting = 0;                  // a key that waits for replica numbers: c, r, t, i, n or x
  std::string digits;                // typed after it
  std::optional<std::string> prompt; // the ':' command being typed
  std::string message;               // what the last key did

  void run(const std::string& text) {
    try {
      Command command = parse_command(text, simulation.size());
      simulation.schedule(simulation.now(), command);
      simulation.step(); // at once, at the same simulated time
      message = "> " + text;
      check_end();
    } catch (const std::exception& error) { message = error.what(); }
  }

  void check_end() {
    if (ended || simulation.now() < end) return;
    ended = paused = true;
    simulation.finish();
    message = "the scenario is over: " + summary(simulation) + ". Space goes on, q quits.";
  }

  void advance() {
    if (paused) return;
    simulation.advance_to(ended ? simulation.now() + speed
                                : std::min(end, simulation.now() + speed));
    if (simulation.take_pause_request()) paused = true;
    check_end();
  }

  void key(char c) {
    if (prompt) return type(c);
    if (waiting) return number(c);
    switch (c) {
    case ' ':
      paused = !paused;
      message = paused ? "paused" : "";
      break;
    case '.':
    case 's':
      paused = true;
      simulation.step();
      check_end();
      break;
    case '+':
    case '=': speed = std::min<Time>(speed * 2, 500ms); break;
    case '-':
    case '_': speed = std::max<Time>(speed / 2, 125us); break;
    case 'q':
    case 'Q': quit = true; break;
    case 'h': run("heal"); break;
    case 'p': prompt = "partition "; break;
    case ':': prompt = ""; break;
    case 'c':
    case 'r':
    case 't':
    case 'i':
    case 'n':
    case 'x':
      waiting = c;
      digits.clear();
      break;
    default: break;
    }
  }

  void number(char c) {
    const std::string verbs = "crtinx";
    const char* names[] = {"crash", "restart", "timeout", "isolate", "propose", "cut"};
    std::string verb = names[verbs.find(waiting)];
    char which = waiting;
    if (c == 27) { // Esc
      waiting = 0;
      return;
    }
    if (c == 'l' && (which == 'c' || which == 't' || which == 'i')) {
      waiting = 0;
      return run(verb + " leader");
    }
    if (c == 'a' && which == 'r') {
      waiting = 0;
      return run("restart all");
    }
    if (c < '0' || c > '9') return;
    digits += c;
    if (which == 'x' && digits.size() < 2) return;
    waiting = 0;
    run(which == 'x' ? "cut " + digits.substr(0, 1) + "-" + digits.substr(1) : verb + " " + digits);
  }

  void type(char c) {
    if (c == 27) {
      prompt.reset();
    } else if (c == '\n' || c == '\r') {
      std::string text = *prompt;
      prompt.reset();
      if (text.find_first_not_of(' ') != std::string::npos) run(text);
    } else if (c == 127 || c == 8) {
      if (!prompt->empty()) prompt->pop_back();
    } else if (c >= 32 && c < 127) {
      *prompt += c;
    }
  }

  std::string status() const {
    std::string first;
    if (prompt) {
      first = ": " + *prompt + "_   (a command such as: partition 1,2 | 3,4,5; Enter runs it)";
    } else if (waiting) {
      std::string range = "1-" + std::to_string(simulation.size());
      first = waiting == 'c'   ? "crash which replica? " + range + ", or l for the leader"
              : waiting == 'r' ? "restart which replica? " + range + ", or a for all"
              : waiting == 't' ? "whose election timer fires? " + range + ", or l"
              : waiting == 'i' ? "isolate which replica? " + range + ", or l"
              : waiting == 'n' ? "propose how many transitions? 1-9"
                               : "cut which link? two replicas, such as 13";
      first += " (Esc cancels) " + digits;
    } else {
      first = message;
    }
    return first + "\nspace pause  . step  +/- speed  c crash  r restart  t timeout  i isolate  "
                   "x cut link  p partition  h heal  n propose  : command  q quit";
  }
};

int play(Simulation& simulation, const Options& options, Time end, const std::string& title) {
  bool escapes = isatty(STDOUT_FILENO) && !options.plain;
  Player player(simulation, end, options.speed);
  Printer printer(simulation, false, true, title);
  std::string told; // the last message printed, without escapes
  {
    Screen screen(true, escapes);
    auto next_frame = std::chrono::steady_clock::now();
    while (!stop_requested && !player.quit) {
      auto now = std::chrono::steady_clock::now();
      bool frame = now >= next_frame;
      if (frame) {
        next_frame = std::max(next_frame + 50ms, now);
        player.advance();
      } else {
        pollfd input{STDIN_FILENO, POLLIN, 0};
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_frame - now);
        if (poll(&input, 1, static_cast<int>(wait.count()) + 1) <= 0) continue;
        char keys[64];
        ssize_t count = read(STDIN_FILENO, keys, sizeof keys);
        if (count <= 0) { // the input is closed: nobody is at the keys
          player.quit = true;
          break;
        }
        for (ssize_t i = 0; i < count; ++i) player.key(keys[i]);
      }
      if (escapes) {
        auto [columns, rows] = Screen::size();
        FrameOptions frame_options;
        frame_options.colour = true;
        frame_options.width = columns;
        frame_options.height = rows;
        frame_options.status = player.status();
        frame_options.title = title;
        frame_options.speed = player.speed;
        frame_options.paused = player.paused;
        screen.draw(render_frame(simulation, frame_options));
      } else {
        printer.print(player.speed);
        if (player.message != told) std::cout << (told = player.message) << std::endl;
      }
    }
  }
  if (!escapes) printer.print(player.speed);
  if (stop_requested) std::cout << "stopped at " << format_ms(simulation.now()) << "\n";
  if (player.ended || !simulation.results().empty() || !simulation.violations().empty())
    print_results(simulation);
  return simulation.failed() ? 1 : 0;
}

int run_headless(Simulation& simulation, const Options& options, Time end,
                 const std::string& title) {
  bool colour = isatty(STDOUT_FILENO) && !options.plain;
  Printer printer(simulation, colour, !options.quiet, title);
  printer.print(options.speed);
  while (!stop_requested && simulation.now() < end) {
    simulation.advance_to(std::min(end, simulation.now() + options.speed));
    simulation.take_pause_request(); // pauses are for people watching
    printer.print(options.speed);
  }
  if (stop_requested) std::cout << "stopped at " << format_ms(simulation.now()) << "\n";
  simulation.finish();
  printer.print(options.speed);
  print_results(simulation);
  return simulation.failed() ? 1 : 0;
}

} // namespace

int main(int argc, char** argv) {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal_number, &action, nullptr);

  try {
    Options options = parse_options(argc, argv);
    Scenario scenario;
    Time end = options.duration;
    if (!options.scenario.empty()) {
      scenario = parse_scenario(options.scenario, options.replicas);
      end = scenario_end(scenario);
    } else if (options.replicas) {
      scenario.settings.replicas = *options.replicas;
    }
    if (options.seed) scenario.settings.seed = *options.seed;

    Simulation simulation(scenario.settings);
    for (const auto& [time, command] : scenario.commands) simulation.schedule(time, command);
    for (const Check& check : scenario.checks) simulation.add_check(check);

    bool interactive = !options.headless && isatty(STDIN_FILENO);
    if (interactive && options.scenario.empty()) end = Time::max();
    int status = interactive ? play(simulation, options, end, scenario.name)
                             : run_headless(simulation, options, end, scenario.name);
    if (!options.record.empty()) {
      TimelineOptions timeline;
      timeline.all_messages = options.all_messages;
      timeline.title = scenario.name.empty() ? "free play" : scenario.name;
      write_timeline(options.record, simulation, timeline);
      std::cout << "wrote the timeline to " << options.record << "\n";
    }
    return status;
  } catch (const std::exception& error) {
    std::cerr << "visualize: " << error.what() << "\n";
    return 2;
  }
}
