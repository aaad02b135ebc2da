#!/usr/bin/env bash
# End-to-end "real world" test of a five-city p2pcdn federation, all inside
# this machine, in network namespaces:
#
#   p2pe-br   a bridge (br0) joining every namespace below (10.0.0.0/8, one L2)
#   p2pe-mN   instance N (N = 1 Frankfurt, 2 New York, 3 Singapore,
#             4 São Paulo, 5 Sydney): `p2pcdn serve` on 10.N.0.1, ports 53/80/443
#   p2pe-cN   client network N: an unbound recursive resolver on 10.N.1.2
#             (stub-zone for demo.p2pcdn.test -> the five instances, EDNS
#             Client Subnet sent to them, egress from 10.9.N.2, an address the
#             geo database does not place, so only ECS can steer), the
#             client's own address 10.N.1.3, and /etc/netns/p2pe-cN/resolv.conf
#             pointing at the resolver.
#
# From each client namespace, with ordinary tools and no p2pcdn-specific flags:
# dig answers the city's mirror first, curl fetches the published bytes,
# headless Chromium renders the page with its stylesheet and image. Then the
# failure drills: SIGKILL Singapore's mirror (clients move to the next nearest
# within answer_ttl + 5 s), restart it (it comes back), publish a new version
# (every client sees it, never a mix of versions within one manifest);
# partition Sydney's mirror off the network, publish v3 (the rest converge
# and steer around it; it keeps serving v2), heal (it converges to v3 and
# its clients come back to it).
#
# Needs root and: ip (iproute2), unbound, dig (bind9-dnsutils), curl, chromium,
# certutil (libnss3-tools), python3, timeout/flock (coreutils/util-linux).
# Installs nothing. Everything it makes carries the prefix "p2pe" (namespaces,
# /etc/netns/p2pe-cN, /tmp/p2pe.XXXXXX, the lock /run/p2pe-world.lock) and is
# removed on exit, also on failure, timeout or Ctrl-C; only the lock file stays.
# Env: P2PCDN = the binary (default target/debug/p2pcdn); P2PE_TIMEOUT = overall
# bound in seconds (default 600); P2PE_BIG_MIB = size of files/big.bin (8);
# P2PE_KEEP=1 keeps the temp dir (logs, fetched files, screenshots);
# P2PE_TRACE=FILE writes a bash trace there.
# Prints "N passed, M failed" alone on the last line and exits non-zero on any failure.
set -euo pipefail

# ---- overall time bound: re-exec under timeout(1) -------------------------
if [ -z "${P2PE_BOUNDED:-}" ]; then
    export P2PE_BOUNDED=1
    # timeout signals its whole process group on expiry; our TERM trap cleans up.
    exec timeout --kill-after=30 "${P2PE_TIMEOUT:-600}" bash "$0" "$@"
fi

[ -n "${P2PE_TRACE:-}" ] && { exec 8>>"$P2PE_TRACE"; BASH_XTRACEFD=8; set -x; }
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
P2PCDN="${P2PCDN:-$ROOT/target/debug/p2pcdn}"
GEO="$ROOT/geodata/test/steering-test-city.mmdb"
ASSETS="$ROOT/src/demo_assets"
PFX=p2pe
ZONE=demo.p2pcdn.test
WWW="www.$ZONE"
TTL=5                       # answer_ttl of steered answers
CITIES=(_ frankfurt newyork singapore saopaulo sydney)
LAT=(_ 50.11 40.71 1.35 -23.55 -33.87)
LON=(_ 8.68 -74.01 103.82 -46.63 151.21)
BIG_MIB="${P2PE_BIG_MIB:-8}"
T0=$(date +%s)
export NO_COLOR=1   # plain logs from p2pcdn (tracing-subscriber honours it)

# ---- bookkeeping and cleanup ------------------------------------------------
PIDS=()        # every background process we started
NSS=()         # every network namespace we made (veths and the bridge live inside)
ETCS=()        # every /etc/netns/<ns> directory we made
declare -A MPID=() UPID=()
PASS=0
FAIL=0
SUMMARY_DONE=0
TMP=""
MADE_ETC_NETNS=0

log() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
ok() { PASS=$((PASS + 1)); printf '[%4ds] ok   - %s\n' "$(($(date +%s) - T0))" "$*"; }
bad() { FAIL=$((FAIL + 1)); printf '[%4ds] FAIL - %s\n' "$(($(date +%s) - T0))" "$*"; }

summary() {
    [ "$SUMMARY_DONE" = 1 ] && return 0
    SUMMARY_DONE=1
    log "total run time $(($(date +%s) - T0)) s"
    echo "$PASS passed, $FAIL failed"
}

