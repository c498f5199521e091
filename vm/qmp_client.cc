#include "vm/qmp_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

namespace romulus::vm {

namespace json = boost::json;

namespace {

// Milliseconds left until deadline for poll(): rounded up, 0 once passed.
int poll_timeout(Deadline deadline) {
  auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Waits for `events` on fd until deadline: OK when ready, kTimeout otherwise.
Status wait_ready(int fd, short events, Deadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, poll_timeout(deadline));
    if (n > 0) return Status::ok();
    if (n == 0) return Status::timeout(fmt::format("QMP: no {} before the deadline", what));
    if (errno != EINTR) return Status::from_errno("QMP: poll", errno);
  }
}

// How much of an unexpected message an error quotes.
constexpr size_t kQuotedBytes = 120;

const char* kind_name(QmpMessageKind kind) {
  switch (kind) {
    case QmpMessageKind::kGreeting:
      return "greeting";
    case QmpMessageKind::kReturn:
      return "command's return";
    case QmpMessageKind::kError:
      return "command's error";
    case QmpMessageKind::kEvent:
      return "event";
  }
  return "message";
}

}  // namespace

Result<QmpClient> QmpClient::connect(const std::string& path, Deadline deadline,
                                     const StillRunning& still_running) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Status::invalid_argument(
        fmt::format("QMP socket path '{}' must be 1..{} bytes", path, sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int last_errno = 0;
  Deadline next_check = deadline_in(kCheckEvery);
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status::from_errno("QMP: socket", errno);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      QmpClient client(fd);
      ROMULUS_ASSIGN_OR_RETURN(QmpMessage greeting, client.next_reply(deadline, still_running));
      if (greeting.kind != QmpMessageKind::kGreeting) {
        std::string text = json::serialize(greeting.value);
        if (text.size() > kQuotedBytes) text = text.substr(0, kQuotedBytes) + "...";
        return Status::corrupt(
            fmt::format("QMP {}: the first message is a {} ({}), not QEMU's greeting: is "
                        "something other than a fresh QEMU listening there?",
                        path, kind_name(greeting.kind), text));
      }
      client.greeting_ = std::move(greeting.value);
      auto negotiated = client.run("qmp_capabilities", {}, -1, deadline, still_running);
      if (!negotiated.is_ok()) return negotiated.status().context(fmt::format("QMP {}", path));
      return client;
    }
    last_errno = errno;
    ::close(fd);
    bool retry = last_errno == ENOENT || last_errno == ECONNREFUSED || last_errno == EAGAIN;
    if (!retry) return Status::from_errno(fmt::format("QMP: connect to {}", path), last_errno);
    if (Clock::now() + kConnectRetry > deadline) {
      return Status::timeout(
          fmt::format("QMP: {} did not accept a connection before the deadline "
                      "(last: {})",
                      path, std::strerror(last_errno)));
    }
    if (still_running && Clock::now() >= next_check) {
      ROMULUS_RETURN_IF_ERROR(still_running());
      next_check = deadline_in(kCheckEvery);
    }
    std::this_thread::sleep_for(kConnectRetry);
  }
}

QmpClient::QmpClient(QmpClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      decoder_(std::move(other.decoder_)),
      events_(std::move(other.events_)),
      events_dropped_(other.events_dropped_),
      saw_shutdown_(other.saw_shutdown_),
      next_id_(other.next_id_),
      greeting_(std::move(other.greeting_)),
      broken_(std::move(other.broken_)) {}

QmpClient& QmpClient::operator=(QmpClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    decoder_ = std::move(other.decoder_);
    events_ = std::move(other.events_);
    events_dropped_ = other.events_dropped_;
    saw_shutdown_ = other.saw_shutdown_;
    next_id_ = other.next_id_;
    greeting_ = std::move(other.greeting_);
    broken_ = std::move(other.broken_);
  }
  return *this;
}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<json::value> QmpClient::execute(std::string_view command, json::object args,
                                       Deadline deadline) {
  return run(command, std::move(args), -1, deadline);
}

Result<json::value> QmpClient::execute_with_fd(std::string_view command, json::object args, int fd,
                                               Deadline deadline) {
  if (fd < 0) return Status::invalid_argument(fmt::format("QMP {}: no fd to pass", command));
  return run(command, std::move(args), fd, deadline);
}

