// The /metrics listener (exporter.hpp): asio on one thread of its own for
// every connection, a second thread for rendering bodies. Why not
// prometheus-cpp's Exposer: civetweb gives each connection a thread of its
// pool until its request is read, so T idle clients hold T threads and
// every scrape queues behind them (docs/security.md has the figures).
//
// Threads and lifetimes: connections live on the io thread only, owned by
// `open` until closed; every asio handler holds its connection. The render
// thread only reads the node and posts the body back with weak references.
// The destructor closes everything on the io thread, lets io.run() end once
// the aborted operations have run, then joins both threads: no handler runs
// and no render reads the node after it returns.
#include <dspex/metrics/exporter.hpp>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/metrics/node_metrics.hpp>

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include <boost/asio.hpp>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

namespace dspex::metrics {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// Runs on the render thread per scrape. node::status() is thread-safe (a
// scoped actor of its own) and bounded by its own per-actor deadlines.
class node_collectable : public prometheus::Collectable {
public:
  explicit node_collectable(node& n) : n_(n) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    try {
      return node_families(n_.status());
    } catch (...) {
      return {};  // no exception may escape into the render thread
    }
  }

private:
  node& n_;
};

constexpr const char* outcomes[] = {"accepted", "served",    "not_found", "bad_request",
                                    "timed_out", "evicted", "refused"};
enum outcome { accepted, served, not_found, bad_request, timed_out, evicted, refused, n_outcomes };

std::string response(int code, const char* reason, const std::string& body, bool head_only,
                     const char* content_type = "text/plain; charset=utf-8",
                     const char* extra = "") {
  std::string out = "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: "
                    + content_type + "\r\nContent-Length: " + std::to_string(body.size())
                    + "\r\nConnection: close\r\n" + extra + "\r\n";
  if (!head_only)
    out += body;
  return out;
}

struct connection {
  connection(tcp::socket s, std::size_t max_head, std::uint64_t id)
    : sock(std::move(s)), deadline(sock.get_executor()), buf(max_head), id(id) {}
  tcp::socket sock;
  asio::steady_timer deadline;
  asio::streambuf buf;
  std::string out;
  std::uint64_t id;
  bool head_only = false;
};

} // namespace

struct exporter::impl {
  exporter_options opts;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  // io thread only
  std::map<std::uint64_t, std::shared_ptr<connection>> open;  // by accept order
  std::set<std::uint64_t> reading;  // still waiting for their request head, oldest first
  std::uint64_t next_id = 1;
  bool stopping = false;
  bool rendering = false;
  std::vector<std::weak_ptr<connection>> waiting;  // for the next render
  // shared
  std::atomic<bool> serving{false};
  std::shared_ptr<prometheus::Collectable> collectable;  // set before serving
  std::atomic<std::uint64_t> count[n_outcomes] = {};
  std::thread thread;
  asio::thread_pool render{1};

