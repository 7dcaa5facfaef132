#!/usr/bin/env bash
# Apache httpd (event MPM, 2 children x 16 threads, workers as www-data)
# started from conf/servers/apache2.conf with the keys named by pkcs11: URIs
# in SSLCertificateKeyFile: 200 fresh handshakes (TLS 1.3 and 1.2, EC and
# RSA), a graceful restart under load, SIGTERM. Zero failed handshakes, no
# worker crash, a clean stop within 15 s.
# shellcheck source=lib/servers.sh
. "$HSMPROV_TESTS_DIR/lib/servers.sh"

hs_require apache2 "Apache httpd"
apache2=$(command -v apache2 || echo /usr/sbin/apache2)

hs_setup www-data
log=$T/log/apache2-error.log
conf=$T/etc/apache2.conf
hs_free_port
hs_example apache2.conf "$conf"
hp_ok "${HS_ENV[@]}" "$apache2" -f "$conf" -t

hp_step "apache2 -f $conf -DFOREGROUND"
hs_start apache2.conf "$conf" "$T/run/apache2.pid" "${HS_ENV[@]}" "$apache2" -f "$conf" -DFOREGROUND
echo "apache2 pid $HS_PID; processes: $(hs_server_pids | tr '\n' ' ')"
[ "$(ps -o user= --ppid "$HS_PID" | sort -u | tr -d ' \n')" = www-data ] ||
    hp_fail "the workers do not run as www-data: $(ps -o pid=,user= --ppid "$HS_PID")"

hp_step "200 fresh handshakes, 16 at a time"
hs_load 200 first || hp_fail "$HS_FAILED handshakes failed"

hp_step "graceful restart while 200 more handshakes run"
hs_load_start 200 graceful
sleep 1
hp_ok "${HS_ENV[@]}" "$apache2" -f "$conf" -k graceful
hs_load_wait || hp_fail "$HS_FAILED handshakes failed across the graceful restart"
grep -q 'resuming normal operations' "$log" || hp_fail "no restart in the log"
[ "$(grep -c 'resuming normal operations' "$log")" -ge 2 ] || {
    cat "$log" >&2
    hp_fail "the graceful restart did not happen"
}

hp_step "after the restart: 16 more"
hs_load 16 after || hp_fail "$HS_FAILED handshakes failed after the graceful restart"

hp_step "SIGTERM: every process gone within 15 s"
hs_stop "$HS_PID"
hs_no_crash "$log"
cat "$log"
echo "PASS: server_apache"
