// Ownership: the state machine under a fake clock and a fake witness.
#include "witness/ownership.h"

#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <vector>

#include <boost/json.hpp>

#include "tests/support/fake_witness.h"
#include "tests/support/status_matchers.h"

namespace romulus::witness::ownership_test {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;
using testing::FakeWitness;
using Kind = Action::Kind;
using S = OwnershipState;

// One node's view of the witness: a link that can be cut without cutting the others.
using Link = testing::CuttableLink;

// Performs the in-flight action `a` of `o` synchronously against `w`.
void execute(Ownership& o, const Action& a, Witness& w, FakeClock& c) {
  const TimePoint sent = c.now;
  switch (a.kind) {
    case Kind::kNone:
      break;
    case Kind::kGrant: {
      auto r = w.grant(o.ttl());
      o.on_grant_result(sent, r, c.now);
      break;
    }
    case Kind::kKeepAlive: {
      auto r = w.keepalive(o.lease());
      o.on_keepalive_result(sent, r, c.now);
      break;
    }
    case Kind::kAcquire: {
      auto r = w.acquire(o.key(), o.value(), o.lease());
      o.on_acquire_result(r, c.now);
      break;
    }
    case Kind::kGet: {
      auto r = w.get(o.key());
      o.on_get_result(r, c.now);
      break;
    }
    case Kind::kLeaseRemaining: {
      auto r = w.lease_remaining(o.waiting_for()->lease);
      o.on_lease_remaining_result(r, c.now);
      break;
    }
    case Kind::kRelease: {
      o.on_release_result(w.release(o.key(), o.lease()), c.now);
      break;
    }
  }
}

struct Node {
  Ownership* own;
  Witness* link;
};

// Runs the nodes, each doing its due actions, jumping the clock from event to
// event, until `until`. After every step, `check` (if any) sees the clock.
void run_until(std::vector<Node> nodes, FakeClock& c, TimePoint until,
               const std::function<void()>& check = {}) {
  for (;;) {
    TimePoint next = until;
    bool did = false;
    for (Node& n : nodes) {
      const Action a = n.own->on_tick(c.now);
      if (a.kind != Kind::kNone && a.at <= c.now) {
        execute(*n.own, a, *n.link, c);
        did = true;
      } else {
        next = std::min(next, a.at);
      }
      if (check) check();
    }
    if (did) continue;
    if (c.now >= until) return;
    c.now = std::max(c.now, next);
  }
}

OwnershipConfig config(const std::string& node, std::chrono::seconds ttl = 5s) {
  OwnershipConfig c;
  c.pair = "pair1";
  c.node_id = node;
  c.replication = node + ".example:7000";
  c.ttl = ttl;
  return c;
}

class OwnershipTest : public ::testing::Test {
 protected:
  FakeClock clock;
  FakeWitness w{clock};
  Link link_a{w}, link_b{w};
  Ownership a{config("a")};
  Ownership b{config("b")};

