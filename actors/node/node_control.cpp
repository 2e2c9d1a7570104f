// Operator control of one child of a node's tree (node.hpp: stop_child,
// start_child, restart_child): the path is walked from the root through
// which_children to the parent supervisor, whose dynamic API does the rest.
// And of a pool's size (scale_pool), which the pool itself carries out.
#include <dspex/actors/node/node.hpp>

#include <dspex/actors/node/detail/node_impl.hpp>

#include <dspex/actors/pool/pool.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

namespace dspex {

namespace sup = supervision;
using namespace std::chrono_literals;

namespace {

// A supervisor answers its API one request at a time; a worker's graceful
// stop and a start awaiting its init fit well within this.
constexpr auto api_timeout = 60s;

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::size_t from = 0;
  for (;;) {
    auto slash = path.find('/', from);
    out.push_back(path.substr(from, slash == std::string::npos ? std::string::npos : slash - from));
    if (slash == std::string::npos)
      return out;
    from = slash + 1;
  }
}

std::string child_list(const std::vector<sup::child_info>& kids) {
  std::string out;
  for (auto& k : kids)
    out += (out.empty() ? "" : ", ") + k.id;
  return out.empty() ? "none" : out;
}

struct located {
  caf::actor parent;
  std::string id;
  sup::child_info info;
};

// The child at `path` and the supervisor it belongs to.
caf::expected<located> locate(caf::scoped_actor& self, const caf::actor& root,
                              const std::string& path) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_request, "path " + path + ": " + why);
  };
  if (!root)
    return make_error(errc::unavailable, "the tree is not running");
  auto segs = split_path(path);
  if (segs.front() != "root")
    return bad("must start with root (as root/pool_sup/workers/w1)");
  for (auto& s : segs)
    if (s.empty())
      return bad("has an empty segment");
  caf::actor at = root;
  std::string at_path = "root";
  for (std::size_t i = 1;; ++i) {
    auto kids = sup::which_children(self, at, caf::duration{api_timeout});
    if (!kids)
      return make_error(errc::unavailable, at_path + " did not answer: " + sup::describe(kids.error()));
    if (i == segs.size())
      return bad("names the root supervisor itself; its children: " + child_list(*kids));
    auto it = std::find_if(kids->begin(), kids->end(),
                           [&](const sup::child_info& c) { return c.id == segs[i]; });
    if (it == kids->end())
      return bad("no child " + segs[i] + " under " + at_path + "; its children: "
                 + child_list(*kids));
    if (i + 1 == segs.size())
      return located{at, segs[i], *it};
    auto next = at_path + "/" + segs[i];
    if (it->type != sup::child_type::supervisor)
      return bad(next + " is a worker, not a supervisor: it has no child " + segs[i + 1]);
    if (!it->handle)
      return bad(next + " is not running (" + sup::to_string(it->status) + ")");
    at = it->handle;
    at_path = next;
  }
}

caf::error api_error(const std::string& path, const caf::error& e) {
  if (sup::is(e, sup::supervision_errc::start_failed))
    return make_error(errc::init_failed, path + " did not start: " + sup::describe(e));
  if (sup::is(e, sup::supervision_errc::running))
    return make_error(errc::invalid_request, path + " is already running");
  if (sup::is(e, sup::supervision_errc::restarting))
    return make_error(errc::invalid_request, path + " is being restarted by its supervisor");
  if (sup::is(e, sup::supervision_errc::simple_one_for_one))
    return make_error(errc::invalid_request,
                      path + " belongs to a simple_one_for_one supervisor: it cannot be "
                             "stopped and started by id");
  return make_error(errc::unavailable, path + ": " + sup::describe(e));
}

} // namespace

caf::error node::stop_child(const std::string& path) {
  caf::scoped_actor self{impl_->sys};
  auto c = locate(self, impl_->root, path);
  if (!c)
    return c.error();
  if (auto e = sup::terminate_child(self, c->parent, c->id, caf::duration{api_timeout}))
    return api_error(path, e);
  return {};
}

