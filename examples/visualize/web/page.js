// page.js: draws the simulation that simulation.js (bridge.cpp, compiled by emcc) runs, and turns
// the buttons into the visualizer's commands. The simulation holds all the state; this file asks
// it for a JSON picture after every frame and draws that.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let api = null;
  let state = null;
  let playing = true;
  let selected = 1;
  let narrated = 0; // events already in the narration
  let timer = null;

  // A term's colour, asked of the simulation once per term.
  function cached(colour) {
    const known = new Map();
    return (term) => {
      if (!known.has(term)) known.set(term, colour(term));
      return known.get(term);
    };
  }

  function bind() {
    api = {
      scenarios: Module.cwrap("web_scenarios", "string", []),
      load: Module.cwrap("web_load", "string", ["string", "number", "number"]),
      advance: Module.cwrap("web_advance", null, ["number"]),
      step: Module.cwrap("web_step", null, []),
      command: Module.cwrap("web_command", "string", ["string"]),
      state: Module.cwrap("web_state", "string", ["number"]),
      colour: cached(Module.cwrap("web_term_colour", "string", ["number"])),
      takePause: Module.cwrap("web_take_pause", "number", []),
    };
  }

  // ---- The run ----

  function refresh() {
    const next = JSON.parse(api.state(narrated));
    const events = next.events;
    next.events = state && narrated > 0 ? state.events : [];
    for (const event of events) next.events.push(event); // the narration so far, not a copy
    narrated = next.events_total;
    const grown = state && state.replicas.length !== next.replicas.length;
    state = next;
    if (grown) fillTargets();
    draw(events);
  }

  function start(scenario) {
    const error = scenario
      ? api.load(scenario, 0, 0)
      : api.load("", Number($("replicas").value), Number($("seed").value));
    $("message").textContent = error;
    if (error) return;
    state = null;
    narrated = 0;
    $("narration").textContent = "";
    selected = 1;
    $("about").textContent = scenario ? about(scenario) : "Free play: no scenario, no checks of its own.";
    refresh();
    fillTargets();
    setPlaying(true);
  }

  // The comment at the head of a scenario file: what it shows.
  function about(scenario) {
    const text = Module.FS.readFile("/scenarios/" + scenario + ".scenario", { encoding: "utf8" });
    const lines = [];
    for (const line of text.split("\n")) {
      if (!line.startsWith("#")) break;
      lines.push(line.replace(/^# ?/, ""));
    }
    return lines.join(" ").replace(/\s+/g, " ").trim();
  }

  function frame() {
    if (!playing || !state) return;
    api.advance(Number($("speed").value) / 20);
    if (api.takePause()) {
      setPlaying(false);
      $("message").textContent = "The scenario paused here: press Play to go on.";
    }
    const wasEnded = state.ended;
    refresh();
    if (state.ended && !wasEnded) {
      setPlaying(false);
      $("message").textContent = "The scenario is over: its checks ran. Play goes on freely.";
    }
  }

  function setPlaying(on) {
    playing = on;
    $("play").textContent = on ? "Pause" : "Play";
  }

  function command(text) {
    const error = api.command(text);
    $("message").textContent = error ? error : "> " + text;
    refresh();
    return error;
  }

  // ---- Drawing ----

  const SVG = "http://www.w3.org/2000/svg";
  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const key in attributes) element.setAttribute(key, attributes[key]);
    if (parent) parent.appendChild(element);
    return element;
  }

  function position(id, count) {
    const angle = -Math.PI / 2 + (2 * Math.PI * (id - 1)) / count;
    return { x: 240 + 160 * Math.cos(angle), y: 215 + 160 * Math.sin(angle) };
  }

  function label(flight) {
    switch (flight.type) {
      case "RequestVote": return "RV";
      case "RequestVoteResponse": return flight.granted ? "V" : "no";
      case "AppendEntries": return flight.entries > 0 ? "AE+" + flight.entries : "";
      case "TimeoutNow": return "TN";
      case "InstallSnapshot": return "IS";
      default: return "";
    }
  }

  function drawCluster() {
    const root = $("cluster");
    root.textContent = "";
    const count = state.replicas.length;
    for (const [a, b] of state.cuts) {
      const p = position(a, count), q = position(b, count);
      svg("line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y, stroke: "#dc2626", "stroke-width": 2,
        "stroke-dasharray": "6,4", class: "cut" }, root);
    }
    for (const flight of state.flights) {
      const p = position(flight.from, count), q = position(flight.to, count);
      const span = Math.max(flight.arrives - flight.sent, 0.001);
      const f = Math.min(Math.max((state.now - flight.sent) / span, 0), 1);
      const x = p.x + (q.x - p.x) * f, y = p.y + (q.y - p.y) * f;
      const text = label(flight);
      const g = svg("g", { class: "message" }, root);
      svg("title", {}, g).textContent = flight.type + " S" + flight.from + " to S" + flight.to +
        ", term " + flight.term + (flight.entries ? ", " + flight.entries + " entries" : "");
      svg("circle", { cx: x, cy: y, r: text ? 11 : 5, fill: api.colour(flight.term),
        stroke: "#333", "stroke-width": text ? 1.5 : 1 }, g);
      if (text) svg("text", { x: x, y: y + 4, "text-anchor": "middle", "font-size": 9,
        "font-weight": "bold" }, g).textContent = text;
    }
    for (const replica of state.replicas) {
      const p = position(replica.id, count);
      const down = replica.role === "down";
      const member = replica.member === "" || replica.member === "voter";
      const g = svg("g", { class: "replica", "data-id": replica.id, opacity: member ? 1 : 0.5 }, root);
      g.addEventListener("click", () => { selected = replica.id; fillTargets(); drawLogs(); drawCluster(); });
      if (replica.id === selected)
        svg("circle", { cx: p.x, cy: p.y, r: 44, fill: "none", stroke: "#2563eb", "stroke-width": 2,
          "stroke-dasharray": "2,3" }, g);
      svg("circle", { cx: p.x, cy: p.y, r: 36, fill: down ? "#e5e5e5" : api.colour(replica.term),
        stroke: down ? "#999" : "#111", "stroke-width": replica.role === "leader" ? 5 : 1.5,
        "stroke-dasharray": replica.role === "candidate" ? "6,3" : "" }, g);
      if (down) {
        svg("line", { x1: p.x - 22, y1: p.y - 22, x2: p.x + 22, y2: p.y + 22, stroke: "#999", "stroke-width": 3 }, g);
        svg("line", { x1: p.x - 22, y1: p.y + 22, x2: p.x + 22, y2: p.y - 22, stroke: "#999", "stroke-width": 3 }, g);
      }
      svg("text", { x: p.x, y: p.y - 8, "text-anchor": "middle", "font-size": 15,
        "font-weight": "bold" }, g).textContent = "S" + replica.id;
      svg("text", { x: p.x, y: p.y + 7, "text-anchor": "middle", "font-size": 11 }, g).textContent =
        (member ? replica.role : replica.member === "learner" ? "learner" : "not a member") +
        (down ? "" : " t" + replica.term);
      svg("text", { x: p.x, y: p.y + 20, "text-anchor": "middle", "font-size": 10 }, g).textContent =
        replica.vote !== null ? "voted S" + replica.vote : "no vote";
    }
  }

  function drawLogs() {
    const table = $("logs");
    table.textContent = "";
    for (const replica of state.replicas) {
      const row = table.insertRow();
      row.className = (replica.role === "down" ? "down" : "") + (replica.id === selected ? " selected" : "");
      const who = row.insertCell();
      who.className = "who";
      const role = replica.member === "learner" ? "learner" : replica.member === "none" ? "removed" : replica.role;
      who.textContent = "S" + replica.id + " " + role.padEnd(9) + " t" + replica.term +
        "  commit " + replica.commit;
      replica.log.forEach(([term, kind], i) => {
        const noop = kind === 1, change = kind === 2;
        const cell = row.insertCell();
        const colour = api.colour(term);
        cell.className = "cell" + (i < replica.commit ? " committed" : "");
        cell.style.borderColor = colour;
        cell.style.background = i < replica.commit ? colour : "#fff";
        cell.textContent = term + (noop ? "*" : change ? "c" : "");
        cell.title = "index " + (i + 1) + ", term " + term + (noop ? ", a leader's no-op" : "") +
          (change ? ", a configuration (a membership change)" : "") +
          (i < replica.commit ? ", committed" : "");
      });
    }
  }

  function drawChecks() {
    const v = state.violations;
    const rules = [
      ["at most one leader per term", "two leaders"],
      ["an index is committed with one term only", "was committed with term"],
      ["a leader commits by counting only entries of its own term", "Figure 8 forbids"],
    ];
    $("rules").innerHTML = "";
    for (const [rule, marker] of rules) {
      const broken = v.filter((text) => text.includes(marker));
      const line = document.createElement("div");
      line.className = broken.length ? "bad" : "ok";
      line.textContent = (broken.length ? "\u2717 VIOLATED: " + broken.join("; ") : "\u2713 ") +
        (broken.length ? "" : rule);
      $("rules").appendChild(line);
    }
    $("violation").style.display = v.length ? "block" : "none";
    $("violation").textContent = v.length ? "SAFETY VIOLATION: " + v.join("; ") : "";
    const checks = $("checks");
    checks.innerHTML = "";
    if (!state.results.length) checks.textContent = state.end === null ? "none in free play"
      : "they run at their times and at the end (" + state.end + " ms)";
    for (const result of state.results) {
      const line = document.createElement("div");
      line.className = result.passed ? "ok" : "bad";
      line.textContent = (result.passed ? "\u2713 " : "\u2717 FAILED: ") + result.text +
        (result.passed ? "" : " (" + result.detail + ")");
      checks.appendChild(line);
    }
  }

  function drawNarration(events) {
    const box = $("narration");
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    for (const event of events) {
      const line = document.createElement("div");
      line.className = /^(FAILED|SAFETY)/.test(event.text) ? "failed" : event.kind;
      line.textContent = (event.time + " ms").padStart(9) + "  " + event.text;
      box.appendChild(line);
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function draw(events) {
    $("clock").textContent = state.title + ": " + Math.floor(state.now) + " ms" +
      (state.end !== null ? " of " + state.end : "") + (state.leader ? ", leader S" + state.leader : ", no leader");
    drawCluster();
    drawLogs();
    drawChecks();
    drawNarration(events);
  }

  function fillTargets() {
    for (const id of ["target", "other"]) {
      const select = $(id);
      const keep = id === "target" ? selected : Number(select.value) || (selected % state.replicas.length) + 1;
      select.textContent = "";
      for (const replica of state.replicas) {
        const option = document.createElement("option");
        option.value = replica.id;
        option.textContent = "S" + replica.id;
        select.appendChild(option);
      }
      select.value = Math.min(keep, state.replicas.length);
    }
  }

  // ---- The controls ----

  function wire() {
    $("load").onclick = () => start($("scenario").value);
    $("free").onclick = () => start("");
    $("play").onclick = () => setPlaying(!playing);
    $("step").onclick = () => { setPlaying(false); api.step(); refresh(); };
    $("target").onchange = () => { selected = Number($("target").value); drawCluster(); drawLogs(); };
    for (const button of document.querySelectorAll("button[data-verb]"))
      button.onclick = () => command(button.dataset.verb + " " + $("target").value);
    $("cut").onclick = () => command("cut " + $("target").value + "-" + $("other").value);
    $("partition").onclick = () => command("partition " + $("sides").value);
    $("heal").onclick = () => command("heal");
    $("read").onclick = () => command("read");
    $("add").onclick = () => command("add");
    $("propose").onclick = () => command("propose " + $("count").value);
    $("run").onclick = () => command($("command").value);
    $("command").onkeydown = (event) => { if (event.key === "Enter") command($("command").value); };
    // The terminal's keys for the two used most: space pauses, '.' steps (outside the inputs).
    document.addEventListener("keydown", (event) => {
      if (/^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName)) return;
      if (event.key === " ") { event.preventDefault(); $("play").click(); }
      if (event.key === ".") $("step").click();
    });
  }

  function main() {
    bind();
    const names = api.scenarios().split("\n").filter((name) => name);
    for (const name of names) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      $("scenario").appendChild(option);
    }
    wire();
    start(names.includes("first-election") ? "first-election" : "");
    timer = setInterval(frame, 50);
    // For tests and for the console: the run as data, and the controls as functions.
    window.raftPage = {
      state: () => state,
      load: (name) => start(name),
      play: (on) => setPlaying(on),
      command: command,
      // Plays to the scenario's end (or `ms` more) at once, frame by frame as the timer would.
      fastForward: (ms) => {
        const limit = ms === undefined ? Infinity : state.now + ms;
        const speed = Number($("speed").value) / 20;
        while (state.now < limit && !(ms === undefined && state.ended)) {
          api.advance(Math.min(speed, limit - state.now));
          api.takePause();
          refresh();
        }
      },
      narration: () => state.events.map((event) => (event.time + " ms").padStart(9) + "  " + event.text),
      timer: () => timer,
      redraw: () => draw([]), // after a test changed state(), to see how the page shows it
    };
    document.body.setAttribute("data-ready", "1");
  }

  if (Module.calledRun) main();
  else Module.onRuntimeInitialized = main;
})();
