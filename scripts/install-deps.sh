#!/usr/bin/env bash
# Installs what building and testing Globular images needs on Debian 12.
# Idempotent: packages already present are skipped. Needs root (or sudo).
set -euo pipefail

# Host tools by purpose. Keep in sync with docs/architecture.md ("Host tools").
packages=(
    # Rust crates with C parts
    build-essential pkg-config
    # The package stage and the OS-tree formats
    mmdebstrap erofs-utils squashfs-tools cpio zstd
    # erofs-utils 1.8 built from Debian 13's source (below): its build needs
    curl autoconf automake libtool liblz4-dev uuid-dev
    # Disk images: verity, ESP, UKI, systemd-boot, qcow2, layout checks
    cryptsetup-bin mtools dosfstools binutils systemd-boot-efi qemu-utils fdisk
    # Booting images in tests
    qemu-system-x86 ovmf
    # Certificates and verification in tests (openssl verify)
    openssl ca-certificates
    # The firewall's rulesets checked and loaded by the real nft
    nftables
    # The DNS authority asked by real clients in tests; its benchmark
    # (scripts/bench-dns.sh: dnsperf, Knot DNS on the same zone)
    bind9-dnsutils knot-dnsutils dnsperf knot
    # Format=oci archives read and copied by a real OCI client in the build tests
    skopeo
    # `globular image import` tested against the containerd workers run;
    # the static busybox is the test image's program
    containerd busybox-static
    # The build benchmark's JSON (scripts/bench-build.sh, short mode in CI)
    python3
)

# Stand-in pinned artifact in the build tests: Debian's kubectl, unless the
# machine already has a kubectl (another package may own /usr/bin/kubectl).
if ! command -v kubectl >/dev/null; then
    packages+=(kubernetes-client)
fi

missing_packages() {
    local p
    for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            printf '%s\n' "$p"
        fi
    done
}

sudo=""
updated=""
# Two passes: installing one package can remove another that conflicts with
# it (a machine with a backported qemu-utils loses it when Debian 12's
# qemu-system-x86 comes in); the second pass installs the matching version.
for pass in 1 2; do
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && break
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "install-deps: installing ${missing[*]} (pass $pass)" >&2
    if [ -z "$updated" ]; then
        $sudo apt-get update -qq
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
done
mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: still not installed after two passes: ${missing[*]}" >&2
    exit 1
fi

