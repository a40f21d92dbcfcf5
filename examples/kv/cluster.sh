#!/usr/bin/env bash
# cluster.sh: runs a kv store on this machine, one kv-server process per replica: replicas 1, 2
# and 3 at first, then any others added while it runs.
#
#   examples/kv/cluster.sh [-p BASE_PORT] [-d DIR] COMMAND [ID]
#
#   start          starts every replica of the cluster that is not running
#   stop [ID]      stops one replica, or all, with SIGTERM (a clean shutdown)
#   kill ID        kills a replica with SIGKILL (a crash: no chance to clean up)
#   restart ID     starts a stopped or killed replica again, over its data directory
#   status         shows each replica's process and its view of the cluster (needs curl)
#   leader         prints the id of the leader (needs curl)
#   members        prints the leader's configuration: its voters and learners (needs curl)
#   transfer ID    asks the leader to hand its leadership to replica ID, and waits (up to 3 s)
#                  until ID leads; fails if it does not (needs curl)
#   add ID         starts replica ID (a new id, 1 to 999) as a joining replica, asks the leader
#                  to add it as a voter, and waits until it is one (needs curl)
#   remove ID      asks the leader to remove replica ID from the cluster, waits until it is
#                  out, then stops it; its data directory stays. Fails if ID is not a member
#                  (and stops it, if it runs as one of this cluster's replicas) (needs curl)
#
# Replica N listens for Raft on BASE_PORT + N and for clients (HTTP) on BASE_PORT + 1000 + N;
# BASE_PORT is 7000 by default, so the clients' addresses are 127.0.0.1:8001, :8002, and so on.
# Every replica is started with --peer-base 127.0.0.1:BASE_PORT, which is how each finds those
# added later. DIR (default build/kv-data) holds, for replica N: its data directory N/, its log
# N.log, N.pid, and N.joined if it was added with `add`; and `replicas`, the ids of the
# replicas of the cluster. KV_BASE_PORT, KV_DIR and KV_SERVER (the binary, default
# build/kv-server) may be set instead; KV_SNAPSHOT_EVERY, if set, is passed to every server as
# --snapshot-every.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
base=${KV_BASE_PORT:-7000}
dir=${KV_DIR:-$root/build/kv-data}
server=${KV_SERVER:-$root/build/kv-server}
first_ids=(1 2 3) # the replicas that start the cluster; any other joins it

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

# The replicas of the cluster, in order: the first three until one is added or removed.
replicas() {
  if [ -f "$dir/replicas" ]; then cat "$dir/replicas"; else printf '%s\n' "${first_ids[@]}"; fi
}
is_replica() { [[ " $(replicas | paste -sd ' ') " == *" $1 "* ]]; }
set_replicas() { # the ids on standard input become the list
  sort -n -u >"$dir/replicas.new" && mv "$dir/replicas.new" "$dir/replicas"
}
remove_replica() { replicas | { grep -vx "$1" || true; } | set_replicas; }
check_number() {
  [[ $1 =~ ^[1-9][0-9]{0,2}$ ]] ||
    { echo "cluster.sh: a replica id is a number from 1 to 999, not '$1'" >&2 && exit 2; }
}
check_id() {
  check_number "$1"
  is_replica "$1" || {
    echo "cluster.sh: replica $1 is not one of the cluster's: $(replicas | paste -sd ' ')" >&2
    exit 2
  }
}

start_one() {
  local n=$1 membership peers="" i
  if is_running "$n"; then
    echo "replica $n is running already (pid $(pid_of "$n"))"
    return
  fi
  # Those that started the cluster name its first members; the others joined it. After the first
  # start, either way, a replica takes its membership from its data directory.
  if [ -f "$dir/$n.joined" ]; then
    membership=(--join)
  else
    for i in "${first_ids[@]}"; do peers+="${peers:+,}$i=127.0.0.1:$(raft_port "$i")"; done
    membership=(--peers "$peers")
  fi
  if [ -n "${KV_SNAPSHOT_EVERY:-}" ]; then membership+=(--snapshot-every "$KV_SNAPSHOT_EVERY"); fi
  mkdir -p "$dir/$n"
  "$server" --id "$n" "${membership[@]}" --peer-base "127.0.0.1:$base" --data "$dir/$n" \
    --client-port "$(client_port "$n")" </dev/null >>"$dir/$n.log" 2>&1 &
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
  for n in $(replicas); do
    if is_running "$n" && state_of "$n" | grep -q "\"leader\": $n,"; then
      echo "$n"
      return
    fi
  done
}
leader_or_fail() {
  leader=$(find_leader)
  [ -n "$leader" ] || { echo "cluster.sh: no leader among the running replicas" >&2 && exit 1; }
}

