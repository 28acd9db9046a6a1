#!/usr/bin/env bash
# slurm/down.sh -- stop the single-node cluster started by slurm/up.sh.
# Stops slurmd, slurmctld and munged by their pid files (never by name). Idempotent.
#   SLURM_PURGE=1  also delete slurm state, spool and logs (next up.sh starts from job id 1)
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "slurm/down.sh: must run as root" >&2; exit 1; }

exec 9>/run/diaspora-slurm-up.lock
flock -w 600 9 || { echo "slurm/down.sh: could not take /run/diaspora-slurm-up.lock" >&2; exit 1; }

term() {  # term <pidfile> <name>: send SIGTERM, remember pid
  local pf=$1 name=$2 pid
  [ -s "$pf" ] || { echo "[slurm-down] $name: not running (no pid file)"; return 0; }
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; PIDS+=("$pid:$name")
  else echo "[slurm-down] $name: stale pid file"; rm -f "$pf"; fi
}
reap() {  # wait up to 10 s for all signalled daemons, then SIGKILL leftovers
  local e pid name alive
  for _ in $(seq 100); do
    alive=0
    for e in "${PIDS[@]}"; do kill -0 "${e%%:*}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for e in "${PIDS[@]}"; do
    pid=${e%%:*}; name=${e#*:}
    if kill -0 "$pid" 2>/dev/null; then echo "[slurm-down] $name: SIGKILL"; kill -KILL "$pid"; fi
    echo "[slurm-down] $name ($pid) stopped"
  done
  PIDS=()
}
PIDS=()

# cancel whatever is still queued/running so slurmstepd processes exit cleanly
if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
  scancel --quiet --user=root 2>/dev/null || true
  for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
fi
term /run/slurmd.pid    slurmd
term /run/slurmctld.pid slurmctld
reap
term /run/munge/munged.pid munged   # last: slurm daemons need munge to shut down cleanly
reap
rm -f /run/slurmd.pid /run/slurmctld.pid

if [ "${SLURM_PURGE:-0}" = 1 ]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
  echo "[slurm-down] state purged"
fi
exit 0
