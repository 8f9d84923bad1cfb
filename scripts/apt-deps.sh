#!/usr/bin/env bash
# Installs the Debian packages given as arguments that are not installed yet
# (`make deps`). Idempotent: with everything installed it runs no apt command.
#
# One repair on top of `apt-get install`: machines can come with QEMU packages
# at a version their apt sources do not offer (for example qemu-utils 10.x
# from bookworm-backports, installed by an image builder that then removed
# the backports source). bookworm's qemu-system-x86 (7.2) cannot be installed
# next to them ("qemu-utils : Breaks: qemu-system-common (< 8.0)"). Every
# installed package built from the qemu source is then moved to the version
# of qemu-system-x86's candidate (a downgrade when it came from backports),
# so the tests run the QEMU the configured archive provides, the same one
# everywhere. Enabling backports instead would change the machine's apt
# sources and give a QEMU version nobody tested with.
set -euo pipefail

missing=()
for p in "$@"; do
	dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=600 update -qq

# The QEMU alignment above: pkg=version for each installed qemu-source package
# whose version differs from what qemu-system-x86's candidate needs.
pins=()
target=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: //p')
if [ -n "$target" ] && [ "$target" != "(none)" ]; then
	while read -r status pkg version arch source; do
		[ "$status" = installed ] && [ "$source" = qemu ] || continue
		want=$target
		# Architecture-independent packages (qemu-system-data) carry the
		# source version, without a binNMU suffix such as "+b3".
		[ "$arch" = all ] && want=${target%+b[0-9]*}
		[ "$version" = "$want" ] && continue
		if apt-cache madison "$pkg" | awk -F' [|] ' '{print $2}' | grep -qxF "$want"; then
			echo "deps: $pkg $version is installed but qemu-system-x86 is $target: installing $pkg=$want"
			pins+=("$pkg=$want")
		fi
	done < <(dpkg-query -W -f='${db:Status-Status} ${Package} ${Version} ${Architecture} ${source:Package}\n')
fi

DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
	--no-install-recommends ${pins[@]+--allow-downgrades} "${missing[@]}" ${pins[@]+"${pins[@]}"}
