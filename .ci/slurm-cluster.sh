#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests marked `slurm` and for CI.
#
#   .ci/slurm-cluster.sh start    install what is missing (Debian's slurm-wlm and munge), write the
#                                 configuration, start munged, slurmctld and slurmd, wait until the node
#                                 is idle; a second call reuses a running cluster
#   .ci/slurm-cluster.sh stop     stop the three daemons (the configuration and job state stay)
#   .ci/slurm-cluster.sh restart-controller   stop and start slurmctld only (its job state is kept)
#   .ci/slurm-cluster.sh env      print the export line that points Slurm's commands at the cluster
#
# `start` and `env` print only that line on stdout (`eval "$(.ci/slurm-cluster.sh start)"`); messages go to stderr.
#
# Every file lives in $NNUNET_LOSSES_SLURM_DIR (default /tmp/nnunet-losses-slurm): slurm.conf, the
# controller's state, the daemons' logs. Slurm's commands find the cluster through SLURM_CONF, which
# `start` and `env` print. It runs as root (the daemons and the jobs run as root): a CI container or
# a throw-away machine, not a shared host. One partition, `cpu`, holds the node with this machine's
# CPUs and memory; jobs are tracked by process tree (proctrack/linuxproc, no cgroups needed) and not
# bound to cores (task/none). No accounting database: the study reads job states from squeue and
# scontrol, which the controller keeps for MinJobAge seconds after a job ends.
set -euo pipefail

DIR="${NNUNET_LOSSES_SLURM_DIR:-/tmp/nnunet-losses-slurm}"
CONF="$DIR/slurm.conf"
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"

fail() { echo "slurm-cluster: $*" >&2; exit 1; }

install_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || fail "installing ${missing[*]} needs root (apt-get); run as root or install them first"
    echo "slurm-cluster: installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
    local cpus memory
    cpus="$(nproc)"
    memory="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    cat >"$CONF" <<EOF
ClusterName=nnunetlosses
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    running "$DIR/munge/munged.pid" && return
    munged --force --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" || fail "munged did not start; see $DIR/munge/munged.log"
}

start_controller() {
    running "$DIR/slurmctld.pid" && return
    slurmctld || fail "slurmctld did not start; see $DIR/slurmctld.log"
}

wait_idle() {
    for _ in $(seq 120); do
        if [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = "idle" ]; then
            return
        fi
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    fail "the node $NODE is not idle after 60 s (sinfo: $(sinfo -h -N -o '%N %T %E' 2>&1)); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

case "${1:-}" in
start)
    install_missing
    if ! running "$DIR/slurmctld.pid" || ! running "$DIR/slurmd.pid"; then
        [ -f "$CONF" ] || write_config
        start_munge
        grep -q "^AuthInfo" "$CONF" || sed -i "2i AuthInfo=socket=$DIR/munge/munge.socket" "$CONF"
        start_controller
        running "$DIR/slurmd.pid" || slurmd || fail "slurmd did not start; see $DIR/slurmd.log"
    fi
    wait_idle
    echo "export SLURM_CONF=$CONF"
    ;;
stop)
    for daemon in slurmd slurmctld munge/munged; do
        if running "$DIR/$daemon.pid"; then
            pid="$(cat "$DIR/$daemon.pid")"
            kill "$pid"
            while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
        fi
    done
    ;;
restart-controller)
    running "$DIR/slurmctld.pid" || fail "slurmctld is not running; use: $0 start"
    pid="$(cat "$DIR/slurmctld.pid")"
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    start_controller
    wait_idle
    ;;
env)
    echo "export SLURM_CONF=$CONF"
    ;;
*)
    echo "usage: $0 start|stop|restart-controller|env" >&2
    exit 2
    ;;
esac