# The ids of the voters and learners in replica $1's configuration, one a line.
members_of() {
  curl -sS --max-time 2 "http://127.0.0.1:$(client_port "$1")/admin/configuration" |
    sed 's/.*"voters"://' | tr -c '0-9' '\n' | grep -v '^$' || true
}

# POSTs to the leader (following a 307, should the leadership move meanwhile; -d '' makes it a
# POST with "Content-Length: 0": without one, the server answers 411). Prints the
# answer; sets `code` to its HTTP status.
post_to_leader() {
  local answer
  answer=$(curl -sS -L --max-time "$2" -d '' -w '%{http_code}' \
    "http://127.0.0.1:$(client_port "$leader")$1" 2>&1) || true
  code=${answer: -3} answer=${answer%???}
  printf '%s\n' "${answer%$'\n'}"
}

if [ ! -x "$server" ] && { [ "$command" = start ] || [ "$command" = restart ] ||
  [ "$command" = add ]; }; then
  echo "cluster.sh: $server is missing: run 'make kv' first" >&2
  exit 1
fi
mkdir -p "$dir"
case $command in
start) for n in $(replicas); do start_one "$n"; done ;;
restart) check_id "$id" && start_one "$id" ;;
stop)
  if [ -n "$id" ]; then
    check_id "$id" && signal_one "$id" TERM
  else
    for n in $(replicas); do signal_one "$n" TERM; done
  fi
  ;;
kill) check_id "$id" && signal_one "$id" KILL ;;
status)
  for n in $(replicas); do
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
members)
  leader_or_fail
  curl -sS --max-time 2 "http://127.0.0.1:$(client_port "$leader")/admin/configuration"
  ;;
transfer)
  check_id "$id"
  leader=$(find_leader)
  [ -n "$leader" ] || { echo "cluster.sh: no leader to transfer from" >&2 && exit 1; }
  post_to_leader "/admin/transfer?to=$id" 5
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
add)
  check_number "$id"
  leader_or_fail
  new=false
  if ! is_replica "$id"; then
    if [ -n "$(ls -A "$dir/$id" 2>/dev/null)" ]; then
      echo "cluster.sh: $dir/$id holds the data of an earlier replica $id: delete it first" >&2
      exit 1
    fi
    new=true
    touch "$dir/$id.joined"
    { replicas && echo "$id"; } | set_replicas
  fi
  start_one "$id"
  # The server answers once the change is done, or refused: up to 10 s while the new replica
  # catches up with the log.
  post_to_leader "/admin/add-voter?id=$id" 15
  [ "$code" = 200 ] && exit 0
  echo "cluster.sh: replica $id was not added as a voter (HTTP $code)" >&2
  $new || exit 1
  leader=$(find_leader)
  if [ "$code" = 409 ] && [ -n "$leader" ] && ! grep -qx "$id" <<<"$(members_of "$leader")"; then
    signal_one "$id" TERM >/dev/null # refused, and no member: nothing of the cluster's is lost
    remove_replica "$id" && rm -rf "${dir:?}/$id" "$dir/$id.joined"
    echo "cluster.sh: replica $id is stopped, and its data directory deleted" >&2
  else
    echo "cluster.sh: replica $id keeps running: '$0 members' shows its role;" \
      "'$0 remove $id' stops it" >&2
  fi
  exit 1
  ;;
remove)
  check_number "$id"
  leader_or_fail
  post_to_leader "/admin/remove?id=$id" 15
  if [ "$code" != 200 ]; then
    echo "cluster.sh: replica $id was not removed (HTTP $code)" >&2
    # One of ours that is no member (removed already, or never added): it has no part to play.
    leader=$(find_leader)
    if [ "$code" = 409 ] && is_replica "$id" && [ -n "$leader" ] &&
      ! grep -qx "$id" <<<"$(members_of "$leader")"; then
      signal_one "$id" TERM
      remove_replica "$id"
    fi
    exit 1
  fi
  if is_replica "$id"; then
    signal_one "$id" TERM
    remove_replica "$id"
  fi
  ;;
*) usage ;;
esac
