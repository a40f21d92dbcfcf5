// tests/visualize/web.js WEB_DIR VISUALIZE: the page of `make web`, played in headless Chromium.
//
// Chromium is driven over its DevTools protocol on a pipe (--remote-debugging-pipe), with nothing
// but node: no npm package, no network. The page is opened from the file system. It checks that
// every shipped scenario replays on the page with the terminal's narration, word for word; that
// playing first-election gives exactly one leader; that crashing it gives a new leader in a later
// term; that a partition cuts links and a heal mends them with one leader left; that the page
// asks for nothing over the network; and it keeps a screenshot (WEB_DIR/../web-test/page.png).
"use strict";
const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

const web = path.resolve(process.argv[2] || "build/web");
const visualize = process.argv[3] || "build/visualize";
const out = path.join(path.dirname(web), "web-test");
fs.mkdirSync(out, { recursive: true });

let passed = 0, failed = 0;
function check(ok, what, detail) {
  if (ok) { passed++; console.log("ok: " + what); }
  else { failed++; console.log("FAILED: " + what + (detail ? ": " + detail : "")); }
}

// ---- The DevTools protocol over a pipe: JSON messages, each ended by a NUL byte ----

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "web-test-"));
const chromium = spawn("/usr/bin/chromium", ["--headless", "--no-sandbox", "--disable-gpu",
  "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank"],
  { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let chromiumLog = "";
chromium.stderr.on("data", (data) => { chromiumLog += data; });
const toChromium = chromium.stdio[3], fromChromium = chromium.stdio[4];
let nextId = 1, buffered = "";
const waiting = new Map(), listeners = [];
fromChromium.on("data", (data) => {
  buffered += data.toString("utf8");
  let end;
  while ((end = buffered.indexOf("\0")) >= 0) {
    const message = JSON.parse(buffered.slice(0, end));
    buffered = buffered.slice(end + 1);
    if (message.id && waiting.has(message.id)) {
      const { resolve, reject } = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.error) reject(new Error(JSON.stringify(message.error)));
      else resolve(message.result);
    } else if (message.method) {
      for (const listener of listeners) listener(message);
    }
  }
});
function send(method, params = {}, sessionId) {
  const id = nextId++;
  toChromium.write(JSON.stringify({ id, method, params, sessionId }) + "\0");
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}

let session;
async function evaluate(expression) {
  const result = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, session);
  if (result.exceptionDetails)
    throw new Error(expression + ": " + JSON.stringify(result.exceptionDetails.exception || result.exceptionDetails));
  return result.result.value;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(expression, seconds, what) {
  const limit = Date.now() + seconds * 1000;
  while (Date.now() < limit) {
    if (await evaluate(expression)) return check(true, what) || true;
    await sleep(50);
  }
  check(false, what, "not within " + seconds + " s");
  return false;
}

// The terminal's narration of a scenario: the lines of `visualize --headless --quiet` that
// start with a time.
function terminalNarration(name) {
  let text;
  try {
    text = execFileSync(visualize, ["examples/visualize/scenarios/" + name + ".scenario", "--headless", "--quiet"],
      { encoding: "utf8" });
  } catch (error) { text = error.stdout; }
  return text.split("\n").filter((line) => /^ *\d+ ms  /.test(line));
}

const leaders = "raftPage.state().replicas.filter(r => r.role === 'leader')";

async function main() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  ({ sessionId: session } = await send("Target.attachToTarget", { targetId, flatten: true }));
  const requests = [];
  listeners.push((message) => {
    if (message.method === "Network.requestWillBeSent") requests.push(message.params.request.url);
  });
  await send("Network.enable", {}, session);
  await send("Page.enable", {}, session);
  await send("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1080, deviceScaleFactor: 1, mobile: false }, session);
  await send("Page.navigate", { url: "file://" + path.join(web, "index.html") }, session);
  if (!await until("document.body && document.body.getAttribute('data-ready') === '1'", 30,
    "the page loads from the file system and its WebAssembly starts"))
    return;

  // The menu, and each scenario's film: the page's narration is the terminal's.
  const names = fs.readdirSync("examples/visualize/scenarios").filter((f) => f.endsWith(".scenario"))
    .map((f) => f.replace(/\.scenario$/, "")).sort();
  const menu = await evaluate("[...document.querySelectorAll('#scenario option')].map(o => o.value)");
  check(JSON.stringify(menu) === JSON.stringify(names), "the menu lists the shipped scenarios", menu.join(" "));
  for (const name of names) {
    await evaluate(`document.getElementById('scenario').value = '${name}'; document.getElementById('load').click();
      raftPage.play(false); raftPage.fastForward(); true`);
    const page = await evaluate("raftPage.narration()");
    const terminal = terminalNarration(name);
    const first = page.findIndex((line, i) => line !== terminal[i]);
    check(page.length === terminal.length && first < 0, name + ": the page's film is the terminal's (" +
      terminal.length + " lines)", first >= 0 ? "line " + (first + 1) + ": page '" + page[first] +
      "', terminal '" + terminal[first] + "'" : "page " + page.length + " lines, terminal " + terminal.length);
    const state = await evaluate("raftPage.state()");
    check(state.ended && state.results.length > 0 && state.results.every((r) => r.passed) &&
      state.violations.length === 0, name + ": its checks pass on the page, no violation");
  }

  // first-election, played in real time by the page's own timer.
  await evaluate(`document.getElementById('scenario').value = 'first-election';
    document.getElementById('load').click(); document.getElementById('speed').value = '1000'; true`);
  await until("raftPage.state().ended", 20, "first-election plays to its end");
  check(await evaluate(`${leaders}.length === 1`), "first-election: exactly one leader",
    JSON.stringify(await evaluate(`${leaders}.map(r => 'S' + r.id)`)));
  check(await evaluate("[...document.querySelectorAll('#cluster .replica')].filter(g => " +
    "g.textContent.includes('leader t')).length === 1"), "first-election: one replica drawn as the leader");
  check(await evaluate("document.querySelectorAll('#logs td.committed').length >= 5"),
    "the log cells of committed entries are filled");
  const old = await evaluate(`${leaders}[0]`);

  // Play on after the end; crash the leader with the buttons: a new leader in a later term.
  check(await evaluate("document.getElementById('play').textContent === 'Play'"), "the end pauses the page");
  await evaluate(`document.getElementById('play').click(); document.getElementById('target').value = '${old.id}';
    document.getElementById('target').onchange();
    document.querySelector('button[data-verb=crash]').click(); true`);
  check(await evaluate(`raftPage.state().replicas[${old.id - 1}].role === 'down'`), "crash: the leader is down");
  await until(`${leaders}.some(r => r.term > ${old.term})`, 20, "crash: a new leader");
  const next = await evaluate(`${leaders}.find(r => r.term > ${old.term})`);
  if (next) check(next.id !== old.id && next.term > old.term,
    `crash: S${next.id} leads term ${next.term}, after S${old.id} in term ${old.term}`);
  await evaluate("document.querySelector('button[data-verb=restart]').click(); true");
  await until(`raftPage.state().replicas[${old.id - 1}].role === 'follower'`, 10,
    "restart: the old leader is back, a follower");

  // A partition that leaves the leader in the minority, then a heal.
  const leader = await evaluate(`${leaders}[0]`);
  const minority = [leader.id, leader.id % 5 + 1];
  const majority = [1, 2, 3, 4, 5].filter((id) => !minority.includes(id));
  await evaluate(`document.getElementById('sides').value = '${minority.join(",")} | ${majority.join(",")}';
    document.getElementById('partition').click(); true`);
  check(await evaluate("document.querySelectorAll('#cluster line.cut').length === 6"),
    "partition: six links drawn cut");
  await until(`${leaders}.some(r => [${majority}].includes(r.id) && r.term > ${leader.term})`, 20,
    "partition: the majority side elects a leader");
  check(await evaluate(`${leaders}.some(r => r.id === ${leader.id})`),
    "partition: the old leader, in the minority, still thinks it leads");
  await evaluate("document.getElementById('heal').click(); true");
  check(await evaluate("document.querySelectorAll('#cluster line.cut').length === 0"), "heal: no cut link drawn");
  await until(`${leaders}.length === 1 && new Set(raftPage.state().replicas.map(r => r.term)).size === 1`,
    20, "heal: one leader, and every replica in its term");
  check(await evaluate("raftPage.state().violations.length === 0 && " +
    "document.getElementById('violation').style.display === 'none'"), "no safety violation shown");
  check(await evaluate("document.querySelectorAll('#rules .ok').length === 3"), "the three safety rules show as kept");

  // Free play: leadership transfer, a read, a replica added and one removed, with the buttons.
  const click = (id) => evaluate(`document.getElementById('${id}').click(); true`);
  const verb = (name, target) => evaluate(`document.getElementById('target').value = '${target}';
    document.getElementById('target').onchange(); document.querySelector('button[data-verb=${name}]').click(); true`);
  await evaluate("document.getElementById('free').click(); raftPage.play(false); raftPage.fastForward(1000); true");
  const first = await evaluate(`${leaders}[0]`);
  const heir = first.id % 5 + 1;
  await verb("transfer", heir);
  await evaluate("raftPage.fastForward(300); true");
  check(await evaluate(`${leaders}.length === 1 && ${leaders}[0].id === ${heir}`),
    `transfer: S${first.id} hands leadership to S${heir}`);
  await click("read");
  await evaluate("raftPage.fastForward(300); true");
  check(await evaluate(`raftPage.narration().some(line => line.includes('S${heir} answers read'))`),
    "read: the leader answers a linearizable read");
  await click("add");
  await evaluate("raftPage.fastForward(2000); true");
  check(await evaluate("raftPage.state().replicas.length === 6 && raftPage.state().replicas[5].member === 'voter' && " +
    "document.querySelectorAll('#cluster .replica').length === 6"), "add: S6 joins, and becomes a voter");
  check(await evaluate(`raftPage.state().replicas[5].commit === raftPage.state().replicas[${heir - 1}].commit`),
    "add: S6 has caught up with the leader's commit index");
  const leaving = heir % 5 + 1;
  await verb("remove", leaving);
  await evaluate("raftPage.fastForward(100); true");
  check(await evaluate(`raftPage.state().replicas[${leaving - 1}].member === 'none'`),
    `remove: S${leaving} leaves the configuration`);
  await verb("crash", leaving); // shut down, or its election timer would depose the leader (§4.2.3)
  await evaluate("raftPage.fastForward(1000); true");
  check(await evaluate(`${leaders}.length === 1 && ${leaders}[0].id === ${heir}`),
    `remove: S${leaving} shut down, S${heir} leads on`);
  check(await evaluate("raftPage.state().violations.length === 0"), "membership changes: no safety violation");

  // A violation, as the simulation would report it, is flagged red.
  await evaluate("raftPage.state().violations.push('two leaders in term 9: S1, S2'); raftPage.redraw(); true");
  check(await evaluate("document.getElementById('violation').style.display === 'block' && " +
    "getComputedStyle(document.getElementById('violation')).backgroundColor === 'rgb(185, 28, 28)' && " +
    "document.querySelector('#rules .bad').textContent.includes('two leaders in term 9')"),
    "a safety violation is flagged red, beside the rule it breaks");
  await evaluate("raftPage.state().violations.length = 0; raftPage.redraw(); true");

  // A bad command is answered, not run.
  await evaluate("document.getElementById('command').value = 'crash 12'; document.getElementById('run').click(); true");
  check(/no replica 12/.test(await evaluate("document.getElementById('message').textContent")),
    "a bad command is answered with what is wrong");

  // Space pauses; "Step one event" moves to the next event and no further.
  await evaluate(`document.getElementById('scenario').value = 'first-election';
    document.getElementById('load').click(); document.dispatchEvent(new KeyboardEvent('keydown', { key: ' ' })); true`);
  check(await evaluate("document.getElementById('play').textContent === 'Play'"), "space pauses");
  const before = await evaluate("raftPage.state().now");
  await click("step");
  await click("step");
  const after = await evaluate("raftPage.state()");
  const candidates = after.replicas.filter((r) => r.role === "candidate").map((r) => "S" + r.id);
  check(before === 0 && after.now === 203 && candidates.join() === "S2",
    "two steps: the scenario's words at 0 ms, then S2's timer at 203 ms (as the terminal narrates)",
    `${before} ms to ${after.now} ms, candidates ${candidates}`);

  // The screenshot for the README: leader-crash, as two candidates ask for votes.
  await evaluate("document.getElementById('command').value = ''; true");
  await evaluate(`document.getElementById('scenario').value = 'leader-crash';
    document.getElementById('load').click(); raftPage.play(false); raftPage.fastForward(958); true`);
  const shot = await send("Page.captureScreenshot", { format: "png" }, session);
  fs.writeFileSync(path.join(out, "page.png"), Buffer.from(shot.data, "base64"));
  check(fs.statSync(path.join(out, "page.png")).size > 20000, "a screenshot: " + path.join(out, "page.png"));

  const remote = requests.filter((url) => !url.startsWith("file:") && !url.startsWith("data:"));
  check(remote.length === 0, "the page asks for nothing but its own files", remote.join(" "));

  // The same folder from a static server.
  const server = http.createServer((request, response) => {
    const file = path.join(web, path.normalize(decodeURIComponent(request.url.split("?")[0])).replace(/^(\.\.[/\\])+/, ""));
    fs.readFile(file.endsWith("/") ? file + "index.html" : file, (error, data) => {
      response.writeHead(error ? 404 : 200);
      response.end(error ? "" : data);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  await send("Page.navigate", { url: `http://127.0.0.1:${server.address().port}/` }, session);
  await until("document.body && document.body.getAttribute('data-ready') === '1' && location.protocol === 'http:'",
    30, "the page runs from a static server too");
  server.close();
}

main().catch((error) => check(false, "the test ran", error.stack)).finally(async () => {
  chromium.kill();
  await sleep(200);
  fs.rmSync(profile, { recursive: true, force: true });
  if (failed && chromiumLog) fs.writeFileSync(path.join(out, "chromium.log"), chromiumLog);
  console.log(`web-test: ${passed} ok, ${failed} failed`);
  process.exit(failed ? 1 : 0);
});