cleanup() {
    local rc=$?
    set +e
    # A signal's trap can run inside a function whose output is redirected
    # (e.g. into a browser's dump file): report on the script's own stdout/stderr.
    exec 1>&"$OUT_FD" 2>&"$ERR_FD"
    # Nothing may interrupt the cleanup (timeout(1) signals the whole group).
    trap '' TERM INT
    trap - EXIT
    if [ "$SUMMARY_DONE" != 1 ]; then
        if [ "$rc" != 0 ]; then
            bad "aborted (exit status $rc) before all checks ran"
            dump_logs
        fi
        summary
    fi
    local p ns
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 1 30); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    # Anything still running inside our namespaces was started by this script
    # (e.g. a browser's helper processes): end it before deleting the namespace.
    for _ in $(seq 1 30); do
        local left=""
        for ns in "${NSS[@]}"; do left+="$(ip netns pids "$ns" 2>/dev/null) "; done
        [ -z "${left// /}" ] && break
        for p in $left; do kill -KILL "$p" 2>/dev/null; done
        sleep 0.1
    done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    for ns in "${ETCS[@]}"; do rm -rf "/etc/netns/$ns"; done
    [ "$MADE_ETC_NETNS" = 1 ] && rmdir /etc/netns 2>/dev/null
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "${P2PE_KEEP:-}" = 1 ]; then touch "$TMP/.keep"; log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    if [ "$rc" = 0 ] && [ "$FAIL" != 0 ]; then rc=1; fi
    exit "$rc"
}
exec {OUT_FD}>&1 {ERR_FD}>&2
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

dump_logs() {
    [ -n "$TMP" ] && [ -d "$TMP/log" ] || return 0
    local f
    for f in "$TMP"/log/m[1-5].log "$TMP"/log/unbound-c[1-5].log; do
        [ -s "$f" ] || continue
        echo "---- last lines of $(basename "$f")"
        grep -v ' info: ' "$f" | tail -n 15
    done
}

# The lock (fd 9) and the saved stdout/stderr are not handed to long-lived
# children (see start_mirror): a process that outlived a killed run must not
# hold the lock. Such leftovers live in our namespaces and are swept below.

# ---- preconditions ------------------------------------------------------------
[ "$(id -u)" = 0 ] || { echo "world.sh: needs root (network namespaces, ports 53/80/443)" >&2; exit 2; }
for tool in ip unbound dig curl chromium certutil python3 timeout cmp flock; do
    command -v "$tool" >/dev/null || { echo "world.sh: missing tool: $tool" >&2; exit 2; }
done
[ -x "$P2PCDN" ] || { echo "world.sh: no p2pcdn binary at $P2PCDN (set P2PCDN)" >&2; exit 2; }

# One run at a time on this machine; namespaces left by a run that was killed
# outright (SIGKILL, no cleanup) carry our prefix and are removed first.
exec 9>"/run/$PFX-world.lock"
flock -w 60 9 || { echo "world.sh: another run holds /run/$PFX-world.lock" >&2; exit 2; }
for ns in $(ip netns list | awk '{print $1}' | grep "^$PFX-" || true); do
    log "removing stale namespace $ns from an earlier run"
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" || true
    rm -rf "/etc/netns/$ns"
done
for d in /tmp/"$PFX".??????; do   # temp dirs of killed runs (not those kept on purpose)
    [ -d "$d" ] && [ ! -e "$d/.keep" ] && { log "removing stale $d"; rm -rf "$d"; }
done

TMP="$(mktemp -d "/tmp/$PFX.XXXXXX")"
mkdir -p "$TMP/log" "$TMP/zones" "$TMP/tls" "$TMP/fetch"
log "temp dir $TMP, binary $P2PCDN"

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---- network ------------------------------------------------------------------
mkns() {
    ip netns add "$1"
    NSS+=("$1")
    ip -n "$1" link set lo up
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}
# attach NS: a veth pair, "eth0" inside NS, "<port>" on the bridge.
attach() {
    local ns=$1 port=$2
    ip -n "$PFX-br" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$PFX-br" link set "$port" master br0 up
    ip -n "$ns" link set eth0 up
}

log "building the network"
[ -d /etc/netns ] || MADE_ETC_NETNS=1
mkns "$PFX-br"
ip -n "$PFX-br" link add br0 type bridge
ip -n "$PFX-br" link set br0 up
for n in 1 2 3 4 5; do
    mkns "$PFX-m$n"
    attach "$PFX-m$n" "m$n"
    ip -n "$PFX-m$n" addr add "10.$n.0.1/8" dev eth0
    mkns "$PFX-c$n"
    attach "$PFX-c$n" "c$n"
    ip -n "$PFX-c$n" addr add "10.$n.1.3/8" dev eth0   # the client (primary address)
    ip -n "$PFX-c$n" addr add "10.$n.1.2/8" dev eth0   # its ISP resolver
    ip -n "$PFX-c$n" addr add "10.9.$n.2/8" dev eth0   # the resolver's egress: no location
    mkdir -p "/etc/netns/$PFX-c$n"
    ETCS+=("$PFX-c$n")
    echo "nameserver 10.$n.1.2" >"/etc/netns/$PFX-c$n/resolv.conf"
done

# ---- keys, certificates, configs, zone ---------------------------------------------
log "keys, certificates, configs"
"$P2PCDN" keygen --out "$TMP/owner.key" >/dev/null 2>&1
"$P2PCDN" pubkey "$TMP/owner.key" >"$TMP/owner.pub"
MIRRORS=()
for n in 1 2 3 4 5; do
    mkdir -p "$TMP/m$n"
    "$P2PCDN" keygen --out "$TMP/m$n/node.key" >/dev/null 2>&1
    MIRRORS+=(--mirror "$("$P2PCDN" pubkey "$TMP/m$n/node.key")")
    "$P2PCDN" --log warn dev-cert --ca-dir "$TMP/tls" --out "m$n" \
        "ns$n.$ZONE" "$WWW" "$ZONE" "10.$n.0.1" >/dev/null
