// QmpClient against a scripted fake QEMU on a Unix socket: negotiation, replies
// matched by id, errors, events, deadlines, a slow or exiting QEMU, a QEMU
// that goes away; and query_virtqueues()'s QMP sequence
// (vm/virtqueue_status.h).
#include "vm/qmp_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include <boost/json.hpp>

#include "tests/support/status_matchers.h"
#include "vm/virtqueue_status.h"

namespace romulus::vm::qmp_client_test {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

constexpr const char* kGreeting =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
    "\"capabilities\": []}}\r\n";

// One connection of a fake QEMU: reads request lines, writes what the script says.
class Peer {
 public:
  explicit Peer(int fd) : fd_(fd) {}
  // The next request as JSON; null at EOF.
  json::value read_request() {
    for (;;) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return json::parse(line);
      }
      std::array<char, 4096> chunk;
      std::array<char, CMSG_SPACE(sizeof(int))> control{};
      iovec iov{chunk.data(), chunk.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      ssize_t n = ::recvmsg(fd_, &msg, 0);
      if (n <= 0) return nullptr;
      if (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr && c->cmsg_type == SCM_RIGHTS) {
        std::memcpy(&received_fd, CMSG_DATA(c), sizeof(int));
      }
      buffer_.append(chunk.data(), static_cast<size_t>(n));
    }
  }
  void write(const std::string& text) {
    ASSERT_EQ(::write(fd_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  // {"return": value, "id": the request's id}
  void reply(const json::value& request, const std::string& value) {
    write("{\"return\": " + value + ", \"id\": " + json::serialize(request.as_object().at("id")) +
          "}\r\n");
  }
  // Greeting, then answers qmp_capabilities.
  void negotiate() {
    write(kGreeting);
    json::value r = read_request();
    ASSERT_EQ(r.as_object().at("execute").as_string(), "qmp_capabilities");
    reply(r, "{}");
  }
  int received_fd = -1;

 private:
  int fd_;
  std::string buffer_;
};

// A fake QEMU listening on a socket in a temporary directory; `script` runs on
// its own thread with the first connection.
class FakeQemu {
 public:
  explicit FakeQemu(std::function<void(Peer&)> script) {
    dir_ = std::filesystem::temp_directory_path() /
           ("romulus-qmp-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "qmp.sock").string();
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    thread_ = std::thread([this, script = std::move(script)] {
      int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      Peer peer(fd);
      script(peer);
      if (peer.received_fd >= 0) ::close(peer.received_fd);
      ::close(fd);
    });
  }
  ~FakeQemu() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
    std::filesystem::remove_all(dir_);
  }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
  int listener_ = -1;
  std::thread thread_;
};

TEST(QmpClient, ConnectReadsTheGreetingAndNegotiates) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    p.read_request();  // until the client closes
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  EXPECT_EQ(client->greeting().as_object().at("version").at("qemu").at("major").as_int64(), 7);
}

TEST(QmpClient, ExecuteSendsArgumentsAndReturnsTheReturnValue) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    EXPECT_EQ(r.at("execute").as_string(), "xen-save-devices-state");
    EXPECT_EQ(r.at("arguments").at("filename").as_string(), "/tmp/x");
    EXPECT_EQ(r.at("arguments").at("live").as_bool(), false);
    p.reply(r, "{\"status\": \"ok\"}");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto r = client->execute("xen-save-devices-state",
                           json::object{{"filename", "/tmp/x"}, {"live", false}}, deadline_in(5s));
  ASSERT_OK(r);
  EXPECT_EQ(r->at("status").as_string(), "ok");
}

TEST(QmpClient, AnErrorReplyIsRefusedWithQemusDescOnOneLine) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    p.write("{\"id\": " + json::serialize(r.at("id")) +
            ", \"error\": {\"class\": \"GenericError\", \"desc\": \"no\\nway\"}}\r\n");
    json::value again = p.read_request();  // the client is still usable
    p.reply(again, "7");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto r = client->execute("migrate-incoming", {}, deadline_in(5s));
  EXPECT_EQ(r.status().code(), StatusCode::kRefused);
  EXPECT_EQ(r.status().message(), "QMP migrate-incoming: GenericError: no way");
  auto next = client->execute("query-status", {}, deadline_in(5s));
  ASSERT_OK(next);
  EXPECT_EQ(next->as_int64(), 7);
}

TEST(QmpClient, AReplyToATimedOutCommandIsSkipped) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value slow = p.read_request();
    json::value next = p.read_request();  // sent after the first timed out
    p.reply(slow, "\"late\"");
    p.reply(next, "\"mine\"");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto slow = client->execute("stop", {}, deadline_in(50ms));
  EXPECT_EQ(slow.status().code(), StatusCode::kTimeout);
  EXPECT_OK(client->broken());
  auto next = client->execute("cont", {}, deadline_in(5s));
  ASSERT_OK(next);
  EXPECT_EQ(next->as_string(), "mine");
}