Result<json::value> QmpClient::run(std::string_view command, json::object args, int fd,
                                   Deadline deadline, const StillRunning& still_running) {
  if (!broken_.is_ok()) return broken_;
  const uint64_t id = next_id_++;
  json::object request;
  request["execute"] = command;
  if (!args.empty()) request["arguments"] = std::move(args);
  request["id"] = id;
  std::string text = json::serialize(request);
  text += '\n';
  Status sent = send_all(text, fd, deadline);
  if (!sent.is_ok()) return sent.context(fmt::format("QMP {}", command));
  for (;;) {
    auto reply = next_reply(deadline, still_running);
    if (!reply.is_ok()) return reply.status().context(fmt::format("QMP {}", command));
    // A reply without an id is QEMU's answer to a request it could not read
    // as JSON: ours, since replies come in request order and stale ones carry
    // their ids.
    if (reply->id && *reply->id != id) continue;
    if (reply->kind == QmpMessageKind::kError) {
      return Status::refused(fmt::format("QMP {}: {}{}{}", command, reply->error_class,
                                         reply->error_class.empty() ? "" : ": ",
                                         reply->error_desc));
    }
    if (reply->kind != QmpMessageKind::kReturn) {
      return fail(Status::corrupt(fmt::format("QMP {}: a second greeting", command)));
    }
    return std::move(reply->value);
  }
}

Status QmpClient::send_all(std::string_view bytes, int fd, Deadline deadline) {
  bool fd_sent = fd < 0;
  while (!bytes.empty()) {
    ssize_t n;
    if (!fd_sent) {
      iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
      alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
      n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
    if (n > 0) {
      fd_sent = true;
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      ROMULUS_RETURN_IF_ERROR(wait_ready(fd_, POLLOUT, deadline, "room to send the command"));
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return fail(Status::unavailable("QEMU closed its QMP socket (did it exit?)"));
    }
    return fail(Status::from_errno("QMP: send", errno));
  }
  return Status::ok();
}

Result<QmpMessage> QmpClient::next_reply(Deadline deadline) {
  for (;;) {
    while (auto m = decoder_.next()) {
      if (m->kind == QmpMessageKind::kEvent) {
        keep_event(std::move(*m));
        continue;
      }
      return std::move(*m);
    }
    ROMULUS_RETURN_IF_ERROR(read_some(deadline));
  }
}

Result<QmpMessage> QmpClient::next_reply(Deadline deadline, const StillRunning& still_running) {
  for (;;) {
    Deadline step = still_running ? std::min(deadline, deadline_in(kCheckEvery)) : deadline;
    auto m = next_reply(step);
    if (m.is_ok() || m.status().code() != StatusCode::kTimeout || step == deadline) return m;
    ROMULUS_RETURN_IF_ERROR(still_running());
  }
}

Status QmpClient::read_some(Deadline deadline) {
  if (!broken_.is_ok()) return broken_;
  std::array<char, 64 * 1024> buffer;
  for (;;) {
    ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n > 0) {
      Status fed = decoder_.feed(std::string_view(buffer.data(), static_cast<size_t>(n)));
      if (!fed.is_ok()) return fail(fed);
      return Status::ok();
    }
    if (n == 0) return fail(Status::unavailable("QEMU closed its QMP socket (did it exit?)"));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ROMULUS_RETURN_IF_ERROR(wait_ready(fd_, POLLIN, deadline, "reply"));
      continue;
    }
    if (errno == ECONNRESET) {
      return fail(Status::unavailable("QEMU closed its QMP socket (did it exit?)"));
    }
    return fail(Status::from_errno("QMP: recv", errno));
  }
}

void QmpClient::keep_event(QmpMessage message) {
  if (message.event == "SHUTDOWN") saw_shutdown_ = true;
  if (events_.size() >= kMaxQueuedEvents) {
    events_.pop_front();
    ++events_dropped_;
  }
  events_.push_back(QmpEvent{std::move(message.event), std::move(message.value)});
}

Result<QmpEvent> QmpClient::wait_event(std::string_view name, Deadline deadline) {
  for (;;) {
    auto it = std::find_if(events_.begin(), events_.end(),
                           [&](const QmpEvent& e) { return e.name == name; });
    if (it != events_.end()) {
      QmpEvent e = std::move(*it);
      events_.erase(it);
      return e;
    }
    // Replies read here belong to commands that timed out earlier: dropped.
    bool queued = false;
    while (auto m = decoder_.next()) {
      if (m->kind == QmpMessageKind::kEvent) {
        keep_event(std::move(*m));
        queued = true;
      }
    }
    if (queued) continue;
    Status s = read_some(deadline);
    if (!s.is_ok()) return s.context(fmt::format("QMP: waiting for event {}", name));
  }
}

std::vector<QmpEvent> QmpClient::take_events() {
  std::vector<QmpEvent> out(std::make_move_iterator(events_.begin()),
                            std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

Status QmpClient::fail(Status status) {
  if (broken_.is_ok()) broken_ = std::move(status);
  return broken_;
}

}  // namespace romulus::vm
