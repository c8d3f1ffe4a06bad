#!/usr/bin/env bash
# Install a single-node Slurm 22.05 cluster from Debian's packages (slurmctld, slurmd, slurm-client, munge) for the
# tests that submit real jobs (tests/integration/test_slurm.py), with a munge key and a slurm.conf describing this
# machine (its CPUs from nproc, its memory from /proc/meminfo). No daemon is started here: the tests start munged,
# slurmctld and slurmd themselves (tests/slurm.py) and stop them at the end.
#
# The configuration is the smallest that runs jobs on a machine without systemd or a cgroup hierarchy to delegate:
# processes tracked by parent pid (proctrack/linuxproc), no task binding (task/none), no accounting database, and
# cons_tres selecting cores and memory, so `--mem=500M` is a request the scheduler books and exports to the job.
#
# Idempotent: packages are installed only when missing, the munge key only when absent, and slurm.conf is rewritten
# only when it is ours (the marker on its first line) and its content changed; a slurm.conf someone else wrote is
# left alone. Runs as root (through sudo otherwise).
# Usage: bash .ci/install-slurm.sh
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

conf_dir=/etc/slurm
conf=$conf_dir/slurm.conf
marker="# written by glia's .ci/install-slurm.sh"
state=/var/spool/slurm-glia
log_dir=/var/log/slurm

missing=""
for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-slurm.sh: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends $missing
fi

# The key every munged of the cluster shares (one node here); munged refuses one others can read.
if ! $sudo test -s /etc/munge/munge.key; then
    echo "install-slurm.sh: writing a munge key" >&2
    $sudo install -d -o munge -g munge -m 0700 /etc/munge
    $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    $sudo chown munge:munge /etc/munge/munge.key
    $sudo chmod 0400 /etc/munge/munge.key
fi

if $sudo test -e "$conf" && [ "$($sudo head -n 1 "$conf")" != "$marker" ]; then
    echo "install-slurm.sh: $conf was not written by this script: left as it is" >&2
    exit 0
fi

host=$(hostname -s)
cpus=$(nproc)
mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
# RealMemory a little under the total (5%, at least 256 MiB): slurmd drains a node that reports less than configured.
mem_mib=$((mem_kib / 1024))
reserve=$((mem_mib / 20 > 256 ? mem_mib / 20 : 256))
real_memory=$((mem_mib - reserve))

new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat >"$new" <<EOF
$marker
# A single-node cluster for Glia's tests: $host with $cpus CPUs and $real_memory MiB for jobs.
ClusterName=glia
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no mail on this machine: slurmctld logs an error for a MailProg it cannot find
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
# Finished jobs stay visible to scontrol for 10 minutes (there is no accounting database to ask afterwards).
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

$sudo install -d -m 0755 "$conf_dir" "$log_dir" "$state"
$sudo install -d -m 0700 "$state/ctld" "$state/d"
if $sudo test -e "$conf" && $sudo cmp -s "$new" "$conf"; then
    echo "install-slurm.sh: $conf is up to date" >&2
else
    $sudo install -m 0644 "$new" "$conf.tmp"
    $sudo mv "$conf.tmp" "$conf"
    echo "install-slurm.sh: wrote $conf ($host: $cpus CPUs, RealMemory=$real_memory MiB)" >&2
fi
