#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests and `make slurm-demo` (root, Debian).
#
#   workflow/slurm/local-cluster.sh up       # install slurm-wlm + munge if missing, start the daemons, wait for idle
#   workflow/slurm/local-cluster.sh status   # exit 0 when its controller answers and the node is usable
#   workflow/slurm/local-cluster.sh env      # prints `export SLURM_CONF=...` (eval it to use sbatch/squeue)
#   workflow/slurm/local-cluster.sh down     # cancel its jobs, stop exactly the daemons `up` started (by PID)
#
# Everything lives in one project-owned state folder (MELANOMA_SLURM_DIR, default .slurm/ in the
# repository, git-ignored): slurm.conf, its own munge key and socket, spool, state, logs and
# `pids` (the PID of every daemon `up` started, recorded as each one starts). No file under /etc
# is written and no system service is started: apt's post-install scripts are kept from starting
# munge/slurm services while installing (a policy-rc.d in place for the install only, unless one
# is there already). The controller and node daemon listen on MELANOMA_SLURM_PORT and the port
# after it (default 6817/6818, SLURM's own defaults). No slurmdbd, hence no `sacct`: clients use
# squeue, and MinJobAge keeps finished jobs in squeue for a day (the Snakemake profile's status
# command).
#
# One link outside the state folder: /run/slurm/conf -> the state folder's etc/, where SLURM's
# clients look when SLURM_CONF is unset and /etc/slurm/slurm.conf is absent (the place a
# "configless" node keeps its configuration). It is needed because the Snakemake SLURM executor's
# job step drops SLURM_CONF from the environment of the `srun` it runs inside each job. `up` makes
# it only where no such path exists, `down` removes it only while it points into this state
# folder. (A machine with its own /etc/slurm/slurm.conf is a real cluster: use that one.)
#
# `down` kills nothing by name: a recorded PID is signalled only while /proc says it is still that
# daemon, started by this script for this state folder (MELANOMA_SLURM_OWNER in its environment).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${MELANOMA_SLURM_DIR:-$REPO/.slurm}"
PORT="${MELANOMA_SLURM_PORT:-6817}"
CONF="$STATE/etc/slurm.conf"
PIDS="$STATE/pids"
NODE="$(hostname -s)"
WAIT_S="${MELANOMA_SLURM_WAIT_S:-120}"
RUNCONF=/run/slurm/conf   # where SLURM's clients look for slurm.conf after SLURM_CONF and /etc/slurm

say() { echo "[local-cluster] $*" >&2; }
die() { say "ERROR: $*"; exit "${2:-1}"; }

have_binaries() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
                  && command -v munged >/dev/null && command -v sinfo >/dev/null; }

install_packages() {
  have_binaries && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are not installed and this is not root: run as root, or install them (apt-get install slurm-wlm munge)" 3
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is not available (Debian/Ubuntu only)" 3
  say "installing slurm-wlm and munge from Debian's packages (a minute)"
  # keep the packages' post-install scripts from starting system munge/slurm services: every
  # daemon of this cluster is one we start (and stop) ourselves
  local policy=/usr/sbin/policy-rc.d placed=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && placed=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm munge >/dev/null; } || rc=$?
  [ "$placed" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install slurm-wlm munge failed (exit $rc)" 3
  have_binaries || die "slurm-wlm/munge installed but slurmctld/slurmd/munged/sinfo are still not on PATH" 3
}

# --- the recorded daemons -------------------------------------------------------------------
# `pids` holds lines "NAME PID"; a PID counts as ours only while /proc/PID/cmdline is still NAME
# and its environment holds MELANOMA_SLURM_OWNER=<this state folder>, which `start` gives every
# daemon (a recycled PID, or another cluster's daemon, is never signalled).
ours() {  # ours NAME PID
  local name="$1" pid="$2" cmd
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$name"* ]] || return 1  # empty for a zombie: gone
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qxF "MELANOMA_SLURM_OWNER=$STATE"
}

record() {  # record NAME PID: append atomically (the file is rewritten through a temp + rename)
  local tmp
  tmp="$(mktemp "$STATE/.pids.XXXXXX")"
  { [ -f "$PIDS" ] && cat "$PIDS"; echo "$1 $2"; } > "$tmp"
  mv -f "$tmp" "$PIDS"
}

running() {  # any recorded daemon still alive?
  [ -f "$PIDS" ] || return 1
  local name pid
  while read -r name pid; do ours "$name" "$pid" && return 0; done < "$PIDS"
  return 1
}

running_one() {  # running_one NAME: is a recorded daemon NAME of ours alive?
  [ -f "$PIDS" ] || return 1
  local name pid
  while read -r name pid; do [ "$name" = "$1" ] && ours "$name" "$pid" && return 0; done < "$PIDS"
  return 1
}

controller_answers() { SLURM_CONF="$CONF" timeout 10 sinfo -h -o %t >/dev/null 2>&1; }

node_state() { SLURM_CONF="$CONF" timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1; }

