#!/usr/bin/env bash
# The Debian package: built with CPack from the normal build, inspected, checked by
# lintian, installed with dpkg on this machine, used, removed and purged. Needs root
# and a machine without mtlsgw installed; the package is purged at the end either way.
source "$(dirname "$0")/lib.sh"

BUILD=$(dirname "$MTLSGW")
if ldd "$MTLSGW" | grep -q libasan; then
    echo "SKIP: the package is made from the normal build, not this ASan one ($MTLSGW)" >&2
    exit 77
fi
if [ "$(id -u)" != 0 ]; then
    fail "installing a package needs root"
    finish
    exit 1
fi
if dpkg-query -W -f='${Status}' mtlsgw 2>/dev/null | grep -q "installed"; then
    fail "a mtlsgw package is already installed here: not touching it"
    finish
    exit 1
fi

cmake --build "$BUILD" --target package > "$WORK/cpack.log" 2>&1
DEB=$(ls "$BUILD"/mtlsgw_*_amd64.deb)
check "cmake --build --target package makes build/mtlsgw_<version>_amd64.deb" test -f "$DEB"
files=$(dpkg-deb -c "$DEB")
for f in ./usr/bin/mtlsgw ./usr/libexec/mtlsgw/mtlsgw-pkcs11 ./lib/systemd/system/mtlsgw.service ./etc/mtlsgw/mtlsgw.conf \
         ./usr/share/man/man8/mtlsgw.8.gz ./usr/share/man/man5/mtlsgw.conf.5.gz \
         ./usr/share/bash-completion/completions/mtlsgw ./usr/share/doc/mtlsgw/README.md \
         ./usr/share/doc/mtlsgw/copyright ./usr/share/doc/mtlsgw/examples/mtlsgw.conf; do
    expect_contains "package holds $f" " $f" "$files"
done
deps=$(dpkg-deb -f "$DEB" Depends)
for d in android-libboringssl libc-ares2 libconfig9 libp11-kit0 libc6 adduser; do
    expect_contains "Depends (computed from the libraries linked) has $d" "$d" "$deps"
done
expect_contains "Suggests PKCS#11 modules" "softhsm2, opensc-pkcs11, libtpm2-pkcs11-1" "$(dpkg-deb -f "$DEB" Suggests)"
check "/etc/mtlsgw/mtlsgw.conf is a conffile" bash -c "dpkg-deb -e '$DEB' '$WORK/ctl' && grep -qx /etc/mtlsgw/mtlsgw.conf '$WORK/ctl/conffiles'"
if command -v lintian > /dev/null; then
    lint=$(lintian "$DEB" 2>&1 | grep -v "root privileges" || true)
    echo "# lintian: ${lint:-nothing}"
    check "lintian: no errors" bash -c "! grep -q '^E:' <<< '$lint'"
else
    fail "lintian is not installed (integration/deps.sh installs it)"
fi

# ---- installed ----
UNDO+=("dpkg --purge mtlsgw" "rm -rf /etc/mtlsgw")
dpkg -i "$DEB" > "$WORK/dpkg-i.log" 2>&1
check "dpkg -i installs it" bash -c "dpkg-query -W -f='\${Status}' mtlsgw | grep -q 'install ok installed'"
expect_contains "mtlsgw version (the installed binary finds BoringSSL through its RUNPATH)" "BoringSSL" "$(/usr/bin/mtlsgw version)"
out=$(/usr/bin/mtlsgw check -c /etc/mtlsgw/mtlsgw.conf 2>&1) && rc=0 || rc=$?
expect_eq "mtlsgw check -c /etc/mtlsgw/mtlsgw.conf passes as installed" "0 configuration OK: 1 listeners, 0 identities, 0 rules" "$rc $out"
out=$(systemd-analyze verify /lib/systemd/system/mtlsgw.service 2>&1) && rc=0 || rc=$?
expect_eq "systemd-analyze verify on the installed unit" "0 " "$rc $out"
check "the unit runs /usr/bin/mtlsgw" grep -q "^ExecStart=/usr/bin/mtlsgw run -c /etc/mtlsgw/mtlsgw.conf" /lib/systemd/system/mtlsgw.service
check "nothing enabled on install" test ! -e /etc/systemd/system/multi-user.target.wants/mtlsgw.service
check "system user mtlsgw exists, with no shell" bash -c "getent passwd mtlsgw | grep -q ':/usr/sbin/nologin$'"
expect_eq "/etc/mtlsgw/ids: 0750 root:mtlsgw" "750 root:mtlsgw" "$(stat -c '%a %U:%G' /etc/mtlsgw/ids)"
expect_eq "/etc/mtlsgw/mtlsgw.conf: 0640 root:mtlsgw" "640 root:mtlsgw" "$(stat -c '%a %U:%G' /etc/mtlsgw/mtlsgw.conf)"
# The installed gateway finds its installed PKCS#11 signer: a key made on a SoftHSM token.
make_softhsm_token pkg pkgPIN77 pkgSO77
out=$(/usr/bin/mtlsgw identity new pk --subject "/CN=pk" --out "$WORK/pk" \
      --pkcs11 "pkcs11:token=pkg;object=pk?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:$WORK/pkg.pin" 2>&1) \
      && rc=0 || rc=$?
