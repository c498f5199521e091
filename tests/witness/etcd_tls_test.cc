// The witness over TLS (etcds://): EtcdClient against a real etcd started with
// --cert-file/--key-file/--trusted-ca-file/--client-cert-auth, certificates
// made by the openssl command (tests/support/test_pki.h).
#include <gtest/gtest.h>

#include "tests/support/etcd_process.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_pki.h"
#include "witness/etcd_client.h"
#include "witness/etcd_witness.h"

namespace romulus::witness::etcd_tls_test {
namespace {

using etcd::EtcdClient;
using testing::EtcdCluster;
using testing::TestPki;

class EtcdTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!pki.available()) GTEST_SKIP() << "the openssl command is not installed (scripts/setup)";
    ASSERT_TRUE(pki.make_ca("etcd-ca"));
    ASSERT_TRUE(pki.make_ca("other-ca"));
    ASSERT_TRUE(pki.issue("etcd-server", "etcd-ca", "IP:127.0.0.1"));
    ASSERT_TRUE(pki.issue("node-a", "etcd-ca"));
    ASSERT_TRUE(pki.issue("stranger", "other-ca"));
    auto client = pki.identity("node-a", "etcd-ca");
    ASSERT_OK(client);
    EtcdCluster::Tls tls{pki.path("etcd-server.crt"), pki.path("etcd-server.key"),
                         pki.path("etcd-ca.crt"), *client};
    auto c = EtcdCluster::start(1, tls);
    ASSERT_OK(c);
    cluster = std::move(c).value();
  }

  EtcdClient client_as(const std::string& name, const std::string& ca) {
    auto id = pki.identity(name, ca);
    EXPECT_OK(id);
    EtcdClient::Options o;
    o.tls = id.is_ok() ? *id : nullptr;
    return EtcdClient(cluster->endpoints(), o);
  }

  TestPki pki;
  std::unique_ptr<EtcdCluster> cluster;
};

TEST_F(EtcdTlsTest, AClientWithACertificateFromTheCaOwnsAndReadsTheKey) {
  EtcdClient c = client_as("node-a", "etcd-ca");
  auto lease = c.grant(5);
  ASSERT_OK(lease);
  auto won = c.acquire("/romulus/p/owner", "a", lease->id);
  ASSERT_OK(won);
  EXPECT_TRUE(won->won);
  auto kv = c.get("/romulus/p/owner");
  ASSERT_OK(kv);
  ASSERT_TRUE(kv->has_value());
  EXPECT_EQ((*kv)->value, "a");
  // One TLS connection, kept alive across the calls.
  EXPECT_EQ(c.connections_opened(), 1u);
}

TEST_F(EtcdTlsTest, TheWitnessOpensFromAnEtcdsUrl) {
  EXPECT_EQ(cluster->url().rfind("etcds://127.0.0.1:", 0), 0u) << cluster->url();
  auto id = pki.identity("node-a", "etcd-ca");
  ASSERT_OK(id);
  EtcdClient::Options o;
  o.tls = *id;
  auto w = EtcdWitness::open(cluster->url(), o);
  ASSERT_OK(w);
  auto g = (*w)->grant(std::chrono::seconds(5));
  ASSERT_OK(g);
}

TEST_F(EtcdTlsTest, EtcdRefusesAClientCertificateFromAnotherCa) {
  EtcdClient c = client_as("stranger", "etcd-ca");
  auto lease = c.grant(5);
  ASSERT_FALSE(lease.is_ok());
  EXPECT_EQ(lease.status().code(), StatusCode::kUnavailable) << lease.status().to_string();
}

TEST_F(EtcdTlsTest, AClientWithoutTlsGetsNoAnswerItCanUse) {
  EtcdClient c(cluster->endpoints());
  auto kv = c.get("/romulus/p/owner");
  EXPECT_FALSE(kv.is_ok());
}

TEST_F(EtcdTlsTest, TheClientRefusesAnEtcdWhoseCertificateIsFromAnotherCa) {
  EtcdClient c = client_as("node-a", "other-ca");  // trusts only the other CA
  auto kv = c.get("/romulus/p/owner");
  ASSERT_FALSE(kv.is_ok());
  EXPECT_NE(kv.status().message().find("unable to get local issuer certificate"), std::string::npos)
      << kv.status().message();
}

}  // namespace
}  // namespace romulus::witness::etcd_tls_test
