// EtcdCluster: real etcd processes for tests (one member, or several on loopback).
//
// Each cluster gets free loopback ports (client and peer) and a fresh data dir
// under a temporary directory, never etcd's defaults (a system etcd may be
// running on 127.0.0.1:2379). start() returns once every member answers;
// members can be killed, paused (SIGSTOP) and resumed; the destructor kills
// what is left and removes the directory. Members die with the test process
// (PR_SET_PDEATHSIG). Logs: <dir>/<member>.log. The etcd binary is $ROMULUS_ETCD,
// else `etcd` on PATH. Header-only; used from one test thread.
//
// With TLS (start(members, tls)) the client URLs are https and etcd requires a
// client certificate from `tls.ca` (--client-cert-auth); the health check then
// connects with `tls.client`.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "common/status.h"
#include "witness/etcd_client.h"

namespace romulus::testing {

// Ports the kernel says are free now (held open together, so they differ).
inline Result<std::vector<uint16_t>> free_loopback_ports(size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  Status st;
  for (size_t i = 0; i < n && st.is_ok(); ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      st = Status::from_errno("socket", errno);
      break;
    }
    fds.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      st = Status::from_errno("bind a free port", errno);
      break;
    }
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) close(fd);
  if (!st.is_ok()) return st;
  return ports;
}

class EtcdCluster {
 public:
  // PEM files for a TLS cluster: the server's certificate (its subjectAltName
  // must hold IP:127.0.0.1), the CA client certificates must chain to, and the
  // identity the health check connects with.
  struct Tls {
    std::string server_cert, server_key, ca;
    std::shared_ptr<common::TlsIdentity> client;
  };

  struct Member {
    std::string name;
    uint16_t client_port = 0;
    uint16_t peer_port = 0;
    pid_t pid = -1;
    witness::etcd::Endpoint endpoint() const { return {"127.0.0.1", client_port}; }
  };

  static Result<std::unique_ptr<EtcdCluster>> start(size_t members = 1,
                                                    std::optional<Tls> tls = std::nullopt) {
    std::unique_ptr<EtcdCluster> c(new EtcdCluster());
    c->tls_ = std::move(tls);
    std::string tmpl = (std::filesystem::temp_directory_path() / "romulus-etcd-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return Status::from_errno("mkdtemp", errno);
    c->dir_ = tmpl;
    ROMULUS_ASSIGN_OR_RETURN(std::vector<uint16_t> ports, free_loopback_ports(2 * members));
    std::string initial;
    for (size_t i = 0; i < members; ++i) {
      Member m;
      m.name = fmt::format("m{}", i);
      m.client_port = ports[2 * i];
      m.peer_port = ports[2 * i + 1];
      if (!initial.empty()) initial += ',';
      initial += fmt::format("{}=http://127.0.0.1:{}", m.name, m.peer_port);
      c->members_.push_back(m);
    }
    for (Member& m : c->members_) ROMULUS_RETURN_IF_ERROR(c->spawn(m, initial));
    ROMULUS_RETURN_IF_ERROR(c->wait_healthy(std::chrono::seconds(30)));
    return c;
  }

  ~EtcdCluster() {
    for (size_t i = 0; i < members_.size(); ++i) kill_member(i);
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  const std::vector<Member>& members() const { return members_; }
  std::vector<witness::etcd::Endpoint> endpoints() const {
    std::vector<witness::etcd::Endpoint> out;
    for (const Member& m : members_) out.push_back(m.endpoint());
    return out;
  }
  // "etcd://127.0.0.1:p1,127.0.0.1:p2" ("etcds://" with TLS)
  std::string url() const {
    return witness::etcd::EtcdUrl{endpoints(), tls_.has_value()}.to_string();
  }
  const std::string& dir() const { return dir_; }

  void kill_member(size_t i) {
    Member& m = members_.at(i);
    if (m.pid <= 0) return;
    ::kill(m.pid, SIGKILL);
    waitpid(m.pid, nullptr, 0);
    m.pid = -1;
  }
  void pause_member(size_t i) { ::kill(members_.at(i).pid, SIGSTOP); }
  void resume_member(size_t i) { ::kill(members_.at(i).pid, SIGCONT); }

 private:
  EtcdCluster() = default;

  Status spawn(Member& m, const std::string& initial) {
    const std::string client =
        fmt::format("{}://127.0.0.1:{}", tls_ ? "https" : "http", m.client_port);
    const std::string peer = fmt::format("http://127.0.0.1:{}", m.peer_port);
    const char* bin = std::getenv("ROMULUS_ETCD");
    std::vector<std::string> args = {
        bin != nullptr ? bin : "etcd",
        "--name",
        m.name,
        "--data-dir",
        dir_ + "/" + m.name,
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        fmt::format("romulus-test-{}", getpid()),
        "--initial-cluster-state",
        "new",
    };
    if (tls_) {
      for (const std::string& a :
           {std::string("--cert-file"), tls_->server_cert, std::string("--key-file"),
            tls_->server_key, std::string("--trusted-ca-file"), tls_->ca,
            std::string("--client-cert-auth")}) {
        args.push_back(a);
      }
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir_ + "/" + m.name + ".log";
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return Status::from_errno("fork etcd", errno);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execvp(argv[0], argv.data());
      _exit(127);
    }
    m.pid = pid;
    return Status::ok();
  }

  Status wait_healthy(std::chrono::seconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (Member& m : members_) {
      witness::etcd::EtcdClient::Options options;
      if (tls_) options.tls = tls_->client;
      witness::etcd::EtcdClient client({m.endpoint()}, options);
      for (;;) {
        if (client.get("/romulus-test/health").is_ok()) break;
        int status = 0;
        if (waitpid(m.pid, &status, WNOHANG) == m.pid) {
          m.pid = -1;  // reaped: never signal that pid again
          return Status::unavailable(
              fmt::format("etcd {} exited; see {}/{}.log", m.name, dir_, m.name));
        }
        if (std::chrono::steady_clock::now() > until) {
          return Status::timeout(
              fmt::format("etcd {} not healthy; see {}/{}.log", m.name, dir_, m.name));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    return Status::ok();
  }

  std::string dir_;
  std::vector<Member> members_;
  std::optional<Tls> tls_;
};

}  // namespace romulus::testing
