#!/bin/bash
# run.sh FS [MODE]: one workload on FS (ext4|xfs|btrfs) through the logging FUSE disk, then the check.
set -euo pipefail
FS=$1; MODE=${2:-always}
W=/tmp/crashsim/$FS-$MODE; rm -rf $W; mkdir -p $W/fuse $W/m
cd /tmp/crashsim
./fusedbin -size $((${SIZE_MB:-160}<<20)) $W/fuse > $W/fused.log 2>&1 &
FPID=$!
for i in $(seq 50); do [ -e $W/fuse/disk.img ] && break; sleep 0.1; done
case $FS in
  ext4) mkfs.ext4 -q -F $W/fuse/disk.img ;;
  xfs) mkfs.xfs -q -f $W/fuse/disk.img ;;
  btrfs) mkfs.btrfs -q -f $W/fuse/disk.img ;;
esac
LOOP=$(losetup -f --show $W/fuse/disk.img)
mount $LOOP $W/m
mkdir -p $W/m/spool && sync
cd ${REPO:-/work/wt/spoolreview}
CRASHSIM_DIR=$W/m/spool CRASHSIM_CTL=$W/fuse/ctl CRASHSIM_IDS=$W/ids CRASHSIM_MODE=$MODE CRASHSIM_EVENTS=${EVENTS:-3000} \
  go test -count=1 -run TestCrashsimWorkload ./internal/spool
echo "dump $W/log" > $W/fuse/ctl
umount -l $W/m || true
losetup -d $LOOP || true
kill $FPID; wait $FPID || true
ls -la $W/log
[ "${CHECK:-1}" = 0 ] && exit 0
CRASHSIM_MODE=$MODE CRASHSIM_LOG=$W/log CRASHSIM_IDS=$W/ids CRASHSIM_SUBDIR=spool CRASHSIM_EVERY=${EVERY:-1} \
  go test -count=1 -timeout 30m -run TestCrashsimCheck -v ./internal/spool 2>&1 | grep -v "^=== RUN" | tail -${TAILN:-40}
