#!/usr/bin/env bash
# haproxy in master-worker mode (nbthread 4, worker as user haproxy) started
# from conf/servers/haproxy.cfg, each crt file holding the certificate and a
# key file with a pkcs11: URI (PEM "PKCS#11 PROVIDER URI"): 200 fresh
# handshakes (TLS 1.3 and 1.2, EC and RSA), a reload through the master
# (SIGUSR2) under load, SIGTERM. Zero failed handshakes, no worker crash, a
# clean stop within 15 s.
# shellcheck source=lib/servers.sh
. "$HSMPROV_TESTS_DIR/lib/servers.sh"

hs_require haproxy haproxy
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)

hs_setup haproxy
conf=$T/etc/haproxy.cfg
mkdir -p "$T/etc/haproxy"
for obj in ec rsa; do
    hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
    cat "$T/etc/$obj-cert.pem" "$T/etc/$obj-key.pem" >"$T/etc/haproxy/$obj.pem"
done
log=$T/log/stdout
hs_free_port
hs_example haproxy.cfg "$conf"
hp_ok "${HS_ENV[@]}" "$haproxy" -c -f "$conf"

hp_step "haproxy -W -f $conf"
hs_start haproxy.cfg "$conf" "$T/run/haproxy.pid" "${HS_ENV[@]}" "$haproxy" -W -f "$conf"
echo "haproxy master pid $HS_PID; processes: $(hs_server_pids | tr '\n' ' ')"
workers() { ps -o pid=,user= --ppid "$HS_PID" | awk '$2 == "haproxy" { print $1 }' | sort | tr '\n' ' '; }
for _ in $(seq 50); do
    workers_before=$(workers)
    [ -n "$workers_before" ] && break
    sleep 0.1
done
[ -n "$workers_before" ] || hp_fail "no worker runs as haproxy: $(ps -o pid=,user=,args= --ppid "$HS_PID")"

hp_step "200 fresh handshakes, 16 at a time"
hs_load 200 first || hp_fail "$HS_FAILED handshakes failed"

hp_step "reload through the master (SIGUSR2) while 200 more handshakes run"
hs_load_start 200 reload
sleep 1
kill -USR2 "$HS_PID"
hs_load_wait || hp_fail "$HS_FAILED handshakes failed across the reload"
for _ in $(seq 100); do
    workers_after=$(workers)
    [ -n "$workers_after" ] && [ "$workers_after" != "$workers_before" ] && break
    sleep 0.1
done
[ "$workers_after" != "$workers_before" ] || hp_fail "no new worker after the reload"

hp_step "after the reload: 16 more"
hs_load 16 after || hp_fail "$HS_FAILED handshakes failed after the reload"

hp_step "SIGTERM: every process gone within 15 s"
hs_stop "$HS_PID"
hs_no_crash "$log"
cat "$log"
echo "PASS: server_haproxy"
