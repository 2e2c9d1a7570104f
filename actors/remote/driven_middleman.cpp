#include <dspex/actors/remote/detail/driven_middleman.hpp>

#include <dspex/actors/node/detail/io_scheduler.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/network/default_multiplexer.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <unistd.h>

namespace dspex {

namespace {

using caf::io::network::default_multiplexer;
using caf::io::network::native_socket;

// default_multiplexer keeps its epoll descriptor private and offers no way
// to wait on it from another loop. An explicit instantiation may name a
// private member ([temp.explicit]/14), which is how this one reads it.
struct epoll_fd_member {
  using type = native_socket default_multiplexer::*;
  friend type member_of(epoll_fd_member);
};
template <class Tag, typename Tag::type Member>
struct expose_member {
  friend typename Tag::type member_of(Tag) { return Member; }
};
template struct expose_member<epoll_fd_member, &default_multiplexer::epollfd_>;

// The multiplexer as the loop's guest. Everything here runs on the loop's
// thread; handlers hold it by shared_ptr, so a wait cancelled at detach may
// complete after the module is gone.
class driven_link : public loop_guest, public std::enable_shared_from_this<driven_link> {
public:
  driven_link(std::shared_ptr<bridge::io_loop> loop, default_multiplexer& mpx)
    : loop_(std::move(loop)), mpx_(mpx) {}

  bool attach(caf::actor_system& sys) {
    int fd = ::dup(mpx_.*member_of(epoll_fd_member{}));
    if (fd < 0)
      return false;
    // From now on the multiplexer runs what this thread posts to it in its
    // next poll, without writing its pipe (default_multiplexer::exec_later).
    mpx_.thread_id(std::this_thread::get_id());
    wait_.emplace(loop_->context(), fd);
    attached_ = true;
    arm();
    set_loop_guest(sys, this);
    return true;
  }

  // Runs what is ready; true when anything ran. Bounded, so a flood of
  // network events never keeps the thread from its actors and pipes.
  bool poll() override {
    if (!attached_)
      return false;
    bool any = false;
    for (int i = 0; i < 4 && mpx_.poll_once(false); ++i)
      any = true;
    return any;
  }

  void detach(caf::actor_system& sys) {
    if (!attached_)
      return;
    set_loop_guest(sys, nullptr);
    // What this thread posted still runs: in CAF's stop, which polls the
    // multiplexer on its own thread once nobody else does.
    attached_ = false;
    mpx_.thread_id(std::thread::id{});
    boost::system::error_code ignore;
    wait_->close(ignore);
  }

private:
  // The epoll descriptor turns readable when a socket or the multiplexer's
  // pipe (a post from another thread) has an event: the loop wakes. Armed
  // again before polling, so an event during the poll wakes it once more.
  void arm() {
    wait_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [self = shared_from_this()](const boost::system::error_code& ec) {
                        if (ec || !self->attached_)
                          return;
                        self->arm();
                        self->poll();
                      });
  }

  std::shared_ptr<bridge::io_loop> loop_;
  default_multiplexer& mpx_;
  std::optional<boost::asio::posix::stream_descriptor> wait_;
  bool attached_ = false;
};

class driven_middleman : public caf::actor_system::module {
public:
  explicit driven_middleman(caf::actor_system& sys) : sys_(sys) {}

  void init(caf::actor_system_config& cfg) override {
    auto loop = driven_io_loop(sys_);
    auto own = std::getenv("DSPEX_MIDDLEMAN_THREAD");
    if (!loop || !sys_.has_middleman() || (own && std::strcmp(own, "1") == 0)
        || caf::get_or(cfg, "middleman.manual-multiplexing", false))
      return;
    auto* mpx = dynamic_cast<default_multiplexer*>(&sys_.middleman().backend());
    if (!mpx)
      return;
    cfg.set("middleman.manual-multiplexing", true);
    link_ = std::make_shared<driven_link>(loop, *mpx);
    loop_ = std::move(loop);
  }

  void start() override {
    if (!link_)
      return;
    if (!loop_->run_sync([this] { return link_->attach(sys_); })) {
      // No descriptor to spare: nobody would poll the multiplexer; fail as
      // loudly as CAF does when it cannot start its own thread.
      std::fprintf(stderr, "dspex: cannot drive the network multiplexer: %s\n",
                   std::strerror(errno));
      std::abort();
    }
  }

  void stop() override {
    if (link_)
      loop_->run_sync([this] { link_->detach(sys_); });
  }

  id_t id() const override {
    return network_manager;  // unused by CAF 0.17: started after, stopped before the middleman
  }

  void* subtype_ptr() override {
    return this;
  }

private:
  caf::actor_system& sys_;
  std::shared_ptr<bridge::io_loop> loop_;
  std::shared_ptr<driven_link> link_;
};

} // namespace

void use_driven_middleman(caf::actor_system_config& cfg) {
  cfg.module_factories.push_back(
    [](caf::actor_system& sys) -> caf::actor_system::module* { return new driven_middleman(sys); });
}

} // namespace dspex
