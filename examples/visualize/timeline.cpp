// timeline.cpp: the run as one self-contained HTML page, for a browser or for paper. An SVG
// timeline has a lane per replica (its role as a bar, its term as the bar's colour), messages
// as arrows from sender to receiver, commits as diamonds and the commands as dashed lines; the
// final logs, the narration and the checks follow. No scripts, no fonts, no links: the markup
// is also well-formed XML, so that a test can parse it.
#include "visualize.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace visualize {
namespace {

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    default: out += c;
    }
  }
  return out;
}

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value);
  return text;
}

std::string name(ReplicaID id) { return "S" + std::to_string(id); }

// An arrow's look: its colour, and its marker (one per colour: SVG 1.1 markers cannot take the
// colour of the line they end).
struct Ink {
  const char* colour;
  const char* marker;
  const char* what; // for the legend
};
const Ink kVote{"#d97706", "vote", "RequestVote"};
const Ink kGranted{"#16a34a", "granted", "vote granted"};
const Ink kRefused{"#dc2626", "refused", "vote refused, or append rejected"};
const Ink kAppend{"#2563eb", "append", "AppendEntries with entries"};
const Ink kReply{"#7dd3fc", "reply", "append reply"};
const Ink kHeartbeat{"#b8c0cc", "heartbeat", "heartbeat (with --all-messages)"};
const Ink kInks[] = {kVote, kGranted, kRefused, kAppend, kReply, kHeartbeat};

// Which messages the timeline draws: elections, and the appends that carry or answer entries.
std::optional<Ink> ink(const raft::Message& m, bool all_messages) {
  switch (m.type) {
  case MessageType::RequestVote:
  case MessageType::TimeoutNow: return kVote;
  case MessageType::RequestVoteResponse: return m.vote_granted ? kGranted : kRefused;
  case MessageType::AppendEntries:
  case MessageType::InstallSnapshot:
    if (!m.entries.empty() || m.type == MessageType::InstallSnapshot) return kAppend;
    break;
  case MessageType::AppendEntriesResponse:
  case MessageType::InstallSnapshotResponse:
    if (!m.success && m.type == MessageType::AppendEntriesResponse) return kRefused;
    if (m.match_index > m.prev_log_index || m.type == MessageType::InstallSnapshotResponse)
      return kReply;
    break;
  }
  return all_messages ? std::optional<Ink>(kHeartbeat) : std::nullopt;
}

std::string describe(const Delivery& delivery) {
  const raft::Message& m = delivery.flight.message;
  std::string text = std::string(sim::name(m.type)) + " " + name(m.from) + " to " + name(m.to) +
                     ", term " + std::to_string(m.term);
  if (m.type == MessageType::AppendEntries)
    text += ", " + std::to_string(m.entries.size()) + " entries after index " +
            std::to_string(m.prev_log_index) + ", commit " + std::to_string(m.leader_commit);
  if (m.type == MessageType::RequestVoteResponse)
    text += m.vote_granted ? ", granted" : ", refused";
  if (m.type == MessageType::AppendEntriesResponse)
    text += m.success ? ", matches to " + std::to_string(m.match_index) : ", rejected";
  text += "; sent at " + format_ms(delivery.flight.sent) + ", ";
  text += delivery.delivered ? "arrived at " + format_ms(delivery.flight.arrives)
                             : delivery.fate + " at " + format_ms(delivery.flight.arrives);
  return text;
}

// The logs of every replica as a table: a column per index, a cell coloured by its term.
void write_logs(std::ostream& out, const std::vector<View>& views) {
  std::size_t longest = 0;
  for (const View& view : views) longest = std::max(longest, view.log.size());
  out << "<table class=\"logs\">\n<tr><td class=\"name\"></td>";
  for (std::size_t index = 1; index <= longest; ++index)
    out << "<td class=\"none\">" << index << "</td>";
  out << "</tr>\n";
  for (std::size_t i = 0; i < views.size(); ++i) {
    const View& view = views[i];
    out << "<tr><td class=\"name\">" << name(i + 1) << "</td>";
    for (std::size_t index = 1; index <= view.log.size(); ++index) {
      const Cell& cell = view.log[index - 1];
      out << "<td" << (index <= view.commit ? " class=\"committed\"" : "")
          << " style=\"background:" << term_colour_html(cell.term) << "\">" << cell.term
          << (cell.noop ? "*" : "") << "</td>";
    }
    out << "<td class=\"none role\">" << (view.role == Role::Down ? "down" : "")
        << (view.role == Role::Leader ? "leader" : "") << "</td></tr>\n";
  }
  out << "</table>\n";
}

