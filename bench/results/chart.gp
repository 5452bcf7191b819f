set terminal pngcairo size 1200,700 font ',10'
set output '/tmp/bt/bench-full2/ratios.png'
set title 'runhcs / containerd-shim-runc-v2 (lower is better)'
set style fill solid 0.6
set boxwidth 0.7
set xtics rotate by -40 left
set yrange [0:*]
set grid ytics
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'red'
plot '/tmp/bt/bench-full2/ratios.dat' using 1:3:xtic(2) with boxes notitle
