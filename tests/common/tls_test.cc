// The replication link's security: which option sets are valid, when plaintext
// is allowed, and what a TLS handshake between two LinkStreams accepts and
// refuses (certificates made by the `openssl` command in a temp dir).
#include "common/tls.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "common/link_stream.h"
#include "tests/support/status_matchers.h"
#include "tests/support/test_pki.h"

namespace romulus::common::tls_test {
namespace {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

TEST(LinkOptions, NoTlsAndNoInsecureIsValid) { EXPECT_OK(check_link_options({}, false)); }

TEST(LinkOptions, AllThreeFilesAreValid) {
  EXPECT_OK(check_link_options({"a.crt", "a.key", "ca.crt", ""}, false));
  EXPECT_OK(check_link_options({"a.crt", "a.key", "ca.crt", "node-b"}, false));
}

TEST(LinkOptions, APartialSetSaysAllThreeAreNeeded) {
  for (const TlsFiles& f : {TlsFiles{"a.crt", "", "", ""}, TlsFiles{"", "a.key", "ca.crt", ""},
                            TlsFiles{"a.crt", "a.key", "", ""}}) {
    const Status st = check_link_options(f, false);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("all three of --tls-cert, --tls-key and --tls-ca"),
              std::string::npos)
        << st.message();
  }
}

TEST(LinkOptions, PeerNameWithoutTlsIsRefused) {
  const Status st = check_link_options({"", "", "", "node-b"}, false);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--tls-peer-name needs"), std::string::npos);
}

TEST(LinkOptions, InsecureWithTlsContradicts) {
  const Status st = check_link_options({"a.crt", "a.key", "ca.crt", ""}, true);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("drop --insecure"), std::string::npos);
}

TEST(Loopback, LoopbackAddressesAndLocalhostAre) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("::ffff:127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
}

TEST(Loopback, WildcardsOtherAddressesAndUnknownNamesAreNot) {
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("10.77.1.1"));
  EXPECT_FALSE(is_loopback_host("192.0.2.7"));
  EXPECT_FALSE(is_loopback_host("::ffff:10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("no-such-host.invalid"));
}

TEST(Loopback, PlaintextOffLoopbackNeedsInsecure) {
  EXPECT_OK(check_plaintext_allowed(Endpoint{"127.0.0.1", 7000}, "--listen", false));
  EXPECT_OK(check_plaintext_allowed(Endpoint{"10.0.0.5", 7000}, "--backup", true));
  const Status st = check_plaintext_allowed(Endpoint{"10.0.0.5", 7000}, "--backup", false);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--backup 10.0.0.5:7000 is not a loopback address"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("--insecure"), std::string::npos);
  const Status v6 = check_plaintext_allowed(Endpoint{"2001:db8::1", 7000}, "--listen", false);
  EXPECT_NE(v6.message().find("[2001:db8::1]:7000"), std::string::npos) << v6.message();
}

// A CA and certificates in a temp dir, made with the openssl command.
class Certs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = std::make_unique<testing::TestPki>();
    if (!pki_->available()) return;
    ASSERT_TRUE(pki_->make_ca("ca"));
    ASSERT_TRUE(pki_->make_ca("other-ca"));
    for (const char* n : {"node-a", "node-b", "mallory"}) ASSERT_TRUE(pki_->issue(n, "ca"));
    ASSERT_TRUE(pki_->issue("stranger", "other-ca"));
  }
  static void TearDownTestSuite() { pki_.reset(); }
  void SetUp() override {
    if (!pki_->available()) GTEST_SKIP() << "the openssl command is not installed (scripts/setup)";
  }

  static std::string path(const std::string& file) { return pki_->path(file); }
  static std::shared_ptr<TlsIdentity> identity(const std::string& name, const std::string& ca,
                                               const std::string& peer) {
    auto id = pki_->identity(name, ca, peer);
    EXPECT_OK(id);
    return id.is_ok() ? *id : nullptr;
  }

  struct Outcome {
    boost::system::error_code client, server;
    std::string client_why, server_why, server_saw;
  };
  // One handshake over loopback; a TLS 1.3 client learns of the server's
  // refusal of its certificate only on its first read, so it reads once.
  static Outcome handshake(const TlsIdentity& client_id, const TlsIdentity& server_id) {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    std::optional<LinkStream> server, client;
    Outcome out;
    std::array<uint8_t, 16> buf{};
    acceptor.async_accept([&](boost::system::error_code ec, tcp::socket s) {
      ASSERT_FALSE(ec);
      server.emplace(std::move(s), server_id);
      server->async_handshake(LinkStream::Side::kServer, [&](boost::system::error_code e) {
        out.server = e;
        if (e) {
          out.server_why = server->describe_failure(e);
          server->close();
          return;
        }
        out.server_saw = server->peer_subject();
        server->async_write(asio::buffer("ok", 2), [](boost::system::error_code, size_t) {});
      });
    });
    client.emplace(tcp::socket(io), client_id);
    client->socket().async_connect(acceptor.local_endpoint(), [&](boost::system::error_code ec) {
      ASSERT_FALSE(ec);
      client->async_handshake(LinkStream::Side::kClient, [&](boost::system::error_code e) {
        if (e) {
          out.client = e;
          out.client_why = client->describe_failure(e);
          return;
        }
        client->async_read_some(asio::buffer(buf), [&](boost::system::error_code r, size_t) {
          out.client = r;
          if (r) out.client_why = client->describe_failure(r);
        });
      });
    });
    io.run_for(std::chrono::seconds(20));
    return out;
  }

  static inline std::unique_ptr<testing::TestPki> pki_;
};