done
CA="$TMP/tls/ca.pem"

{
    echo "; demo.p2pcdn.test as the test world's registry would delegate it"
    echo "\$ORIGIN $ZONE."
    echo "\$TTL 300"
    echo "@    IN SOA ns1 hostmaster ( 2026112401 3600 600 1209600 60 )"
    for n in 1 2 3 4 5; do
        echo "@    IN NS  ns$n"
        echo "ns$n IN A   10.$n.0.1"
    done
    echo "www  IN A   10.1.0.1   ; fallback: the origin"
} >"$TMP/zones/$ZONE.zone"

for n in 1 2 3 4 5; do
    {
        echo "# p2pcdn instance: ${CITIES[$n]} (examples/federation/${CITIES[$n]}.toml, test-world addresses)"
        echo "data_dir = \"$TMP/m$n/data\""
        echo "zones_dir = \"$TMP/zones\""
        echo "geodata = \"$GEO\""
        echo
        echo "[node]"
        echo "name = \"ns$n.$ZONE\""
        echo "key = \"$TMP/m$n/node.key\""
        echo "addresses = [\"10.$n.0.1\"]"
        echo "latitude = ${LAT[$n]}"
        echo "longitude = ${LON[$n]}"
        echo "capacity_rps = 5000"
        echo
        echo "[dns]"
        echo "listen = [\"10.$n.0.1:53\"]"
        echo "answer_ttl = $TTL"
        echo
        echo "[http]"
        echo "listen = [\"10.$n.0.1:80\"]"
        echo
        echo "[https]"
        echo "listen = [\"10.$n.0.1:443\"]"
        echo "cert = \"$TMP/tls/m$n.pem\""
        echo "key = \"$TMP/tls/m$n.key\""
        echo
        echo "[federation]"
        echo "ca_file = \"$CA\""
        echo "webpki_roots = false"
        echo "probe_interval_ms = 500"
        echo "gossip_interval_ms = 500"
        echo "peers = ["
        for p in 1 2 3 4 5; do
            [ "$p" = "$n" ] && continue
            echo "    { url = \"https://ns$p.$ZONE\", address = \"10.$p.0.1\" },  # ${CITIES[$p]}"
        done
        echo "]"
        echo
        echo "[[site]]"
        echo "hostname = \"$WWW\""
        echo "zone = \"$ZONE\""
        echo "owner_key_file = \"$TMP/owner.pub\""
        echo "tls_cert = \"$TMP/tls/m$n.pem\""
        echo "tls_key = \"$TMP/tls/m$n.key\""
    } >"$TMP/m$n.toml"
    "$P2PCDN" --log warn check --config "$TMP/m$n.toml" >"$TMP/log/check-m$n.log" 2>&1 ||
        { cat "$TMP/log/check-m$n.log"; false; }
done

# The sample site (the demo's page, stylesheet and image, a big file), with a
# version marker in every file that changes between versions.
make_site() {
    local dir=$1 ver=$2
    mkdir -p "$dir/img" "$dir/files"
    sed "s|</main>|<p id=\"version\">SITEVER-$ver</p>\n</main>|" "$ASSETS/index.html" >"$dir/index.html"
    { cat "$ASSETS/style.css"; echo "/* SITEVER-$ver */"; } >"$dir/style.css"
    echo "SITEVER-$ver" >"$dir/version.txt"
    cp "$ASSETS/logo.png" "$dir/img/logo.png"
}
make_site "$TMP/site-v1" v1
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$TMP/site-v1/files/big.bin"
grep -q "SITEVER-v1" "$TMP/site-v1/index.html"

publish() {
    in_ns "$PFX-m1" "$P2PCDN" --log warn publish --quiet --config "$TMP/m1.toml" --site "$WWW" \
        --key "$TMP/owner.key" "${MIRRORS[@]}" "$1"
}
log "publishing v1 at the origin (Frankfurt)"
publish "$TMP/site-v1"

# ---- processes ---------------------------------------------------------------------
start_mirror() {
    local n=$1
    ip netns exec "$PFX-m$n" "$P2PCDN" --log info serve --config "$TMP/m$n.toml" \
        >>"$TMP/log/m$n.log" 2>&1 9>&- {OUT_FD}>&- {ERR_FD}>&- &
    MPID[$n]=$!
    PIDS+=("$!")
}

for n in 1 2 3 4 5; do
    mkdir -p "$TMP/c$n"
    cat >"$TMP/c$n/unbound.conf" <<EOF
