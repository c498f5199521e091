// EtcdClient and EtcdWitness against a real etcd started by the test.
#include "witness/etcd_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "tests/support/etcd_process.h"
#include "tests/support/status_matchers.h"
#include "witness/etcd_witness.h"

namespace romulus::witness::etcd_client_test {
namespace {

using namespace std::chrono_literals;
using etcd::EtcdClient;
using testing::EtcdCluster;

// Retries `f` until it returns true or `limit` passes (for events that take
// etcd's own time, like a lease expiring or a leader election).
template <typename F>
bool eventually(F f, std::chrono::seconds limit = 30s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return f();
}

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = EtcdCluster::start();
    ASSERT_OK(c);
    cluster = std::move(c).value();
  }
  std::unique_ptr<EtcdCluster> cluster;
  const std::string key = owner_key("pair1");
};

TEST_F(EtcdClientTest, GrantKeepAliveAndRevokeALease) {
  EtcdClient client(cluster->endpoints());
  auto g = client.grant(5);
  ASSERT_OK(g);
  EXPECT_GT(g->id, 0);
  EXPECT_GE(g->ttl, 5);
  auto k = client.keepalive(g->id);
  ASSERT_OK(k);
  EXPECT_GE(*k, 5);
  auto t = client.time_to_live(g->id);
  ASSERT_OK(t);
  EXPECT_GT(*t, 0);
  EXPECT_LE(*t, 5);
  ASSERT_OK(client.revoke(g->id));
  auto gone = client.keepalive(g->id);
  ASSERT_OK(gone);
  EXPECT_EQ(*gone, 0);
  auto ttl_gone = client.time_to_live(g->id);
  ASSERT_OK(ttl_gone);
  EXPECT_LE(*ttl_gone, 0);
  EXPECT_OK(client.revoke(g->id)) << "revoking a lease that is gone is fine";
}

TEST_F(EtcdClientTest, AcquireWinsWhenAbsentAndLosesToTheHolder) {
  EtcdWitness a(cluster->endpoints()), b(cluster->endpoints());
  auto la = a.grant(10s), lb = b.grant(10s);
  ASSERT_OK(la);
  ASSERT_OK(lb);
  const OwnerValue va{"a", 7, "10.0.0.1:7000"}, vb{"b", 7, "10.0.0.2:7000"};
  auto won = a.acquire(key, va, la->id);
  ASSERT_OK(won);
  EXPECT_TRUE(won->won);
  ASSERT_TRUE(won->owner.has_value());
  EXPECT_EQ(won->owner->lease, la->id);
  EXPECT_EQ(won->owner->value, va);
  auto lost = b.acquire(key, vb, lb->id);
  ASSERT_OK(lost);
  EXPECT_FALSE(lost->won);
  ASSERT_TRUE(lost->owner.has_value());
  EXPECT_EQ(lost->owner->lease, la->id);
  EXPECT_EQ(lost->owner->value, va);
  auto got = b.get(key);
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value.replication, "10.0.0.1:7000");
}

TEST_F(EtcdClientTest, TheKeyDisappearsWhenTheOwnersLeaseExpires) {
  EtcdWitness a(cluster->endpoints());
  auto l = a.grant(1s);  // etcd may raise it to its minimum TTL
  ASSERT_OK(l);
  ASSERT_OK(a.acquire(key, {"a", 1, "x:1"}, l->id));
  ASSERT_TRUE(a.get(key)->has_value());
  EXPECT_TRUE(eventually([&] {
    auto g = a.get(key);
    return g.is_ok() && !g->has_value();
  }));
  auto left = a.lease_remaining(l->id);
  ASSERT_OK(left);
  EXPECT_LE(*left, 0ms);
  EtcdWitness b(cluster->endpoints());
  auto lb = b.grant(5s);
  ASSERT_OK(lb);
  auto won = b.acquire(key, {"b", 1, "y:1"}, lb->id);
  ASSERT_OK(won);
  EXPECT_TRUE(won->won);
}

