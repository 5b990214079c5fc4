"""dmlkit's airspeed velocity benchmarks (see ``asv_bench/asv.conf.json``)."""
