#!/usr/bin/env bash
# A throwaway single-node SLURM cluster for tests: munged + slurmctld + slurmd on this machine, one node (this
# machine's CPUs) in one partition `debug`, accounting disabled (no slurmdbd). Everything it writes — slurm.conf,
# the munge key and socket, state, spool, logs, pid files — lives in one folder of its own; it never reads or
# writes /etc/slurm, /etc/munge, /run/munge or /var/spool/slurm, and it listens on free ports, not 6817/6818, so
# it does not meet a real cluster on the same machine. The SLURM tools find it through SLURM_CONF.
#
#   eval "$(tools/slurm/cluster.sh start)"   # start; prints `export SLURM_CONF=... LSTSD_SLURM_DIR=...`
#   sinfo; sbatch ...; lstsd -m hydra/launcher=slurm hydra.launcher.gpus_per_node=0 hydra.launcher.partition=debug ...
#   tools/slurm/cluster.sh status            # the node, the queue, the daemons
#   tools/slurm/cluster.sh stop              # cancel its jobs, stop its daemons, remove the folder
#   tools/slurm/cluster.sh run -- CMD ...    # start, run CMD with SLURM_CONF set, stop (also on failure / Ctrl-C)
#
# start [DIR]   DIR (default: a new mktemp folder under $TMPDIR or /tmp) must be new or empty. Waits until the node
#               is idle. --owner-pid PID: stop by itself once process PID has ended (a test session killed hard).
# stop [DIR]    DIR defaults to $LSTSD_SLURM_DIR; --keep keeps the folder (its logs).
# Environment:  LSTSD_SLURM_CPUS (the node's CPUs; default: this machine's), LSTSD_SLURM_START_TIMEOUT (seconds
#               to wait for the idle node, default 90), LSTSD_SLURM_INSTALL=0 (never apt-get install).
# Exit codes of start: 0 running; 3 SLURM cannot run here (not installed, and not root, no apt-get, or apt-get
# install failed), with one line saying why; 1 a daemon failed to start (the tail of its log follows, and what was
# started is stopped).
#
# slurm-wlm and munge are installed with apt-get when they are missing and this runs as root (Debian/Ubuntu: Slurm
# 22.05 on Debian 12). The daemons run as the calling user (SlurmUser and SlurmdUser); tested as root, as in CI.
set -euo pipefail

PROG=tools/slurm/cluster.sh
TOOLS=(munged slurmctld slurmd sinfo sbatch srun squeue scontrol scancel)

log() { echo "$PROG: $*" >&2; }
cannot() { echo "$PROG: cannot start SLURM here: $*" >&2; exit 3; }

missing_tools() {
  local t out=()
  for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || out+=("$t"); done
  echo "${out[*]:-}"
}

