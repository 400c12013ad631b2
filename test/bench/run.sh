#!/usr/bin/env bash
# Runs imagefs' benchmarks against the lab (real Swift and Keystone, real
# mounts), as root on the lab machine:
#
#   test/bench/run.sh [BENCH_REGEXP] [go test flags...]
#
#   test/bench/run.sh BenchmarkRead          # the read path (see READ.md)
#   test/bench/run.sh BenchmarkHypervisor    # fio, warm and cold, VM boots (READ.md)
#   test/bench/run.sh BenchmarkList          # ls -l of large directories (LIST.md)
#   test/bench/run.sh . -v                   # everything, with the logs
#
# Each benchmark runs once (-benchtime 1x) and repeats its own rounds
# (BENCH_ROUNDS, default 3) so that one run reports the spread; the output
# is also saved to test/bench/out/<regexp>-<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
# fio for BenchmarkHypervisor (the guest's packages are installed by the
# benchmark itself, through test/labtest).
if ! command -v fio >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio >/dev/null
fi
# BenchmarkList compares with rclone mount.
if ! command -v rclone >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rclone >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rclone >/dev/null; }
fi
export LAB_TOKEN_EXPIRATION=${LAB_TOKEN_EXPIRATION:-120}
test/lab/lab.sh up >/dev/null
eval "$(test/lab/lab.sh env)"
bench=${1:-.}
shift || true
mkdir -p test/bench/out
out=test/bench/out/$(echo "$bench" | tr -c 'A-Za-z0-9\n' _)-$(date +%Y%m%d-%H%M%S).txt
{
  echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), command: test/bench/run.sh $bench $*"
  go test -tags integration -run '^$' -bench "$bench" -benchtime 1x -count 1 -timeout 60m "$@" ./test/bench/
} 2>&1 | tee "$out"
echo "saved to $out"
