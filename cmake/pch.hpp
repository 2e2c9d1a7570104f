// Precompiled for every heavy translation unit: these headers dominate the
// build time on 2 cores, and nothing of ours belongs here.
#pragma once
#include <caf/all.hpp>
#include <nlohmann/json.hpp>
#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