# An ISP's recursive resolver for client network $n (${CITIES[$n]}).
server:
    verbosity: 1
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    directory: "$TMP/c$n"
    pidfile: "$TMP/c$n/unbound.pid"
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    interface: 10.$n.1.2
    port: 53
    outgoing-interface: 10.9.$n.2
    access-control: 10.0.0.0/8 allow
    # RFC 6761 makes *.test a built-in NXDOMAIN zone; this resolver serves it by stub.
    local-zone: "test." nodefault
    # This world has no Internet: refuse everything but the test zone instead
    # of trying the root servers (which are unreachable from here anyway).
    local-zone: "." refuse
    local-zone: "$ZONE." transparent
    # No DNSSEC validation (no trust anchors); EDNS Client Subnet towards the authorities.
    module-config: "subnetcache iterator"
    send-client-subnet: 10.0.0.0/8
    max-client-subnet-ipv4: 24
    # Keep the authority's order of addresses (nearest mirror first).
    rrset-roundrobin: no
    infra-keep-probing: yes
    # An ISP would set these to its liking; keep them small for the test.
    msg-cache-size: 4m
    rrset-cache-size: 4m

stub-zone:
    name: "$ZONE"
    stub-addr: 10.1.0.1
    stub-addr: 10.2.0.1
    stub-addr: 10.3.0.1
    stub-addr: 10.4.0.1
    stub-addr: 10.5.0.1

remote-control:
    control-enable: no
EOF
    unbound-checkconf "$TMP/c$n/unbound.conf" >"$TMP/log/checkconf-c$n.log" 2>&1 ||
        { cat "$TMP/log/checkconf-c$n.log"; false; }
done

log "starting five instances and five resolvers"
for n in 1 2 3 4 5; do start_mirror "$n"; done
for n in 1 2 3 4 5; do
    ip netns exec "$PFX-c$n" unbound -d -c "$TMP/c$n/unbound.conf" \
        >>"$TMP/log/unbound-c$n.log" 2>&1 9>&- {OUT_FD}>&- {ERR_FD}>&- &
    UPID[$n]=$!
    PIDS+=("$!")
done

# ---- helpers for the checks ---------------------------------------------------------
# wait_until SECS CMD...: true once CMD succeeds, polling every 0.25 s.
wait_until() {
    local secs=$1; shift
    local end=$(($(date +%s%N) + secs * 1000000000))
    while :; do
        "$@" && return 0
        [ "$(date +%s%N)" -lt "$end" ] || return 1
        sleep 0.25
    done
}
# The client's view: addresses for www, in the order its resolver gives them.
client_dig() {
    in_ns "$PFX-c$1" dig +short +time=2 +tries=2 -b "10.$1.1.3" "$WWW" A 2>/dev/null | grep -E '^[0-9.]+$' || true
}
first_addr() { client_dig "$1" | head -n1; }
first_is() { [ "$(first_addr "$1")" = "$2" ]; }
# client_curl N OUT PATH...: fetch over HTTPS as the client would; prints remote_ip per transfer.
client_curl() {
    local n=$1 out=$2; shift 2
    local args=() i=0 p
    for p in "$@"; do
        i=$((i + 1))
        args+=(-o "$out.$i" "https://$WWW$p")
    done
    in_ns "$PFX-c$n" curl -sS --fail --max-time 20 --connect-timeout 3 --cacert "$CA" \
        --interface "10.$n.1.3" -w '%{remote_ip} %{http_code} %header{last-modified}\n' "${args[@]}"
}
health_has_site() {
    in_ns "$PFX-c1" curl -s --max-time 2 "http://10.$1.0.1/.well-known/p2pcdn/v1/health" 2>/dev/null |
        grep -q "\"$WWW\""
}
dns_up() {
    in_ns "$PFX-c1" dig +short +time=1 +tries=1 -b 10.1.1.3 "@10.$1.0.1" "$ZONE" SOA 2>/dev/null | grep -q hostmaster
}
resolver_up() {
    in_ns "$PFX-c$1" dig +time=1 +tries=1 -b "10.$1.1.3" "@10.$1.1.2" "ns1.$ZONE" A 2>/dev/null | grep -q 'status: NOERROR'
}

# ---- bring-up -------------------------------------------------------------------------
log "waiting for the federation to replicate v1 and converge"
for n in 1 2 3 4 5; do
    wait_until 30 dns_up "$n" || { bad "instance $n answers DNS on 10.$n.0.1:53"; false; }
    wait_until 30 resolver_up "$n" || { bad "resolver of client network $n answers"; false; }
done
for n in 1 2 3 4 5; do
    if wait_until 90 health_has_site "$n"; then
        ok "mirror $n (${CITIES[$n]}) holds a verified copy of $WWW"
    else
        bad "mirror $n (${CITIES[$n]}) holds a verified copy of $WWW within 90 s"
    fi
done
all_own_first() { local n; for n in 1 2 3 4 5; do first_is "$n" "10.$n.0.1" || return 1; done; }
wait_until 60 all_own_first || true
log "bring-up done"

# ---- 1. DNS: each city's clients get their city's mirror first -------------------------
for n in 1 2 3 4 5; do
    got="$(client_dig "$n" | tr '\n' ' ')"
    if [ "${got%% *}" = "10.$n.0.1" ]; then
        ok "c$n (${CITIES[$n]}): dig $WWW -> $got(own city's mirror first)"
    else
        bad "c$n (${CITIES[$n]}): dig $WWW -> '$got', expected 10.$n.0.1 first"
    fi