TEST_F(EtcdClientTest, ReleaseDeletesOnlyOurOwnKey) {
  EtcdWitness a(cluster->endpoints()), b(cluster->endpoints());
  auto la = a.grant(10s), lb = b.grant(10s);
  ASSERT_OK(la);
  ASSERT_OK(lb);
  ASSERT_OK(a.acquire(key, {"a", 1, "x:1"}, la->id));
  ASSERT_OK(b.release(key, lb->id));
  auto still = a.get(key);
  ASSERT_OK(still);
  ASSERT_TRUE(still->has_value());
  EXPECT_EQ((*still)->lease, la->id);
  auto b_lease = b.keepalive(lb->id);
  ASSERT_OK(b_lease);
  EXPECT_EQ(*b_lease, 0s) << "release revokes the lease";
  ASSERT_OK(a.release(key, la->id));
  auto gone = a.get(key);
  ASSERT_OK(gone);
  EXPECT_FALSE(gone->has_value());
}

TEST_F(EtcdClientTest, TheUnprotectedRecordIsWrittenOnlyUnderTheOwnersLease) {
  EtcdClient a(cluster->endpoints()), b(cluster->endpoints());
  const std::string marker = "/romulus/pair1/unprotected";
  auto la = a.grant(10), lb = b.grant(10);
  ASSERT_OK(la);
  ASSERT_OK(lb);
  ASSERT_OK(a.acquire(key, "a", la->id));
  auto by_b = b.put_if_owner(marker, "b", key, lb->id);
  ASSERT_OK(by_b);
  EXPECT_FALSE(*by_b) << "b does not own the pair";
  auto by_a = a.put_if_owner(marker, "a", key, la->id);
  ASSERT_OK(by_a);
  EXPECT_TRUE(*by_a);
  // The record outlives the owner's lease.
  ASSERT_OK(a.revoke(la->id));
  auto kv = b.get(marker);
  ASSERT_OK(kv);
  ASSERT_TRUE(kv->has_value());
  EXPECT_EQ((*kv)->value, "a");
}

TEST_F(EtcdClientTest, AGuardedAcquireCannotWinWhileAnotherNodesRecordStands) {
  EtcdClient a(cluster->endpoints()), b(cluster->endpoints());
  const std::string marker = "/romulus/pair1/unprotected";
  ASSERT_OK(a.remove(marker));
  auto la = a.grant(10), lb = b.grant(10);
  ASSERT_OK(la);
  ASSERT_OK(lb);
  ASSERT_OK(a.acquire(key, "a", la->id));
  ASSERT_TRUE(*a.put_if_owner(marker, "a", key, la->id));
  ASSERT_OK(a.revoke(la->id));  // a is gone; the key is free, the record is not
  const etcd::AcquireGuard b_guard{marker, "b"};
  auto r = b.acquire(key, "b", lb->id, &b_guard);
  ASSERT_OK(r);
  EXPECT_FALSE(r->won);
  EXPECT_TRUE(r->blocked);
  EXPECT_FALSE(r->current.has_value());
  // The node that wrote the record may take the pair back.
  auto la2 = a.grant(10);
  ASSERT_OK(la2);
  const etcd::AcquireGuard a_guard{marker, "a"};
  auto back = a.acquire(key, "a", la2->id, &a_guard);
  ASSERT_OK(back);
  EXPECT_TRUE(back->won);
  // Cleared by its writer only; then anyone may win once the key is free.
  auto wrong = b.delete_if_value(marker, "b");
  ASSERT_OK(wrong);
  EXPECT_FALSE(*wrong);
  auto cleared = a.delete_if_value(marker, "a");
  ASSERT_OK(cleared);
  EXPECT_TRUE(*cleared);
  ASSERT_OK(a.revoke(la2->id));
  auto won = b.acquire(key, "b", lb->id, &b_guard);
  ASSERT_OK(won);
  EXPECT_TRUE(won->won);
}

TEST_F(EtcdClientTest, AKeepAliveConnectionIsReusedAcrossCalls) {
  EtcdClient client(cluster->endpoints());
  for (int i = 0; i < 50; ++i) ASSERT_OK(client.get("/x")) << i;
  auto g = client.grant(5);
  ASSERT_OK(g);
  for (int i = 0; i < 10; ++i) ASSERT_OK(client.keepalive(g->id)) << i;
  EXPECT_EQ(client.connections_opened(), 1u);
}

