#include <dspex/actors/pool/detail/deadlines.hpp>

namespace dspex {

std::optional<deadline_book::clock::time_point> deadline_book::add(clock::time_point at,
                                                                   std::uint64_t key) {
  due_.emplace(at, key);
  if (!armed_.empty() && *armed_.begin() <= at)
    return std::nullopt;
  armed_.insert(at);
  return at;
}

void deadline_book::remove(clock::time_point at, std::uint64_t key) {
  due_.erase({at, key});
}

std::vector<std::uint64_t> deadline_book::fire(clock::time_point fired, clock::time_point now) {
  auto a = armed_.find(fired);
  if (a != armed_.end())
    armed_.erase(a);
  std::vector<std::uint64_t> out;
  while (!due_.empty() && due_.begin()->first <= now) {
    out.push_back(due_.begin()->second);
    due_.erase(due_.begin());
  }
  return out;
}

std::optional<deadline_book::clock::time_point> deadline_book::next() {
  if (due_.empty())
    return std::nullopt;
  auto at = due_.begin()->first;
  if (!armed_.empty() && *armed_.begin() <= at)
    return std::nullopt;
  armed_.insert(at);
  return at;
}

} // namespace dspex