# --- configuration ---------------------------------------------------------------------------
write_conf() {
  local cpus mem tmp
  cpus="$(nproc)"
  # RealMemory may not exceed what slurmd measures, or the node is drained: 95 % of MemTotal
  mem="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)"
  mkdir -p "$STATE/etc" "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/run" "$STATE/munge"
  chmod 700 "$STATE/munge"
  tmp="$(mktemp "$STATE/etc/.slurm.conf.XXXXXX")"
  cat > "$tmp" <<EOF
# Written by workflow/slurm/local-cluster.sh: a one-node test cluster (no accounting database).
ClusterName=melanoma
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket.2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue for a day: the only job history without slurmdbd
MinJobAge=86400
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv -f "$tmp" "$CONF"
  chmod 644 "$CONF"
  say "wrote $CONF (node $NODE: $cpus CPUs, ${mem} MB)"
}

link_conf() {  # /run/slurm/conf -> $STATE/etc, for srun inside jobs (see the top of this file)
  if [ -e /etc/slurm/slurm.conf ]; then
    say "WARNING: /etc/slurm/slurm.conf exists: srun inside jobs will read it, not $CONF"
  elif [ -L "$RUNCONF" ] && [ "$(readlink "$RUNCONF")" = "$STATE/etc" ]; then
    :
  elif [ -e "$RUNCONF" ] || [ -L "$RUNCONF" ]; then
    say "WARNING: $RUNCONF exists and is not ours: srun inside jobs may not find $CONF"
  else
    mkdir -p "$(dirname "$RUNCONF")" && ln -s "$STATE/etc" "$RUNCONF"
  fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {  # start NAME LOG CMD...: in the background, in its own session; record its PID
  local name="$1" log="$2"; shift 2
  MELANOMA_SLURM_OWNER="$STATE" setsid "$@" >>"$log" 2>&1 < /dev/null &
  local pid=$!
  record "$name" "$pid"
  sleep 0.5
  ours "$name" "$pid" || { tail -n 20 "$log" >&2 || true; down; die "$name did not start (see $log)"; }
  say "started $name (pid $pid)"
}

up() {
  install_packages
  if running; then
    if controller_answers; then say "already up ($CONF)"; return 0; fi
    die "daemons recorded in $PIDS are alive but the controller does not answer: run '$0 down' first"
  fi
  port_free "$PORT" && port_free "$((PORT + 1))" || \
    die "port $PORT or $((PORT + 1)) is in use (another SLURM?): set MELANOMA_SLURM_PORT to a free pair"
  rm -f "$PIDS"
  write_conf
  # a fresh state: no jobs or node state of an earlier cluster in this folder
  rm -rf "${STATE:?}/ctld/"* "${STATE:?}/spool/"*
  if [ ! -s "$STATE/munge/munge.key" ]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 600 "$STATE/munge/munge.key"
  start munged "$STATE/log/munged.out" munged --foreground --force \
    --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket.2" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  for _ in $(seq 50); do [ -S "$STATE/munge/munge.socket.2" ] && break; sleep 0.2; done
  [ -S "$STATE/munge/munge.socket.2" ] || die "munged made no socket (see $STATE/log/munged.log)"
  link_conf
  start slurmctld "$STATE/log/slurmctld.out" slurmctld -D -i -f "$CONF"
  start slurmd "$STATE/log/slurmd.out" slurmd -D -f "$CONF"
  local t0=$SECONDS st=""
  while (( SECONDS - t0 < WAIT_S )); do
    st="$(node_state || true)"
    case "$st" in
      idle|idle\*|mix|alloc) [ "$st" = "idle*" ] || break ;;
      drain*|down*) SLURM_CONF="$CONF" scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  case "$st" in
    idle|mix|alloc) ;;
    *) say "node state after ${WAIT_S} s: '${st:-no answer}'"
       tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 2>/dev/null || true
       down; die "the node did not become idle" ;;
  esac
  say "up in $((SECONDS - t0)) s: node $NODE is $st; use it with: export SLURM_CONF=$CONF"
}

down() {
  if [ ! -f "$PIDS" ]; then say "nothing recorded in $PIDS: no daemon of ours to stop"; return 0; fi
  # cancel the jobs of our controller (only one we started, still running), so that no job step
  # outlives its node daemon
  if [ -f "$CONF" ] && running_one slurmctld && controller_answers; then
    local ids
    ids="$(SLURM_CONF="$CONF" squeue -h -o %i -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null | tr '\n' ' ')"
    if [ -n "${ids// /}" ]; then
      say "cancelling jobs $ids"
      # shellcheck disable=SC2086
      SLURM_CONF="$CONF" scancel $ids 2>/dev/null || true
      for _ in $(seq 30); do
        [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i -t RUNNING,COMPLETING 2>/dev/null)" ] && break
        sleep 1
      done
    fi
  fi
  local name pid order
  for order in slurmd slurmctld munged; do
    while read -r name pid; do
      [ "$name" = "$order" ] || continue
      if ours "$name" "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do ours "$name" "$pid" || break; sleep 0.2; done
        if ours "$name" "$pid"; then say "$name (pid $pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
        say "stopped $name (pid $pid)"
      else
        say "$name (pid $pid) is no longer running"
      fi
    done < "$PIDS"
  done
  rm -f "$PIDS"
  if [ -L "$RUNCONF" ] && [ "$(readlink "$RUNCONF")" = "$STATE/etc" ]; then
    rm -f "$RUNCONF" && say "removed the link $RUNCONF"
  fi
}

status() {
  if running && controller_answers; then
    say "up: node $NODE is $(node_state); SLURM_CONF=$CONF"
    return 0
  fi
  say "not running (state folder $STATE)"
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
