// QmpClient: a client of QEMU's machine protocol (QMP) over a Unix socket,
// blocking, every call bounded by a deadline.
//
// connect() waits for the socket to accept (QEMU creates it a moment after it
// starts), reads the greeting and leaves capabilities negotiation done, on
// the one connection it made: a connection given up on while QEMU is slow
// would leave QEMU answering its qmp_capabilities on the next connection,
// before that connection's greeting. A caller that must notice QEMU exiting
// meanwhile passes `still_running`.
// execute() sends one command with an "id" and waits for the return or error
// that carries that id; a reply of an earlier command that timed out is
// recognised by its id and skipped, so the client stays usable after a
// timeout. Events that arrive meanwhile are kept in a bounded queue (the
// oldest dropped beyond kMaxQueuedEvents) for take_events() and wait_event().
//
// What QEMU sends is decoded by QmpDecoder (hostile input, bounded lines). A
// QMP error reply becomes kRefused with QEMU's desc on one line ("QMP stop:
// GenericError: ..."); a closed socket kUnavailable; a passed deadline
// kTimeout; bytes that are not QMP kCorrupt. A decoding or socket error
// breaks the client for good (every later call returns it); a QMP error or a
// timeout does not.
//
// Blocking with poll(), no Asio: the primary calls it from its engine thread
// while the VM is paused. Threading: one thread at a time. Move-only; the
// destructor closes the socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "common/status.h"
#include "vm/qmp_decoder.h"

namespace romulus::vm {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// now + d: the deadline of an operation allowed to take d.
inline Deadline deadline_in(Clock::duration d) { return Clock::now() + d; }

struct QmpEvent {
  std::string name;         // "STOP", "RESUME", "SHUTDOWN", "MIGRATION", ...
  boost::json::value data;  // the event's "data" (null when absent)
};

class QmpClient {
 public:
  // Events held for take_events(); beyond this the oldest are dropped.
  static constexpr size_t kMaxQueuedEvents = 64;
  // How often connect() tries again while the socket is missing or refuses.
  static constexpr auto kConnectRetry = std::chrono::milliseconds(5);

  // connect()'s check that the peer is still worth waiting for, asked every
  // kCheckEvery while it waits: a status that is not OK ends connect() with it.
  using StillRunning = std::function<Status()>;
  static constexpr auto kCheckEvery = std::chrono::milliseconds(250);

  // Connects to the QMP socket at `path` (trying again while it does not exist
  // or refuses), reads the greeting and negotiates capabilities, all before
  // `deadline`, asking `still_running` (when set) every kCheckEvery meanwhile.
  static Result<QmpClient> connect(const std::string& path, Deadline deadline,
                                   const StillRunning& still_running = {});

  QmpClient(QmpClient&& other) noexcept;
  QmpClient& operator=(QmpClient&& other) noexcept;
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient();

  // Runs `command` with `args` (omitted when empty) and returns its "return"
  // value.
  Result<boost::json::value> execute(std::string_view command, boost::json::object args,
                                     Deadline deadline);
  // The same, with `fd` passed along (SCM_RIGHTS), for "getfd" and
  // "add-fd". The caller keeps its own copy of fd.
  Result<boost::json::value> execute_with_fd(std::string_view command, boost::json::object args,
                                             int fd, Deadline deadline);

  // Waits until an event named `name` arrives (or is already queued) and
  // takes it from the queue; other events stay queued.
  Result<QmpEvent> wait_event(std::string_view name, Deadline deadline);
  // Takes every queued event, oldest first.
  std::vector<QmpEvent> take_events();
  // Events dropped because the queue was full.
  uint64_t events_dropped() const { return events_dropped_; }
  // Whether a SHUTDOWN event has been seen (the VM is going away).
  bool saw_shutdown() const { return saw_shutdown_; }

  // The greeting's "QMP" object ({"version": ..., "capabilities": [...]}).
  const boost::json::value& greeting() const { return greeting_; }
  // OK, or the error that broke the client.
  const Status& broken() const { return broken_; }

 private:
  explicit QmpClient(int fd) : fd_(fd) {}

  Result<boost::json::value> run(std::string_view command, boost::json::object args, int fd,
                                 Deadline deadline, const StillRunning& still_running = {});
  Status send_all(std::string_view bytes, int fd, Deadline deadline);
  // The next message that is not an event (events are queued on the way),
  // reading from the socket as needed; nullopt-free: an error or a message.
  Result<QmpMessage> next_reply(Deadline deadline);
  // next_reply(), asking still_running (when set) every kCheckEvery.
  Result<QmpMessage> next_reply(Deadline deadline, const StillRunning& still_running);
  // Reads once (waiting until deadline) and feeds the decoder.
  Status read_some(Deadline deadline);
  void keep_event(QmpMessage message);
  Status fail(Status status);

  int fd_ = -1;
  QmpDecoder decoder_;
  std::deque<QmpEvent> events_;
  uint64_t events_dropped_ = 0;
  bool saw_shutdown_ = false;
  uint64_t next_id_ = 1;
  boost::json::value greeting_;
  Status broken_;
};

}  // namespace romulus::vm
