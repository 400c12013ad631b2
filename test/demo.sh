#!/usr/bin/env bash
# Brings up the lab (real Keystone + Swift on 127.0.0.1), builds imagefs and
# mounts the container "demo-images" of user demo on /tmp/imagefs-demo, in
# the background. `test/demo.sh stop` unmounts it and stops the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
mnt=${IMAGEFS_DEMO_DIR:-/tmp/imagefs-demo}
state=${LAB_DIR:-/var/tmp/imagefs-lab}/demo
mkdir -p "$state"

if [ "${1:-}" = stop ]; then
  if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    kill -TERM "$(cat "$state/pid")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$state/pid")" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$state/pid"
  test/lab/lab.sh down
  exit 0
fi

# What the README's Quick start uses: FUSE, getfattr (attr); sha256sum and
# head are coreutils; swift (python3-swiftclient) comes with the lab.
need=()
for p in fuse3 attr coreutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
test/lab/lab.sh up
eval "$(test/lab/lab.sh env)"
go build -buildvcs=auto -o "$state/imagefs" ./cmd/imagefs
swift post demo-images
mkdir -p "$mnt"
if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
  echo "imagefs is already serving $mnt (pid $(cat "$state/pid"))"
  exit 0
fi
setsid "$state/imagefs" mount demo-images "$mnt" >"$state/imagefs.log" 2>&1 &
echo $! >"$state/pid"
for _ in $(seq 1 100); do
  grep -q " $mnt fuse" /proc/self/mounts && break
  kill -0 "$(cat "$state/pid")" 2>/dev/null || { cat "$state/imagefs.log"; exit 1; }
  sleep 0.1
done
cat <<MSG

imagefs is serving Swift container demo-images on $mnt (log: $state/imagefs.log).
Try:
  head -c 200M /dev/urandom > /tmp/disk.img
  cp /tmp/disk.img $mnt/ && sha256sum /tmp/disk.img $mnt/disk.img
  getfattr -n user.imagefs.sha256 $mnt/disk.img
  eval "\$(test/lab/lab.sh env)"; swift stat demo-images disk.img
Stop it all with: test/demo.sh stop
MSG
