// The /metrics endpoint of a real `dspex run --metrics`: fetched over TCP,
// checked by promtool and scraped by a real Prometheus server (Debian's
// prometheus package), counters that move with traffic sent through
// `dspex exec`, and bad addresses refused.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/cli_process.hpp"
#include "support/loopback.hpp"
#include "support/scratch_dir.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// A TCP connection to 127.0.0.1:port (-1 when it failed). Every read on it
// gives up after 20 s: a bounded wait, so a blocked endpoint fails a test
// instead of hanging it.
int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `req` raw on a new connection; the whole response ("" when the
// connection failed or nothing came back within the bound).
std::string http_raw(int port, const std::string& req) {
  int fd = connect_to(port);
  if (fd < 0)
    return {};
  std::string out;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0)
      out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

// One HTTP/1.0 GET on 127.0.0.1:port; the whole response ("" when the
// connection failed).
std::string http_get(int port, const std::string& path) {
  int fd = connect_to(port);
  if (fd < 0)
    return {};
  std::string out;
  {
    auto req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string{} : response.substr(at + 4);
}

// The value of the sample whose line starts with `series` ("name{labels}").
double sample(const std::string& body, const std::string& series) {
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

bool has_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}
bool has_promtool() { return has_program("promtool"); }

// promtool's verdict on an exposition; `report` gets what it said.
int promtool_check(const std::string& body, const std::string& file, std::string& report) {
  std::ofstream(file) << body;
  auto cmd = "promtool check metrics < " + file + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[512];
  while (std::fgets(buf, sizeof buf, p))
    report += buf;
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A TCP port taken by this test (listening) for as long as it lives.
struct taken_port {
  int fd = -1;
  int port = 0;
  taken_port() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }
  ~taken_port() { ::close(fd); }
};

struct metrics_fixture {
  scratch_dir scratch{"metrics"};  // first: removed after all that uses it
  bridge::io_loop loop;
  std::string dir = scratch.path(), config, sock;

  metrics_fixture() {
    config = dir + "/tree.json";
    sock = dir + "/control.sock";
    auto j = json::parse(run_cli(loop, {"config", "--default"}));
    j["root"]["children"][1]["size"] = 2;
    std::ofstream(config) << j.dump(2);
  }

  // `dspex run` with its metrics on a free port; the port, once it serves.
  int start(std::unique_ptr<cli_process>& node, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"run", config, "--control", sock};
    args.insert(args.end(), extra.begin(), extra.end());
    node = std::make_unique<cli_process>(loop, args);
    std::string line;
    REQUIRE(wait_until([&] {
      line = node->line_with("metrics on http://");
      return !line.empty() || node->exited.count() > 0;
    }, 60s));
    INFO(node->output());
    REQUIRE(!line.empty());
    auto colon = line.rfind(':');
    return std::stoi(line.substr(colon + 1));
  }

  // promtool's verdict on a scrape, where it is installed.
  void lint(const std::string& body) {
    if (!has_promtool()) {
      MESSAGE("promtool not installed (Debian package prometheus): exposition not linted");
      return;
    }
    std::string report;
    auto rc = promtool_check(body, dir + "/scrape.txt", report);
    INFO("promtool: " << report);
    CHECK(rc == 0);
  }

  void stop(cli_process& node) {
    node.proc->signal(SIGTERM);
    REQUIRE(node.exited.wait(60s));
    CHECK(node.exited.get().clean());
  }
};

} // namespace