[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Debian's etcd 3.4 (which this script installed before etcd was built from
# source) runs its own unauthenticated etcd.service on localhost: remove it.
if dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
    echo "install-deps: removing Debian's etcd-server and etcd-client (3.4; replaced by components/etcd)" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get remove -y -qq etcd-server etcd-client >/dev/null
fi

# The Rust toolchain: the workspace needs rustc >= 1.89 (Debian 12's own is older).
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found; install a Rust toolchain >= 1.89 (rustup)" >&2
    exit 1
fi
version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.89.0\n' "$version" | sort -V | head -n1)" != "1.89.0" ]; then
    echo "install-deps: rustc $version is older than 1.89" >&2
    exit 1
fi

# Go builds the components from their published modules (components/): the
# machine's toolchain, never a downloaded one (GOTOOLCHAIN=local).
# (env.sh: Go on PATH, the shared cargo target directory.)
source "$(dirname "$0")/env.sh"
if ! command -v go >/dev/null; then
    echo "install-deps: go not found; install Go >= 1.26 (go.dev/dl)" >&2
    exit 1
fi
go_version=$(GOTOOLCHAIN=local go env GOVERSION)
if [ "$(printf '%s\ngo1.26\n' "$go_version" | sort -V | head -n1)" != "go1.26" ]; then
    echo "install-deps: $go_version is older than go1.26" >&2
    exit 1
fi

# mkfs.erofs: Debian 12's erofs-utils 1.5 compresses on one core; 1.8
# compresses in 16 MiB segments on every core (the worker tree in 2.1 s
# instead of 4.2 s on two cores) and writes the same bytes whatever the
# number of workers. Built from Debian 13's source package, the orig tarball
# checked against the sha256 its Sources index gives, into /usr/local
# (ahead of /usr/bin on PATH), with Debian's own configure flags for
# compression and threads. Skipped when that version is already there.
erofs_version=1.8.6
erofs_sha256=5b221dc3fd6d151425b30534ede46fb7a90dc233a8659cba0372796b0a066547
if [ "$(/usr/local/bin/mkfs.erofs --version 2>/dev/null | head -n1)" != "mkfs.erofs (erofs-utils) $erofs_version" ]; then
    erofs_src=$(mktemp -d)
    tarball="$erofs_src/erofs-utils_$erofs_version.orig.tar.gz"
    curl -fsSL --retry 3 -o "$tarball" \
        "http://deb.debian.org/debian/pool/main/e/erofs-utils/erofs-utils_$erofs_version.orig.tar.gz"
    if ! echo "$erofs_sha256  $tarball" | sha256sum --check --status; then
        echo "install-deps: erofs-utils_$erofs_version.orig.tar.gz does not match its pinned sha256" >&2
        rm -rf "$erofs_src"
        exit 1
    fi
    tar -xzf "$tarball" -C "$erofs_src"
    (
        cd "$erofs_src/erofs-utils-$erofs_version"
        ./autogen.sh
        ./configure --prefix=/usr/local --enable-multithreading --with-uuid --disable-fuse
        make -j"$(nproc)"
        $sudo make install
    ) > "$erofs_src/build.log" 2>&1 || {
        echo "install-deps: building erofs-utils $erofs_version failed:" >&2
        tail -n 30 "$erofs_src/build.log" >&2
        rm -rf "$erofs_src"
        exit 1
    }
    rm -rf "$erofs_src"
fi
echo "install-deps: $(/usr/local/bin/mkfs.erofs --version | head -n1) in /usr/local/bin" >&2

# The host tests run the images' etcd: built from components/etcd at the
# pinned version (cached by the builder; seconds when nothing changed) and
# installed in /usr/local/bin, ahead of /usr/bin on PATH.
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p builder
etcd_out=$(mktemp -d)
trap 'rm -rf "$etcd_out"' EXIT
"$builder" component build components/etcd --out "$etcd_out" --quiet
$sudo install -m 0755 "$etcd_out"/etcd "$etcd_out"/etcdctl "$etcd_out"/etcdutl /usr/local/bin/
echo "install-deps: $(/usr/local/bin/etcd --version | head -n1) in /usr/local/bin" >&2
# The host tests of the Kubernetes package run the images' Kubernetes too
# (components/kubernetes: the multicall program and its links).
k8s_out=$(mktemp -d)
trap 'rm -rf "$etcd_out" "$k8s_out"' EXIT
"$builder" component build components/kubernetes --out "$k8s_out" --quiet
$sudo install -D -m 0755 "$k8s_out"/kubernetes /usr/local/lib/kubernetes/kubernetes
for program in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    $sudo ln -sfn /usr/local/lib/kubernetes/kubernetes "/usr/local/bin/$program"
done
echo "install-deps: $(/usr/local/bin/kube-apiserver --version) in /usr/local/bin" >&2
# The backup tests copy archives to a real S3-compatible object store: the
# Versity S3 gateway from components/versitygw (test-only, in no image).
s3_out=$(mktemp -d)
trap 'rm -rf "$etcd_out" "$k8s_out" "$s3_out"' EXIT
"$builder" component build components/versitygw --out "$s3_out" --quiet
$sudo install -m 0755 "$s3_out"/versitygw /usr/local/bin/versitygw
echo "install-deps: $(/usr/local/bin/versitygw --version 2>&1 | head -n1) in /usr/local/bin" >&2
