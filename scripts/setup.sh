#!/usr/bin/env bash
# Install what Skiff's build, demo and tests need on a fresh Debian/Ubuntu machine (as root).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }

# gcc + libc6-dev: static attacker programs in the escape tests; busybox-static: test images; runc/containerd: interop tests; iproute2/nftables: CNI tests;
# docker-registry/skopeo: registry pull tests on loopback;
# qemu + kernel + kmod: VM tests; protobuf-compiler: the CRI API (k8s-cri builds it);
# etcd-server: the control plane's etcd backend tests (a 3-member cluster on loopback);
# golang + grpc-go + protoc plugins: a Go CRI client (crictl's gRPC stack) in the tests;
# systemd: systemd-analyze checks the units in vm/systemd (minimal images lack it);
# openssl: the join test checks the CA pin with kubeadm's own openssl recipe.
# golang-github-golang-protobuf-1-5-dev named: left to itself apt picks 1-3, which cannot
# decode the stubs Debian's protoc-gen-go 1.28 makes (the Go CRI test fails on a fresh machine).
pkgs=(busybox-static runc containerd iproute2 nftables iptables docker-registry skopeo ca-certificates curl gcc libc6-dev qemu-system-x86 linux-image-amd64 kmod protobuf-compiler etcd-server
      golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev protoc-gen-go protoc-gen-go-grpc systemd openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null
fi
