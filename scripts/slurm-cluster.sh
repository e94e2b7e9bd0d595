#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests marked `slurm` (tests/test_slurm.py):
# installs Debian's slurm-wlm and munge when they are missing, writes /etc/slurm/slurm.conf for this
# machine alone (no accounting), and starts munged, slurmctld and slurmd. Needs root (it is meant for
# CI and for containers). Safe to run again: what is running and answers is left alone.
#
#   sudo ./scripts/slurm-cluster.sh          # then: .venv/bin/python -m pytest -m slurm
#   sudo ./scripts/slurm-cluster.sh stop     # stop the daemons it started
#
# It refuses to replace a slurm.conf that it did not write, so it never takes over a real cluster's node.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by transferlab scripts/slurm-cluster.sh"
STATE=/var/lib/transferlab-slurm

say() { echo "slurm-cluster: $*"; }
die() { echo "slurm-cluster: error: $*" >&2; exit 1; }
stop_daemons() {  # the ones this script started, and wait until they are gone
    for daemon in slurmd slurmctld; do
        pid="$(cat "$STATE/$daemon.pid" 2>/dev/null || true)"
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts daemons)"

if [ "${1:-}" = "stop" ]; then
    stop_daemons
    say "stopped slurmd and slurmctld"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: every Slurm message is signed with this key.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
fi

# slurm.conf for this node as slurmd sees it (CPUs, memory), reachable at 127.0.0.1.
node_line="$(slurmd -C | head -1) NodeAddr=127.0.0.1 State=UNKNOWN"
node="$(hostname -s)"
if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a configured Slurm"
fi
mkdir -p "$STATE/ctld" "$STATE/d" "$(dirname "$CONF")"
new_conf="$(cat <<EOF
$MARK
ClusterName=transferlab
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
$node_line
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)"
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    stop_daemons  # running ones keep the old configuration: they start again below
fi

if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    slurmctld -i   # -i: go on when state saved under an earlier configuration does not fit
fi
if ! pgrep -F "$STATE/slurmd.pid" >/dev/null 2>&1; then
    slurmd
fi

# Ready when the node takes jobs; a node that came back from a restart may need resuming.
for _ in $(seq 1 60); do
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null || true)"
    case "$state" in
        idle|mixed|allocated) say "one-node cluster up: node $node ($state), $(sinfo -h -o '%c CPUs, %m MB')"; exit 0 ;;
        down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
die "the node did not become ready; see $STATE/slurmctld.log and $STATE/slurmd.log"
