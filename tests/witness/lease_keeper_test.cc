// LeaseKeeper: two nodes' keepers against a real etcd started by the test.
#include "witness/lease_keeper.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "tests/support/etcd_process.h"
#include "tests/support/fake_witness.h"
#include "tests/support/status_matchers.h"
#include "witness/etcd_witness.h"

namespace romulus::witness::lease_keeper_test {
namespace {

using namespace std::chrono_literals;
using testing::EtcdCluster;
using S = OwnershipState;

// A witness whose link to etcd can be cut from the test thread.
LeaseKeeperOptions options(const std::string& node) {
  LeaseKeeperOptions o;
  o.pair = "pair1";
  o.node_id = node;
  o.replication = node + ".example:7000";
  o.ttl = 2s;
  return o;
}

// Waits (on the keeper's own state changes, with a generous limit) for `pred`.
template <typename F>
bool eventually(F pred, std::chrono::seconds limit = 30s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

class LeaseKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = EtcdCluster::start();
    ASSERT_OK(c);
    cluster = std::move(c).value();
  }
  std::unique_ptr<Witness> witness() { return std::make_unique<EtcdWitness>(cluster->endpoints()); }
  std::unique_ptr<EtcdCluster> cluster;
};

TEST(LeaseKeeperStart, AnUnreachableWitnessIsOneClearErrorLine) {
  auto dead = testing::free_loopback_ports(1);
  ASSERT_OK(dead);
  LeaseKeeper k(
      std::make_unique<EtcdWitness>(std::vector<etcd::Endpoint>{{"127.0.0.1", (*dead)[0]}}),
      options("a"));
  const Status s = k.start();
  ASSERT_FALSE(s.is_ok());
  const std::string prefix =
      fmt::format("cannot reach the witness at etcd://127.0.0.1:{}: ", (*dead)[0]);
  EXPECT_EQ(s.message().rfind(prefix, 0), 0u) << s.message();
  EXPECT_NE(s.message().find("; start etcd or check --witness"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
}

TEST_F(LeaseKeeperTest, APrimaryOwnsAndItsBackupFollowsIt) {
  LeaseKeeper a(witness(), options("a"));
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  EXPECT_TRUE(a.may_release(Clock::now()));
  EXPECT_GT(a.snapshot(Clock::now()).remaining_ms, 0);

  std::mutex mu;
  std::vector<OwnershipChange> seen;
  LeaseKeeper b(witness(), options("b"), [&](const OwnershipChange& c) {
    std::lock_guard lk(mu);
    seen.push_back(c);
  });
  ASSERT_OK(b.start());
  ASSERT_OK(b.try_acquire());  // b also wants it, but a holds it: b must follow a
  EXPECT_EQ(b.wait_while_candidate(30s), S::kFollower);
  EXPECT_FALSE(b.may_release(Clock::now()));
  const OwnershipSnapshot snap = b.snapshot(Clock::now());
  ASSERT_TRUE(snap.owner.has_value());
  EXPECT_EQ(snap.owner->value.node, "a");
  EXPECT_EQ(snap.owner->value.replication, "a.example:7000");
  boost::json::object status;
  snap.write_json(status);
  const std::string text = boost::json::serialize(status);
  EXPECT_NE(text.find(R"("state":"follower")"), std::string::npos) << text;
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return !seen.empty() && seen.back().to == S::kFollower;
  }));
  std::lock_guard lk(mu);
  ASSERT_TRUE(seen.back().owner.has_value());
  EXPECT_EQ(seen.back().owner->value.node, "a");
}

TEST_F(LeaseKeeperTest, AnOwnerCutOffFromTheWitnessFencesBeforeTheBackupTakesOver) {
  EtcdWitness etcd_a(cluster->endpoints());  // outlives the keeper below
  auto cuttable = std::make_unique<testing::CuttableLink>(etcd_a);
  testing::CuttableLink* link_a = cuttable.get();
  std::atomic<bool> a_fenced{false};
  LeaseKeeper a(std::move(cuttable), options("a"), [&](const OwnershipChange& c) {
    if (c.to == S::kFenced) a_fenced = true;
  });
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);

  std::atomic<bool> overlap{false};
  LeaseKeeper* a_ptr = &a;
  LeaseKeeper b(witness(), options("b"), [&](const OwnershipChange& c) {
    // At the moment b owns, a must already have stopped releasing.
    if (c.to == S::kOwner && a_ptr->may_release(Clock::now())) overlap = true;
  });
  ASSERT_OK(b.start());
  ASSERT_TRUE(eventually([&] { return b.snapshot(Clock::now()).owner.has_value(); }));
  link_a->cut = true;
  ASSERT_OK(b.request_takeover());
  ASSERT_EQ(b.wait_while_candidate(60s), S::kOwner);
  EXPECT_FALSE(overlap);
  EXPECT_TRUE(a_fenced);
  EXPECT_FALSE(a.may_release(Clock::now()));
  EXPECT_EQ(a.state(), S::kFenced);

  link_a->cut = false;  // heal: a finds its lease gone, must win again, and follows b
  ASSERT_TRUE(eventually([&] { return a.state() == S::kFollower; }));
  EXPECT_EQ(a.snapshot(Clock::now()).owner->value.node, "b");
  EXPECT_TRUE(b.may_release(Clock::now()));
}

