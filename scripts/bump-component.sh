#!/usr/bin/env bash
# Moves a component built from source (components/NAME) to another upstream
# release: the pin in profiles/versions.toml and the component's go.mod and
# go.sum, together, with Go doing the module work (go get, go mod tidy; for
# Kubernetes every staging module is replaced with the release's v0.N.M first).
# Commit the three files together. See docs/build.md ("Components from source").
#
#   scripts/bump-component.sh etcd 3.6.17
#   scripts/bump-component.sh kubernetes 1.37.3
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/bump-component.sh NAME VERSION (e.g. etcd 3.6.17)"
name=${1:?$usage}
version=${2:?$usage}
version=${version#v}
dir=components/$name
spec=$dir/component.toml
[ -f "$spec" ] || { echo "bump-component: no $spec" >&2; exit 1; }
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "bump-component: $version is not MAJOR.MINOR.PATCH" >&2; exit 1; }

value() { sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" "$spec"; }
upstream=$(value upstream)
pin=$(value pin)
[ -n "$upstream" ] && [ -n "$pin" ] || { echo "bump-component: $spec lacks pin or upstream" >&2; exit 1; }

export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod GOENV=off
fail() { echo "bump-component: $*" >&2; exit 1; }

# All or nothing: go.mod and go.sum come back as they were if any step fails.
moddir=$PWD/$dir
cp "$moddir/go.mod" "$moddir/go.mod.orig"
cp "$moddir/go.sum" "$moddir/go.sum.orig"
finished=""
cleanup() {
    if [ -n "$finished" ]; then
        rm -f "$moddir/go.mod.orig" "$moddir/go.sum.orig"
    else
        mv -f "$moddir/go.mod.orig" "$moddir/go.mod"
        mv -f "$moddir/go.sum.orig" "$moddir/go.sum"
        echo "bump-component: failed; $dir/go.mod and go.sum are as they were" >&2
    fi
}
trap cleanup EXIT
cd "$dir"

if [ "$upstream" = k8s.io/kubernetes ]; then
    # k/k requires its staging modules at v0.0.0 and replaces them with
    # ./staging/... in its own go.mod, which Go ignores in a dependency:
    # replace each with the published v0.MINOR.PATCH of the same release.
    download=$(go mod download -json "k8s.io/kubernetes@v$version") ||
        fail "k8s.io/kubernetes@v$version: $(sed -n 's/^\t"Error": "\(.*\)",*$/\1/p' <<<"$download")"
    k8s_mod=$(sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p' <<<"$download")
    [ -f "$k8s_mod" ] || fail "no go.mod of k8s.io/kubernetes@v$version in the download"
    staging=$(sed -n 's/^\t\(k8s.io\/[a-z0-9-]*\) => \.\/staging\/.*/\1/p' "$k8s_mod")
    # The old release's replaces go, and so do requirements of staging
    # modules at the old release (tidy puts back those still needed).
    drops=()
    for old in $(sed -n 's/^\t\(k8s.io\/[a-z0-9-]*\) => .*/\1/p' go.mod); do
        drops+=("-dropreplace=$old" "-droprequire=$old")
    done
    [ "${#drops[@]}" -eq 0 ] || go mod edit "${drops[@]}"
    # One replace block, as k/k writes it.
    {
        printf 'replace (\n'
        for module in $staging; do
            printf '\t%s => %s v0.%s\n' "$module" "$module" "${version#*.}"
        done
        printf ')\n'
    } >>go.mod
    go mod edit -fmt
    # k/k's godebug default follows its go line; a dependency's is ignored.
    godebug=$(sed -n 's/^godebug default=\(.*\)$/\1/p' "$k8s_mod")
    [ -z "$godebug" ] || go mod edit -godebug="default=$godebug"
fi

# The upstream module, and every module of its repository that go.mod
# requires at the old release (etcd's api, client, pkg, etcdctl, etcdutl).
old=$(go mod edit -json | grep -A1 "\"Path\": \"$upstream\"" | sed -n 's/.*"Version": "\(.*\)".*/\1/p' || true)
[ -n "$old" ] || fail "$dir/go.mod does not require $upstream (component.toml's upstream)"
repo=$(echo "$upstream" | cut -d/ -f1-2)
modules=$(go list -m -f '{{.Path}} {{.Version}}' all) || fail "go list -m all failed in $dir"
targets=("$upstream@v$version")
while read -r module module_version; do
    case "$module" in "$repo"/*) ;; *) continue ;; esac
    if [ "$module_version" = "$old" ] && [ "$module" != "$upstream" ]; then
        targets+=("$module@v$version")
    fi
done <<<"$modules"
# Indirect requirements go: tidy puts back those the new release needs, at
# the versions its own graph asks for. Kept, the old release's would stay
# wherever they are higher (Go's minimal version selection never lowers
# one): moving Kubernetes from 1.37 to 1.36 kept 1.37's CSI spec, which
# 1.36's kubelet does not compile against.
indirect=()
for module in $(go mod edit -json | awk '/"Path":/ { path = $2 } /"Indirect": true/ { print path }' | tr -d '",'); do
    indirect+=("-droprequire=$module")
done
[ "${#indirect[@]}" -eq 0 ] || go mod edit "${indirect[@]}"
go get "${targets[@]}"
go mod tidy
cd - >/dev/null

# The pin: `version` in the [PIN] table of profiles/versions.toml.
pins=profiles/versions.toml
awk -v table="[$pin]" -v version="$version" '
    /^\[/ { in_table = ($0 == table) }
    in_table && /^version = / { $0 = "version = \"" version "\""; done = 1 }
    { print }
    END { if (!done) exit 1 }
' "$pins" >"$pins.new" || { rm -f "$pins.new"; fail "no [$pin] version in $pins"; }
mv "$pins.new" "$pins"
finished=1
echo "bump-component: $name $version (git diff $pins $dir)" >&2
