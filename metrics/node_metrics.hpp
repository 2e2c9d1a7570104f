// What a node's metrics are: the Prometheus families built from one
// node::status() (the README lists them, "Operations"). Nothing is counted
// twice: the pools, supervisors and session registry keep their totals, and
// each scrape reads them.
#pragma once

#include <nlohmann/json.hpp>

#include <prometheus/metric_family.h>

#include <cstdint>
#include <vector>

namespace dspex::metrics {

/// The families of a status snapshot (node::status()). Reads the resident
/// set of every process in its tree from /proc. Tolerates missing parts (a
/// pool that did not answer has no samples); never throws.
std::vector<prometheus::MetricFamily> node_families(const nlohmann::json& status);

} // namespace dspex::metrics