done
# The resolvers query from 10.9.N.2, which the geo database does not place, so
# the answers above were steered by the client subnet unbound sent (ECS). The
# authority echoes that subnet with a non-zero scope, so unbound caches per /24.
noecs="$(in_ns "$PFX-c3" dig +short +time=2 +tries=1 -b 10.9.3.2 @10.1.0.1 +noedns "$WWW" A 2>/dev/null | tr '\n' ' ')"
log "for comparison, the resolver's egress without ECS gets: $noecs"
ecs="$(in_ns "$PFX-c3" dig +time=2 +tries=1 -b 10.9.3.2 @10.1.0.1 +subnet=10.3.1.0/24 "$WWW" A 2>/dev/null)"
if grep -q 'CLIENT-SUBNET: 10.3.1.0/24/[1-9]' <<<"$ecs" && grep -qE "^$WWW\.\s.*\sA\s+10\.3\.0\.1" <<<"$ecs"; then
    ok "authority echoes ECS 10.3.1.0/24 with a non-zero scope and answers 10.3.0.1 first"
else
    bad "authority ECS echo/answer for 10.3.1.0/24: $(grep -E 'CLIENT-SUBNET|IN\s+A' <<<"$ecs" | tr '\n' ' ')"
fi

# ---- 2. HTTPS: byte-identical files from the city's mirror ----------------------------
for n in 1 2 3 4 5; do
    out="$TMP/fetch/c$n-v1"
    if ips="$(client_curl "$n" "$out" /files/big.bin / /style.css /img/logo.png /version.txt 2>"$out.err")" &&
        cmp -s "$out.1" "$TMP/site-v1/files/big.bin" && cmp -s "$out.2" "$TMP/site-v1/index.html" &&
        cmp -s "$out.3" "$TMP/site-v1/style.css" && cmp -s "$out.4" "$TMP/site-v1/img/logo.png" &&
        cmp -s "$out.5" "$TMP/site-v1/version.txt"; then
        ip1="$(head -n1 <<<"$ips" | cut -d' ' -f1)"
        if [ "$ip1" = "10.$n.0.1" ]; then
            ok "c$n: curl https://$WWW/files/big.bin ($BIG_MIB MiB), /, /style.css, /img/logo.png byte-identical, from 10.$n.0.1"
        else
            bad "c$n: files byte-identical but fetched from $ip1, expected 10.$n.0.1"
        fi
    else
        bad "c$n: curl fetch of the published files (byte-identical): $(tr '\n' ' ' <"$out.err") $(tr '\n' ' ' <<<"${ips:-}")"
    fi
done

# ---- 3. A browser: headless Chromium renders the page with its CSS and image --------------
# Chromium on Linux trusts the CA through an NSS database in $HOME/.pki/nssdb.
CHOME="$TMP/chrome-home"
mkdir -p "$CHOME/.pki/nssdb"
certutil -d "sql:$CHOME/.pki/nssdb" -N --empty-password
certutil -d "sql:$CHOME/.pki/nssdb" -A -t "C,," -n "$PFX-test-ca" -i "$CA"

chromium_run() {   # N OUT_PREFIX: the rendered DOM to OUT.html, a screenshot to OUT.png
    local n=$1 out=$2
    ip netns exec "$PFX-c$n" env HOME="$CHOME" timeout --foreground --kill-after=5 90 chromium \
        --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-default-apps --disable-extensions --disable-dev-shm-usage \
        --hide-scrollbars --window-size=800,600 --force-device-scale-factor=1 \
        --user-data-dir="$(mktemp -d "$TMP/chrome-profile.XXXXXX")" \
        --screenshot="$out.png" --dump-dom "https://$WWW/" >"$out.html" 2>"$out.err" \
        9>&- {OUT_FD}>&- {ERR_FD}>&-
}

# Counts pixels of the logo's orange ring (only in the image), the logo's and
# heading's blue (image + CSS), and the CSS page background #f4f7fb.
cat >"$TMP/pngcheck.py" <<'EOF'
import collections, struct, sys, zlib
def pixel_counts(path):
    d = open(path, 'rb').read()
    assert d[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat = 8, b''
    while pos < len(d):
        (l,) = struct.unpack('>I', d[pos:pos + 4]); t = d[pos + 4:pos + 8]; c = d[pos + 8:pos + 8 + l]
        pos += 12 + l
        if t == b'IHDR':
            w, h, bd, ct, _, _, il = struct.unpack('>IIBBBBB', c)
            assert bd == 8 and ct in (2, 6) and il == 0, (bd, ct, il)
        elif t == b'IDAT':
            idat += c
    raw = zlib.decompress(idat)
    bpp = 3 if ct == 2 else 4
    stride = w * bpp
    lo, hi = int.from_bytes(b'\x7f' * stride, 'big'), int.from_bytes(b'\x80' * stride, 'big')
    counts = collections.Counter()
    prev = bytes(stride); i = 0
    for _ in range(h):
        f = raw[i]; line = raw[i + 1:i + 1 + stride]; i += 1 + stride
        if f == 2:   # Up: bytewise add of the previous row, all bytes at once
            a, b = int.from_bytes(line, 'big'), int.from_bytes(prev, 'big')
            line = (((a & lo) + (b & lo)) ^ ((a ^ b) & hi)).to_bytes(stride, 'big')
        elif f != 0:
            line = bytearray(line)
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0; b = prev[x]; cc = prev[x - bpp] if x >= bpp else 0
                if f == 1: line[x] = (line[x] + a) & 255
                elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
                elif f == 4:
                    p = a + b - cc; pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else cc)) & 255
            line = bytes(line)
        counts.update(line[x:x + 3] for x in range(0, stride, bpp))
        prev = line
    return counts