caf::error node::start_child(const std::string& path) {
  caf::scoped_actor self{impl_->sys};
  auto c = locate(self, impl_->root, path);
  if (!c)
    return c.error();
  auto r = sup::restart_child(self, c->parent, c->id, caf::duration{api_timeout});
  return r ? caf::error{} : api_error(path, r.error());
}

caf::error node::restart_child(const std::string& path) {
  caf::scoped_actor self{impl_->sys};
  auto c = locate(self, impl_->root, path);
  if (!c)
    return c.error();
  if (c->info.handle)
    if (auto e = sup::terminate_child(self, c->parent, c->id, caf::duration{api_timeout}))
      return api_error(path, e);
  auto r = sup::restart_child(self, c->parent, c->id, caf::duration{api_timeout});
  return r ? caf::error{} : api_error(path, r.error());
}

// The pool actor of local pool `name` (empty: the first pool) for a live
// operation (`verb`: scale, reload); remote pools and groups are refused.
caf::expected<caf::actor> node::local_pool_for(const std::string& name, const char* verb) {
  auto& d = *impl_;
  if (d.stopped)
    return make_error(errc::shutting_down, "the node is stopping");
  auto local = name.empty() && !d.pool_names.empty() ? d.pool_names.front() : name;
  if (std::find(d.remote_names.begin(), d.remote_names.end(), local) != d.remote_names.end())
    return make_error(errc::invalid_request,
                      "pool \"" + local + "\" is a remote pool: " + verb + " it on its own node");
  if (std::find(d.pool_names.begin(), d.pool_names.end(), local) == d.pool_names.end()) {
    auto r = resolve(name);  // says why: unknown name, disabled
    return r ? make_error(errc::invalid_request,
                          name.empty() ? std::string("no pool to ") + verb + " in mode " + to_string(d.mode)
                                       : "\"" + name + "\" is not a pool of this node's tree "
                                                        "(a pool group? " + verb + " its pools)")
             : r.error();
  }
  auto p = d.dir->get("pool:" + local);
  if (!p)
    return make_error(errc::unavailable, "pool \"" + local + "\" is restarting");
  return p;
}

// The pool answers by its own deadline (its workers' start and drain); the
// backstop only covers a pool killed holding the request.
caf::expected<json> node::ask_pool(const caf::actor& p, caf::message msg,
                                   std::chrono::minutes backstop) {
  caf::scoped_actor self{impl_->sys};
  caf::expected<json> out = make_error(errc::unavailable, "the pool did not answer");
  self->request(p, backstop, std::move(msg))
    .receive([&](json& r) { out = std::move(r); },
             [&](caf::error& e) { out = e; });
  return out;
}

caf::expected<json> node::scale_pool(const std::string& name, std::size_t size) {
  if (size < 1 || size > max_pool_size)
    return make_error(errc::invalid_request, "size: expected an integer in [1, "
                                               + std::to_string(max_pool_size) + "], found "
                                               + std::to_string(size));
  auto p = local_pool_for(name, "scale");
  if (!p)
    return p.error();
  return ask_pool(*p, caf::make_message(scale_atom::value, size));
}

caf::expected<json> node::reload_pool(const std::string& name, std::size_t surge) {
  auto p = local_pool_for(name, "reload");
  if (!p)
    return p.error();
  // A reload of thousands of workers, each draining, may take long.
  return ask_pool(*p, caf::make_message(reload_atom::value, surge), std::chrono::minutes(60));
}

std::vector<std::pair<std::string, caf::expected<json>>> node::reload_all(std::size_t surge) {
  std::vector<std::pair<std::string, caf::expected<json>>> out;
  for (auto& name : impl_->pool_names)
    out.emplace_back(name, reload_pool(name, surge));
  return out;
}

void node::subscribe(const caf::actor& subscriber) {
  if (impl_->root && subscriber)
    caf::anon_send(impl_->root, caf::subscribe_atom::value, subscriber);
}

void node::unsubscribe(const caf::actor& subscriber) {
  if (impl_->root && subscriber)
    caf::anon_send(impl_->root, caf::unsubscribe_atom::value, subscriber);
}

} // namespace dspex
