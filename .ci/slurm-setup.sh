#!/usr/bin/env bash
# A one-node SLURM on this machine for the tests that run astrodask through SLURM (tests/cluster/test_slurm.py).
#
# Needs root. Idempotent: installs Debian's slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf for
# this host (CPUs from nproc, RealMemory from /proc/meminfo), starts munged, slurmctld and slurmd unless they
# already run with this configuration, and waits (bounded) until `sinfo` shows the node idle.
# Exits non-zero with the daemons' log tails when SLURM does not come up.
set -euo pipefail

WAIT_S=${SLURM_SETUP_TIMEOUT:-90}
conf_dir=/etc/slurm
conf=$conf_dir/slurm.conf
log_dir=/var/log/slurm
node=$(hostname -s)
t0=$(date +%s)

say() { echo "[slurm-setup] $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "[slurm-setup] needs root (installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# ---------------------------------------------------------------------------------------------- configuration
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys OMP_NUM_THREADS, which distributed sets to 1 in its parent process
mem_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# leave the OS 1 GiB (at most a quarter of the machine); slurmd drains a node that has less than configured
reserve=$(( mem_mib / 4 < 1024 ? mem_mib / 4 : 1024 ))
real_mem=$(( mem_mib - reserve ))

mkdir -p "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/lib/munge /var/log/munge
new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by .ci/slurm-setup.sh: a one-node cluster for astrodask's tests.
ClusterName=astrodask
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# quick turnaround for short test jobs; MinJobAge also sets how often \`sbatch --wait\` polls (2, 8, 8... s
# with 10; 2, 8, 32, 32... s with SLURM's default 300)
SchedulerParameters=sched_interval=2
MinJobAge=10
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$new_conf" "$conf"; then
  install -m 644 "$new_conf" "$conf"
  changed=1
  say "wrote $conf: node $node, CPUs=$cpus, RealMemory=$real_mem MiB"
fi
rm -f "$new_conf"

running() {  # running PIDFILE: the daemon whose pid is in PIDFILE is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop() {  # stop PIDFILE: terminate that daemon and wait for it (only it, by pid)
  if running "$1"; then
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# ---------------------------------------------------------------------------------------------- munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating the munge key"
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null || { echo "[slurm-setup] munged does not answer" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------- slurm daemons
if [ "$changed" = 1 ]; then
  stop /run/slurmd.pid
  stop /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
  say "starting slurmctld"
  /usr/sbin/slurmctld
fi
if ! running /run/slurmd.pid; then
  say "starting slurmd"
  /usr/sbin/slurmd
fi

# ---------------------------------------------------------------------------------------------- wait for the node
deadline=$(( t0 + WAIT_S ))
state=""
while :; do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n1 || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    drained*|draining|down*|fail*|drain*)
      # a node left down by an earlier run (or a restart): bring it back
      scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "[slurm-setup] node $node not idle after ${WAIT_S} s (state: '${state:-no answer}')" >&2
    for f in "$log_dir/slurmctld.log" "$log_dir/slurmd.log"; do
      echo "--- $f" >&2; tail -n 20 "$f" >&2 2>/dev/null || true
    done
    exit 1
  fi
  sleep 1
done
say "node $node is $state ($(( $(date +%s) - t0 )) s)"
sinfo
