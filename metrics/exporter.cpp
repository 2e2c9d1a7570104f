#include <dspex/metrics/exporter.hpp>

#include <dspex/actors/error.hpp>
#include <dspex/metrics/node_metrics.hpp>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

namespace dspex::metrics {

namespace {

// Runs on a civetweb thread per scrape. node::status() is thread-safe (a
// scoped actor of its own) and bounded by its own per-actor deadlines.
class node_collectable : public prometheus::Collectable {
public:
  explicit node_collectable(node& n) : n_(n) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    try {
      return node_families(n_.status());
    } catch (...) {
      return {};  // no exception may escape into civetweb's thread
    }
  }

private:
  node& n_;
};

} // namespace

caf::expected<std::unique_ptr<exporter>> exporter::listen(const std::string& addr) {
  std::unique_ptr<exporter> ex(new exporter);
  ex->host_ = addr.substr(0, addr.rfind(':'));
  try {
    // One thread: scrapes come every few seconds, and each walks the tree.
    ex->exposer_ = std::make_unique<prometheus::Exposer>(addr, 1);
  } catch (const std::exception& e) {
    return make_error(errc::unavailable,
                      "metrics: cannot listen on " + addr + " (" + e.what() + ")");
  }
  auto ports = ex->exposer_->GetListeningPorts();
  ex->port_ = ports.empty() ? 0 : ports.front();
  return ex;
}

void exporter::serve(node& n) {
  if (collectable_)
    return;
  collectable_ = std::make_shared<node_collectable>(n);
  exposer_->RegisterCollectable(collectable_);
}

exporter::~exporter() {
  // The listener goes first: no scrape may start on a collectable being freed.
  exposer_.reset();
}

std::string exporter::url() const {
  return "http://" + host_ + ":" + std::to_string(port_) + "/metrics";
}

} // namespace dspex::metrics
