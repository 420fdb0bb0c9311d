#!/usr/bin/env bash
# install.sh: installs one-bsud on an OpenNebula frontend (default) or prepares a host (--node).
# Idempotent: a second run changes nothing. `--dry-run` prints every change without making it.
# Run `install.sh --help` for the details.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh [options]            install on the OpenNebula frontend
       install.sh --node [options]     prepare a virtualization host

Frontend (default), as root on the frontend:
  1. builds the release binary (`cargo build --release --locked`), unless --binary is given;
  2. installs the action entries remotes/{datastore,tm}/bsud/* and the binary, once, as
     <remotes>/tm/bsud/one-bsud (the datastore entries run ../../tm/bsud/one-bsud); and the host
     probes im/kvm-probes.d/host/system/bsud-capacity and im/kvm-probes.d/vm/monitor/bsud-vm-disks
     (also in qemu-probes.d when it exists), which `onehost sync` ships to the hosts;
  3. registers bsud in oned.conf (TM_MAD and DATASTORE_MAD -d lists, DATASTORE_MAD -s list,
     TM_MAD_CONF, DS_MAD_CONF, INHERIT_DATASTORE_ATTR for the BSUD_* attributes) and in
     vmm_execrc (LIVE_DISK_SNAPSHOTS kvm-bsud qemu-bsud), editing only the lines it must and
     backing a changed file up first as <file>.bsud-<UTC time>; a file in an unexpected shape is
     refused and nothing is changed;
  4. writes /etc/one/bsud.toml (a documented sample) only when absent;
  5. writes /etc/sudoers.d/one-bsud (the LVM commands the host agent runs with sudo -n; checked
     with visudo -cf), since the frontend may run the agent itself (an image datastore's drive).
  Then: restart oned, run `onehost sync --force`, and `install.sh --node` on each host.

Host (--node), as root on each host:
  installs the binary at the agent path (default /var/tmp/one/tm/bsud/one-bsud, where
  `onehost sync` puts it), the sudoers file, and checks that lvm2 and qemu-utils are present
  (--install-packages installs what is missing with apt-get).

Options:
  --node                 prepare a host instead of the frontend
  --binary PATH          use this one-bsud binary instead of building one
  --remotes DIR          OpenNebula remotes directory (default /var/lib/one/remotes)
  --oned-conf PATH       oned.conf (default /etc/one/oned.conf)
  --vmm-execrc PATH      vmm_execrc (default /etc/one/vmm_exec/vmm_execrc)
  --config PATH          one-bsud configuration (default /etc/one/bsud.toml)
  --sudoers PATH         sudoers file (default /etc/sudoers.d/one-bsud)
  --agent-path PATH      where --node installs the binary (default /var/tmp/one/tm/bsud/one-bsud)
  --user NAME            the OpenNebula user (default oneadmin)
  --root DIR, --prefix DIR
                         install under DIR: every path above is taken inside DIR (staging)
  --install-packages     with --node: apt-get install the missing packages (root only)
  --dry-run              print every change without making it (a build still runs when
                         --binary is not given: the registration is computed by the binary)
  -h, --help             this text
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

here="$(cd "$(dirname "$0")" && pwd)"
node=0 dry=0 install_packages=0 binary="" root=""
remotes=/var/lib/one/remotes
oned_conf=/etc/one/oned.conf
vmm_execrc=/etc/one/vmm_exec/vmm_execrc
config=/etc/one/bsud.toml
sudoers=/etc/sudoers.d/one-bsud
agent_path=/var/tmp/one/tm/bsud/one-bsud
user=oneadmin

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --node) node=1 ;;
    --dry-run) dry=1 ;;
    --install-packages) install_packages=1 ;;
    --binary) need_value "$@"; binary="$2"; shift ;;
    --remotes) need_value "$@"; remotes="$2"; shift ;;
    --oned-conf) need_value "$@"; oned_conf="$2"; shift ;;
    --vmm-execrc) need_value "$@"; vmm_execrc="$2"; shift ;;
    --config) need_value "$@"; config="$2"; shift ;;
    --sudoers) need_value "$@"; sudoers="$2"; shift ;;
    --agent-path) need_value "$@"; agent_path="$2"; shift ;;
    --user) need_value "$@"; user="$2"; shift ;;
    --root|--prefix) need_value "$@"; root="${2%/}"; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$user" in ''|*[!a-z0-9_-]*|[!a-z_]*) die "--user $user is not a plain user name" ;; esac
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root is not a directory"
  root="$(cd "$root" && pwd)"
fi
# Every destination, inside the staging root when one is given.
dest() { printf '%s%s' "$root" "$1"; }

# The owner files for oned get: the OpenNebula user when it exists here and we are root.
owner=""
if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1; then
  owner="$user:$(id -gn "$user")"
fi

changes=0
# install_file SRC DST MODE [OWNER]: copies SRC to DST atomically when the bytes, mode or owner
# differ; says what it did (or would do). OWNER defaults to $owner; "-" leaves the owner alone.
install_file() {
  local src="$1" dst="$2" mode="$3" own="${4:-$owner}" todo="" done=""
  [ "$own" != - ] || own=""
  if [ ! -e "$dst" ]; then
    todo="install $dst" done="installed $dst"
  elif ! cmp -s "$src" "$dst"; then
    todo="update $dst" done="updated $dst"
  elif [ "$(stat -c %a "$dst")" != "$mode" ]; then
    todo="set mode $mode on $dst" done="mode $mode set on $dst"
  elif [ -n "$own" ] && [ "$(stat -c %U:%G "$dst")" != "$own" ]; then
    todo="set owner $own on $dst" done="owner $own set on $dst"
  fi
  [ -n "$todo" ] || return 0
  changes=$((changes + 1))
  if [ "$dry" = 1 ]; then
    say "would $todo"
    return 0
  fi
  mkdir -p "$(dirname "$dst")"
  local tmp
  tmp="$(dirname "$dst")/.$(basename "$dst").install-$$"
  cp "$src" "$tmp"
  chmod "$mode" "$tmp"
  [ -z "$own" ] || chown "$own" "$tmp"
  mv -f "$tmp" "$dst"
  say "$done"
}

# The binary: given, or built from this checkout.
if [ -n "$binary" ]; then
  [ -f "$binary" ] && [ -x "$binary" ] || die "--binary $binary is not an executable file"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found: build one-bsud elsewhere and pass --binary PATH"
  say "building the release binary (cargo build --release --locked)"
  (cd "$here" && cargo build --release --locked --bin one-bsud) >&2
  binary="${CARGO_TARGET_DIR:-$here/target}/release/one-bsud"
fi
version="$("$binary" --version 2>/dev/null)" || die "$binary does not run ($binary --version failed)"
say "using $binary ($version)"

# install_sudoers: the sudoers file for the agent, validated before it is installed.
install_sudoers() {
  local tmp dst
  dst="$(dest "$sudoers")"
  tmp="$(mktemp)"
  "$binary" install sudoers --user "$user" >"$tmp"
  if command -v visudo >/dev/null 2>&1; then
    visudo -cf "$tmp" >/dev/null || { rm -f "$tmp"; die "visudo refuses the generated sudoers file"; }
  else
    say "warning: visudo not found: $dst not validated"
  fi
  if [ "$dry" = 1 ] && [ -e "$dst" ] && ! cmp -s "$tmp" "$dst"; then
    diff -u "$dst" "$tmp" | sed 's/^/    /' || true
  fi
  # sudo ignores a sudoers file that is not root's.
  install_file "$tmp" "$dst" 440 "$( [ "$(id -u)" = 0 ] && echo root:root || echo -)"
  rm -f "$tmp"
}

if [ "$node" = 1 ]; then
  install_file "$binary" "$(dest "$agent_path")" 755
  install_sudoers
  missing=()
  pathdirs="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
  for pair in lvm2:lvcreate qemu-utils:qemu-img; do
    PATH="$pathdirs" command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$install_packages" = 1 ] && [ "$dry" = 0 ] && [ "$(id -u)" = 0 ]; then
      say "installing ${missing[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    elif [ "$install_packages" = 1 ] && [ "$dry" = 1 ]; then
      say "would apt-get install ${missing[*]}"
    else
      say "warning: missing ${missing[*]}: install them (apt-get install ${missing[*]}) or rerun as root with --install-packages"
    fi
  fi
  if id "$user" >/dev/null 2>&1 && ! id -nG "$user" | tr ' ' '\n' | grep -qx disk; then
    say "warning: $user is not in the disk group: the agent reads and writes LVs through it (usermod -aG disk $user)"
  fi
  [ "$changes" = 0 ] && say "host already prepared; nothing changed"
  exit 0
fi

# Frontend. oned.conf and vmm_execrc are planned first: when either is in a shape that cannot
# be edited safely, nothing at all is installed.
conf_args=(install conf --oned-conf "$(dest "$oned_conf")" --vmm-execrc "$(dest "$vmm_execrc")")
"$binary" "${conf_args[@]}" --dry-run >/dev/null || die "nothing was changed"
r="$(dest "$remotes")"
for kind in datastore tm; do
  for src in "$here/remotes/$kind/bsud/"*; do
    install_file "$src" "$r/$kind/bsud/$(basename "$src")" 755
  done
done
install_file "$binary" "$r/tm/bsud/one-bsud" 755
# The binary lives once per host: a copy left elsewhere in the tree by hand is removed.
if [ -e "$r/datastore/bsud/one-bsud" ]; then
  changes=$((changes + 1))
  if [ "$dry" = 1 ]; then say "would remove $r/datastore/bsud/one-bsud"; else
    rm -f "$r/datastore/bsud/one-bsud"; say "removed $r/datastore/bsud/one-bsud (the binary lives in tm/bsud/)"; fi
fi
for probes in kvm-probes.d qemu-probes.d; do
  d="$r/im/$probes"
  # kvm always; qemu only where this OpenNebula has its own probe tree (not a link to kvm's).
  if [ "$probes" = qemu-probes.d ] && { [ ! -d "$d" ] || [ -L "$d" ]; }; then continue; fi
  install_file "$here/remotes/im/kvm-probes.d/host/system/bsud-capacity" "$d/host/system/bsud-capacity" 755
  install_file "$here/remotes/im/kvm-probes.d/vm/monitor/bsud-vm-disks" "$d/vm/monitor/bsud-vm-disks" 755
done

[ "$dry" = 0 ] || conf_args+=(--dry-run)
conf_out="$("$binary" "${conf_args[@]}")" || die "oned.conf/vmm_execrc not changed (see above)"
printf '%s\n' "$conf_out" | sed 's/^/install.sh: /'
if printf '%s\n' "$conf_out" | grep -q ': changed (backup: \|: would change'; then
  changes=$((changes + 1))
  restart_oned=1
fi

cfg="$(dest "$config")"
if [ ! -e "$cfg" ]; then
  install_file "$here/share/bsud.toml" "$cfg" 640 "$( [ -n "$owner" ] && echo "root:${owner#*:}" || echo -)"
fi
install_sudoers

if [ "$changes" = 0 ]; then
  say "everything already installed; nothing changed"
elif [ "$dry" = 1 ]; then
  say "dry run: nothing was changed"
else
  [ "${restart_oned:-0}" = 0 ] || say "restart oned to load the new oned.conf (systemctl restart opennebula)"
  say "then: onehost sync --force, and install.sh --node on each host"
fi