want = {'orange': (240, 160, 40), 'blue': (30, 120, 200), 'background': (244, 247, 251)}
n = dict.fromkeys(want, 0)
for px, k in pixel_counts(sys.argv[1]).items():
    for name, v in want.items():
        if all(abs(a - b) <= 6 for a, b in zip(px, v)):
            n[name] += k
print(' '.join(f'{k}={v}' for k, v in n.items()))
sys.exit(0 if n['orange'] >= 200 and n['blue'] >= 200 and n['background'] >= 1000 else 1)
EOF

for n in 1 2 3 4 5; do
    out="$TMP/fetch/chromium-c$n"
    t_c=$(date +%s%N)
    if chromium_run "$n" "$out"; then
        log "c$n: chromium took $((($(date +%s%N) - t_c) / 1000000)) ms"
        if grep -q '<title>p2pcdn demo site</title>' "$out.html" &&
            grep -q 'Hello from p2pcdn' "$out.html" && grep -q 'SITEVER-v1' "$out.html"; then
            ok "c$n: chromium --dump-dom https://$WWW/ shows the page (title, heading, v1)"
        else
            bad "c$n: chromium --dump-dom: page not as published: $(head -c 300 "$out.html" | tr '\n' ' ')"
        fi
        if px="$(python3 "$TMP/pngcheck.py" "$out.png")"; then
            ok "c$n: chromium screenshot shows the logo image and the stylesheet's colours ($px)"
        else
            bad "c$n: chromium screenshot lacks the image or CSS colours ($px)"
            cp "$out.png" "/tmp/$PFX-screenshot-c$n.png" 2>/dev/null || true
        fi
    else
        bad "c$n: chromium ran: $(tail -n 3 "$out.err" 2>/dev/null | tr '\n' ' ')"
    fi
done
[ "${P2PE_KEEP:-}" = 1 ] && cp "$TMP/fetch/chromium-c3.png" "/tmp/$PFX-screenshot-c3.png" 2>/dev/null || true

# ---- 4. Drill: Singapore's mirror dies, then comes back -----------------------------
log "drill: SIGKILL mirror 3 (Singapore, pid ${MPID[3]})"
kill -KILL "${MPID[3]}"
wait "${MPID[3]}" 2>/dev/null || true
t_kill=$(date +%s%N)
DRILL_OK=0
DRILL_FAIL=0
moved() {   # a fetch from c3 (counted), and c3's resolver no longer answers the dead mirror first
    if client_curl 3 "$TMP/fetch/c3-drill" /version.txt >/dev/null 2>&1 &&
        cmp -s "$TMP/fetch/c3-drill.1" "$TMP/site-v1/version.txt"; then
        DRILL_OK=$((DRILL_OK + 1))
    else
        DRILL_FAIL=$((DRILL_FAIL + 1))
        return 1
    fi
    local f
    f="$(first_addr 3)"
    [ -n "$f" ] && [ "$f" != "10.3.0.1" ]
}
if wait_until $((TTL + 5)) moved; then
    ms=$((($(date +%s%N) - t_kill) / 1000000))
    first="$(first_addr 3)"
    if [ "$first" = "10.5.0.1" ]; then
        ok "c3 moved to the next nearest mirror (Sydney, 10.5.0.1) ${ms} ms after the kill (bound $((TTL + 5)) s); fetches meanwhile: $DRILL_OK ok, $DRILL_FAIL failed"
    else
        bad "c3 moved to $first after ${ms} ms, expected the next nearest, Sydney 10.5.0.1"
    fi
else
    bad "c3 did not move off the dead mirror within $((TTL + 5)) s: dig -> $(client_dig 3 | tr '\n' ' '); fetches: $DRILL_OK ok, $DRILL_FAIL failed"
fi
ips="$(client_curl 3 "$TMP/fetch/c3-moved" /files/big.bin 2>/dev/null)" || ips="failed"
if [ "${ips%% *}" = "10.5.0.1" ] && cmp -s "$TMP/fetch/c3-moved.1" "$TMP/site-v1/files/big.bin"; then
    ok "c3 fetches https://$WWW/files/big.bin byte-identical from Sydney while its mirror is down"
else
    bad "c3 fetch while its mirror is down: $ips"
fi
# Every other city is unaffected.
for n in 1 2 4 5; do
    f="$(first_addr "$n")"
    [ "$f" = "10.$n.0.1" ] && ok "c$n still gets its own mirror while 3 is down" ||
        bad "c$n got '$f' while 3 is down, expected 10.$n.0.1"
done

log "drill: restarting mirror 3"
start_mirror 3
t_back=$(date +%s%N)
back() {
    [ "$(first_addr 3)" = "10.3.0.1" ] || return 1
    local ips
    ips="$(client_curl 3 "$TMP/fetch/c3-back" /version.txt 2>/dev/null)" &&
        [ "${ips%% *}" = "10.3.0.1" ] && cmp -s "$TMP/fetch/c3-back.1" "$TMP/site-v1/version.txt"
}
if wait_until 30 back; then
    ok "mirror 3 is back: c3 gets 10.3.0.1 first and fetches from it $((($(date +%s%N) - t_back) / 1000000)) ms after the restart"
