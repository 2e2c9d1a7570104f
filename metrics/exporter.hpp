// The /metrics endpoint of a node: a small HTTP/1.x listener of its own
// (asio, one thread) whose body is prometheus-cpp's text exposition of one
// collectable that builds the families from node::status() at each scrape
// (node_metrics.hpp). `dspex run --metrics` starts one; an embedder can start
// its own for its node.
//
//   auto ex = dspex::metrics::exporter::listen("127.0.0.1:9464");
//   if (!ex) ... describe(ex.error()) ...  // before the tree starts: fail early
//   (*ex)->serve(*n);                      // /metrics answers from now on (404 before)
//   (*ex)->port();                         // the bound port (asked 0: a free one)
//
// Destroy it before stopping the node: a scrape reads the node.
//
// Hostile clients (docs/security.md, "/metrics"): every connection must send
// its whole request head within `request_timeout` of being accepted (a
// client that sends nothing, or trickles a byte at a time, is closed then)
// and within `max_request_bytes`; the answer must be taken within
// `write_timeout`. At most `max_connections` are open: one more closes the
// oldest connection still waiting for its request head (it had the longest
// to send one) or, when every open connection is being answered, gets a 503.
// So idle or slow clients, however many, cannot hold a scrape back for more
// than the time it takes to answer it. Each response closes its connection
// (no keep-alive, as civetweb's default was). The body is rendered on a
// thread of its own (node::status() blocks), one render at a time; requests
// that arrive during a render share the next one.
#pragma once

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>

#include <caf/expected.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace dspex::metrics {

/// The listener's limits, as config `metrics` sets them (actors/node/config.hpp:
/// max_connections 256, request_timeout 5 s, write_timeout 10 s,
/// max_request_bytes 8192).
using exporter_options = dspex::metrics_limits;

class exporter {
public:
  /// Listens on `addr` (parse_listen_address form, "127.0.0.1:9464";
  /// a bare port is loopback); an address that cannot be bound is
  /// errc::unavailable naming it.
  static caf::expected<std::unique_ptr<exporter>> listen(const std::string& addr,
                                                         exporter_options opts = {});
  ~exporter();
  exporter(const exporter&) = delete;
  exporter& operator=(const exporter&) = delete;

  /// Serves `n`'s metrics on /metrics; `n` must outlive this exporter. Once.
  void serve(node& n);

  int port() const { return port_; }
  /// "http://127.0.0.1:9464/metrics"
  std::string url() const;

  /// Connections by outcome so far: {"accepted", "served", "not_found",
  /// "bad_request", "timed_out", "evicted", "refused"} (also on /metrics
  /// as dspex_metrics_http_connections_total). Thread-safe.
  json counters() const;

  struct impl;

private:
  exporter() = default;
  std::string host_;
  int port_ = 0;
  std::shared_ptr<impl> impl_;
};

} // namespace dspex::metrics