install_packages() {
  local missing
  missing=$(missing_tools)
  [ -z "$missing" ] && return 0
  [ "$(id -u)" = 0 ] || cannot "$missing not found and not root (as root: apt-get install slurm-wlm munge)"
  [ "${LSTSD_SLURM_INSTALL:-1}" != 0 ] || cannot "$missing not found and LSTSD_SLURM_INSTALL=0"
  command -v apt-get >/dev/null 2>&1 || cannot "$missing not found and no apt-get to install slurm-wlm and munge"
  log "installing slurm-wlm and munge with apt-get (missing: $missing)"
  local t0=$SECONDS
  # the packages' scripts would start the system's munged/slurmctld/slurmd (on /etc paths): deny that while
  # installing, unless the machine already has a policy of its own
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local rc=0 opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install "${opts[@]}" slurm-wlm munge >"${TMPDIR:-/tmp}/lstsd-slurm-apt.log" 2>&1; then
    { apt-get update -q && apt-get install "${opts[@]}" slurm-wlm munge; } >>"${TMPDIR:-/tmp}/lstsd-slurm-apt.log" 2>&1 \
      || rc=$?
  fi
  [ "$made_policy" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || cannot "apt-get install slurm-wlm munge failed (exit $rc): $(tail -n 3 "${TMPDIR:-/tmp}/lstsd-slurm-apt.log" | tr '\n' ' ')"
  missing=$(missing_tools)
  [ -z "$missing" ] || cannot "still missing after apt-get install slurm-wlm munge: $missing"
  log "installed slurm-wlm and munge in $((SECONDS - t0))s;"
}

free_port() {
  python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# wait_for SECONDS CMD...: until CMD succeeds (0) or the time is up (1)
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

daemon_failed() {  # NAME LOGFILE: report, stop what was started, exit 1
  log "$1 did not start; the end of $2:"
  tail -n 20 "$2" >&2 2>/dev/null || true
  do_stop "$DIR" keep >/dev/null 2>&1 || true
  log "(its folder is kept: $DIR)"
  exit 1
}

write_config() {
  local node cpus mem_mb user
  node=$(hostname -s)
  cpus=${LSTSD_SLURM_CPUS:-$(nproc)}
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  user=$(id -un)
  local ctld_port slurmd_port
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  mkdir -p "$DIR"/{munge,state,spool,log,run}
  chmod 700 "$DIR" "$DIR/munge"
  : >"$DIR/plugstack.conf"  # no SPANK plugins (not the system's /etc/slurm/plugstack.conf)
  cat >"$DIR/slurm.conf" <<EOF
# written by $PROG: a throwaway single-node cluster (its files are all in $DIR)
ClusterName=lstsd-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
# cred_expire: job credentials live 5 s (120 by default); a requeued job waits that long before it starts again
AuthInfo=socket=$DIR/munge/munge.socket.2,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
# no cgroups (containers): processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobContainerType=job_container/none
MpiDefault=none
SwitchType=switch/none
# accounting disabled: no slurmdbd (sacct answers with an error)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# schedule every few seconds (a requeued job waits for the next pass)
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# the node as declared here (LSTSD_SLURM_CPUS may differ from the hardware), never drained for it
SlurmdParameters=config_overrides
ReturnToService=2
# a job at its time limit, or requeued, gets SIGTERM and KillWait seconds later SIGKILL
KillWait=15
# finished jobs stay visible to squeue/scontrol this long (there is no sacct)
MinJobAge=900
InactiveLimit=0
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$DIR/slurm.conf
export LSTSD_SLURM_DIR=$DIR
EOF
}

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | head -n 1)" = idle ]; }

do_start() {
  local owner=${1:-}
  install_packages
  if [ -z "$DIR" ]; then
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/lstsd-slurm.XXXXXX")
  else
    mkdir -p "$DIR"
    [ -z "$(ls -A "$DIR")" ] || { log "$DIR is not empty"; exit 1; }
    DIR=$(cd "$DIR" && pwd)
  fi
  local t0=$SECONDS timeout=${LSTSD_SLURM_START_TIMEOUT:-90}
  write_config
  export SLURM_CONF=$DIR/slurm.conf
  unset SLURM_JOB_ID SLURM_JOBID SLURM_ARRAY_JOB_ID SLURM_NODELIST SLURM_JOB_NODELIST  # not a job of another cluster
  local m=$DIR/munge
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$m/munge.key" >/dev/null 2>&1
  else
    dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
  fi
  chmod 600 "$m/munge.key"
  # --force: the key and socket folders are private, but under /tmp (world-writable with the sticky bit)
  munged --force --socket="$m/munge.socket.2" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
    --log-file="$m/munged.log" --seed-file="$m/munged.seed" >>"$m/munged.log" 2>&1 \
    || daemon_failed munged "$m/munged.log"
  wait_for 15 test -S "$m/munge.socket.2" || daemon_failed munged "$m/munged.log"
  slurmctld -f "$SLURM_CONF" >>"$DIR/log/slurmctld.out" 2>&1 || daemon_failed slurmctld "$DIR/log/slurmctld.log"
  wait_for 30 scontrol ping || daemon_failed slurmctld "$DIR/log/slurmctld.log"
  slurmd -f "$SLURM_CONF" -N "$(hostname -s)" >>"$DIR/log/slurmd.out" 2>&1 || daemon_failed slurmd "$DIR/log/slurmd.log"
  if ! wait_for "$timeout" node_idle; then
    log "the node is not idle after ${timeout}s: $(sinfo -h -N -o '%T %E' 2>&1 | head -n 1)"
    daemon_failed slurmd "$DIR/log/slurmd.log"
  fi
  if [ -n "$owner" ]; then  # stop the cluster once the owner has gone, whatever way it went
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -f "$2/slurm.conf" ]; do sleep 2; done
                    [ -f "$2/slurm.conf" ] && exec "$3" stop "$2"' watchdog "$owner" "$DIR" "$(realpath "$0")" \
      </dev/null >>"$DIR/log/watchdog.out" 2>&1 &
    echo $! >"$DIR/run/watchdog.pid"
  fi
  log "cluster up in $((SECONDS - t0))s: node $(hostname -s), $(sinfo -h -N -o %c | head -n 1) CPUs, partition debug; $DIR"
  cat "$DIR/env.sh"
}

