#include <dspex/actors/node/detail/host_call_router.hpp>

#include <dspex/actors/node/error.hpp>

#include <cstdio>
#include <exception>

namespace dspex {

host_call_router::~host_call_router() { stop(); }

void host_call_router::set_pool_lookup(std::function<caf::actor(const std::string&)> f) {
  std::lock_guard<std::mutex> g(mx_);
  lookup_ = std::move(f);
}

caf::actor host_call_router::pool(const std::string& name) const {
  std::function<caf::actor(const std::string&)> f;
  {
    std::lock_guard<std::mutex> g(mx_);
    f = lookup_;
  }
  return f ? f(name) : caf::actor{};
}

caf::error host_call_router::add(const std::string& name, function_entry e) {
  if (name.empty())
    return make_error(errc::invalid_request, "a host function needs a name");
  if (!e.async && !e.sync)
    return make_error(errc::invalid_request, "host function '" + name + "' has no body");
  std::lock_guard<std::mutex> g(mx_);
  if (!functions_.emplace(name, std::make_shared<const function_entry>(std::move(e))).second)
    return make_error(errc::invalid_request, "a host function '" + name + "' is registered already");
  return {};
}

void host_call_router::remove(const std::string& name) {
  std::lock_guard<std::mutex> g(mx_);
  functions_.erase(name);
}

std::shared_ptr<const host_call_router::function_entry>
host_call_router::function(const std::string& name) const {
  std::lock_guard<std::mutex> g(mx_);
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : it->second;
}

void host_call_router::run_blocking(std::function<void()> job) {
  std::lock_guard<std::mutex> g(jobs_mx_);
  if (stopping_)
    return;  // the job's reply is never called: its worker is gone too
  jobs_.push_back(std::move(job));
  if (workers_.size() < threads_ && jobs_.size() > 0)
    workers_.emplace_back([this] {
      for (;;) {
        std::function<void()> next;
        {
          std::unique_lock<std::mutex> lk(jobs_mx_);
          jobs_cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
          if (jobs_.empty())
            return;
          next = std::move(jobs_.front());
          jobs_.pop_front();
        }
        try {
          next();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "dspex: a host function threw: %s\n", e.what());
        } catch (...) {
          std::fprintf(stderr, "dspex: a host function threw\n");
        }
      }
    });
  jobs_cv_.notify_one();
}

void host_call_router::stop() {
  std::vector<std::thread> ws;
  {
    std::lock_guard<std::mutex> g(jobs_mx_);
    stopping_ = true;
    ws.swap(workers_);
  }
  jobs_cv_.notify_all();
  for (auto& t : ws)
    if (t.joinable())
      t.join();
}

void host_call_router::started(const std::string& target) {
  std::lock_guard<std::mutex> g(mx_);
  ++in_flight_[target];
  ++total_;
}

void host_call_router::ended(const std::string& target) {
  std::lock_guard<std::mutex> g(mx_);
  auto it = in_flight_.find(target);
  if (it != in_flight_.end() && --it->second == 0)
    in_flight_.erase(it);
}

json host_call_router::status() const {
  std::lock_guard<std::mutex> g(mx_);
  std::uint64_t n = 0;
  json by = json::object();
  for (auto& [t, k] : in_flight_) {
    n += k;
    by[t] = k;
  }
  json fns = json::array();
  for (auto& [name, e] : functions_)
    fns.push_back(name);
  return json{{"in_flight", n}, {"total", total_}, {"by_target", by}, {"functions", fns}};
}

} // namespace dspex
