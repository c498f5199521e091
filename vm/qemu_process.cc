#include "vm/qemu_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>
#include <utility>

#include <fmt/format.h>

extern char** environ;

namespace romulus::vm {

namespace {

// How long start() gives a QEMU whose QMP connection failed to exit, to say why.
constexpr auto kExitGrace = std::chrono::milliseconds(200);
constexpr auto kReapPoll = std::chrono::milliseconds(5);

int decode_wait_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string log_tail(const std::string& path, size_t lines) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  off_t end = ::lseek(fd, 0, SEEK_END);
  off_t from = std::max<off_t>(0, end - 4096);
  std::string text(static_cast<size_t>(std::max<off_t>(0, end - from)), '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), from);
  ::close(fd);
  if (n <= 0) return {};
  text.resize(static_cast<size_t>(n));
  std::vector<std::string> kept;
  size_t stop = text.size();
  while (kept.size() < lines && stop > 0) {
    size_t nl = text.rfind('\n', stop - 1);
    size_t begin = nl == std::string::npos ? 0 : nl + 1;
    std::string line = one_line(std::string_view(text).substr(begin, stop - begin));
    if (!line.empty()) kept.insert(kept.begin(), std::move(line));
    if (nl == std::string::npos) break;
    stop = nl;
  }
  std::string out;
  for (const std::string& line : kept) out += (out.empty() ? "" : " / ") + line;
  return out;
}

Result<QemuProcess> QemuProcess::start(const QemuProcessSpec& spec, Deadline deadline) {
  if (spec.argv.empty()) return Status::invalid_argument("no QEMU command");
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view var(*e);
    const bool overridden = std::any_of(spec.env.begin(), spec.env.end(), [&](const auto& kv) {
      return var.size() > kv.first.size() && var.starts_with(kv.first) &&
             var[kv.first.size()] == '=';
    });
    if (!overridden) env_strings.emplace_back(var);
  }
  for (const auto& [name, value] : spec.env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  int log_fd = -1;
  if (!spec.log_path.empty()) {
    log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return Status::from_errno(fmt::format("open {}", spec.log_path), errno);
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int exec_pipe[2];
  if (null_fd < 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return Status::from_errno("QEMU: pipe", err);
  }
  ::unlink(spec.qmp_socket.c_str());  // a stale socket would accept nobody

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(exec_pipe[0]);
    ::close(exec_pipe[1]);
    ::close(null_fd);
    if (log_fd >= 0) ::close(log_fd);
    return Status::from_errno("QEMU: fork", err);
  }
  if (pid == 0) {
    // The child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    ::dup2(null_fd, STDIN_FILENO);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    for (int fd : spec.inherit_fds) ::fcntl(fd, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = ::write(exec_pipe[1], &err, sizeof err);
    (void)ignored;
    ::_exit(127);
  }
  ::close(exec_pipe[1]);
  ::close(null_fd);
  if (log_fd >= 0) ::close(log_fd);

  QemuProcess process;
  process.pid_ = pid;
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n == sizeof exec_errno) {
    process.reap_until(deadline_in(std::chrono::seconds(1)));
    return Status::from_errno(fmt::format("cannot run {}", spec.argv[0]), exec_errno)
        .context("starting QEMU (install qemu-system-x86)");
  }

  auto exited_early = [&](int status) {
    std::string why = spec.log_path.empty() ? std::string() : log_tail(spec.log_path);
    return Status::aborted(
        fmt::format("QEMU exited with status {} before its QMP socket was "
                    "ready{}{}",
                    status, why.empty() ? "" : ": ", why));
  };
  // QEMU creates its socket early and answers once its loops run; it may exit
  // on a bad argument before or after. So connect() checks every
  // QmpClient::kCheckEvery that QEMU still runs, on the one connection it
  // keeps: one given up on would have QEMU answer its qmp_capabilities on the
  // next, before that one's greeting.
  auto qmp = QmpClient::connect(spec.qmp_socket, deadline, [&]() -> Status {
    if (auto status = process.exited()) return exited_early(*status);
    return Status::ok();
  });
  if (qmp.is_ok()) {
    process.qmp_.emplace(std::move(*qmp));
    return process;
  }
  // A QEMU that exits closes its socket: say why it exited, if it did.
  if (process.reap_until(deadline_in(kExitGrace))) return exited_early(*process.exit_status_);
  if (qmp.status().code() != StatusCode::kTimeout) return qmp.status().context("starting QEMU");
  return Status::timeout(
      fmt::format("QEMU's QMP socket {} was not ready before the deadline", spec.qmp_socket));
}

QemuProcess::QemuProcess(QemuProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      exit_status_(std::exchange(other.exit_status_, std::nullopt)),
      qmp_(std::exchange(other.qmp_, std::nullopt)) {}

QemuProcess& QemuProcess::operator=(QemuProcess&& other) noexcept {
  if (this != &other) {
    kill();
    pid_ = std::exchange(other.pid_, -1);
    exit_status_ = std::exchange(other.exit_status_, std::nullopt);
    qmp_ = std::exchange(other.qmp_, std::nullopt);
  }
  return *this;
}

QemuProcess::~QemuProcess() { kill(); }

std::optional<int> QemuProcess::exited() {
  if (exit_status_ || pid_ < 0) return exit_status_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) exit_status_ = decode_wait_status(status);
  return exit_status_;
}

bool QemuProcess::reap_until(Deadline deadline) {
  for (;;) {
    if (exited()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kReapPoll);
  }
}

Status QemuProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ < 0 || exited()) return Status::ok();
  auto deadline = deadline_in(grace);
  if (qmp_) (void)qmp_->execute("quit", {}, deadline);
  if (!reap_until(deadline)) kill();
  return Status::ok();
}

void QemuProcess::kill() {
  if (pid_ < 0 || exited()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = decode_wait_status(status);
}

}  // namespace romulus::vm