TEST_SUITE("metrics") {

TEST_CASE_FIXTURE(metrics_fixture, "/metrics is valid for promtool and counts traffic") {
  std::unique_ptr<cli_process> node;
  int port = start(node, {"--metrics", "127.0.0.1:0"});
  auto first = http_get(port, "/metrics");
  REQUIRE(first.rfind("HTTP/1.", 0) == 0);
  CHECK(first.find(" 200 ") != std::string::npos);
  auto body = body_of(first);
  INFO(body);

  CHECK(sample(body, R"(dspex_workers{pool="default",state="idle"})") == 2);
  CHECK(sample(body, R"(dspex_workers{pool="default",state="draining"})") == 0);
  CHECK(sample(body, R"(dspex_pool_size{pool="default"})") == 2);
  CHECK(sample(body, R"(dspex_queue_length{pool="default"})") == 0);
  CHECK(sample(body, R"(dspex_circuit_state{pool="default",state="closed"})") == 1);
  CHECK(sample(body, R"(dspex_supervisor_intensity_stops_total{supervisor="root"})") == 0);
  CHECK(sample(body, R"(dspex_sessions)") == 0);
  CHECK(sample(body, R"(dspex_sessions_max)") == 100000);
  CHECK(sample(body, R"(dspex_worker_resident_bytes{path="root/pool_sup/workers/w1"})") > 0);
  double ok0 = std::max(0.0, sample(body, R"(dspex_requests_total{pool="default",result="ok"})"));

  lint(body);

  int code = 0;
  for (int i = 0; i < 3; ++i) {
    run_cli(loop, {"exec", "ping", "--session", "m1", "--control", sock}, &code);
    CHECK(code == 0);
  }
  run_cli(loop, {"exec", "no_such_command", "--control", sock}, &code);
  CHECK(code == 1);

  body = body_of(http_get(port, "/metrics"));
  INFO(body);
  CHECK(sample(body, R"(dspex_requests_total{pool="default",result="ok"})") == ok0 + 3);
  CHECK(sample(body, R"(dspex_requests_total{pool="default",result="python_error"})") == 1);
  CHECK(sample(body, R"(dspex_request_duration_seconds_count{pool="default"})") == ok0 + 4);
  CHECK(sample(body, R"(dspex_request_duration_seconds_bucket{pool="default",le="+Inf"})")
        == ok0 + 4);
  CHECK(sample(body, R"(dspex_sessions)") == 1);
  CHECK(sample(body, R"(dspex_sessions_created_total)") == 1);
  lint(body);
  stop(*node);
}

TEST_CASE_FIXTURE(metrics_fixture, "metrics.listen from the config; a worker restart is counted") {
  auto j = json::parse(std::ifstream(config));
  j["metrics"] = {{"listen", "127.0.0.1:0"}};
  std::ofstream(config) << j.dump(2);
  std::unique_ptr<cli_process> node;
  int port = start(node);
  auto body = body_of(http_get(port, "/metrics"));
  INFO(body);
  REQUIRE(sample(body, R"(dspex_supervisor_restarts_total{supervisor="root/pool_sup/workers"})")
          == 0);
  auto st = json::parse(run_cli(loop, {"status", "--json", "--control", sock}));
  auto pids = tree_os_pids(st["tree"], "/workers/");
  REQUIRE(!pids.empty());
  ::kill(pids.front(), SIGKILL);
  CHECK(wait_until([&] {
    body = body_of(http_get(port, "/metrics"));
    return sample(body, R"(dspex_supervisor_restarts_total{supervisor="root/pool_sup/workers"})")
             == 1
           && sample(body, R"(dspex_worker_crashes_total{pool="default"})") == 1;
  }, 30s));
  stop(*node);
}

TEST_CASE_FIXTURE(metrics_fixture, "a listening node's router guard is counted: connections, refusals by reason") {
  auto j = json::parse(std::ifstream(config));
  const int listen_port = free_port();
  j["listen"] = "127.0.0.1:" + std::to_string(listen_port);
  std::ofstream(config) << j.dump(2);
  std::unique_ptr<cli_process> node;
  int port = start(node, {"--metrics", "127.0.0.1:0"});
  auto body = body_of(http_get(port, "/metrics"));
  INFO(body);
  CHECK(sample(body, R"(dspex_listen_connections)") == 0);
  CHECK(sample(body, R"(dspex_listen_refused_total{reason="oversized"})") == 0);
  CHECK(sample(body, R"(dspex_listen_dropped_messages_total{by="router"})") == 0);
  // A BASP header announcing 4 GiB: that connection is closed, and counted.
  int fd = connect_loopback(listen_port);
  unsigned char hdr[32] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0};
  REQUIRE(::send(fd, hdr, sizeof hdr, MSG_NOSIGNAL) == 32);
  CHECK(closed_by_peer(fd, 20s));
  ::close(fd);
  body = body_of(http_get(port, "/metrics"));
  INFO(body);
  CHECK(sample(body, R"(dspex_listen_refused_total{reason="oversized"})") == 1);
  CHECK(sample(body, R"(dspex_listen_refused_total{reason="message"})") == 0);
  lint(body);
  stop(*node);
}

