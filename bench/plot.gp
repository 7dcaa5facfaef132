# Draws hsmbench's CSV: one panel per algorithm, ops/s (or MiB/s, hs/s)
# against threads, one line per path, error bars from min to max.
#   gnuplot -e "csv='latest.csv'; out='latest.png'; names='RSA-PSS ...'; ttl='...'" plot.gp
set terminal pngcairo size 1500,1250 font ",9"
set output out
set datafile separator ","
set key top left font ",8" box opaque
set logscale x 2
set xrange [0.8:20]
set xtics ("1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set yrange [0:*]
set grid
set xlabel "threads"

lt_of(p) = p eq "raw-token" ? 1 : p eq "raw-session" ? 2 : p eq "hsmprov" ? 3 : 4
rows(x) = "< awk -F, -v n=" . nm . " -v p=" . x . " '$2 == n && $3 == p && $6 + 0 > 0' '" . csv . "'"

n = words(names)
set multiplot layout ceil(n / 3.0), 3 title ttl
do for [i = 1:n] {
    nm = word(names, i)
    set title nm
    set ylabel system("awk -F, -v n=" . nm . " '$2 == n { print $5; exit }' '" . csv . "'")
    paths = system("awk -F, -v n=" . nm . " '$2 == n && $6 + 0 > 0 && !s[$3]++ { printf \"%s \", $3 }' '" . csv . "'")
    plot for [p in paths] rows(p) using 4:6:7:8 with yerrorlines lt lt_of(p) lw 2 pt 7 ps 0.6 title p
}
unset multiplot
