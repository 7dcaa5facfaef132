#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on a copy of its seed corpus
# (the committed seeds stay as they are; what the run finds is thrown away,
# except a crashing input, kept in ARTIFACTS). Exits non-zero on a crash, a
# sanitizer report, a leak, a slow input or running out of memory.
#
#   run.sh TARGET CORPUS DICT SECONDS ARTIFACTS [libFuzzer options...]
#     DICT is used if the file exists.
set -euo pipefail

bin=${1:?target} corpus=${2:?corpus} dict=${3:?dict} secs=${4:?seconds} art=${5:?artifacts}
shift 5

work=$(mktemp -d "${TMPDIR:-/tmp}/hsmprov-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -R "$corpus"/. "$work"/
mkdir -p "$art"

opts=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$art/")
[ -f "$dict" ] && opts+=(-dict="$dict")

echo "== $(basename "$bin"): ${secs}s on a copy of $corpus"
rc=0
"$bin" "${opts[@]}" "$@" "$work" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "FAIL: $(basename "$bin") exited with $rc; the input that failed is in $art/" >&2
    exit "$rc"
fi
echo "PASS: $(basename "$bin")"
