// The /metrics endpoint of a node: an HTTP listener (prometheus-cpp's
// Exposer, on civetweb) whose one collectable builds the families from
// node::status() at each scrape (node_metrics.hpp). `dspex run --metrics`
// starts one; an embedder can start its own for its node.
//
//   auto ex = dspex::metrics::exporter::listen("127.0.0.1:9464");
//   if (!ex) ... describe(ex.error()) ...  // before the tree starts: fail early
//   (*ex)->serve(*n);                      // /metrics answers from now on (404 before)
//   (*ex)->port();                         // the bound port (asked 0: a free one)
//
// Destroy it before stopping the node: a scrape reads the node.
#pragma once

#include <dspex/actors/node.hpp>

#include <caf/expected.hpp>

#include <memory>
#include <string>

namespace prometheus {
class Exposer;
class Collectable;
} // namespace prometheus

namespace dspex::metrics {

class exporter {
public:
  /// Listens on `addr` (parse_listen_address form, "127.0.0.1:9464");
  /// an address that cannot be bound is errc::unavailable naming it.
  static caf::expected<std::unique_ptr<exporter>> listen(const std::string& addr);
  ~exporter();

  /// Serves `n`'s metrics on /metrics; `n` must outlive this exporter. Once.
  void serve(node& n);

  int port() const { return port_; }
  /// "http://127.0.0.1:9464/metrics"
  std::string url() const;

private:
  exporter() = default;
  std::string host_;
  int port_ = 0;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

} // namespace dspex::metrics