TEST_F(LeaseKeeperTest, ACandidateReportsHowLongTheOldOwnersLeaseHasLeft) {
  LeaseKeeper a(witness(), options("a"));
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  LeaseKeeper b(witness(), options("b"));
  ASSERT_OK(b.start());
  ASSERT_TRUE(eventually([&] { return b.snapshot(Clock::now()).owner.has_value(); }));
  ASSERT_OK(b.request_takeover());  // a is alive and renewing: b waits
  ASSERT_TRUE(eventually([&] { return b.snapshot(Clock::now()).waiting_ms.has_value(); }));
  const OwnershipSnapshot snap = b.snapshot(Clock::now());
  EXPECT_EQ(snap.state, S::kCandidate);
  EXPECT_NE(snap.detail.find("waiting for the old owner's lease ("), std::string::npos)
      << snap.detail;
  EXPECT_TRUE(a.may_release(Clock::now()));
  ASSERT_OK(b.stand_by());
  EXPECT_EQ(b.state(), S::kFollower);
}

TEST_F(LeaseKeeperTest, TellsItsLeaseGuardEachLeaseBeforeItHoldsTheKeyAndNoneOnceReleased) {
  std::mutex mu;
  std::vector<LeaseId> told;
  LeaseKeeperOptions o = options("a");
  o.on_lease = [&](LeaseId l) {
    std::lock_guard lock(mu);
    told.push_back(l);
  };
  LeaseKeeper a(witness(), o);
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  const LeaseId held = a.snapshot(Clock::now()).lease;
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(told, std::vector<LeaseId>{held});
  }
  ASSERT_OK(a.step_down());
  a.stop();  // waits for the release
  std::lock_guard lock(mu);
  EXPECT_EQ(told, (std::vector<LeaseId>{held, 0}));
}

TEST_F(LeaseKeeperTest, APromptTakeoverWinsOnceTheDeadOwnersLeaseIsRevoked) {
  LeaseKeeper a(witness(), options("a"));
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  const LeaseId a_lease = a.snapshot(Clock::now()).lease;
  LeaseKeeper b(witness(), options("b"));
  ASSERT_OK(b.start());
  ASSERT_TRUE(eventually([&] { return b.snapshot(Clock::now()).owner.has_value(); }));
  a.stop();  // "dies": no step-down, the lease lives on at etcd
  ASSERT_OK(b.request_takeover(/*prompt=*/true));
  // What a's lease guard does once a's process is gone.
  EtcdWitness guard(cluster->endpoints());
  ASSERT_OK(guard.release(owner_key("pair1"), a_lease));
  EXPECT_EQ(b.wait_while_candidate(30s), S::kOwner);
}

TEST_F(LeaseKeeperTest, StepDownStopsReleasesAtOnceAndHandsTheKeyOver) {
  LeaseKeeper a(witness(), options("a"));
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  ASSERT_OK(a.step_down());
  EXPECT_FALSE(a.may_release(Clock::now()));
  a.stop();  // completes the release
  LeaseKeeper b(witness(), options("b"));
  ASSERT_OK(b.start());
  ASSERT_OK(b.try_acquire());
  EXPECT_EQ(b.wait_while_candidate(30s), S::kOwner);
}

TEST_F(LeaseKeeperTest, StopWithoutStartAndTwiceIsHarmless) {
  LeaseKeeper never_started(witness(), options("a"));
  never_started.stop();
  LeaseKeeper a(witness(), options("a"));
  ASSERT_OK(a.start());
  ASSERT_OK(a.try_acquire());
  ASSERT_EQ(a.wait_while_candidate(30s), S::kOwner);
  a.stop();
  a.stop();
  EXPECT_FALSE(a.may_release(Clock::now()));
}

}  // namespace
}  // namespace romulus::witness::lease_keeper_test