  void start() {
    thread = std::thread([this] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "dspex: metrics: %s\n", e.what());
        } catch (...) {
        }
      }
    });
    asio::post(io, [this] { accept(); });
  }

  void stop() {
    asio::post(io, [this] {
      stopping = true;
      error_code ec;
      acceptor.close(ec);
      accept_retry.cancel();
      for (auto& [id, c] : open) {
        c->deadline.cancel();
        c->sock.close(ec);
      }
      open.clear();
      reading.clear();
      waiting.clear();
      guard.reset();
    });
    if (thread.joinable())
      thread.join();
    render.join();
  }

  void accept() {
    acceptor.async_accept([this](const error_code& ec, tcp::socket sock) {
      if (stopping || ec == asio::error::operation_aborted)
        return;
      if (ec) {
        // Out of descriptors (EMFILE) and the like: try again shortly
        // instead of spinning; the pending connection waits in the backlog.
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this](const error_code& e) {
          if (!e && !stopping)
            accept();
        });
        return;
      }
      ++count[accepted];
      admit(std::move(sock));
      accept();
    });
  }

  // A best-effort one-shot answer on a connection being dropped (never
  // blocks: the socket is non-blocking and the text is small).
  static void say_and_close(tcp::socket& sock, const std::string& text) {
    error_code ec;
    sock.non_blocking(true, ec);
    sock.write_some(asio::buffer(text), ec);
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }

  // By value: `c` may be the very pointer `open` holds, which erase frees.
  void close(std::shared_ptr<connection> c) {
    error_code ec;
    c->deadline.cancel();
    c->sock.close(ec);
    open.erase(c->id);
    reading.erase(c->id);
  }

  void drop(std::shared_ptr<connection> c, outcome why) {
    ++count[why];
    static const std::string timeout =
      response(408, "Request Timeout", "request not received in time\n", false);
    say_and_close(c->sock, timeout);
    close(c);
  }

  void admit(tcp::socket sock) {
    if (open.size() >= opts.max_connections) {
      if (!reading.empty()) {
        // The oldest connection still without a request head makes room:
        // it had the longest to send one.
        auto oldest = open.at(*reading.begin());
        drop(std::move(oldest), evicted);
      } else {
        ++count[refused];
        static const std::string busy =
          response(503, "Service Unavailable", "too many connections\n", false,
                   "text/plain; charset=utf-8", "Retry-After: 1\r\n");
        say_and_close(sock, busy);
        return;
      }
    }
    auto c = std::make_shared<connection>(std::move(sock), opts.max_request_bytes, next_id++);
    open.emplace(c->id, c);
    reading.insert(c->id);
    c->deadline.expires_after(opts.request_timeout);
    c->deadline.async_wait([this, c](const error_code& ec) {
      if (!ec && !stopping && reading.count(c->id))  // not answered meanwhile
        drop(c, timed_out);
    });
    asio::async_read_until(c->sock, c->buf, "\r\n\r\n",
                           [this, c](const error_code& ec, std::size_t n) { on_head(c, ec, n); });
  }

  void on_head(const std::shared_ptr<connection>& c, const error_code& ec, std::size_t n) {
    if (stopping || !open.count(c->id))
      return;  // closed meanwhile (timed out, evicted)
    reading.erase(c->id);
    c->deadline.cancel();
    if (ec == asio::error::not_found) {  // the head outgrew max_request_bytes
      ++count[bad_request];
      return reply(c, response(431, "Request Header Fields Too Large",
                               "request head above " + std::to_string(opts.max_request_bytes)
                                 + " bytes\n",
                               false));
    }
    if (ec)
      return close(c);  // the client went away
    std::string head(asio::buffers_begin(c->buf.data()), asio::buffers_begin(c->buf.data()) + n);
    auto eol = head.find("\r\n");
    std::istringstream line(head.substr(0, eol));
    std::string method, target, version, rest;
    line >> method >> target >> version;
    if (method.empty() || target.empty() || version.rfind("HTTP/1.", 0) != 0 || (line >> rest)) {
      ++count[bad_request];
      return reply(c, response(400, "Bad Request", "not an HTTP/1.x request line\n", false));
    }
    c->head_only = method == "HEAD";
    if (method != "GET" && !c->head_only) {
      ++count[bad_request];
      return reply(c, response(405, "Method Not Allowed", "GET or HEAD\n", false,
                               "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n"));
    }
    auto path = target.substr(0, target.find('?'));
    if (path != "/metrics" || !serving.load(std::memory_order_acquire)) {
      ++count[not_found];
      return reply(c, response(404, "Not Found", "not found\n", c->head_only));
    }
    waiting.push_back(c);
    if (!rendering)
      start_render();
  }

  // One render at a time, on the render thread; every request that came
  // meanwhile shares the next one.
  void start_render() {
    rendering = true;
    auto batch = std::move(waiting);
    waiting.clear();
    asio::post(render, [this, batch = std::move(batch)]() mutable {
      std::string body;
      bool ok = true;
      try {
        auto fams = collectable->Collect();
        fams.push_back(own_family());
        body = prometheus::TextSerializer().Serialize(fams);
      } catch (...) {
        ok = false;
      }
      asio::post(io, [this, batch = std::move(batch), body = std::move(body), ok] {
        if (stopping)
          return;
        rendering = false;
        for (auto& w : batch)
          if (auto c = w.lock(); c && open.count(c->id)) {
            if (ok)
              ++count[served];
            reply(c, ok ? response(200, "OK", body, c->head_only,
                                   "text/plain; version=0.0.4; charset=utf-8")
                        : response(500, "Internal Server Error", "rendering failed\n",
                                   c->head_only));
          }
        if (!waiting.empty())
          start_render();
      });
    });
  }

  prometheus::MetricFamily own_family() const {
    prometheus::MetricFamily f{"dspex_metrics_http_connections_total",
                               "Connections to this /metrics listener by outcome: accepted, "
                               "served, not_found, bad_request, timed_out (no request head in "
                               "time, or the answer not taken), evicted (oldest without a "
                               "request head, at the connection cap), refused (503)",
                               prometheus::MetricType::Counter,
                               {}};
    for (int i = 0; i < n_outcomes; ++i) {
      prometheus::ClientMetric m;
      m.label = {{"outcome", outcomes[i]}};
      m.counter.value = static_cast<double>(count[i].load());
      f.metric.push_back(std::move(m));
    }
    return f;
  }

  void reply(const std::shared_ptr<connection>& c, std::string text) {
    c->out = std::move(text);
    c->deadline.expires_after(opts.write_timeout);
    c->deadline.async_wait([this, c](const error_code& ec) {
      if (!ec && !stopping && open.count(c->id)) {
        ++count[timed_out];
        close(c);
      }
    });
    asio::async_write(c->sock, asio::buffer(c->out), [this, c](const error_code& ec, std::size_t) {
      if (stopping || !open.count(c->id))
        return;
      if (!ec) {
        error_code e;
        c->sock.shutdown(tcp::socket::shutdown_send, e);
      }
      close(c);
    });
  }
};