  void run(Ownership& o, Link& l, Duration d) { run_until({{&o, &l}}, clock, clock.now + d); }
  void run_both(Duration d, const std::function<void()>& check = {}) {
    run_until({{&a, &link_a}, {&b, &link_b}}, clock, clock.now + d, check);
  }
  void make_a_owner() {
    ASSERT_OK(a.request_ownership(clock.now));
    run(a, link_a, 1s);
    ASSERT_EQ(a.state(), S::kOwner);
  }
};

TEST_F(OwnershipTest, OwnerKeepsRenewingAndStaysOwner) {
  make_a_owner();
  run(a, link_a, 60s);
  EXPECT_EQ(a.state(), S::kOwner);
  EXPECT_TRUE(a.may_release(clock.now));
  ASSERT_TRUE(w.holder(a.key()).has_value());
  EXPECT_EQ(w.holder(a.key())->lease, a.lease());
  EXPECT_EQ(w.holder(a.key())->value.node, "a");
}

TEST_F(OwnershipTest, RenewalFailuresFenceExactlyAtTheConservativeDeadline) {
  w.set_latency(20ms);
  make_a_owner();
  run(a, link_a, 10s);
  const TimePoint etcd_expiry = *w.expiry(a.lease());
  link_a.cut = true;
  const TimePoint deadline = a.deadline();
  // Never after etcd could expire the lease; no earlier than the margin (and the send latency)
  // demands.
  EXPECT_LT(deadline, etcd_expiry);
  EXPECT_GE(deadline, etcd_expiry - safety_margin(a.ttl()) - 20ms);
  run(a, link_a, deadline - 1ns - clock.now);
  EXPECT_EQ(a.state(), S::kOwner);
  EXPECT_TRUE(a.may_release(deadline - 1ns));
  EXPECT_FALSE(a.may_release(deadline));
  run(a, link_a, deadline - clock.now);
  EXPECT_EQ(a.state(), S::kFenced);
  EXPECT_FALSE(a.may_release(clock.now));
}

TEST_F(OwnershipTest, FencedOwnerRenewingWhileItsLeaseLivesIsOwnerAgain) {
  make_a_owner();
  link_a.cut = true;
  const TimePoint etcd_expiry = *w.expiry(a.lease());
  run(a, link_a, a.deadline() - clock.now);
  ASSERT_EQ(a.state(), S::kFenced);
  link_a.cut = false;
  run(a, link_a, (etcd_expiry - clock.now) / 2);
  EXPECT_EQ(a.state(), S::kOwner);
  EXPECT_TRUE(a.may_release(clock.now));
  EXPECT_EQ(w.holder(a.key())->lease, a.lease());
}

TEST_F(OwnershipTest, FencedOwnerWhoseKeyWasTakenMeanwhileFollowsTheNewOwner) {
  make_a_owner();
  link_a.cut = true;
  run(a, link_a, a.deadline() - clock.now);
  ASSERT_EQ(a.state(), S::kFenced);
  w.erase_key(a.key());  // an operator deleted it while a's lease still lives
  ASSERT_OK(b.request_ownership(clock.now));
  run(b, link_b, 1s);
  ASSERT_EQ(b.state(), S::kOwner);
  link_a.cut = false;
  run_both(1s, [&] { EXPECT_FALSE(a.may_release(clock.now)); });
  EXPECT_EQ(a.state(), S::kFollower);
  ASSERT_TRUE(a.known_owner().has_value());
  EXPECT_EQ(a.known_owner()->value.node, "b");
}

TEST_F(OwnershipTest, FencedOwnerWhoseLeaseExpiredMustReacquireAndLosesToTheTakeover) {
  make_a_owner();
  run(b, link_b, 1s);  // b follows a
  ASSERT_EQ(b.state(), S::kFollower);
  ASSERT_EQ(b.known_owner()->value.node, "a");
  link_a.cut = true;  // a is cut off from the witness, b is not
  ASSERT_OK(b.request_ownership(clock.now, b.known_owner()->lease));
  run_both(30s, [&] { EXPECT_FALSE(a.may_release(clock.now) && b.may_release(clock.now)); });
  EXPECT_EQ(a.state(), S::kFenced);
  EXPECT_EQ(b.state(), S::kOwner);
  link_a.cut = false;  // heal: a learns its lease is gone, must win the key again, and loses
  run_both(10s, [&] { EXPECT_FALSE(a.may_release(clock.now) && b.may_release(clock.now)); });
  EXPECT_EQ(a.state(), S::kFollower);
  ASSERT_TRUE(a.known_owner().has_value());
  EXPECT_EQ(a.known_owner()->value.node, "b");
  EXPECT_EQ(a.known_owner()->value.replication, "b.example:7000");
  EXPECT_EQ(b.state(), S::kOwner);
}

TEST_F(OwnershipTest, FencedOwnerWhoseLeaseExpiredWinsAgainWhenNobodyTookOver) {
  make_a_owner();
  link_a.cut = true;
  run(a, link_a, 20s);
  ASSERT_EQ(a.state(), S::kFenced);
  link_a.cut = false;
  run(a, link_a, 2s);
  EXPECT_EQ(a.state(), S::kOwner);
  EXPECT_EQ(w.holder(a.key())->lease, a.lease());
}

TEST_F(OwnershipTest, AcquireThatFindsAnotherOwnerFollowsIt) {
  ASSERT_OK(b.request_ownership(clock.now));
  run(b, link_b, 1s);
  ASSERT_EQ(b.state(), S::kOwner);
  ASSERT_OK(a.request_ownership(clock.now));
  run(a, link_a, 1s);
  EXPECT_EQ(a.state(), S::kFollower);
  EXPECT_EQ(a.known_owner()->value.node, "b");
  EXPECT_EQ(a.known_owner()->value.replication, "b.example:7000");
  EXPECT_FALSE(a.may_release(clock.now));
}

TEST_F(OwnershipTest, CandidateWaitsForTheOldOwnersLeaseThenWins) {
  make_a_owner();
  run(b, link_b, 1s);
  ASSERT_EQ(b.known_owner()->value.node, "a");
  const TimePoint a_expiry = *w.expiry(a.lease());
  // a stops (crashed): it is no longer run at all. b judges it lost.
  ASSERT_OK(b.request_ownership(clock.now, b.known_owner()->lease));
  run(b, link_b, 1s);
  EXPECT_EQ(b.state(), S::kCandidate);
  ASSERT_TRUE(b.waiting_for().has_value());
  ASSERT_TRUE(b.waiting_left().has_value());
  EXPECT_GT(*b.waiting_left(), 0ms);
  EXPECT_NE(b.describe(clock.now).find("waiting for the old owner's lease ("), std::string::npos);
  run(b, link_b, a_expiry - clock.now + 2s);
  EXPECT_EQ(b.state(), S::kOwner);
  EXPECT_FALSE(a.may_release(clock.now));
  EXPECT_EQ(w.holder(b.key())->value.node, "b");
}

TEST_F(OwnershipTest, PromptTakeoverWinsWithinOneTryOfTheOldOwnersLeaseBeingGivenUp) {
  make_a_owner();
  run(b, link_b, 1s);
  ASSERT_EQ(b.known_owner()->value.node, "a");
  // a's process died; its lease guard has not given the lease up yet.
  ASSERT_OK(b.request_ownership(clock.now, b.known_owner()->lease, /*prompt=*/true));
  run(b, link_b, 50ms);
  EXPECT_EQ(b.state(), S::kCandidate);
  EXPECT_NE(b.describe(clock.now).find("trying every"), std::string::npos);
  ASSERT_OK(w.release(a.key(), a.lease()));  // the guard gives it up
  run(b, link_b, kPromptRetry + 1ms);
  EXPECT_EQ(b.state(), S::kOwner);
  EXPECT_EQ(w.holder(b.key())->value.node, "b");
}

TEST_F(OwnershipTest, PromptTakeoverStillWaitsOutALeaseThatIsNotGivenUp) {
  make_a_owner();
  run(b, link_b, 1s);
  const TimePoint a_expiry = *w.expiry(a.lease());
  // The evidence was wrong (or the guard is gone): a's lease lives on, and
  // b never owns while it does (Rule 3).
  ASSERT_OK(b.request_ownership(clock.now, b.known_owner()->lease, /*prompt=*/true));
  run(b, link_b, kPromptWindow + 100ms);
  EXPECT_EQ(b.state(), S::kCandidate);
  // Past the window the candidate waits at the usual cadence, asking how long is left.
  EXPECT_NE(b.describe(clock.now).find("ms left)"), std::string::npos);
  run_until({{&b, &link_b}}, clock, a_expiry - 1ms, [&] { EXPECT_NE(b.state(), S::kOwner); });
  run(b, link_b, 2s);
  EXPECT_EQ(b.state(), S::kOwner);
}

TEST_F(OwnershipTest, ABackupThatNeverReadTheKeyWaitsOutWhoeverHoldsIt) {
  make_a_owner();
  const TimePoint a_expiry = *w.expiry(a.lease());
  ASSERT_FALSE(b.known_owner().has_value());
  ASSERT_OK(b.request_ownership(clock.now, kCurrentHolder));
  run(b, link_b, 1s);
  EXPECT_EQ(b.state(), S::kCandidate);
  ASSERT_TRUE(b.waiting_for().has_value());
  EXPECT_EQ(b.waiting_for()->value.node, "a");
  run(b, link_b, a_expiry - clock.now + 2s);
  EXPECT_EQ(b.state(), S::kOwner);
}

TEST_F(OwnershipTest, CandidateKeepsWaitingWhileTheOldOwnerRenews) {
  make_a_owner();
  run(b, link_b, 1s);
  ASSERT_OK(b.request_ownership(clock.now, b.known_owner()->lease));
  run_both(60s, [&] { EXPECT_FALSE(a.may_release(clock.now) && b.may_release(clock.now)); });
  EXPECT_EQ(a.state(), S::kOwner);
  EXPECT_EQ(b.state(), S::kCandidate);
  ASSERT_OK(b.stand_by(clock.now));
  EXPECT_EQ(b.state(), S::kFollower);
}

TEST_F(OwnershipTest, StepDownReleasesTheKeySoTheBackupWinsAtOnce) {
  make_a_owner();
  const TimePoint a_expiry = *w.expiry(a.lease());
  ASSERT_OK(a.step_down(clock.now));
  EXPECT_FALSE(a.may_release(clock.now));
  run(a, link_a, 10ms);
  EXPECT_TRUE(a.release_done());
  EXPECT_FALSE(w.holder(a.key()).has_value());
  ASSERT_OK(b.request_ownership(clock.now));
  run(b, link_b, 10ms);
  EXPECT_EQ(b.state(), S::kOwner);
  EXPECT_LT(clock.now, a_expiry);
}

TEST_F(OwnershipTest, AnAcquireThatLandedAfterItsTimeoutIsRecognisedAsOurs) {
  ASSERT_OK(a.request_ownership(clock.now));
  Action grant = a.on_tick(clock.now);
  ASSERT_EQ(grant.kind, Kind::kGrant);
  execute(a, grant, link_a, clock);
  Action acquire = a.on_tick(clock.now);
  ASSERT_EQ(acquire.kind, Kind::kAcquire);
  ASSERT_OK(w.acquire(a.key(), a.value(), a.lease()));                        // it landed...
  a.on_acquire_result(Status::timeout("no reply within 500 ms"), clock.now);  // ...but timed out
  EXPECT_EQ(a.state(), S::kCandidate);
  run(a, link_a, 1s);
  EXPECT_EQ(a.state(), S::kOwner);
}

TEST_F(OwnershipTest, AStaleResultIsIgnored) {
  make_a_owner();
  const TimePoint deadline = a.deadline();
  a.on_keepalive_result(clock.now, std::chrono::seconds(5), clock.now + 1h);  // nothing in flight
  EXPECT_EQ(a.deadline(), deadline);
}

TEST_F(OwnershipTest, IllegalTransitionsAreRefusedAndLogged) {
  std::vector<std::string> lines;
  OwnershipConfig c = config("c");
  c.log = [&](const std::string& l) { lines.push_back(l); };
  Ownership o(c);
  Status s = o.stand_by(clock.now);  // follower -> follower
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(o.state(), S::kFollower);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("follower -> follower"), std::string::npos);
  ASSERT_OK(o.request_ownership(clock.now));
  Link l(w);
  run(o, l, 1s);
  ASSERT_EQ(o.state(), S::kOwner);
  EXPECT_FALSE(o.request_ownership(clock.now).is_ok());  // owner -> candidate by command
  EXPECT_EQ(o.state(), S::kOwner);
  ASSERT_OK(o.step_down(clock.now));
  EXPECT_FALSE(o.step_down(clock.now).is_ok());  // released is terminal
  EXPECT_FALSE(o.request_ownership(clock.now).is_ok());
  EXPECT_EQ(o.state(), S::kReleased);
  EXPECT_EQ(lines.size(), 4u);
}

