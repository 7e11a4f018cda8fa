#!/usr/bin/env bash
# `make slurm-demo`: the demo grid through the SLURM executor, from nothing to the book.
#
# Uses the SLURM cluster this machine can reach (`sinfo` answers: SLURM_CONF, /etc/slurm or a
# running local test cluster); when there is none, starts the local one-node cluster
# (workflow/slurm/local-cluster.sh up, as root) and stops it again at the end (KEEP_CLUSTER=1
# keeps it). The grid's outputs go to their own folders, so `make demo`'s are not reused:
#   WORK=work/slurm-demo  RESULTS=results/slurm-demo  MELANOMA_BOOK=results/slurm-demo/book
# Settings (environment): GRID (default params/demo.yaml), PROFILE (default
# workflow/profiles/slurm-cpu; workflow/profiles/slurm on a cluster with GPUs), SNAKEMAKE_DIR
# (Snakemake's working directory: its .snakemake/ metadata, locks and SLURM logs; default the
# repository), SLURM_STATUS_S (seconds before the executor's first status check; default 5 here,
# the plugin's 40 s is meant for busy shared controllers). Extra arguments go to Snakemake.
# Rerun after an interruption: the same command (finished jobs are kept; jobs an earlier run left
# running are waited for, never submitted twice: melanoma/pipeline/cluster.py). One run per grid at a time
# (the grid's run lock, as `melanoma demo`/`retry`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
SNAKEMAKE="$(dirname "$PY")/snakemake"
GRID="${GRID:-params/demo.yaml}"
PROFILE="${PROFILE:-workflow/profiles/slurm-cpu}"
SNAKEMAKE_DIR="${SNAKEMAKE_DIR:-$REPO}"
export WORK="${WORK:-$REPO/work/slurm-demo}"
export RESULTS="${RESULTS:-$REPO/results/slurm-demo}"
export MELANOMA_BOOK="${MELANOMA_BOOK:-$RESULTS/book}"
CLUSTER="$REPO/workflow/slurm/local-cluster.sh"

say() { echo "[slurm-demo] $*" >&2; }

[ -x "$SNAKEMAKE" ] || { say "ERROR: $SNAKEMAKE not found: run 'make venv' first"; exit 2; }
"$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
  || { say "ERROR: snakemake-executor-plugin-slurm is not installed in $(dirname "$PY") (make venv)"; exit 2; }

started=0
if command -v sinfo >/dev/null && timeout 20 sinfo -h -o %P >/dev/null 2>&1; then
  say "using the SLURM cluster that answers here: $(timeout 20 sinfo -h -o '%P %D nodes %t' | head -n 3 | tr '\n' ';')"
else
  say "no SLURM cluster answers here: starting the local one-node cluster"
  "$CLUSTER" up
  started=1
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    trap '"$CLUSTER" down' EXIT
  fi
fi
[ "$started" = 1 ] && eval "$("$CLUSTER" env)"

cmd=("$SNAKEMAKE" -s "$REPO/workflow/Snakefile" --directory "$SNAKEMAKE_DIR" --config "grid=$GRID"
     --workflow-profile "$PROFILE" --slurm-init-seconds-before-status-checks "${SLURM_STATUS_S:-5}" "$@")
say "\$ ${cmd[*]}"
t0=$SECONDS
mkdir -p "$SNAKEMAKE_DIR/.snakemake"
marker="$(mktemp "$SNAKEMAKE_DIR/.snakemake/.slurm-demo-start.XXXXXX")"
rc=0
# One writer per grid, as `melanoma demo`: Snakemake runs under the grid's run lock
# (results/<grid>/.melanoma.lock; a second run of the grid refuses to start and names this one),
# and the lock a killed earlier head left in $SNAKEMAKE_DIR/.snakemake is removed first, unless a
# live Snakemake that takes locks works there (the SLURM jobs' own run with --nolock: not counted).
"$PY" -m melanoma.cli locked --grid "$GRID" --workdir "$SNAKEMAKE_DIR" -- "${cmd[@]}" || rc=$?
# this run's Snakemake log(s): the ones written since it started
n="$(find "$SNAKEMAKE_DIR/.snakemake/log" -name '*.snakemake.log' -newer "$marker" -exec cat {} + 2>/dev/null \
      | grep -c "has been submitted with SLURM jobid" || true)"
rm -f "$marker"
say "exit $rc after $((SECONDS - t0)) s; jobs this run submitted to SLURM: $n (their logs: $SNAKEMAKE_DIR/.snakemake/slurm_logs)"
say "book: $MELANOMA_BOOK/_build/html/index.html$([ -f "$MELANOMA_BOOK/_build/html/index.html" ] || echo ' (NOT BUILT)')"
exit "$rc"