TEST_F(EtcdClientTest, TheNextEndpointIsUsedWhenTheFirstIsDead) {
  auto dead = testing::free_loopback_ports(1);
  ASSERT_OK(dead);
  std::vector<etcd::Endpoint> eps = {{"127.0.0.1", (*dead)[0]}, cluster->endpoints()[0]};
  EtcdClient client(eps);
  auto g = client.grant(5);
  ASSERT_OK(g);
  EXPECT_OK(client.keepalive(g->id));
}

TEST(EtcdClientUnreachable, ARefusingEndpointGivesAnError) {
  auto dead = testing::free_loopback_ports(1);
  ASSERT_OK(dead);
  EtcdClient client({{"127.0.0.1", (*dead)[0]}});
  auto r = client.grant(5);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST(EtcdClientUnreachable, ASilentEndpointGivesAnErrorAtTheDeadline) {
  // A listener that never answers: connect succeeds, the reply never comes.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  EtcdClient::Options options;
  options.timeout = 100ms;
  EtcdClient client({{"127.0.0.1", ntohs(a.sin_port)}}, options);
  auto r = client.keepalive(1);
  close(fd);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("no reply within 100 ms"), std::string::npos)
      << r.status().to_string();
}

TEST(EtcdClientCluster, AThreeMemberClusterKeepsWorkingWithOneMemberKilled) {
  auto c = EtcdCluster::start(3);
  ASSERT_OK(c);
  EtcdWitness a((*c)->endpoints());
  auto l = a.grant(10s);
  ASSERT_OK(l);
  ASSERT_OK(a.acquire(owner_key("p3"), {"a", 1, "x:1"}, l->id));
  (*c)->kill_member(0);
  // The survivors may need a new leader first: wait for the event, not a time.
  EXPECT_TRUE(eventually([&] {
    auto k = a.keepalive(l->id);
    return k.is_ok() && *k > 0s;
  }));
  auto g = a.get(owner_key("p3"));
  ASSERT_OK(g);
  ASSERT_TRUE(g->has_value());
  EXPECT_EQ((*g)->lease, l->id);
  EtcdWitness b((*c)->endpoints());
  auto lb = b.grant(10s);
  ASSERT_OK(lb);
  auto lost = b.acquire(owner_key("p3"), {"b", 1, "y:1"}, lb->id);
  ASSERT_OK(lost);
  EXPECT_FALSE(lost->won);
}

TEST(EtcdUrl, ParsesAListAndWritesItBackTheSame) {
  auto e = etcd::EtcdUrl::parse("etcd://127.0.0.1:2379,host-b:22379,[::1]:3000");
  ASSERT_OK(e);
  ASSERT_EQ(e->endpoints.size(), 3u);
  EXPECT_FALSE(e->tls);
  EXPECT_EQ(e->endpoints[1], (etcd::Endpoint{"host-b", 22379}));
  EXPECT_EQ(e->endpoints[2].host, "::1");
  EXPECT_EQ(e->to_string(), "etcd://127.0.0.1:2379,host-b:22379,[::1]:3000");
  auto tls = etcd::EtcdUrl::parse("etcds://10.0.0.1:2379");
  ASSERT_OK(tls);
  EXPECT_TRUE(tls->tls);
  EXPECT_EQ(tls->to_string(), "etcds://10.0.0.1:2379");
}

TEST(EtcdUrl, RefusesWhatIsNotAWitnessList) {
  for (const char* bad : {"10.0.0.1:2379", "http://10.0.0.1:2379", "etcd://", "etcd://host",
                          "etcd://host:0", "etcd://host:99999", "etcd://a:1,", "etcd://,a:1",
                          "etcd://a:1,,b:2", "etcd://::1:2379", "etcd://[::1]2379"}) {
    auto r = etcd::EtcdUrl::parse(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
    if (!r.is_ok()) {
      EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
    }
  }
}

}  // namespace
}  // namespace romulus::witness::etcd_client_test