else
    bad "mirror 3 not back for c3 within 30 s: dig -> $(client_dig 3 | tr '\n' ' ')"
fi

# ---- 5. Publish v2: everyone sees it, never mixed within one manifest version ----------
make_site "$TMP/site-v2" v2
cp "$TMP/site-v1/files/big.bin" "$TMP/site-v2/files/big.bin"

tag_of() { grep -ho 'SITEVER-v[0-9]*' "$1" 2>/dev/null | head -n1; }
# One client keeps fetching sequences: index, version.txt and style.css in one
# curl (one DNS answer, one connection). Per file it logs
# "<seq> <ip> <code> <tag> <last-modified>"; a failed sequence logs "<seq> FAIL <rc>".
poller() {
    local n=$1 out="$TMP/fetch/poll-c$n" seq=0 lines rc i ip code lm
    local until=$(($(date +%s) + 150))
    # Stops when told, when the script is gone, or after 150 s at most.
    while [ ! -e "$TMP/stop-pollers" ] && kill -0 $$ 2>/dev/null && [ "$(date +%s)" -lt "$until" ]; do
        seq=$((seq + 1))
        rm -f "$out".[0-9]
        rc=0
        lines="$(client_curl "$n" "$out" / /version.txt /style.css 2>/dev/null)" || rc=$?
        if [ "$rc" != 0 ]; then
            echo "$seq FAIL $rc"
        else
            i=0
            while read -r ip code lm; do
                i=$((i + 1))
                echo "$seq $ip $code $(tag_of "$out.$i") $lm"
            done <<<"$lines"
        fi
        sleep 0.1
    done >"$TMP/log/poll-c$n.log"
}
seen_v2() { grep -q ' SITEVER-v2 ' "$TMP/log/poll-c$1.log" 2>/dev/null; }

log "polling from every client while v2 is published at the origin"
POLLERS=()
for n in 1 2 3 4 5; do
    poller "$n" 9>&- &
    POLLERS+=("$!")
    PIDS+=("$!")
done
sleep 2
publish "$TMP/site-v2"
t_pub=$(date +%s%N)
declare -A V2_MS=()
end=$(($(date +%s) + 90))
while [ "$(date +%s)" -lt "$end" ]; do
    for n in 1 2 3 4 5; do
        if [ -z "${V2_MS[$n]:-}" ] && seen_v2 "$n"; then
            V2_MS[$n]=$((($(date +%s%N) - t_pub) / 1000000))
        fi
    done
    [ "${#V2_MS[@]}" = 5 ] && break
    sleep 0.2
done
sleep 3   # more sequences once everyone has v2: the new version stays
touch "$TMP/stop-pollers"
for p in "${POLLERS[@]}"; do wait "$p" 2>/dev/null || true; done

for n in 1 2 3 4 5; do
    if [ -n "${V2_MS[$n]:-}" ]; then
        ok "c$n sees v2 within ${V2_MS[$n]} ms of publishing (first from $(grep -m1 ' SITEVER-v2 ' "$TMP/log/poll-c$n.log" | cut -d' ' -f2))"
    else
        bad "c$n never saw v2 within 90 s"
    fi
    last="$(tail -n 3 "$TMP/log/poll-c$n.log" | cut -d' ' -f4 | sort -u | tr '\n' ' ')"
    if [ "$last" = "SITEVER-v2 " ]; then
        ok "c$n's last sequence is all v2"
    else
        bad "c$n's last sequence: '$last'"
    fi
done
# Group every fetched file by its manifest version (Last-Modified is the
# manifest's issued time, the same for every file of a version): each group
# must carry exactly one site version, and no sequence may fail.
cat >"$TMP/rollout.py" <<'PY'
import collections, sys
groups = collections.defaultdict(set)
seqs = collections.defaultdict(set)
fails = bad = 0
for path in sys.argv[1:]:
    c = path.rsplit('-', 1)[1].split('.')[0]
    for line in open(path):
        f = line.split(None, 4)
        if len(f) < 3:
            continue
        seqs[(c, f[0])]
        if f[1] == 'FAIL':
            fails += 1
            print(f'{c} seq {f[0]}: fetch failed, curl exit {f[2]}')
            continue
        if len(f) < 5 or f[2] != '200' or not f[3].startswith('SITEVER-'):
            bad += 1
            print(f'{c} seq {f[0]}: unexpected response: {line.strip()}')
            continue
        groups[f[4].strip()].add(f[3])
        seqs[(c, f[0])].add(f[4].strip())
mixed = {lm: tags for lm, tags in groups.items() if len(tags) > 1}
for lm, tags in mixed.items():
    print(f'MIXED: manifest issued {lm} served {sorted(tags)}')
straddle = sum(1 for v in seqs.values() if len(v) > 1)
print(f'RESULT sequences={len(seqs)} manifests={len(groups)} mixed={len(mixed)} '
      f'failed={fails} unexpected={bad} spanning-the-switch={straddle}')
