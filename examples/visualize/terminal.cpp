// terminal.cpp: one frame of the film. The same lines in colour (ANSI escapes, for a terminal)
// or in plain text (for a pipe or a file); main.cpp decides where they go.
#include "visualize.hpp"

#include <algorithm>
#include <cstdio>

namespace visualize {

// xterm's 256-colour numbers and their HTML equivalents: light colours, so that black text on
// them reads well, cycling every 8 terms. Term 0 (before any election) is grey.
namespace {
const int kTermColours256[] = {75, 214, 114, 177, 222, 80, 210, 153};
const char* const kTermColoursHtml[] = {"#5fafff", "#ffaf00", "#87d787", "#d787ff",
                                        "#ffd787", "#5fd7d7", "#ff8787", "#afd7ff"};
} // namespace

int term_colour_256(Term term) { return term == 0 ? 250 : kTermColours256[(term - 1) % 8]; }
const char* term_colour_html(Term term) {
  return term == 0 ? "#bcbcbc" : kTermColoursHtml[(term - 1) % 8];
}

namespace {

// A line made of pieces, each with an optional ANSI style ("1;33" is bold yellow). It knows its
// visible width, so that it can be cut to the terminal's width without cutting an escape.
class Line {
public:
  explicit Line(bool colour) : colour_(colour) {}
  Line& add(const std::string& text, const std::string& style = "") {
    pieces_.push_back({text, style});
    return *this;
  }
  std::string str(int width) const {
    std::string out;
    int used = 0;
    for (const auto& [text, style] : pieces_) {
      std::string cut;
      for (std::size_t i = 0; i < text.size(); ++i) {
        bool starts_character = (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
        if (starts_character && used++ >= width) break;
        cut += text[i];
      }
      if (colour_ && !style.empty() && !cut.empty())
        out += "\x1b[" + style + "m" + cut + "\x1b[0m";
      else
        out += cut;
      if (used > width) break;
    }
    return out;
  }

private:
  bool colour_;
  std::vector<std::pair<std::string, std::string>> pieces_;
};

std::string name(ReplicaID id) { return "S" + std::to_string(id); }

std::string padded(const std::string& text, std::size_t width, bool right = false) {
  if (text.size() >= width) return text;
  std::string pad(width - text.size(), ' ');
  return right ? pad + text : text + pad;
}

std::string entry(Index index, Term term) {
  return std::to_string(index) + ":t" + std::to_string(term);
}

// What a message says, in a few words.
std::string describe(const raft::Message& m) {
  std::string term = " t" + std::to_string(m.term);
  switch (m.type) {
  case MessageType::RequestVote:
    return "RequestVote" + term + " (last entry " +
           (m.last_log_index ? entry(m.last_log_index, m.last_log_term) : "none") + ")";
  case MessageType::RequestVoteResponse:
    return "vote" + term + (m.vote_granted ? ": granted" : ": refused");
  case MessageType::AppendEntries: {
    std::string after = m.prev_log_index ? entry(m.prev_log_index, m.prev_log_term) : "start";
    std::string commit = ", commit " + std::to_string(m.leader_commit);
    if (m.entries.empty()) return "heartbeat" + term + " (after " + after + commit + ")";
    std::string list;
    Index first = m.prev_log_index + 1;
    if (m.entries.size() <= 4) {
      for (std::size_t i = 0; i < m.entries.size(); ++i)
        list += (i ? " " : "") + entry(first + i, m.entries[i].term);
    } else {
      list = std::to_string(first) + ".." + std::to_string(first + m.entries.size() - 1);
    }
    return "AppendEntries" + term + " [" + list + "] after " + after + commit;
  }
  case MessageType::AppendEntriesResponse:
    if (m.success)
      return "append reply" + term + ": ok, matches to " + std::to_string(m.match_index);
    return "append reply" + term + ": rejected" +
           (m.conflict_index ? ", try from " + std::to_string(m.conflict_index) : "");
  case MessageType::InstallSnapshot:
    return "InstallSnapshot" + term + " to " + std::to_string(m.last_included_index);
  case MessageType::InstallSnapshotResponse: return "snapshot reply" + term;
  case MessageType::TimeoutNow: return "TimeoutNow" + term + ": campaign at once (transfer)";
  }
  return "?";
}

std::string message_style(const raft::Message& m) {
  switch (m.type) {
  case MessageType::RequestVote: return "33";
  case MessageType::RequestVoteResponse: return m.vote_granted ? "32" : "31";
  case MessageType::AppendEntries: return m.entries.empty() ? "2" : "34;1";
  case MessageType::AppendEntriesResponse: return m.success ? "2;36" : "31";
  default: return "35";
  }
}

} // namespace

std::vector<std::string> render_frame(const Simulation& simulation, const FrameOptions& options) {
  const bool colour = options.colour;
  const int width = std::max(options.width, 40);
  std::vector<Line> lines;
  auto line = [&]() -> Line& { return lines.emplace_back(colour); };

  // The title.
  std::string speed = options.speed < 1ms ? std::to_string(options.speed.count() / 1000) + " us"
                                          : std::to_string(to_ms(options.speed)) + " ms";
  line()
      .add("Raft", "1")
      .add(options.title.empty() ? "" : "  " + options.title, "1")
      .add("   t = ")
      .add(padded(format_ms(simulation.now()), 8, true), "1")
      .add(options.paused ? "   paused" : "   playing", options.paused ? "1;33" : "32")
      .add("   " + speed + " per frame   seed " + std::to_string(simulation.settings().seed));
  line();

  // The replicas: one row each, and the log as cells coloured by term.
  const std::string columns = "      role        term  vote  leader  commit  applied  ";
  const int fit = std::max(4, (width - static_cast<int>(columns.size()) - 1) / 4);
  std::size_t longest = 0;
  std::vector<View> views;
  for (ReplicaID id = 1; id <= simulation.size(); ++id) {
    views.push_back(simulation.view(id));
    longest = std::max(longest, views.back().log.size());
  }
  // Every row shows the same indexes, so that equal positions line up.
  std::size_t first = longest > static_cast<std::size_t>(fit) ? longest - fit + 1 : 1;
  std::string ruler(static_cast<std::size_t>(fit) * 4 + 4, ' ');
  for (std::size_t index = first; index <= longest + 1 && index < first + fit; ++index) {
    if (index != first && index % 5 != 0) continue;
    std::string label = std::to_string(index);
    ruler.replace((index - first) * 4 + 1, label.size(), label);
  }
  line().add(columns + (first > 1 ? "…" : " ") + ruler, "2");

  for (ReplicaID id = 1; id <= simulation.size(); ++id) {
    const View& v = views[id - 1];
    bool down = v.role == Role::Down;
    std::string role_style = v.role == Role::Leader      ? "1;32"
                             : v.role == Role::Candidate ? "1;33"
                             : down                      ? "2;31"
                                                         : "";
    std::string role = v.role == Role::Leader ? "LEADER" : role_name(v.role);
    Line& row = line();
    row.add("  " + name(id) + "  ", "1")
        .add(padded(role, 10), role_style)
        .add(padded(std::to_string(v.term), 6, true) + "  ", down ? "2" : "")
        .add(padded(v.vote ? name(*v.vote) : "-", 6), down ? "2" : "")
        .add(padded(v.leader ? name(*v.leader) : "-", 6), down ? "2" : "")
        .add(padded(down ? "-" : std::to_string(v.commit), 7, true), down ? "2" : "")
        .add(padded(down ? "-" : std::to_string(v.applied), 9, true) + "  ", down ? "2" : "")
        .add(first > 1 ? "…" : " ");
    // A cell is a separator, the term in two columns and '*' for a no-op. The separator after
    // the last committed entry is '|'. Committed cells are filled with the term's colour.
    for (std::size_t index = first; index < first + fit && index <= v.log.size(); ++index) {
      const Cell& cell = v.log[index - 1];
      bool committed = !down && index <= v.commit;
      row.add(!down && index == v.commit + 1 ? "|" : " ", "1");
      std::string text = padded(std::to_string(cell.term), 2, true) + (cell.noop ? "*" : " ");
      std::string shade = std::to_string(term_colour_256(cell.term));
      row.add(text, down ? "2" : committed ? "30;48;5;" + shade : "1;38;5;" + shade);
    }
    if (!down && v.commit == v.log.size() && v.commit >= first) row.add("|", "1");
  }
  line();

  // The network.
  std::string cuts;
  for (auto [a, b] : simulation.cuts()) cuts += " " + name(a) + "-" + name(b);
  std::string delay = simulation.delay_min() == simulation.delay_max()
                          ? format_ms(simulation.delay_min())
                          : std::to_string(to_ms(simulation.delay_min())) + ".." +
                                format_ms(simulation.delay_max());
  char loss[16];
  std::snprintf(loss, sizeof loss, "%g%%", simulation.loss() * 100);
  std::vector<Flight> flights = simulation.in_flight();
  line()
      .add("network", "1")
      .add("  delay " + delay + ", loss " + loss + (cuts.empty() ? "" : ", cut:"))
      .add(cuts, "31")
      .add("   in flight: " + std::to_string(flights.size()));

  // The budget of lines: messages and events share what the replicas leave, messages first
  // but at most half of it when there are events to show.
  int status_lines =
      static_cast<int>(std::count(options.status.begin(), options.status.end(), '\n')) + 1;
  int room = options.height - static_cast<int>(lines.size()) - status_lines - 1;
  int for_flights = std::min<int>(static_cast<int>(flights.size()),
                                  options.events ? std::max(3, room / 2) : std::max(3, room));
  for (int i = 0; i < for_flights; ++i) {
    if (i == for_flights - 1 && static_cast<int>(flights.size()) > for_flights) {
      line().add("  … and " + std::to_string(flights.size() - i) + " more", "2");
      break;
    }
    const Flight& flight = flights[i];
    const raft::Message& m = flight.message;
    double done = double((simulation.now() - flight.sent).count()) /
                  double(std::max(Time(1), flight.arrives - flight.sent).count());
    int position = std::clamp(static_cast<int>(done * 10), 0, 9);
    std::string bar = "[" + std::string(position, '-') + ">" + std::string(9 - position, ' ') + "]";
    std::string doom = simulation.link_cut(m.from, m.to) ? "  ✗ link cut" : "";
    line()
        .add("  " + name(m.from) + " → " + name(m.to) + "  " + bar + "  ")
        .add(describe(m), message_style(m))
        .add(doom, "31");
  }

  // The last events that fit, long ones wrapped.
  if (options.events) {
    line();
    int for_events = room - for_flights - 1;
    const std::size_t text_width = static_cast<std::size_t>(std::max(20, width - 11));
    std::vector<Line> told;
    const std::vector<Event>& events = simulation.events();
    for (std::size_t i = events.size(); i-- > 0 && static_cast<int>(told.size()) < for_events;) {
      const Event& event = events[i];
      bool bad = event.text.rfind("FAILED", 0) == 0 || event.text.rfind("SAFETY", 0) == 0;
      std::string style = bad                                  ? "1;31"
                          : event.kind == Event::Kind::Check   ? "32"
                          : event.kind == Event::Kind::Command ? "1;36"
                          : event.kind == Event::Kind::Say     ? "1;35"
                                                               : "";
      std::vector<std::string> pieces; // the text cut at spaces into lines that fit
      std::string rest = event.text;
      while (rest.size() > text_width) {
        std::size_t cut = rest.rfind(' ', text_width);
        if (cut == std::string::npos || cut == 0) cut = text_width;
        pieces.push_back(rest.substr(0, cut));
        rest = rest.substr(cut + (rest[cut] == ' ' ? 1 : 0));
      }
      pieces.push_back(rest);
      if (told.size() + pieces.size() > static_cast<std::size_t>(std::max(0, for_events))) break;
      for (std::size_t j = pieces.size(); j-- > 0;) {
        std::string time = j == 0 ? padded(format_ms(event.time), 9, true) : std::string(9, ' ');
        told.push_back(Line(colour).add(time + "  ", "2").add(pieces[j], style));
      }
    }
    lines.insert(lines.end(), told.rbegin(), told.rend());
  }

  // The status under the frame: its first line stands out, the keys do not.
  std::size_t start = 0;
  for (bool first = true; start <= options.status.size() && !options.status.empty();
       first = false) {
    std::size_t end = std::min(options.status.find('\n', start), options.status.size());
    line().add(options.status.substr(start, end - start), first ? "1;33" : "2");
    start = end + 1;
  }
  std::vector<std::string> out;
  for (const Line& each : lines) {
    out.push_back(each.str(width));
    if (!colour) out.back().erase(out.back().find_last_not_of(' ') + 1);
  }
  return out;
}

} // namespace visualize
