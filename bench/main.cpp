// dspex-bench: the benchmarks and fault-injection runs (bench/command_line.hpp),
// an executable of their own so the shipped dspex binary holds no bench code.
#include <dspex/bench/command_line.hpp>

int main(int argc, char** argv) { return dspex::bench::dspex_bench_main(argc, argv); }
