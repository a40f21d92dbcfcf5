#!/bin/sh
# tests/visualize/run.sh BINARY: the visualizer's tests, run by `make visualize-test`.
#
# Every shipped scenario runs headless to its end and must pass its own `expect` lines; a run is
# the same film twice; text output has no escapes; failing checks and bad lines are reported; the
# recorded pages are well-formed XML with a lane per replica; the terminal is restored after q,
# Ctrl-C and SIGTERM; and, when Chromium is installed, a page renders to a screenshot.
binary=$1
here=$(dirname "$0")
scenarios=examples/visualize/scenarios
out=$(dirname "$binary")/visualize-test
rm -rf "$out" && mkdir -p "$out"
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "FAILED: $1"; }

# Each scenario, to its end: its checks pass, and nothing breaks a safety rule.
for scenario in "$scenarios"/*.scenario; do
  name=$(basename "$scenario" .scenario)
  if "$binary" "$scenario" --headless --record "$out/$name.html" > "$out/$name.txt" 2>&1; then
    pass "$name: $(tail -n 2 "$out/$name.txt" | head -n 1)"
  else
    fail "$name:"
    grep -E 'FAILED|VIOLATION|visualize:' "$out/$name.txt"
  fi
done

# The same seed gives the same film.
"$binary" "$scenarios/figure8.scenario" --headless --record "$out/again.html" 2>&1 |
  sed 's/again.html/figure8.html/' > "$out/again.txt"
if cmp -s "$out/figure8.txt" "$out/again.txt" && cmp -s "$out/figure8.html" "$out/again.html"
then pass "figure8 twice: the same film, the same page"
else fail "figure8 twice: the runs differ"; fi

# Text for a pipe or a file: frames, and no escape sequences.
escape=$(printf '\033')
if grep -q "$escape" "$out/figure8.txt"; then fail "plain text holds escape sequences"
elif ! grep -q 'S5  LEADER' "$out/figure8.txt"; then fail "plain text holds no frames"
else pass "plain text: frames without escapes"; fi

# Checks that fail make the run fail, saying which.
"$binary" "$here/failing.scenario" --headless > "$out/failing.txt" 2>&1
status=$?
if [ $status = 1 ] && grep -q 'FAILED: expect leader 2 (line 6): S1 leads' "$out/failing.txt" &&
   grep -q 'FAILED: expect never leader 1 (line 7)' "$out/failing.txt"; then
  pass "failing checks are reported, exit status 1"
else fail "failing checks: exit status $status"; cat "$out/failing.txt"; fi

# A line that makes no sense is named.
"$binary" "$here/broken.scenario" --headless > "$out/broken.txt" 2>&1
status=$?
if [ $status = 2 ] && grep -q 'broken.scenario:3: there is no replica 7' "$out/broken.txt"; then
  pass "a bad line is named, exit status 2"
else fail "a bad line: exit status $status"; cat "$out/broken.txt"; fi

# The pages: well-formed, one lane per replica (3 in a free run with --replicas 3).
"$binary" --headless --quiet --replicas 3 --duration 1500 --all-messages \
  --record "$out/free.html" > "$out/free.txt" 2>&1
for page in "$out"/*.html; do
  lanes=5
  [ "$(basename "$page")" = free.html ] && lanes=3
  [ "$(basename "$page")" = membership.html ] && lanes=6 # S6 joins
  if python3 "$here/check_html.py" "$page" $lanes; then pass "$(basename "$page") parses"
  else fail "$(basename "$page")"; fi
done

# The terminal, played on a pseudo-terminal.
if python3 "$here/terminal.py" "$binary"; then pass "the terminal is restored"
else fail "the terminal"; fi

# A browser: Chromium renders the Figure 8 page to a screenshot.
if [ -x /usr/bin/chromium ]; then
  profile=$(mktemp -d)
  timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$out/figure8.png" --window-size=1400,900 \
    "file://$(cd "$out" && pwd)/figure8.html" > "$out/chromium.log" 2>&1
  rm -rf "$profile"
  size=$(wc -c < "$out/figure8.png" 2>/dev/null || echo 0)
  if [ "$size" -gt 20000 ] && [ "$(head -c 4 "$out/figure8.png" | tail -c 3)" = PNG ]; then
    pass "chromium renders the timeline: $size bytes of PNG"
  else fail "chromium: no screenshot (see $out/chromium.log)"; fi
else
  echo "skipped: chromium not installed"
fi

echo "visualize-test: $passed ok, $failed failed"
[ $failed = 0 ]