TEST_CASE_FIXTURE(metrics_fixture, "a real Prometheus server scrapes the endpoint") {
  if (!has_program("prometheus")) {
    MESSAGE("prometheus not installed (Debian package prometheus): not scraped by a server");
    return;
  }
  std::unique_ptr<cli_process> node;
  int port = start(node, {"--metrics", "127.0.0.1:0"});
  int code = 0;
  run_cli(loop, {"exec", "ping", "--control", sock}, &code);
  CHECK(code == 0);

  auto pdir = dir + "/prometheus";
  std::filesystem::remove_all(pdir);
  std::filesystem::create_directories(pdir);
  std::ofstream(pdir + "/prometheus.yml")
    << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
       "scrape_configs:\n"
       "  - job_name: dspex\n"
       "    static_configs: [{targets: ['127.0.0.1:" << port << "']}]\n";
  int web = taken_port().port;  // free a moment ago; Prometheus cannot take port 0 and say so
  cli_process prom(loop,
               {"--config.file=" + pdir + "/prometheus.yml", "--storage.tsdb.path=" + pdir + "/data",
                "--web.listen-address=127.0.0.1:" + std::to_string(web)},
               {}, "prometheus");
  // What the server stored from its scrapes, through its query API.
  auto query = [&](const std::string& q) {
    auto r = json::parse(body_of(http_get(web, "/api/v1/query?query=" + q)), nullptr, false);
    if (!r.is_object() || r.value("status", "") != "success" || r["data"]["result"].empty())
      return std::string{};
    return r["data"]["result"][0]["value"][1].get<std::string>();
  };
  INFO(prom.output());
  CHECK(wait_until([&] { return query("up%7Bjob%3D%22dspex%22%7D") == "1"; }, 60s));
  CHECK(wait_until([&] {
    return query("dspex_requests_total%7Bpool%3D%22default%22%2Cresult%3D%22ok%22%7D") == "1";
  }, 30s));
  CHECK(query("dspex_workers%7Bstate%3D%22idle%22%7D") == "2");
  prom.proc->signal(SIGTERM);
  REQUIRE(prom.exited.wait(60s));
  stop(*node);
  std::filesystem::remove_all(pdir);
}

TEST_CASE_FIXTURE(metrics_fixture, "bad metrics addresses are refused before anything starts") {
  auto j = json::parse(std::ifstream(config));
  j["metrics"] = {{"listen", "example.org:http"}};
  auto bad = dir + "/bad.json";
  std::ofstream(bad) << j.dump(2);
  int code = 0;
  auto out = run_cli(loop, {"config", "--check", bad}, &code);
  CHECK(code == 2);
  CHECK(out.find("config.metrics.listen") != std::string::npos);
  out = run_cli(loop, {"run", bad, "--control", sock}, &code);
  CHECK(code == 2);
  CHECK(out.find("config.metrics.listen") != std::string::npos);

  j["metrics"] = {{"listen", "127.0.0.1:9464"}, {"port", 1}};
  std::ofstream(bad) << j.dump(2);
  out = run_cli(loop, {"config", "--check", bad}, &code);
  CHECK(code == 2);
  CHECK(out.find("config.metrics.port: unknown key") != std::string::npos);

  j["metrics"] = {{"max_connections", 0}, {"request_timeout_ms", "5s"}, {"max_request_bytes", 10}};
  std::ofstream(bad) << j.dump(2);
  out = run_cli(loop, {"config", "--check", bad}, &code);
  CHECK(code == 2);
  CHECK(out.find("config.metrics.max_connections") != std::string::npos);
  CHECK(out.find("config.metrics.request_timeout_ms") != std::string::npos);
  CHECK(out.find("config.metrics.max_request_bytes") != std::string::npos);

  out = run_cli(loop, {"run", config, "--control", sock, "--metrics", "127.0.0.1:99999"}, &code);
  CHECK(code == 2);
  CHECK(out.find("--metrics") != std::string::npos);

  // A port someone else holds: exit 1, and no worker was started for nothing.
  taken_port held;
  out = run_cli(loop, {"run", config, "--control", sock, "--metrics",
                   "127.0.0.1:" + std::to_string(held.port)}, &code);
  CHECK(code == 1);
  CHECK(out.find("cannot listen on 127.0.0.1:" + std::to_string(held.port)) != std::string::npos);
  CHECK(out.find("running") == std::string::npos);
}

namespace {

// Whether the server ended connection `fd` (EOF or reset); what it sent
// meanwhile is appended to `got`. Never blocks.
bool server_closed(int fd, std::string& got) {
  char buf[512];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0)
      return true;
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

// A request head that never ends, for clients that send it a byte at a time.
const std::string endless_head =
  "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(200, 'a');

} // namespace