# the processes of this cluster's jobs: slurmstepd (started by its slurmd) and the job processes (SLURM_JOB_ID set
# by slurmstepd), both with this cluster's slurm.conf in their environment; never a shell or a launcher of the user
job_pids() {
  local dir=$1 p env
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    env=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ") || continue
    grep -qxF "SLURM_CONF=$dir/slurm.conf" <<<"$env" || continue
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmstepd ] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then echo "$p"; fi
  done
  return 0
}

stop_pid_file() {  # FILE: TERM the process it names, KILL it after 10s
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait_for 10 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
  local dir=$1 keep=${2:-}
  [ -n "$dir" ] && [ -f "$dir/slurm.conf" ] || { log "no cluster in '${dir}' (give its folder or set LSTSD_SLURM_DIR)"; return 1; }
  export SLURM_CONF=$dir/slurm.conf
  local watchdog
  watchdog=$(cat "$dir/run/watchdog.pid" 2>/dev/null || true)
  if scontrol ping >/dev/null 2>&1; then  # cancel its jobs, give them KillWait to end
    scancel --quiet $(squeue -h -o %A 2>/dev/null) 2>/dev/null || true
    wait_for 20 bash -c '[ -z "$(squeue -h -o %A)" ]' || true
  fi
  stop_pid_file "$dir/run/slurmd.pid"
  stop_pid_file "$dir/run/slurmctld.pid"
  local p
  for p in $(job_pids "$dir"); do kill -KILL "$p" 2>/dev/null || true; done  # what the cancel left
  stop_pid_file "$dir/munge/munged.pid"
  # the watchdog, unless this is it (it execs this script: same pid)
  if [ -n "$watchdog" ] && [ "$watchdog" != "$$" ] && pid_alive "$watchdog"; then kill "$watchdog" 2>/dev/null || true; fi
  if [ "$keep" = keep ]; then
    rm -f "$dir/run/watchdog.pid"
    log "stopped; kept $dir"
  else
    rm -rf "$dir"
    log "stopped; removed $dir"
  fi
}

do_status() {
  local dir=$1
  [ -n "$dir" ] && [ -f "$dir/slurm.conf" ] || { log "no cluster in '${dir}'"; return 1; }
  export SLURM_CONF=$dir/slurm.conf
  local f name
  for f in munge/munged.pid run/slurmctld.pid run/slurmd.pid; do
    name=$(basename "$f" .pid)
    if pid_alive "$(cat "$dir/$f" 2>/dev/null)"; then echo "$name: running (pid $(cat "$dir/$f"))"; else echo "$name: not running"; fi
  done
  sinfo -N -o '%N %P %T %c %m' || return 1
  squeue -o '%.14i %.9P %.20j %.8T %.10M %R' || return 1
}

cmd=${1:-}
[ $# -gt 0 ] && shift
DIR=""
case "$cmd" in
  start)
    owner=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --owner-pid) owner=$2; shift 2 ;;
        *) DIR=$1; shift ;;
      esac
    done
    do_start "$owner" ;;
  stop)
    keep=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --keep) keep=keep; shift ;;
        *) DIR=$1; shift ;;
      esac
    done
    do_stop "${DIR:-${LSTSD_SLURM_DIR:-}}" "$keep" ;;
  status)
    do_status "${1:-${LSTSD_SLURM_DIR:-}}" ;;
  run)
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || { log "run -- CMD ..."; exit 2; }
    env_lines=$(do_start "") || exit $?
    eval "$env_lines"
    trap 'do_stop "$LSTSD_SLURM_DIR" >/dev/null' EXIT
    trap 'exit 130' INT TERM
    rc=0
    "$@" || rc=$?
    exit "$rc" ;;
  *)
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0" >&2
    exit 2 ;;
esac
