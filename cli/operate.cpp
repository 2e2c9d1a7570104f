// Operating a running node (commands.hpp): restart / stop / start of one
// child, scale of a pool, status --watch, events --follow and exec
// --stream, all through the control socket.
#include "commands.hpp"
#include "control.hpp"

#include <cstdio>
#include <thread>
#include <unistd.h>

namespace dspex::cli {

int report_error(const json& reply) {
  auto e = reply.is_object() ? reply.value("error", json::object()) : json::object();
  if (!e.is_object())
    e = json::object();
  auto cls = e.value("class", json()).is_string() ? e["class"].get<std::string>() : "error";
  auto msg = e.value("message", json()).is_string() ? e["message"].get<std::string>() : "";
  if (msg.empty())
    std::fprintf(stderr, "dspex: %s\n", cls.c_str());
  else
    std::fprintf(stderr, "dspex: %s: %s\n", cls.c_str(), msg.c_str());
  return 1;
}

int control_child(const std::string& control, const std::string& op, const std::string& path) {
  auto r = control_call(control, json{{"op", op}, {"path", path}});
  if (!r.value("ok", false))
    return report_error(r);
  std::printf("%s: %s\n", path.c_str(),
              op == "restart" ? "restarted" : op == "stop" ? "stopped" : "started");
  return 0;
}

int control_scale(const std::string& control, const std::string& pool, long long size) {
  auto r = control_call(control, json{{"op", "scale"}, {"pool", pool}, {"size", size}});
  if (!r.value("ok", false))
    return report_error(r);
  auto res = r.value("result", json::object());
  std::printf("%s: %s -> %s workers\n", pool.c_str(), res.value("from", json()).dump().c_str(),
              res.value("size", json()).dump().c_str());
  return 0;
}

int control_reload(const std::string& control, const std::string& pool, long long surge) {
  auto r = control_call(control, json{{"op", "reload"}, {"pool", pool}, {"surge", surge}});
  if (!r.value("ok", false))
    return report_error(r);
  auto res = r.value("result", json::object());
  auto fs = res.value("fork_server", json::object());
  std::printf("%s: reloaded %s workers in %s ms", pool.c_str(),
              res.value("reloaded", json()).dump().c_str(), res.value("ms", json()).dump().c_str());
  if (fs.contains("new_pid"))
    std::printf(" (fork server %s -> %s)", fs["old_pid"].dump().c_str(), fs["new_pid"].dump().c_str());
  std::printf("\n");
  return 0;
}

int watch_status(const std::string& control, bool as_json, int interval_ms, int count) {
  bool tty = ::isatty(STDOUT_FILENO) == 1;
  for (int i = 0; count <= 0 || i < count; ++i) {
    if (i > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    auto r = control_call(control, json{{"op", "status"}});
    if (r.contains("error"))
      return report_error(r);
    if (tty)
      std::printf("\033[H\033[2J");  // home, clear: the refresh draws in place
    else if (i > 0)
      std::printf("\n");
    if (as_json)
      std::printf("%s\n", r.dump(2).c_str());
    else
      print_status(r);
    std::fflush(stdout);
  }
  return 0;
}

int print_reply(const json& reply, bool compact) {
  std::printf("%s\n",
              reply.dump(compact ? -1 : 2, ' ', false, json::error_handler_t::replace).c_str());
  return reply.value("ok", false) ? 0 : 1;
}

int stream_exec(const std::string& control, const json& request, bool compact) {
  json reply;
  auto last = control_stream(control, request, [&](const json& line) {
    if (line.contains("ok")) {  // the final line
      reply = line;
      return false;
    }
    // {"chunk": DATA, "seq": N}: the data, one line, at once
    std::printf("%s\n", line.value("chunk", json()).dump(-1, ' ', false,
                                                        json::error_handler_t::replace).c_str());
    std::fflush(stdout);
    return true;
  });
  if (reply.is_null())  // no final line: a failure of its own, or the node closed the stream
    reply = last.contains("ok") ? last
                                : json{{"ok", false},
                                       {"error",
                                        {{"class", "protocol_error"},
                                         {"message", "the node at " + control
                                                       + " closed the stream before its reply"}}}};
  return print_reply(reply, compact);
}

int follow_events(const std::string& control, int count) {
  int seen = 0;
  bool acked = false;
  auto last = control_stream(control, json{{"op", "events"}}, [&](const json& line) {
    if (!acked) {
      acked = line.value("ok", false);
      if (acked)  // on stderr, so stdout stays pure JSON lines
        std::fprintf(stderr, "dspex: following the events of the node at %s%s\n", control.c_str(),
                     count > 0 ? (" until " + std::to_string(count) + " events").c_str() : "");
      return acked;
    }
    if (line.contains("error"))
      return false;  // the node dropped us; reported below
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
    return count <= 0 || ++seen < count;
  });
  if (last.contains("error"))
    return report_error(last);
  return 0;
}

} // namespace dspex::cli