TEST_CASE_FIXTURE(metrics_fixture, "idle and slowloris clients cannot hold back a scrape; they are closed in time") {
  auto j = json::parse(std::ifstream(config));
  j["metrics"] = {{"listen", "127.0.0.1:0"}, {"request_timeout_ms", 2000}};
  std::ofstream(config) << j.dump(2);
  std::unique_ptr<cli_process> node;
  int port = start(node);

  // 100 clients that send nothing, 20 that trickle a request head.
  std::vector<int> fds;
  for (int i = 0; i < 120; ++i) {
    int fd = connect_to(port);
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  std::size_t sent = 0;
  auto trickle = [&] {
    if (sent < endless_head.size()) {
      for (std::size_t i = 100; i < fds.size(); ++i)
        ::send(fds[i], endless_head.data() + sent, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      ++sent;
    }
  };
  trickle();

  // Scrapes are answered while they hold their connections (each read is
  // bounded: a blocked endpoint fails here instead of hanging).
  for (int i = 0; i < 3; ++i) {
    auto r = http_get(port, "/metrics");
    REQUIRE(r.rfind("HTTP/1.1 200 ", 0) == 0);
    auto body = body_of(r);
    CHECK(sample(body, R"(dspex_workers{pool="default",state="idle"})") == 2);
    lint(body);
  }

  // Each is closed by its request deadline: trickling does not extend it.
  std::vector<std::string> got(fds.size());
  std::vector<bool> closed(fds.size(), false);
  auto last = std::chrono::steady_clock::now();
  CHECK(wait_until([&] {
    if (std::chrono::steady_clock::now() - last > 100ms) {
      trickle();
      last = std::chrono::steady_clock::now();
    }
    bool all = true;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!closed[i])
        closed[i] = server_closed(fds[i], got[i]);
      all = all && closed[i];
    }
    return all;
  }, 60s));
  CHECK(sent < endless_head.size());  // the head never completed
  int told = 0;
  for (auto& g : got)
    told += g.rfind("HTTP/1.1 408 ", 0) == 0;
  CHECK(told == static_cast<int>(fds.size()));
  for (int fd : fds)
    ::close(fd);

  auto body = body_of(http_get(port, "/metrics"));
  CHECK(sample(body, R"(dspex_metrics_http_connections_total{outcome="timed_out"})") == 120);
  CHECK(sample(body, R"(dspex_metrics_http_connections_total{outcome="served"})") == 3);
  stop(*node);
}

TEST_CASE_FIXTURE(metrics_fixture, "over max_connections the oldest idle client makes room; bad requests get 4xx") {
  auto j = json::parse(std::ifstream(config));
  j["metrics"] = {{"listen", "127.0.0.1:0"}, {"max_connections", 8}, {"request_timeout_ms", 600000},
                  {"max_request_bytes", 1024}};
  std::ofstream(config) << j.dump(2);
  std::unique_ptr<cli_process> node;
  int port = start(node);

  std::vector<int> fds;
  for (int i = 0; i < 50; ++i) {
    int fd = connect_to(port);
    REQUIRE(fd >= 0);
    fds.push_back(fd);
  }
  // The scrape comes after all of them and is answered: 42 were evicted to
  // admit the later ones, one more for the scrape.
  auto r = http_get(port, "/metrics");
  REQUIRE(r.rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(sample(body_of(r), R"(dspex_metrics_http_connections_total{outcome="evicted"})") == 43);
  // The oldest went, the newest are still open (their deadline is far).
  std::vector<std::string> got(fds.size());
  CHECK(wait_until([&] {
    for (std::size_t i = 0; i < 43; ++i)
      if (!server_closed(fds[i], got[i]))
        return false;
    return true;
  }, 30s));
  for (std::size_t i = 43; i < fds.size(); ++i)
    CHECK_FALSE(server_closed(fds[i], got[i]));
  for (int fd : fds)
    ::close(fd);

  // HEAD: the headers only.
  auto head = http_raw(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(head.find("Content-Length: ") != std::string::npos);
  CHECK(body_of(head).empty());
  CHECK(http_raw(port, "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 200 ", 0)
        == 0);
  CHECK(http_raw(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").rfind("HTTP/1.1 405 ", 0)
        == 0);
  CHECK(http_raw(port, "GET /other HTTP/1.0\r\n\r\n").rfind("HTTP/1.1 404 ", 0) == 0);
  CHECK(http_raw(port, "hello there\r\n\r\n").rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(http_raw(port, endless_head + std::string(2000, 'b')).rfind("HTTP/1.1 431 ", 0) == 0);
  // And it still serves.
  CHECK(http_get(port, "/metrics").rfind("HTTP/1.1 200 ", 0) == 0);
  stop(*node);
}

TEST_CASE("parse_listen_address: loopback unless asked otherwise") {
  CHECK(*parse_listen_address("9464") == "127.0.0.1:9464");
  CHECK(*parse_listen_address("localhost:9464") == "127.0.0.1:9464");
  CHECK(*parse_listen_address("0.0.0.0:80") == "0.0.0.0:80");
  CHECK(*parse_listen_address("[::1]:9464") == "[::1]:9464");
  CHECK(!parse_listen_address("host:9464"));
  CHECK(!parse_listen_address("127.0.0.1:"));
  CHECK(!parse_listen_address("127.0.0.1:65536"));
  CHECK(!parse_listen_address("::1:9464"));
}

} // TEST_SUITE