caf::expected<std::unique_ptr<exporter>> exporter::listen(const std::string& addr,
                                                          exporter_options opts) {
  auto norm = parse_listen_address(addr);
  std::string a = norm ? *norm : addr;
  auto fail = [&](const std::string& why) {
    return make_error(errc::unavailable, "metrics: cannot listen on " + a + " (" + why + ")");
  };
  auto colon = a.rfind(':');
  if (colon == std::string::npos)
    return fail("expected HOST:PORT");
  std::string host = a.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(a.substr(colon + 1));
  } catch (...) {
    return fail("no port");
  }
  if (port < 0 || port > 65535)
    return fail("port out of range");
  if (opts.max_connections < 1 || opts.max_request_bytes < 64)
    return make_error(errc::invalid_config,
                      "metrics: max_connections must be >= 1 and max_request_bytes >= 64");

  std::unique_ptr<exporter> ex(new exporter);
  ex->impl_ = std::make_shared<impl>();
  auto& im = *ex->impl_;
  im.opts = opts;
  error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec)
    return fail(ec.message());
  tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  im.acceptor.open(ep.protocol(), ec);
  if (!ec)
    im.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    im.acceptor.bind(ep, ec);
  if (!ec)
    im.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return fail(ec.message());
  ex->port_ = im.acceptor.local_endpoint(ec).port();
  ex->host_ = a.substr(0, colon);
  im.start();
  return ex;
}

void exporter::serve(node& n) {
  if (impl_->serving.load())
    return;
  impl_->collectable = std::make_shared<node_collectable>(n);
  impl_->serving.store(true, std::memory_order_release);
}

exporter::~exporter() {
  // The listener goes first: no scrape may start on a node being stopped.
  if (impl_)
    impl_->stop();
}

json exporter::counters() const {
  json out = json::object();
  for (int i = 0; i < n_outcomes; ++i)
    out[outcomes[i]] = impl_->count[i].load();
  return out;
}

std::string exporter::url() const {
  return "http://" + host_ + ":" + std::to_string(port_) + "/metrics";
}

} // namespace dspex::metrics
