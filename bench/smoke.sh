#!/usr/bin/env bash
# CTest bench_smoke: bench/run.sh --quick into a temporary directory, then
# check that the CSV has every row it should. Speed is not asserted: a raw or
# software figure must merely exist; hsmprov figures may be n/a while the
# provider lacks an operation.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

bash "$here/run.sh" --quick "$dir" >"$dir/out.txt" 2>"$dir/err.txt" || {
    cat "$dir/out.txt" "$dir/err.txt"
    echo "bench_smoke: run.sh failed"
    exit 1
}
csv=$dir/latest.csv
bad=0

# expect SECTION NAME PATH THREADS figure|any
expect() {
    local row
    row=$(awk -F, -v s="$1" -v n="$2" -v p="$3" -v t="$4" \
        '$1 == s && $2 == n && $3 == p && $4 == t' "$csv")
    if [ -z "$row" ]; then
        echo "missing row: $1 $2 $3 $4 threads"
        bad=1
    elif [ "$5" = figure ] && ! awk -F, '{ exit !($6 + 0 > 0) }' <<<"$row"; then
        # An Ed25519 row may be n/a on a token without CKM_EDDSA, nothing else.
        case $2,$row in
        Ed25519,*CKM_EDDSA* | Ed25519,*'no private key'*) ;;
        *)
            echo "no figure: $row"
            bad=1
            ;;
        esac
    fi
}

for t in 1 2 4 8; do
    for a in RSA-PKCS1 RSA-PSS ECDSA-P256 Ed25519; do
        expect sign "$a" raw-token "$t" figure
        expect sign "$a" raw-session "$t" figure
        expect sign "$a" hsmprov "$t" any
        expect sign "$a" software "$t" figure
    done
done
for a in RSA-PKCS1 RSA-PSS ECDSA-P256 Ed25519; do
    expect init "$a/init" hsmprov 1 any
    expect init "$a/init" software 1 figure
done
for t in 1 2; do
    for a in AES-256-GCM AES-256-CBC RSA-OAEP; do
        expect cipher "$a" raw-token "$t" figure
        expect cipher "$a" raw-session "$t" figure
        expect cipher "$a" hsmprov "$t" any
        expect cipher "$a" software "$t" figure
    done
done
for t in 1 2 4; do
    for a in TLS13-ECDSA-P256 TLS13-RSA-2048; do
        expect tls "$a" hsmprov "$t" any
        expect tls "$a" software "$t" figure
    done
done
if command -v gnuplot >/dev/null && [ ! -s "$dir/latest.png" ]; then
    echo "no plot"
    bad=1
fi
if [ "$bad" -ne 0 ]; then
    cat "$dir/out.txt" "$dir/err.txt"
    exit 1
fi
echo "bench_smoke: $(($(wc -l <"$csv") - 1)) rows, all present"
