#!/bin/bash
# fio random O_DIRECT reads of a warm image (whole in --cache-dir, so
# passed through to the kernel) against the same bytes in a local file on
# the cache's disk. A measurement, not a test: prints one table.
#   eval "$(test/lab/lab.sh env)"; test/bench/fio_warm.sh [SIZE_MIB] [RUNTIME_S]
# PASSTHROUGH=false measures the same with the daemon serving the reads.
set -euo pipefail
size_mib=${1:-1024}
runtime=${2:-15}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /var/tmp/imagefs-fio.XXXXXX)
mnt=$work/mnt cache=$work/cache local=$work/local.img
mkdir -p "$mnt" "$cache"
container=fio-warm-$$
bin=$work/imagefs
(cd "$root" && go build -o "$bin" ./cmd/imagefs)
cleanup() {
	[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	swift delete -q "$container" >/dev/null 2>&1 || true
	swift delete -q "${container}_segments" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
head -c $((size_mib << 20)) /dev/urandom >"$local"
addr=127.0.0.1:$((20000 + RANDOM % 20000))
mount_it() {
	"$bin" mount --create-container --cache-dir "$cache" --cache-size 4GiB --metrics-addr "$addr" \
		--passthrough="${PASSTHROUGH:-true}" "$container" "$mnt" 2>>"$work/log" &
	pid=$!
	for _ in $(seq 100); do mountpoint -q "$mnt" && return; sleep 0.1; done
	echo "mount failed:"; cat "$work/log"; exit 1
}
mount_it
cp "$local" "$mnt/vm.img"
cat "$mnt/vm.img" >/dev/null # the cold read that fills the cache
for _ in $(seq 300); do
	curl -s "http://$addr/metrics" | grep -q '^imagefs_cache_whole_images 1' && break
	sleep 0.1
done
kill "$pid"; wait "$pid" || true; pid=
mount_it # a fresh mount: nothing in the daemon's memory
sync; echo 3 >/proc/sys/vm/drop_caches
run() { # file bs qd -> IOPS
	fio --name=r --filename="$1" --readonly --rw=randread --bs="$2" --iodepth="$3" --direct=1 \
		--ioengine=libaio --runtime="$runtime" --time_based --output-format=json 2>/dev/null |
		python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}
printf '| bs | QD | local file IOPS | warm image IOPS | ratio |\n|---|---|---|---|---|\n'
for bs in 4k 64k; do
	for qd in 1 16; do
		l=$(run "$local" $bs $qd)
		m=$(run "$mnt/vm.img" $bs $qd)
		printf '| %s | %s | %s | %s | %.2f |\n' $bs $qd "$l" "$m" "$(echo "$m / $l" | bc -l)"
	done
done
curl -s "http://$addr/metrics" | grep -E '^imagefs_passthrough_opens_total|^imagefs_fuse_operation_duration_seconds_count\{op="read"\}' || true
