#!/usr/bin/env bash
# nginx (master as root, 4 workers as www-data) started from
# conf/servers/nginx.conf, ssl_certificate_key naming key files that hold a
# pkcs11: URI (PEM "PKCS#11 PROVIDER URI"): 200 fresh handshakes (TLS 1.3 and
# 1.2, EC and RSA), `nginx -s reload` under load, SIGTERM. Zero failed
# handshakes, no worker crash, a clean stop within 15 s.
# shellcheck source=lib/servers.sh
. "$HSMPROV_TESTS_DIR/lib/servers.sh"

hs_require nginx nginx
nginx=$(command -v nginx || echo /usr/sbin/nginx)

hs_setup www-data
conf=$T/etc/nginx.conf
for obj in ec rsa; do
    hs_uri_pem "pkcs11:token=tls;object=$obj;type=private" "$T/etc/$obj-key.pem"
done
log=$T/log/nginx-error.log
run_nginx() {
    "${HS_ENV[@]}" "$nginx" -e "$log" -c "$conf" "$@"
}
hs_free_port
hs_example nginx.conf "$conf"
hp_ok run_nginx -t

hp_step "nginx -c $conf -g 'daemon off;'"
hs_start nginx.conf "$conf" "$T/run/nginx.pid" \
    "${HS_ENV[@]}" "$nginx" -e "$log" -c "$conf" -g 'daemon off;'
echo "nginx master pid $HS_PID; processes: $(hs_server_pids | tr '\n' ' ')"
[ "$(ps -o user= --ppid "$HS_PID" | sort -u | tr -d ' \n')" = www-data ] ||
    hp_fail "the workers do not run as www-data: $(ps -o pid=,user= --ppid "$HS_PID")"
workers_before=$(ps -o pid= --ppid "$HS_PID" | sort | tr -d ' ' | tr '\n' ' ')

hp_step "200 fresh handshakes, 16 at a time"
hs_load 200 first || hp_fail "$HS_FAILED handshakes failed"

hp_step "nginx -s reload while 200 more handshakes run"
hs_load_start 200 reload
sleep 1
hp_ok run_nginx -s reload
hs_load_wait || hp_fail "$HS_FAILED handshakes failed across the reload"
for _ in $(seq 100); do
    workers_after=$(ps -o pid= --ppid "$HS_PID" | sort | tr -d ' ' | tr '\n' ' ')
    [ "$workers_after" != "$workers_before" ] && break
    sleep 0.1
done
[ "$workers_after" != "$workers_before" ] || hp_fail "no new workers after the reload"

hp_step "after the reload: 16 more"
hs_load 16 after || hp_fail "$HS_FAILED handshakes failed after the reload"

hp_step "SIGTERM: every process gone within 15 s"
hs_stop "$HS_PID"
hs_no_crash "$log"
cat "$log"
echo "PASS: server_nginx"