TEST(QmpClient, EventsArrivingBeforeAReplyAreQueued) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    p.write(
        "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n"
        "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
        "\"guest-shutdown\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\r\n");
    p.reply(r, "{}");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  ASSERT_OK(client->execute("stop", {}, deadline_in(5s)));
  EXPECT_TRUE(client->saw_shutdown());
  auto shutdown = client->wait_event("SHUTDOWN", deadline_in(1s));
  ASSERT_OK(shutdown);
  EXPECT_EQ(shutdown->data.at("reason").as_string(), "guest-shutdown");
  auto rest = client->take_events();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].name, "STOP");
}

TEST(QmpClient, TheEventQueueIsBounded) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    std::string events;
    for (size_t i = 0; i < QmpClient::kMaxQueuedEvents + 10; ++i) {
      events += "{\"event\": \"E" + std::to_string(i) + "\", \"timestamp\": {}}\r\n";
    }
    p.write(events);
    p.reply(r, "{}");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  ASSERT_OK(client->execute("query-status", {}, deadline_in(5s)));
  auto events = client->take_events();
  EXPECT_EQ(events.size(), QmpClient::kMaxQueuedEvents);
  EXPECT_EQ(client->events_dropped(), 10u);
  EXPECT_EQ(events.front().name, "E10");  // the oldest were dropped
}

TEST(QmpClient, AQemuThatGoesAwayIsUnavailableForGood) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    p.read_request();  // then close without a reply
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto r = client->execute("stop", {}, deadline_in(5s));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_EQ(client->execute("cont", {}, deadline_in(5s)).status().code(), StatusCode::kUnavailable);
}

