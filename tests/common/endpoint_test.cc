// common::Endpoint: the one HOST:PORT parser, fed what operators and hostile
// peers type, and the one formatter, which writes back what parse() reads.
#include "common/endpoint.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/support/status_matchers.h"

namespace romulus::common::endpoint_test {
namespace {

TEST(Endpoint, ParsesAddressesNamesAndBracketedIpv6) {
  struct Case {
    const char* text;
    Endpoint want;
  } cases[] = {{"127.0.0.1:7000", {"127.0.0.1", 7000}},
               {"node-b:1", {"node-b", 1}},
               {"localhost:65535", {"localhost", 65535}},
               {"[::1]:7000", {"::1", 7000}},
               {"[2001:db8::7]:2379", {"2001:db8::7", 2379}},
               {"0.0.0.0:7000", {"0.0.0.0", 7000}}};
  for (const Case& c : cases) {
    auto ep = Endpoint::parse(c.text);
    ASSERT_OK(ep) << c.text;
    EXPECT_EQ(*ep, c.want) << c.text;
    EXPECT_EQ(ep->to_string(), c.text) << "written back as read";
  }
}

TEST(Endpoint, RefusesEveryMalformedAddressNamingIt) {
  for (const char* bad :
       {"", ":", ":7000", "host", "host:", "host:0", "host:65536", "host:99999999999",
        "host:-1", "host:+7", "host:7000x", "host: 7000", "host:0x10", "::1:7000", "::1",
        "[::1]", "[::1]7000", "[::1]:", "[::1]:7000x", "[]:7000", "[::1:7000", "a:b:7000", "[[a]:1", "a]b:1", "a b:1",
        "a,b:1", "a/b:1", "a\nb:1"}) {
    auto ep = Endpoint::parse(bad);
    EXPECT_FALSE(ep.is_ok()) << "'" << bad << "' parsed as " << ep->to_string();
    if (!ep.is_ok()) {
      EXPECT_EQ(ep.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(ep.status().message().find(fmt::format("'{}'", bad)), std::string::npos)
          << ep.status().message();
    }
  }
}

TEST(Endpoint, TheErrorSaysWhatToWrite) {
  EXPECT_NE(Endpoint::parse("node-b").status().message().find("ADDR:PORT (e.g. 127.0.0.1:7000"),
            std::string::npos);
  EXPECT_NE(Endpoint::parse("node-b:0").status().message().find("port must be 1..65535"),
            std::string::npos);
}

}  // namespace
}  // namespace romulus::common::endpoint_test