TEST_F(Certs, TheRightPeersCompleteTheHandshakeAndSeeEachOthersName) {
  auto a = identity("node-a", "ca", "node-b");
  auto b = identity("node-b", "ca", "node-a");
  const auto out = handshake(*a, *b);
  EXPECT_FALSE(out.server) << out.server_why;
  EXPECT_FALSE(out.client) << out.client_why;
  EXPECT_EQ(out.server_saw, "/CN=node-a");
}

TEST_F(Certs, TheServerRefusesAClientWithTheWrongName) {
  auto mallory = identity("mallory", "ca", "");
  auto b = identity("node-b", "ca", "node-a");
  const auto out = handshake(*mallory, *b);
  ASSERT_TRUE(out.server);
  EXPECT_NE(out.server_why.find("hostname mismatch"), std::string::npos) << out.server_why;
  EXPECT_NE(out.server_why.find("CN=mallory"), std::string::npos) << out.server_why;
  EXPECT_TRUE(out.client);
  EXPECT_NE(out.client_why.find("does not accept this node's certificate"), std::string::npos)
      << out.client_why;
}

TEST_F(Certs, TheServerRefusesAClientFromAnotherCa) {
  auto stranger = identity("stranger", "ca", "");  // trusts the pair's CA
  auto b = identity("node-b", "ca", "");
  const auto out = handshake(*stranger, *b);
  ASSERT_TRUE(out.server);
  EXPECT_NE(out.server_why.find("unable to get local issuer certificate"), std::string::npos)
      << out.server_why;
}

TEST_F(Certs, TheClientRefusesAServerFromAnotherCa) {
  auto a = identity("node-a", "ca", "");
  auto stranger = identity("stranger", "ca", "");
  const auto out = handshake(*a, *stranger);
  ASSERT_TRUE(out.client);
  EXPECT_NE(out.client_why.find("unable to get local issuer certificate"), std::string::npos)
      << out.client_why;
}

TEST_F(Certs, TheClientChecksTheServersNameToo) {
  auto a = identity("node-a", "ca", "node-b");
  auto mallory = identity("mallory", "ca", "");
  const auto out = handshake(*a, *mallory);
  ASSERT_TRUE(out.client);
  EXPECT_NE(out.client_why.find("hostname mismatch"), std::string::npos) << out.client_why;
}

TEST_F(Certs, AKeyThatIsNotTheCertificatesIsRefusedAtLoad) {
  auto id = TlsIdentity::load({path("node-a.crt"), path("node-b.key"), path("ca.crt"), ""});
  ASSERT_FALSE(id.is_ok());
  EXPECT_NE(id.status().message().find("is not the key of the certificate"), std::string::npos)
      << id.status().message();
}

TEST_F(Certs, AMissingFileIsNamedInTheError) {
  auto id = TlsIdentity::load({path("node-a.crt"), path("node-a.key"), path("nope.crt"), ""});
  ASSERT_FALSE(id.is_ok());
  EXPECT_NE(id.status().message().find("--tls-ca '" + path("nope.crt") + "'"), std::string::npos)
      << id.status().message();
}

TEST_F(Certs, AFailedReloadKeepsTheContextInUse) {
  const std::string cert = path("reload.crt"), key = path("reload.key");
  std::filesystem::copy_file(path("node-a.crt"), cert);
  std::filesystem::copy_file(path("node-a.key"), key);
  auto id = TlsIdentity::load({cert, key, path("ca.crt"), ""});
  ASSERT_OK(id);
  const auto before = (*id)->context();
  std::ofstream(key, std::ios::trunc) << "not a key\n";
  EXPECT_FALSE((*id)->reload().is_ok());
  EXPECT_EQ((*id)->context(), before);
  std::filesystem::copy_file(path("node-b.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(path("node-b.crt"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_OK((*id)->reload());
  EXPECT_NE((*id)->context(), before);
  EXPECT_NE((*id)->describe().find("CN=node-b"), std::string::npos) << (*id)->describe();
}

TEST_F(Certs, TheCertificateInUseIsNamedWithItsExpiry) {
  auto id = TlsIdentity::load({path("node-a.crt"), path("node-a.key"), path("ca.crt"), ""});
  ASSERT_OK(id);
  EXPECT_NE((*id)->subject().find("CN=node-a"), std::string::npos) << (*id)->subject();
  // Issued with -days 2: it expires between one and three days from now.
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  EXPECT_GT((*id)->not_after(), now + 86400);
  EXPECT_LT((*id)->not_after(), now + 3 * 86400);
}

}  // namespace
}  // namespace romulus::common::tls_test