TEST(OwnershipNames, StateNamesAreStableSnakeCase) {
  EXPECT_EQ(to_string(S::kFollower), "follower");
  EXPECT_EQ(to_string(S::kCandidate), "candidate");
  EXPECT_EQ(to_string(S::kOwner), "owner");
  EXPECT_EQ(to_string(S::kFenced), "fenced");
  EXPECT_EQ(to_string(S::kReleased), "released");
}

TEST(OwnershipSnapshotJson, AnOwnerWritesTheStatusMembersInTheirOrder) {
  OwnershipSnapshot s;
  s.state = S::kOwner;
  s.lease = 7;
  s.remaining_ms = 1200;
  s.detail = "owner (1200 ms of lease left)";
  s.witness = "etcd://127.0.0.1:2379";
  boost::json::object o;
  s.write_json(o);
  EXPECT_EQ(boost::json::serialize(o),
            R"j({"state":"owner","lease":"7","owner":null,"remaining_ms":1200,)j"
            R"j("detail":"owner (1200 ms of lease left)","witness":"etcd://127.0.0.1:2379"})j");
}

TEST(OwnershipSnapshotJson, ACandidateWaitingNamesTheOldOwnerAndTheLastError) {
  OwnershipSnapshot s;
  s.state = S::kCandidate;
  s.lease = 9;
  s.owner = Owner{OwnerValue{"a", 42, "10.0.0.1:7000"}, 0x7fffffffffffffff, 3};
  s.waiting_ms = 800;
  s.detail = "waiting for the old owner's lease (800 ms left)";
  s.witness = "etcd://w:2379";
  s.last_error = "unavailable: acquire the owner key: timed out";
  boost::json::object o;
  s.write_json(o);
  EXPECT_EQ(boost::json::serialize(o),
            R"j({"state":"candidate","lease":"9","owner":{"node":"a","epoch":42,)j"
            R"j("replication":"10.0.0.1:7000","lease":"9223372036854775807"},"remaining_ms":0,)j"
            R"j("waiting_ms":800,"detail":"waiting for the old owner's lease (800 ms left)",)j"
            R"j("witness":"etcd://w:2379",)j"
            R"j("last_error":"unavailable: acquire the owner key: timed out"})j");
}

TEST(OwnershipConfigCheck, RejectsATtlWithNoRoomForTheMargin) {
  OwnershipConfig c = config("a", 0s);
  EXPECT_FALSE(check_config(c).is_ok());
  EXPECT_OK(check_config(config("a", 1s)));
  EXPECT_GT(1s - safety_margin(1s), Duration::zero());
}

TEST(OwnerValueCoding, RoundTripsAndRejectsGarbage) {
  OwnerValue v{"node-1", 42, "10.0.0.1:7000"};
  auto r = parse_owner_value(encode_owner_value(v));
  ASSERT_OK(r);
  EXPECT_EQ(*r, v);
  EXPECT_FALSE(parse_owner_value("").is_ok());
  EXPECT_FALSE(parse_owner_value("[1]").is_ok());
  EXPECT_FALSE(parse_owner_value(R"({"epoch":1})").is_ok());
  EXPECT_FALSE(parse_owner_value(R"({"node":"a","epoch":-1})").is_ok());
}

TEST(ImageRecordCoding, RoundTripsAndRejectsGarbage) {
  ImageRecord v{"node-2", 1234};
  auto r = parse_image_record(encode_image_record(v));
  ASSERT_OK(r);
  EXPECT_EQ(*r, v);
  EXPECT_EQ(image_key("kv"), "/romulus/kv/image");
  EXPECT_FALSE(parse_image_record("").is_ok());
  EXPECT_FALSE(parse_image_record("{").is_ok());
  EXPECT_FALSE(parse_image_record(R"({"node":7,"epoch":1})").is_ok());
  EXPECT_FALSE(parse_image_record(R"({"node":"a","epoch":"1"})").is_ok());
  EXPECT_FALSE(parse_image_record(std::string(5000, ' ') + R"({"node":"a"})").is_ok());
}

// --- Randomized: two nodes, lossy and slow links, partitions, takeovers. ---
//
// Requests are asynchronous here: each is sent, applied at the witness some
// time later (or lost), and its reply arrives later still (or is lost). At
// every event the invariant is checked: a node that may release holds the key
// at the witness, and its deadline is no later than its lease's expiry there
// (so it holds the key until its deadline). Hence at no instant do both nodes
// may release.
struct Pending {
  Action action;
  TimePoint sent, apply, recv;
  bool applied = false;
  bool lost_request = false, lost_reply = false;
  std::function<void(Ownership&, TimePoint)> deliver;
};

struct SimNode {
  std::unique_ptr<Ownership> own;
  std::optional<Pending> pending;
  bool partitioned = false;
};

std::function<void(Ownership&, TimePoint)> apply_at_witness(const Pending& p, Ownership& o,
                                                            FakeWitness& w) {
  const TimePoint sent = p.sent;
  switch (p.action.kind) {
    case Kind::kGrant: {
      auto r = w.grant(o.ttl());
      return [=](Ownership& x, TimePoint now) { x.on_grant_result(sent, r, now); };
    }
    case Kind::kKeepAlive: {
      auto r = w.keepalive(o.lease());
      return [=](Ownership& x, TimePoint now) { x.on_keepalive_result(sent, r, now); };
    }
    case Kind::kAcquire: {
      auto r = w.acquire(o.key(), o.value(), o.lease());
      return [=](Ownership& x, TimePoint now) { x.on_acquire_result(r, now); };
    }
    case Kind::kGet: {
      auto r = w.get(o.key());
      return [=](Ownership& x, TimePoint now) { x.on_get_result(r, now); };
    }
    case Kind::kLeaseRemaining: {
      auto r = w.lease_remaining(o.waiting_for()->lease);
      return [=](Ownership& x, TimePoint now) { x.on_lease_remaining_result(r, now); };
    }
    case Kind::kRelease: {
      Status s = w.release(o.key(), o.lease());
      return [=](Ownership& x, TimePoint now) { x.on_release_result(s, now); };
    }
    case Kind::kNone:
      break;
  }
  return [](Ownership&, TimePoint) {};
}

void fail(Ownership& o, const Pending& p, TimePoint now) {
  const Status err = Status::timeout("lost");
  switch (p.action.kind) {
    case Kind::kGrant:
      o.on_grant_result(p.sent, err, now);
      break;
    case Kind::kKeepAlive:
      o.on_keepalive_result(p.sent, err, now);
      break;
    case Kind::kAcquire:
      o.on_acquire_result(err, now);
      break;
    case Kind::kGet:
      o.on_get_result(err, now);
      break;
    case Kind::kLeaseRemaining:
      o.on_lease_remaining_result(err, now);
      break;
    case Kind::kRelease:
      o.on_release_result(err, now);
      break;
    case Kind::kNone:
      break;
  }
}

TEST(OwnershipRandomized, TwoNodesNeverBothMayRelease) {
  int owner_changes = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    auto uniform = [&](Duration lo, Duration hi) {
      return Duration(std::uniform_int_distribution<int64_t>(lo.count(), hi.count())(rng));
    };
    auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
    FakeClock clock;
    FakeWitness w(clock);
    std::vector<SimNode> nodes(2);
    const std::string names[2] = {"a", "b"};
    for (int i = 0; i < 2; ++i) nodes[i].own = std::make_unique<Ownership>(config(names[i], 2s));
    ASSERT_OK(nodes[0].own->request_ownership(clock.now));
    const TimePoint end = clock.now + 120s;
    TimePoint next_chaos = clock.now + uniform(0ms, 3s);
    int last_owner = -1;
    bool violated = false;
    while (clock.now < end && !violated) {
      // Find the next event.
      TimePoint next = next_chaos;
      int who = -1;
      for (int i = 0; i < 2; ++i) {
        SimNode& n = nodes[i];
        TimePoint t;
        if (n.pending) {
          t = n.pending->applied ? n.pending->recv : n.pending->apply;
        } else {
          const Action a = n.own->on_tick(clock.now);
          if (a.kind != Kind::kNone && a.at <= clock.now) {
            Pending p;
            p.action = a;
            p.sent = clock.now;
            const Duration max_delay = chance(0.05) ? 3s : 300ms;
            p.apply = p.sent + uniform(0ms, max_delay);
            p.recv = p.apply + uniform(0ms, max_delay);
            p.lost_request = n.partitioned || chance(0.1);
            p.lost_reply = n.partitioned || chance(0.1);
            n.pending = p;
            t = p.apply;
          } else {
            t = a.at;
          }
        }
        if (t < next) {
          next = t;
          who = i;
        }
      }
      clock.now = std::max(clock.now, next);
      if (who < 0) {  // chaos
        next_chaos = clock.now + uniform(0ms, 3s);
        const int i = static_cast<int>(rng() % 2);
        SimNode& n = nodes[i];
        const int what = static_cast<int>(rng() % 10);
        if (what < 4) {
          n.partitioned = !n.partitioned;
        } else if (what < 8 && n.own->state() == S::kFollower) {
          std::optional<LeaseId> displacing;
          if (n.own->known_owner()) displacing = n.own->known_owner()->lease;
          ASSERT_OK(n.own->request_ownership(clock.now, displacing));
        } else if (what == 8 && n.own->state() == S::kCandidate) {
          ASSERT_OK(n.own->stand_by(clock.now));
        } else if (what == 9 && n.own->state() != S::kReleased && chance(0.3)) {
          ASSERT_OK(n.own->step_down(clock.now));
        }
      } else if (nodes[who].pending) {  // else: the node's next action is due now, next round
        SimNode& n = nodes[who];
        Pending& p = *n.pending;
        if (!p.applied) {
          p.applied = true;
          if (!p.lost_request) p.deliver = apply_at_witness(p, *n.own, w);
        } else {
          const Pending done = std::move(p);
          n.pending.reset();
          if (done.lost_request || done.lost_reply) {
            fail(*n.own, done, clock.now);
          } else {
            done.deliver(*n.own, clock.now);
          }
          if (n.own->state() == S::kReleased && n.own->release_done()) {
            n.own = std::make_unique<Ownership>(config(names[who], 2s));  // the node restarts
          }
        }
      }
      // The invariant.
      int releasing = 0;
      for (int i = 0; i < 2; ++i) {
        Ownership& o = *nodes[i].own;
        if (!o.may_release(clock.now)) continue;
        ++releasing;
        if (last_owner != i) ++owner_changes;
        last_owner = i;
        const auto holder = w.holder(o.key());
        const auto expiry = w.expiry(o.lease());
        if (!holder || holder->lease != o.lease() || !expiry || o.deadline() > *expiry) {
          ADD_FAILURE() << "node " << names[i]
                        << " may release but does not hold the key until its deadline";
          violated = true;
        }
      }
      if (releasing > 1) {
        ADD_FAILURE() << "both nodes may release";
        violated = true;
      }
    }
    if (violated) {
      std::cout << "failing seed: " << seed << "\n";
      break;
    }
  }
  EXPECT_GT(owner_changes, 50) << "the simulation should exercise takeovers";
}

}  // namespace
}  // namespace romulus::witness::ownership_test