PY
python3 "$TMP/rollout.py" "$TMP"/log/poll-c[1-5].log >"$TMP/log/rollout.txt" || true
res="$(grep '^RESULT' "$TMP/log/rollout.txt" || true)"
if grep -q ' manifests=2 mixed=0 failed=0 unexpected=0 ' <<<"$res"; then
    ok "rollout: never a mix of old and new files within one manifest version, no failed fetch (${res#RESULT })"
else
    bad "rollout consistency: ${res:-no result}; $(grep -v '^RESULT' "$TMP/log/rollout.txt" | head -n 5 | tr '\n' ';')"
fi
for n in 1 2 3 4 5; do
    out="$TMP/fetch/c$n-v2"
    if client_curl "$n" "$out" / /style.css /version.txt /files/big.bin >/dev/null 2>&1 &&
        cmp -s "$out.1" "$TMP/site-v2/index.html" && cmp -s "$out.2" "$TMP/site-v2/style.css" &&
        cmp -s "$out.3" "$TMP/site-v2/version.txt" && cmp -s "$out.4" "$TMP/site-v2/files/big.bin"; then
        ok "c$n: v2 files byte-identical to what was published"
    else
        bad "c$n: v2 files differ from what was published"
    fi
done

# ---- 6. Drill: Sydney is partitioned away, v3 is published, the partition heals ------
# mirror_version N: the version.txt mirror N serves, fetched from c1's network.
mirror_version() {
    in_ns "$PFX-c1" curl -sS --fail --max-time 5 --connect-timeout 2 --cacert "$CA" \
        --resolve "$WWW:443:10.$1.0.1" "https://$WWW/version.txt" 2>/dev/null
}
make_site "$TMP/site-v3" v3
cp "$TMP/site-v1/files/big.bin" "$TMP/site-v3/files/big.bin"
log "drill: partition: Sydney's mirror (m5) cut off the network"
ip -n "$PFX-br" link set m5 down
publish "$TMP/site-v3"
t_part=$(date +%s%N)
others_v3() { local n; for n in 1 2 3 4; do [ "$(mirror_version "$n")" = "SITEVER-v3" ] || return 1; done; }
if wait_until 30 others_v3; then
    ok "partition: mirrors 1-4 converged to v3 $((($(date +%s%N) - t_part) / 1000000)) ms after publishing"
else
    bad "partition: mirrors 1-4 serve $(for n in 1 2 3 4; do printf '%s ' "$(mirror_version "$n")"; done)30 s after publishing, expected v3"
fi
# c5's clients go to the nearest reachable mirror holding v3: Singapore.
c5_singapore_v3() {
    local ips
    first_is 5 10.3.0.1 || return 1
    ips="$(client_curl 5 "$TMP/fetch/c5-part" /version.txt 2>/dev/null)" &&
        [ "${ips%% *}" = "10.3.0.1" ] && cmp -s "$TMP/fetch/c5-part.1" "$TMP/site-v3/version.txt"
}
if wait_until $((TTL + 15)) c5_singapore_v3; then
    ok "partition: c5 is steered off the unreachable Sydney mirror to Singapore and fetches v3, $((($(date +%s%N) - t_part) / 1000000)) ms after the cut"
else
    bad "partition: c5 gets '$(first_addr 5)' first (expected Singapore 10.3.0.1) or not v3, $((TTL + 15)) s after the cut"
fi
# The cut-off side keeps serving its last verified version, intact.
got="$(in_ns "$PFX-m5" curl -sS --fail --max-time 5 --cacert "$CA" \
    --resolve "$WWW:443:10.5.0.1" "https://$WWW/version.txt" 2>/dev/null)"
[ "$got" = "SITEVER-v2" ] && ok "partition: Sydney still serves v2 on its side" ||
    bad "partition: Sydney serves '$got' on its side, expected v2"
log "drill: partition heals"
ip -n "$PFX-br" link set m5 up
t_heal=$(date +%s%N)
m5_v3() { [ "$(mirror_version 5)" = "SITEVER-v3" ]; }
if wait_until 60 m5_v3; then
    ok "healed: Sydney converged to v3 $((($(date +%s%N) - t_heal) / 1000000)) ms after the partition healed"
else
    bad "healed: Sydney still serves '$(mirror_version 5)' 60 s after the partition healed"
fi
c5_home_v3() {
    local ips
    first_is 5 10.5.0.1 || return 1
    ips="$(client_curl 5 "$TMP/fetch/c5-healed" /version.txt /files/big.bin 2>/dev/null)" &&
        [ "${ips%% *}" = "10.5.0.1" ] &&
        cmp -s "$TMP/fetch/c5-healed.1" "$TMP/site-v3/version.txt" &&
        cmp -s "$TMP/fetch/c5-healed.2" "$TMP/site-v3/files/big.bin"
}
if wait_until $((TTL + 30)) c5_home_v3; then
    ok "healed: c5 is steered back to Sydney and fetches v3 byte-identical, $((($(date +%s%N) - t_heal) / 1000000)) ms after healing"
else
    bad "healed: c5 gets '$(first_addr 5)' first or not v3 from Sydney within $((TTL + 30)) s"
fi

# ---- done ---------------------------------------------------------------------------
[ "$FAIL" = 0 ] || dump_logs
summary
[ "$FAIL" = 0 ]
