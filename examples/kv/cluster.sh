#!/usr/bin/env bash
# cluster.sh: runs a 3-replica kv store on this machine, one kv-server process per replica.
#
#   examples/kv/cluster.sh [-p BASE_PORT] [-d DIR] COMMAND [ID]
#
#   start          starts every replica that is not running
#   stop [ID]      stops one replica, or all, with SIGTERM (a clean shutdown)
#   kill ID        kills a replica with SIGKILL (a crash: no chance to clean up)
#   restart ID     starts a stopped or killed replica again, over its data directory
#   status         shows each replica's process and its view of the cluster (needs curl)
#   leader         prints the id of the leader (needs curl)
#   transfer ID    asks the leader to hand its leadership to replica ID, and waits (up to 3 s)
#                  until ID leads; fails if it does not (needs curl)
#
# Replica N listens for Raft on BASE_PORT + N and for clients (HTTP) on BASE_PORT + 1000 + N;
# BASE_PORT is 7000 by default, so the clients' addresses are 127.0.0.1:8001, :8002 and :8003.
# DIR (default build/kv-data) holds, for replica N: its data directory N/, its log N.log, N.pid.
# KV_BASE_PORT, KV_DIR and KV_SERVER (the binary, default build/kv-server) may be set instead.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
base=${KV_BASE_PORT:-7000}
dir=${KV_DIR:-$root/build/kv-data}
server=${KV_SERVER:-$root/build/kv-server}
ids=(1 2 3)

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while getopts "p:d:h" option; do
  case $option in
  p) base=$OPTARG ;;
  d) dir=$OPTARG ;;
  *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
command=$1
id=${2:-}

raft_port() { echo $((base + $1)); }
client_port() { echo $((base + 1000 + $1)); }
pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }
# Alive: the process exists and is not a zombie (dead, waiting for its parent to reap it).
is_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }
is_running() { is_alive "$(pid_of "$1")"; }
check_id() {
  case $1 in 1 | 2 | 3) ;; *) echo "cluster.sh: the replica id must be 1, 2 or 3" >&2 && exit 2 ;; esac
}

start_one() {
  local n=$1 peers="" i
  if is_running "$n"; then
    echo "replica $n is running already (pid $(pid_of "$n"))"
    return
  fi
  for i in "${ids[@]}"; do peers+="${peers:+,}$i=127.0.0.1:$(raft_port "$i")"; done
  mkdir -p "$dir/$n"
  "$server" --id "$n" --peers "$peers" --data "$dir/$n" --client-port "$(client_port "$n")" \
    </dev/null >>"$dir/$n.log" 2>&1 &
  echo $! >"$dir/$n.pid"
  echo "replica $n: pid $!, clients on http://127.0.0.1:$(client_port "$n"), log in $dir/$n.log"
}

# Sends a signal and waits (up to 5 s) until the process is gone.
signal_one() {
  local n=$1 signal=$2 pid
  if ! is_running "$n"; then
    echo "replica $n is not running"
    rm -f "$dir/$n.pid"
    return
  fi
  pid=$(pid_of "$n")
  kill "-$signal" "$pid"
  for _ in $(seq 100); do is_alive "$pid" || break; sleep 0.05; done
  if is_alive "$pid"; then
    echo "replica $n (pid $pid) did not stop: killing it" && kill -KILL "$pid"
  fi
  rm -f "$dir/$n.pid"
  echo "replica $n (pid $pid) stopped with SIG$signal"
}

state_of() { curl -sS --max-time 1 "http://127.0.0.1:$(client_port "$1")/debug/state" 2>&1; }
# The id of the replica that says it leads, or nothing.
find_leader() {
  local n
  for n in "${ids[@]}"; do
    if is_running "$n" && state_of "$n" | grep -q "\"leader\": $n,"; then
      echo "$n"
      return
    fi
  done
}

if [ ! -x "$server" ] && { [ "$command" = start ] || [ "$command" = restart ]; }; then
  echo "cluster.sh: $server is missing: run 'make kv' first" >&2
  exit 1
fi
mkdir -p "$dir"
case $command in
start) for n in "${ids[@]}"; do start_one "$n"; done ;;
restart) check_id "$id" && start_one "$id" ;;
stop)
  if [ -n "$id" ]; then
    check_id "$id" && signal_one "$id" TERM
  else
    for n in "${ids[@]}"; do signal_one "$n" TERM; done
  fi
  ;;
kill) check_id "$id" && signal_one "$id" KILL ;;
status)
  for n in "${ids[@]}"; do
    if is_running "$n"; then
      echo "replica $n (pid $(pid_of "$n")): $(state_of "$n")"
    else
      echo "replica $n: not running"
    fi
  done
  ;;
leader)
  leader=$(find_leader)
  [ -n "$leader" ] || { echo "no leader" >&2 && exit 1; }
  echo "$leader"
  ;;
transfer)
  check_id "$id"
  leader=$(find_leader)
  [ -n "$leader" ] || { echo "cluster.sh: no leader to transfer from" >&2 && exit 1; }
  # -L follows a 307, should the leadership move between find_leader and this request; -d ""
  # makes it a POST with "Content-Length: 0" (without one, the server would wait for a body).
  answer=$(curl -sS -L --max-time 5 -d '' -w '%{http_code}' \
    "http://127.0.0.1:$(client_port "$leader")/admin/transfer?to=$id" 2>&1) || true
  code=${answer: -3} answer=${answer%???}
  printf '%s\n' "${answer%$'\n'}"
  case $code in
  200) exit 0 ;;
  202) ;;
  *) echo "cluster.sh: the transfer was refused (HTTP $code)" >&2 && exit 1 ;;
  esac
  for _ in $(seq 60); do
    [ "$(find_leader)" = "$id" ] && echo "replica $id leads now" && exit 0
    sleep 0.05
  done
  leader=$(find_leader)
  echo "cluster.sh: replica $id does not lead after 3 s; the leader is ${leader:-unknown}" >&2
  exit 1
  ;;
*) usage ;;
esac
