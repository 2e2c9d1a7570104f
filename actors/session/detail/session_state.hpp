// Session state: what a session has built on the workers — its programs and
// its LM — and how to replay both on a worker that has not seen them. This
// is the one place that knows DSPy commands (configure_lm, create_program,
// delete_program); the pool calls prepare() through the session registry,
// which holds the only session_book, and names no command itself.
//
// Versions. Every change (an LM configured, a program created or deleted)
// takes the next value of one counter. A worker is described by what it has
// seen: the highest version of its session's changes and of its pool's
// default LM. A replay carries exactly the changes above that, so a secret
// (an LM's api_key) reaches a worker once per (worker, session, LM version):
// with the request that configured it, or in the one replay before that
// worker first serves the session. execute_program carries neither the LM
// nor a definition.
//
// LMs. configure_lm in a session sets that session's LM only. Without a
// session it sets its pool's default LM, which serves anonymous requests and
// every session that configured none; a pool starts with the `default_lm` of
// its config. A runtime default outlives pool restarts (it is kept here).
//
// Secrets never leave the book except towards a worker: summaries (status,
// session listings) show an LM as provider/model, through redact().
#pragma once

#include <dspex/actors/node/messages.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dspex {

/// What a worker (or an adapter level) has seen: the version of the last
/// session change and of the last default LM it got. 0: nothing.
struct seen_versions {
  std::uint64_t session = 0;
  std::uint64_t defaults = 0;
};

/// The hook's answer: send `replay` first, in order (their replies are
/// discarded), then `request`; the worker has then seen `seen`. `change`
/// (0: none) names what the request changed, to settle() once it answered.
struct session_plan {
  std::vector<command_request> replay;
  command_request request;
  seen_versions seen;
  std::uint64_t change = 0;
};

class session_book {
public:
  /// Records what `req` changes (a generated program id is written into
  /// it), and plans its dispatch to a worker of pool `pool` that has seen
  /// `seen`.
  session_plan prepare(const std::string& pool, command_request req, seen_versions seen);

  /// Whether `req` may change a session's state or a default LM (so its
  /// dispatch needs prepare()); a request that does not, on a worker that
  /// has seen the latest versions, needs nothing from the book.
  static bool changes(const command_request& req);

  /// How the request that made `change` ended: a change whose command
  /// failed on its worker (a bad LM, a duplicate program id) is undone, so
  /// that no other worker is replayed what the session never got.
  void settle(std::uint64_t change, bool ok);

  /// A pool's configured default LM; kept only when the pool has none yet,
  /// so that a default set at run time survives the pool's restart.
  void set_pool_default(const std::string& pool, const json& lm);

  /// A session ended: everything it built goes.
  void end(const std::string& sid);

  std::size_t programs(const std::string& sid) const;
  std::size_t programs() const;
  /// "provider/model" of the session's own LM; null when it has none.
  json lm_name(const std::string& sid) const;

  /// An LM configuration as it may be shown: provider and model only.
  static json redact(const json& lm);

private:
  struct program {
    json def;
    std::uint64_t version = 0;
    bool deleted = false;  // a tombstone, so workers that saw it drop it
  };
  struct record {
    std::map<std::string, program> programs;
    json lm;  // null: the pool default
    std::uint64_t lm_version = 0;
  };
  struct pool_default {
    json lm;
    std::uint64_t version = 0;
  };

  // What a change replaced, until it is settled.
  struct undo {
    std::string sid;  // empty: the default of `pool`
    std::string pool;
    std::string pid;  // empty: the LM
    json lm;
    std::uint64_t lm_version = 0;
    std::optional<program> prog;
  };

  std::uint64_t record_change(const std::string& sid, record& r, command_request& req);

  std::map<std::string, record> sessions_;
  std::map<std::string, pool_default> defaults_;
  std::map<std::uint64_t, undo> pending_;
  std::uint64_t clock_ = 0;
  std::uint64_t next_program_ = 0;
};

} // namespace dspex

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::seen_versions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::session_plan)
