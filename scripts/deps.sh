#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build firebrand:
#   protoc (lance's build scripts), mold (the linker .cargo/config.toml names), a C compiler,
#   curl and unzip (scripts/models.sh fetches the test models).
# Does nothing when all are present.
set -euo pipefail
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v mold >/dev/null 2>&1 || missing+=(mold)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.94 or newer (https://rustup.rs)" >&2
  exit 1
fi
