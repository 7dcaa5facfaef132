#!/usr/bin/env bash
# Installs what hsmprov needs to build and test on Debian 12 (bookworm):
# compiler and CMake, OpenSSL 3 and p11-kit headers, SoftHSM2 (the test
# token) and OpenSC's pkcs11-tool. Run as root (or with sudo available).
# Does nothing when everything is already there.
set -euo pipefail

packages=(
    build-essential cmake pkg-config   # compiler (with the ASan/UBSan runtimes), build
    clang libclang-rt-14-dev           # tests/fuzz: clang and its libFuzzer runtime
    libssl-dev openssl                 # OpenSSL 3 headers and CLI
    libp11-kit-dev p11-kit p11-kit-modules  # RFC 7512 URI parser, p11-kit-proxy.so
    softhsm2                           # the PKCS#11 token the tests and the demo use
    opensc                             # pkcs11-tool, to put keys and certificates in it
    libnss3 libnss3-tools              # NSS's softokn as a second module (tests/nss.sh), certutil
    procps util-linux bsdutils         # kill/ps, setsid, script (PIN prompt test)
    gnuplot-nox                        # bench/: the plot
    apache2 nginx haproxy curl         # tests/server_*.sh: real TLS servers, curl as client
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo)" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
