#!/usr/bin/env bash
# Side-by-side: the same single-child scenarios as PID 1 of a fresh PID namespace under
# tini, dumb-init, catatonit (Debian packages) and bottle-init (single-program mode).
# Prints a markdown table (docs/peers.md holds the last run). Needs root (unshare).
#
#   scripts/peers-compare.sh            # builds bottle-init (release) first
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in tini dumb-init catatonit; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p bottle-init -p bottle-tests --bin bottle-init --bin bottle-testchild
BI=$PWD/target/release/bottle-init
TC=$PWD/target/release/bottle-testchild
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf '#!/bin/sh\nexit 0\n' > "$work/noexec"; chmod 644 "$work/noexec"

init_cmd() { # init name -> argv prefix
  case "$1" in
    tini) echo "tini --" ;;
    dumb-init) echo "dumb-init" ;;
    catatonit) echo "catatonit --" ;;
    bottle-init) echo "$BI --grace 3 --" ;;
  esac
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# run INIT SIGNAL_AFTER_MS SIGNAL CMD... -> prints "code time_ms"
run() {
  local init=$1 after=$2 sig=$3; shift 3
  local start; start=$(now_ms)
  # shellcheck disable=SC2046
  timeout -s KILL 12 unshare --pid --fork --mount-proc $(init_cmd "$init") "$@" >"$work/out" 2>"$work/err" &
  local pid=$!
  if [ "$after" -gt 0 ]; then
    sleep "$(awk "BEGIN{print $after/1000}")"
    local inner; inner=$(pgrep -P "$(pgrep -P $pid | head -1)" | head -1 || true)
    [ -n "$inner" ] && kill -s "$sig" "$inner" 2>/dev/null || true
  fi
  local code=0; wait $pid || code=$?
  echo "$code $(( $(now_ms) - start ))"
}

row() { printf '| %s |' "$1"; shift; for cell in "$@"; do printf ' %s |' "$cell"; done; echo; }

inits=(tini dumb-init catatonit bottle-init)
echo "| scenario | ${inits[*]} |" | sed 's/ \([a-z-]*\) /\1 | /g; s/| bottle-init |/| bottle-init |/' >/dev/null
printf '| scenario |'; for i in "${inits[@]}"; do printf ' %s |' "$i"; done; echo
printf '|---|'; for _ in "${inits[@]}"; do printf -- '---|'; done; echo

cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 0 - "$TC" exit 3); cells+=("$1"); done; row "child exits 3: exit code" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 0 - /nonexistent/prog); cells+=("$1"); done; row "exec ENOENT: exit code" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 0 - "$work/noexec"); cells+=("$1"); done; row "exec EACCES: exit code" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 0 - /bin/sh -c 'kill -KILL $$'); cells+=("$1"); done; row "child killed by SIGKILL: exit code" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 0 - /bin/sh -c 'kill -SEGV $$'); cells+=("$1"); done; row "child killed by SIGSEGV: exit code" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 300 TERM "$TC" sleep 60); cells+=("$1 in $2 ms"); done; row "SIGTERM to init, child default handler" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 300 TERM "$TC" ignore-term 60); cells+=("$1 in $2 ms"); done; row "SIGTERM to init, child ignores TERM (12 s cap)" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do set -- $(run "$i" 300 HUP /bin/sh -c "trap 'exit 7' HUP; $TC sleep 60 & wait; exit 9"); cells+=("$1"); done; row "SIGHUP to init reaches child's group (7 = yes)" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do
  set -- $(run "$i" 0 - /bin/sh -c "$TC orphans 5 0; sleep 0.5; grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l > $work/z; exit 0")
  cells+=("$(cat "$work/z") zombies")
done; row "5 orphans exit, zombies left after 0.5 s" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do
  set -- $(run "$i" 0 - /bin/sh -c "grep SigIgn /proc/self/status | cut -f2 > $work/ign; grep SigBlk /proc/self/status | cut -f2 > $work/blk")
  cells+=("ign $(cat "$work/ign" | sed 's/^0*//; s/^$/0/'), blk $(cat "$work/blk" | sed 's/^0*//; s/^$/0/')")
done; row "child SigIgn / SigBlk (hex, 0 = clean)" "${cells[@]}"
cells=(); for i in "${inits[@]}"; do
  set -- $(run "$i" 300 TERM /bin/sh -c "setsid $TC ignore-term 60 & $TC sleep 60")
  cells+=("$1 in $2 ms")
done; row "SIGTERM; a setsid'd grandchild ignores TERM" "${cells[@]}"