const char* kStyle = R"(
body { font-family: sans-serif; margin: 24px; color: #111; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 24px 0 8px 0; }
p.sub { color: #555; margin: 0 0 12px 0; font-size: 13px; }
.legend { font-size: 12px; color: #333; margin: 8px 0 12px 0; line-height: 22px; }
.legend span.item { margin-right: 16px; white-space: nowrap; }
.swatch { display: inline-block; width: 22px; height: 10px; vertical-align: middle; margin-right: 4px; }
.scroll { overflow-x: auto; }
svg text { font-family: sans-serif; }
table.logs { border-collapse: separate; border-spacing: 2px; font-size: 12px; }
table.logs td { width: 26px; height: 20px; text-align: center; border: 1px dashed #888; }
table.logs td.committed { border: 1px solid #111; font-weight: bold; }
table.logs td.name { border: none; font-weight: bold; text-align: right; padding-right: 6px; }
table.logs td.none { border: none; }
table.logs td.role { width: auto; color: #555; text-align: left; padding-left: 6px; }
.moments { display: flex; flex-wrap: wrap; gap: 12px 28px; }
.moment { width: 330px; font-size: 12px; }
.moment p { margin: 0 0 4px 0; min-height: 30px; }
ol.events { font-size: 12px; columns: 2; column-gap: 32px; padding-left: 20px; }
ol.events li.command { color: #0e7490; font-weight: bold; }
ol.events li.say { color: #7e22ce; font-weight: bold; }
.badge { display: inline-block; min-width: 16px; border-radius: 8px; background: #7e22ce; color: #fff; text-align: center; }
ol.events .time { color: #666; display: inline-block; min-width: 56px; }
.failed { color: #b91c1c; font-weight: bold; }
.passed { color: #15803d; }
@media print {
  body { margin: 0; }
  .scroll { overflow: visible; }
  svg.timeline { width: 100%; height: auto; }
  ol.events { columns: 2; }
}
@page { size: landscape; margin: 10mm; }
)";

} // namespace

void write_timeline(const std::string& path, const Simulation& simulation,
                    const TimelineOptions& options) {
  const std::size_t replicas = simulation.size();
  const double end_ms = std::max<double>(100, to_ms(simulation.now()));
  const double scale = std::clamp(1150.0 / end_ms, 0.1, 3.0); // pixels per millisecond
  const double left = 56, lane_height = 64;

  // Commands become dashed lines with a short label; labels take the first row where they fit.
  // A scenario's own words ("say") become numbered badges, told in full under the timeline.
  struct Note {
    double x;
    std::string label, full;
    bool bad;
    int row = 0;
  };
  std::vector<Note> notes, badges;
  for (const Event& event : simulation.events()) {
    double x = left + to_ms(event.time) * scale;
    bool bad = event.text.rfind("FAILED", 0) == 0 || event.text.rfind("SAFETY", 0) == 0;
    if (event.kind == Event::Kind::Say) {
      badges.push_back(Note{x, std::to_string(badges.size() + 1), event.text, false});
    } else if (event.kind == Event::Kind::Command || bad) {
      std::string label =
          bad ? (event.text.rfind("FAILED", 0) == 0 ? "check failed" : "VIOLATION") : event.label;
      if (!notes.empty() && std::abs(notes.back().x - x) < 0.5 && notes.back().bad == bad) {
        notes.back().label += ", " + label;
        notes.back().full += "; " + event.text;
      } else {
        notes.push_back(Note{x, label, event.text, bad});
      }
    }
  }
  std::vector<double> row_ends;
  for (Note& note : notes) {
    if (note.label.size() > 40) note.label = note.label.substr(0, 38) + "…";
    double width = 6.5 * note.label.size();
    note.row = -1;
    for (std::size_t row = 0; row < row_ends.size() && note.row < 0; ++row)
      if (row_ends[row] < note.x - 8) note.row = static_cast<int>(row);
    if (note.row < 0 && row_ends.size() < 8) {
      note.row = static_cast<int>(row_ends.size());
      row_ends.push_back(0);
    }
    if (note.row < 0) // no room: the row that frees first
      note.row =
          static_cast<int>(std::min_element(row_ends.begin(), row_ends.end()) - row_ends.begin());
    row_ends[note.row] = note.x + width;
  }
  for (std::size_t i = 1; i < badges.size(); ++i) // badges side by side, not on top
    badges[i].x = std::max(badges[i].x, badges[i - 1].x + 17);
  const double badge_row = 16 + 15.0 * row_ends.size();      // under the labels
  const double axis = badge_row + (badges.empty() ? 4 : 26); // the time axis
  const double top = axis + 14;                              // the first lane
  const double width = left + end_ms * scale + 40;
  const double height = top + lane_height * replicas + 30;
  auto x = [&](Time time) { return left + to_ms(time) * scale; };
  auto centre = [&](ReplicaID id) { return top + lane_height * (id - 1) + lane_height / 2; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"" << number(width)
      << "\" height=\"" << number(height) << "\" viewBox=\"0 0 " << number(width) << " "
      << number(height) << "\">\n<defs>\n";
  for (const Ink& each : kInks)
    svg << "<marker id=\"" << each.marker
        << "\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" "
           "orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\""
        << each.colour << "\"/></marker>\n";
  svg << "<marker id=\"lost\" viewBox=\"0 0 10 10\" refX=\"5\" refY=\"5\" markerWidth=\"8\" "
         "markerHeight=\"8\"><path d=\"M1,1 L9,9 M9,1 L1,9\" stroke=\"#dc2626\" "
         "stroke-width=\"2\"/></marker>\n</defs>\n";
  svg << "<rect x=\"0\" y=\"0\" width=\"" << number(width) << "\" height=\"" << number(height)
      << "\" fill=\"#ffffff\"/>\n";

  // The time axis and its grid.
  const double steps[] = {10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000};
  double step = steps[0];
  for (double each : steps)
    if ((step = each) * scale >= 70) break;
  svg << "<g class=\"axis\" font-size=\"11\" fill=\"#555\">\n";
  for (double ms = 0; ms <= end_ms; ms += step) {
    double at = left + ms * scale;
    svg << "<line x1=\"" << number(at) << "\" y1=\"" << number(axis + 4) << "\" x2=\"" << number(at)
        << "\" y2=\"" << number(height - 24)
        << "\" stroke=\"#e5e7eb\" stroke-width=\"1\"/>\n<text x=\"" << number(at) << "\" y=\""
        << number(axis) << "\" text-anchor=\"middle\">" << ms << " ms</text>\n";
  }
  svg << "</g>\n";

  // The lanes.
  for (ReplicaID id = 1; id <= replicas; ++id) {
    double lane_top = top + lane_height * (id - 1), mid = centre(id);
    svg << "<g class=\"lane\" id=\"lane-" << name(id) << "\">\n";
    svg << "<rect x=\"0\" y=\"" << number(lane_top) << "\" width=\"" << number(width)
        << "\" height=\"" << number(lane_height) << "\" fill=\"" << (id % 2 ? "#f8fafc" : "#ffffff")
        << "\" fill-opacity=\"0.7\"/>\n";
    svg << "<text x=\"12\" y=\"" << number(mid + 5) << "\" font-size=\"15\" font-weight=\"bold\">"
        << name(id) << "</text>\n";
    const std::vector<Segment>& segments = simulation.segments(id);
    for (std::size_t i = 0; i < segments.size(); ++i) {
      const Segment& segment = segments[i];
      double from = x(segment.start);
      double to = i + 1 < segments.size() ? x(segments[i + 1].start) : left + end_ms * scale;
      if (to - from < 0.01) continue;
      std::string title = std::string(role_name(segment.role)) + ", term " +
                          std::to_string(segment.term) + ", from " + format_ms(segment.start);
      double bar = segment.role == Role::Leader      ? 26
                   : segment.role == Role::Candidate ? 16
                   : segment.role == Role::Down      ? 20
                                                     : 8;
      svg << "<rect x=\"" << number(from) << "\" y=\"" << number(mid - bar / 2) << "\" width=\""
          << number(to - from) << "\" height=\"" << number(bar) << "\"";
      if (segment.role == Role::Down)
        svg << " fill=\"#f1f5f9\" stroke=\"#94a3b8\" stroke-dasharray=\"3,3\"";
      else
        svg << " fill=\"" << term_colour_html(segment.term) << "\""
            << (segment.role == Role::Leader      ? " stroke=\"#111\" stroke-width=\"1.2\""
                : segment.role == Role::Candidate ? " stroke=\"#92400e\" stroke-dasharray=\"4,2\""
                                                  : "");
      svg << "><title>" << escape(name(id) + ": " + title) << "</title></rect>\n";
      // The label: inside a thick bar, above a thin one; shortened to the term where it is tight.
      std::string label = segment.role == Role::Leader ? "leader t" + std::to_string(segment.term)
                          : segment.role == Role::Candidate
                              ? "candidate t" + std::to_string(segment.term)
                          : segment.role == Role::Down ? "down"
                                                       : "t" + std::to_string(segment.term);
      if (to - from < 6.2 * label.size() + 4 && segment.role != Role::Down)
        label = "t" + std::to_string(segment.term);
      bool inside = segment.role != Role::Follower;
      if (to - from >= 6.2 * label.size() + 4 && (segment.term > 0 || inside))
        svg << "<text x=\"" << number(from + 3) << "\" y=\""
            << number(inside ? mid + 4 : mid - bar / 2 - 3) << "\" font-size=\"11\" fill=\""
            << (segment.role == Role::Down ? "#64748b" : "#111") << "\">" << escape(label)
            << "</text>\n";
    }
    for (const CommitMark& mark : simulation.commits()) {
      if (mark.replica != id) continue;
      double at = x(mark.time), size = mark.leader ? 6 : 4;
      svg << "<path d=\"M" << number(at) << "," << number(mid - size) << " l" << size << "," << size
          << " l" << -size << "," << size << " l" << -size << "," << -size << " z\" fill=\""
          << (mark.leader ? "#111" : "#475569") << "\" stroke=\"#fff\" "
          << "stroke-width=\"1\"><title>" << name(id) << " commits through index " << mark.commit
          << " at " << format_ms(mark.time) << "</title></path>\n";
      if (mark.leader)
        svg << "<text x=\"" << number(at + 4) << "\" y=\"" << number(mid + 24)
            << "\" font-size=\"11\" font-weight=\"bold\">c" << mark.commit << "</text>\n";
    }
    svg << "</g>\n";
  }

  // The messages.
  svg << "<g class=\"messages\" fill=\"none\">\n";
  for (const Delivery& delivery : simulation.deliveries()) {
    const raft::Message& m = delivery.flight.message;
    std::optional<Ink> look = ink(m, options.all_messages);
    if (!look) continue;
    svg << "<line x1=\"" << number(x(delivery.flight.sent)) << "\" y1=\"" << number(centre(m.from))
        << "\" x2=\"" << number(x(delivery.flight.arrives)) << "\" y2=\"" << number(centre(m.to))
        << "\" stroke=\"" << look->colour << "\" stroke-width=\"1.4\""
        << (delivery.delivered ? "" : " stroke-dasharray=\"4,3\" stroke-opacity=\"0.7\"")
        << " marker-end=\"url(#" << (delivery.delivered ? look->marker : "lost") << ")\"><title>"
        << escape(describe(delivery)) << "</title></line>\n";
  }
  svg << "</g>\n";

  // The commands and the badges, over everything.
  svg << "<g class=\"notes\" font-size=\"11\">\n";
  for (const Note& note : notes) {
    const char* colour = note.bad ? "#b91c1c" : "#0e7490";
    double label_y = 14 + 15.0 * note.row;
    svg << "<line x1=\"" << number(note.x) << "\" y1=\"" << number(label_y + 3) << "\" x2=\""
        << number(note.x) << "\" y2=\"" << number(height - 24) << "\" stroke=\"" << colour
        << "\" stroke-width=\"1\" stroke-dasharray=\"2,3\"/>\n<text x=\"" << number(note.x + 3)
        << "\" y=\"" << number(label_y) << "\" fill=\"" << colour << "\">" << escape(note.label)
        << "<title>" << escape(note.full) << "</title></text>\n";
  }
  for (const Note& badge : badges) {
    svg << "<g><title>" << escape(badge.full) << "</title><circle cx=\"" << number(badge.x)
        << "\" cy=\"" << number(badge_row + 8) << "\" r=\"8\" fill=\"#7e22ce\"/><text x=\""
        << number(badge.x) << "\" y=\"" << number(badge_row + 12)
        << "\" text-anchor=\"middle\" fill=\"#fff\" font-weight=\"bold\">" << badge.label
        << "</text></g>\n";
  }
  svg << "</g>\n</svg>\n";

  // The page.
  std::ofstream out(path);
  if (!out) throw std::runtime_error(path + ": cannot write it");
  std::string title = "Raft timeline" + (options.title.empty() ? "" : ": " + options.title);
  out << "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"
      << "<meta charset=\"utf-8\"/>\n<title>" << escape(title) << "</title>\n<style>" << kStyle
      << "</style>\n</head>\n<body>\n<h1>" << escape(title) << "</h1>\n";
  const Settings& settings = simulation.settings();
  out << "<p class=\"sub\">" << replicas << " replicas, seed " << settings.seed << ", heartbeat "
      << format_ms(settings.heartbeat) << ", election timeout " << to_ms(settings.election_min)
      << ".." << format_ms(settings.election_max) << ", " << format_ms(simulation.now())
      << " of simulated time. Hover over a bar, an arrow or a diamond for details.</p>\n";
  out << "<div class=\"legend\">";
  for (Term term = 1; term <= 6; ++term)
    out << "<span class=\"item\"><span class=\"swatch\" style=\"background:"
        << term_colour_html(term) << "\"></span>term " << term << "</span>";
  out << "<br/><span class=\"item\">thin bar: follower</span><span class=\"item\">dashed bar: "
         "candidate</span><span class=\"item\">thick bar: leader</span><span class=\"item\">grey "
         "dashed: down</span><span class=\"item\">&#9670; cN: the leader commits through index "
         "N (small: a follower learns it)</span><span class=\"item\"><span "
         "class=\"badge\">1</span> "
         "the scenario's words, told below</span><br/>";
  for (const Ink& each : kInks)
    if (each.marker != kHeartbeat.marker || options.all_messages)
      out << "<span class=\"item\"><span class=\"swatch\" style=\"height:3px;background:"
          << each.colour << "\"></span>" << each.what << "</span>";
  out << "<span class=\"item\">dashed, ending in &#215;: lost, cut, or sent to a replica that is "
         "down</span></div>\n";
  out << "<div class=\"scroll\">\n" << svg.str() << "</div>\n";

  // The logs: at each of the scenario's numbered moments, and at the end.
  std::vector<const Event*> moments;
  for (const Event& event : simulation.events())
    if (event.kind == Event::Kind::Say && !event.views.empty()) moments.push_back(&event);
  if (!moments.empty()) {
    out << "<h2>The logs at each numbered moment</h2>\n<div class=\"moments\">\n";
    for (std::size_t i = 0; i < moments.size(); ++i) {
      out << "<div class=\"moment\"><p><span class=\"badge\">" << i + 1 << "</span> "
          << format_ms(moments[i]->time) << ": " << escape(moments[i]->text) << "</p>\n";
      write_logs(out, moments[i]->views);
      out << "</div>\n";
    }
    out << "</div>\n";
  }
  std::vector<View> views;
  for (ReplicaID id = 1; id <= replicas; ++id) views.push_back(simulation.view(id));
  out << "<h2>The logs at the end, " << format_ms(simulation.now()) << "</h2>\n";
  write_logs(out, views);
  out << "<p class=\"sub\">A cell shows its entry's term; * marks the no-op a new leader "
         "appends; a solid border, an entry its replica knows to be committed.</p>\n";

  // The checks and the story.
  if (!simulation.results().empty() || !simulation.violations().empty()) {
    out << "<h2>Checks</h2>\n<ul>\n";
    for (const CheckResult& result : simulation.results())
      out << "<li class=\"" << (result.passed ? "passed" : "failed") << "\">"
          << (result.passed ? "ok: " : "FAILED: ") << escape(result.check.text)
          << (result.passed ? "" : " (" + escape(result.detail) + ")") << "</li>\n";
    for (const std::string& violation : simulation.violations())
      out << "<li class=\"failed\">safety violation: " << escape(violation) << "</li>\n";
    out << "</ul>\n";
  }
  out << "<h2>What happened</h2>\n<ol class=\"events\">\n";
  int said = 0;
  for (const Event& event : simulation.events()) {
    const char* kind = event.kind == Event::Kind::Command ? " class=\"command\""
                       : event.kind == Event::Kind::Say   ? " class=\"say\""
                                                          : "";
    out << "<li" << kind << "><span class=\"time\">" << format_ms(event.time) << "</span> "
        << (event.kind == Event::Kind::Say
                ? "<span class=\"badge\">" + std::to_string(++said) + "</span> "
                : "")
        << escape(event.text) << "</li>\n";
  }
  out << "</ol>\n</body>\n</html>\n";
  if (!out) throw std::runtime_error(path + ": cannot write it");
}

} // namespace visualize
