// `dspex-bench streams`: streams, cancellation and asyncio handlers (issue 24),
// each side by side with its floor or peers in one run, as a ratio beside
// its target (targets.hpp):
//
//   first-chunk  1 client, 1 worker: time to the first chunk of a generator
//                that yields the payload at once (call_stream) against a
//                unary round trip of the same payload (call), alternating;
//                both with a deadline, both on a request thread;
//   chunks       one handler yields `chunks` chunks of `chunk_bytes`; the
//                caller takes each (ack_chunk) and the stream's chunks/s is
//                compared with the chunk floor: the bare loop's C++ reader
//                on bench/peers/chunk_floor.py, which writes the same chunk
//                frames through the same pipe with nothing else;
//   cancel       a generator yields "started", then spins in pure Python;
//                the caller cancels at that chunk; the sample runs from the
//                cancel (steady_clock) to the handler's finally
//                (time.monotonic_ns: both CLOCK_MONOTONIC on Linux), read
//                back by the next request; p50 / p99;
//   io           W=1, max_concurrency 1000, 2000 client actors, each request
//                awaiting 200 ms on the event loop (async def), against the
//                ideal 5,000 req/s; beside it the same load on request
//                threads (time.sleep) and on multiprocessing.Pool with as
//                many processes as the concurrency budget (mp_peer.py).
//
// The pools load bench/peers/bench_cmds.py (worker.handler_paths +
// worker.handlers). Clients are CAF event-based actors written as
// actors/pool/call.hpp shows (call, call_stream, ack_chunk, cancel), with
// the deadline in the request and no CAF timer.
//
// Output: the table on stdout, <out>/streams.json, progress on stderr.
// Nothing here is asserted by a test.
#pragma once

#include <dspex/bench/python_peer.hpp>
#include <dspex/bench/report.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace dspex::bench {

struct stream_bench_options {
  std::vector<std::string> parts{"first-chunk", "chunks", "cancel", "io"};
  int samples = 2000;              ///< first-chunk: measured pairs (unary + stream)
  int warmup = 200;                ///< first-chunk: pairs before them
  std::size_t payload_bytes = 64;  ///< first-chunk: the payload both carry
  int streams = 30;                ///< chunks: measured streams per system (after 3 warm-up)
  int chunks = 1000;               ///< chunks per stream
  std::size_t chunk_bytes = 64;    ///< each chunk's data (a string of this length)
  int stream_window = 0;           ///< chunks: worker.stream_window; 0 keeps the node's default
  long long stream_window_bytes = 0;  ///< chunks: worker.stream_window_bytes; 0 keeps the default
  int cancel_samples = 300;
  int io_workers = 1;
  int io_concurrency = 1000;       ///< worker.max_concurrency
  int io_clients = 2000;
  int io_wait_ms = 200;
  std::chrono::milliseconds io_duration{5000};  ///< measured window per system
  int mp_processes = 0;            ///< mp.Pool processes; 0: io_workers x io_concurrency
  bool python_peers = true;        ///< the mp.Pool peer of io
  bool sched_batch = true;         ///< worker.sched_batch, the floors' workers likewise
  std::string python = "python3";
  std::string out_dir = "bench/out";
  bool plots = true;
  bool quick = false;
  std::vector<std::string> caf_args;

  /// --quick: 300 pairs, 10 streams, 60 cancels, 2 s I/O windows.
  static stream_bench_options quick_defaults();
  bool wants(const std::string& part) const;
};

struct stream_bench_result {
  stream_bench_options options;
  json machine;
  // first-chunk
  latency_recorder unary, first_chunk;
  // chunks: one sample per stream, its duration (request to final reply)
  latency_recorder dspex_streams, floor_streams;
  std::uint64_t chunks_out_of_order = 0;  ///< dspex: a chunk whose seq was not the next one
  // cancel
  latency_recorder cancel;
  std::uint64_t cancel_missing = 0;  ///< the finally's time could not be read back
  // io
  struct io_run {
    std::string system;    ///< "asyncio", "threads", "mp.Pool"
    int clients = 0;
    double requests_per_s = 0;
    latency_summary latency;
    std::uint64_t errors = 0;
    std::string first_error;
    bool ran = false;
    std::string note;
  };
  std::vector<io_run> io;
  std::vector<std::string> failures;
  std::vector<plot_outcome> plots;
  double load_before = -1, load_after = -1;
  double wall_seconds = 0;

  double ideal_io_per_s() const;
};

/// Runs the parts asked for; a failed measurement lands in failures.
stream_bench_result measure_streams(const stream_bench_options& o, progress_line* progress = nullptr);

void add_stream_rows(report_table& t, const stream_bench_result& r);

json to_json(const stream_bench_result& r);

/// `dspex-bench streams`: measures, prints the table, writes streams.json.
/// Returns 0 when every measurement ran, 1 otherwise.
int run_stream_bench(const stream_bench_options& o);

} // namespace dspex::bench