TEST(QmpClient, GarbageFromThePeerIsCorrupt) {
  FakeQemu qemu([](Peer& p) {
    p.write("SSH-2.0-OpenSSH_9.2\r\n");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  EXPECT_EQ(client.status().code(), StatusCode::kCorrupt) << client.status().to_string();
}

TEST(QmpClient, AReplyBeforeTheGreetingIsCorruptAndQuoted) {
  // What QEMU does when a connection given up on had sent qmp_capabilities:
  // its answer goes to the next connection, ahead of that one's greeting.
  FakeQemu qemu([](Peer& p) {
    p.write(std::string("{\"return\": {}, \"id\": 1}\r\n") + kGreeting);
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  EXPECT_EQ(client.status().code(), StatusCode::kCorrupt) << client.status().to_string();
  EXPECT_NE(client.status().message().find("is a command's return ({})"), std::string::npos)
      << client.status().to_string();
}

TEST(QmpClient, ASlowNegotiationIsWaitedForOnTheOneConnection) {
  // The fake accepts one connection: a client that gave up on it and
  // connected again would wait in the backlog until its deadline.
  FakeQemu qemu([](Peer& p) {
    p.write(kGreeting);
    json::value r = p.read_request();
    std::this_thread::sleep_for(QmpClient::kCheckEvery * 5 / 2);
    p.reply(r, "{}");
    json::value next = p.read_request();
    p.reply(next, "\"mine\"");
    p.read_request();
  });
  int checks = 0;
  auto client = QmpClient::connect(qemu.path(), deadline_in(10s), [&] {
    ++checks;
    return Status::ok();
  });
  ASSERT_OK(client);
  EXPECT_GE(checks, 2);
  auto next = client->execute("query-status", {}, deadline_in(5s));
  ASSERT_OK(next);
  EXPECT_EQ(next->as_string(), "mine");
}

TEST(QmpClient, StillRunningEndsAWaitWithItsStatus) {
  FakeQemu qemu([](Peer& p) {
    p.write(kGreeting);
    p.read_request();  // qmp_capabilities, never answered
    p.read_request();
  });
  int checks = 0;
  auto client = QmpClient::connect(qemu.path(), deadline_in(10s), [&] {
    return ++checks < 2 ? Status::ok() : Status::aborted("QEMU exited with status 1");
  });
  EXPECT_EQ(client.status().code(), StatusCode::kAborted) << client.status().to_string();
  EXPECT_NE(client.status().message().find("QEMU exited with status 1"), std::string::npos)
      << client.status().to_string();
}

TEST(QmpClient, ConnectToAMissingSocketTimesOut) {
  auto client = QmpClient::connect("/nonexistent-romulus-dir/qmp.sock", deadline_in(30ms));
  EXPECT_EQ(client.status().code(), StatusCode::kTimeout) << client.status().to_string();
}

TEST(QmpClient, ExecuteWithFdPassesTheFd) {
  int received = -1;
  FakeQemu qemu([&](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    received = p.received_fd;
    EXPECT_EQ(r.at("arguments").at("fdname").as_string(), "x");
    p.reply(r, "{}");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_OK(
      client->execute_with_fd("getfd", json::object{{"fdname", "x"}}, fds[0], deadline_in(5s)));
  EXPECT_GE(received, 0);
  ::close(fds[0]);
  ::close(fds[1]);
}

std::string queue_reply(int queue, int last_avail, int shadow_avail, int used, int inuse) {
  return "{\"name\": \"virtio-net\", \"queue-index\": " + std::to_string(queue) +
         ", \"inuse\": " + std::to_string(inuse) +
         ", \"vring-num\": 256, \"last-avail-idx\": " + std::to_string(last_avail) +
         ", \"shadow-avail-idx\": " + std::to_string(shadow_avail) +
         ", \"used-idx\": " + std::to_string(used) +
         ", \"signalled-used\": 0, \"signalled-used-valid\": false}";
}

TEST(QueryVirtqueues, AsksForEveryQueueOfEveryVirtioDevice) {
  const std::string path = "/machine/peripheral-anon/device[0]/virtio-backend";
  FakeQemu qemu([&](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    EXPECT_EQ(r.at("execute").as_string(), "x-query-virtio");
    p.reply(r, "[{\"name\": \"virtio-net\", \"path\": \"" + path + "\"}]");
    r = p.read_request();
    EXPECT_EQ(r.at("execute").as_string(), "x-query-virtio-status");
    EXPECT_EQ(r.at("arguments").at("path").as_string(), path);
    p.reply(r,
            "{\"name\": \"virtio-net\", \"num-vqs\": 2, \"broken\": false, \"status\": "
            "{\"statuses\": [\"VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found\", "
            "\"VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready\"]}}");
    for (int q = 0; q < 2; ++q) {
      r = p.read_request();
      EXPECT_EQ(r.at("execute").as_string(), "x-query-virtio-queue-status");
      EXPECT_EQ(r.at("arguments").at("path").as_string(), path);
      EXPECT_EQ(r.at("arguments").at("queue").as_int64(), q);
      p.reply(r, q == 0 ? queue_reply(0, 6076, 6308, 6076, 0) : queue_reply(1, 65535, 2, 65534, 1));
    }
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto queues = query_virtqueues(*client, deadline_in(5s));
  ASSERT_OK(queues);
  ASSERT_EQ(queues->size(), 2u);
  EXPECT_EQ((*queues)[0].path, path);
  EXPECT_TRUE((*queues)[0].driver_ok);
  EXPECT_FALSE((*queues)[0].broken);
  EXPECT_EQ((*queues)[0].waiting(), 232);
  EXPECT_EQ((*queues)[1].waiting(), 3);  // across the wrap of the 16-bit index
  EXPECT_EQ((*queues)[1].inuse, 1u);
  EXPECT_EQ(describe_virtqueues(*queues),
            "virtio-net queue 0: guest queued 6308, QEMU took 6076, returned 6076; queue 1: "
            "guest queued 2, QEMU took 65535, returned 65534 (1 taken, not returned)");
}

TEST(QueryVirtqueues, AQemuWithoutTheCommandIsRefused) {
  FakeQemu qemu([](Peer& p) {
    p.negotiate();
    json::value r = p.read_request();
    p.write(
        "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command "
        "x-query-virtio has not been found\"}, \"id\": " +
        json::serialize(r.at("id")) + "}\r\n");
    p.read_request();
  });
  auto client = QmpClient::connect(qemu.path(), deadline_in(5s));
  ASSERT_OK(client);
  auto queues = query_virtqueues(*client, deadline_in(5s));
  EXPECT_EQ(queues.status().code(), StatusCode::kRefused) << queues.status().to_string();
}

TEST(QueryVirtqueues, AQueueStatusOfTheWrongShapeIsCorrupt) {
  for (const char* reply :
       {"[]", "{\"name\": \"virtio-net\"}",
        "{\"name\": \"virtio-net\", \"queue-index\": 0, \"inuse\": 0, "
        "\"last-avail-idx\": 70000, \"shadow-avail-idx\": 0, \"used-idx\": 0}",
        "{\"name\": \"virtio-net\", \"queue-index\": 0, \"inuse\": -1, "
        "\"last-avail-idx\": 0, \"shadow-avail-idx\": 0, \"used-idx\": 0}",
        "{\"name\": \"virtio-net\", \"queue-index\": 0, \"inuse\": 0, "
        "\"last-avail-idx\": \"1\", \"shadow-avail-idx\": 0, \"used-idx\": 0}"}) {
    auto s = parse_virtqueue_status(json::parse(reply));
    EXPECT_EQ(s.status().code(), StatusCode::kCorrupt) << reply;
  }
}

TEST(QueryVirtqueues, ABrokenDeviceOrOneWithoutDriverOkIsNamedSo) {
  VirtqueueStatus q;
  q.device = "virtio-net";
  q.path = "/p";
  q.broken = true;
  q.driver_ok = false;
  EXPECT_EQ(describe_virtqueues(std::vector<VirtqueueStatus>{q}),
            "virtio-net (broken) (driver not ready) queue 0: guest queued 0, QEMU took 0, "
            "returned 0");
}

TEST(QueryVirtqueues, DescribingNoQueuesSaysSo) {
  EXPECT_EQ(describe_virtqueues({}), "no virtio queues");
}

}  // namespace
}  // namespace romulus::vm::qmp_client_test
