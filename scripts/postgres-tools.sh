#!/usr/bin/env bash
# Installs what evhost's PostgreSQL tests and local cluster run on, from Debian's packages, when
# it is missing: the PostgreSQL 15 server (its binaries only: no system service is started, the
# tests and scripts/cluster.sh start their own servers in throwaway directories).
set -euo pipefail

have_server() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null
}

if have_server; then
  exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null || { echo "installing PostgreSQL needs root (or sudo)" >&2; exit 1; }
  as_root=(sudo)
fi
# The packages' scripts would start a system cluster; nothing here needs one.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
  trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  postgresql > /dev/null
have_server || { echo "the postgresql package brought no server binaries" >&2; exit 1; }