expect_eq "the installed mtlsgw runs /usr/libexec/mtlsgw/mtlsgw-pkcs11 (a key made on a token)" "0" "$rc"
[ "$rc" = 0 ] || echo "$out"
for page in /usr/share/man/man8/mtlsgw.8.gz /usr/share/man/man5/mtlsgw.conf.5.gz; do
    out=$(MANWIDTH=80 man -l "$page" 2>&1)
    expect_contains "man -l renders $(basename "$page" .gz)" "SEE ALSO" "$out"
done
expect_contains "mtlsgw.conf(5) describes caller" "caller [everyone]" "$(MANWIDTH=100 man -l /usr/share/man/man5/mtlsgw.conf.5.gz 2>&1)"
# bash completion: commands, options, identity names from the config given with -c.
cat > "$WORK/ids.conf" <<'CONF'
identities = ( { name = "orders-2027"; certificate = "a.crt"; key = "a.key"; trust = "t.crt"; },
               { name = "billing"; certificate = "b.crt"; key = "b.key"; trust = "t.crt"; } );
CONF
complete_words() {  # complete_words WORD... : what completion offers for the last word
    bash -c 'source /usr/share/bash-completion/bash_completion; source /usr/share/bash-completion/completions/mtlsgw
             COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
             _mtlsgw mtlsgw "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; echo "${COMPREPLY[*]}"' _ "$@"
}
expect_eq "completion: commands" "identity" "$(complete_words mtlsgw id)"
expect_eq "completion: explain's options" "--caller --connect" "$(complete_words mtlsgw explain -c x --c)"
expect_eq "completion: identity subcommands" "check" "$(complete_words mtlsgw identity ch)"
expect_eq "completion: identity names from the config" "orders-2027" \
    "$(complete_words mtlsgw identity check -c "$WORK/ids.conf" ord)"

# ---- remove keeps config and keys; purge removes the package's files and the user ----
echo "not a real key" > /etc/mtlsgw/ids/app1.key
dpkg -r mtlsgw > "$WORK/dpkg-r.log" 2>&1
check "dpkg -r: the binary is gone" test ! -e /usr/bin/mtlsgw
check "dpkg -r: the config stays (a conffile)" test -f /etc/mtlsgw/mtlsgw.conf
check "dpkg -r: keys are left alone" test -f /etc/mtlsgw/ids/app1.key
dpkg --purge mtlsgw > "$WORK/dpkg-purge.log" 2>&1
check "purge: the config is gone" test ! -e /etc/mtlsgw/mtlsgw.conf
check "purge: an operator's key is still left alone" test -f /etc/mtlsgw/ids/app1.key
expect_contains "purge says so" "/etc/mtlsgw/ids is not empty: left in place" "$(cat "$WORK/dpkg-purge.log")"
check "purge: the user is gone" bash -c "! getent passwd mtlsgw"
rm -rf /etc/mtlsgw
left=$(for f in $(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\.||'); do [ -f "$f" ] && echo "$f"; done || true)
expect_eq "purge: no file of the package left behind" "" "$left"
finish
