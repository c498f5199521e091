// The bank's request parser (examples/bank/bank_request.h): the grammar, and
// that bad input is one error text, never a request.
#include <gtest/gtest.h>

#include <string>

#include "examples/bank/bank_request.h"

namespace romulus::bank::bank_request_test {
namespace {

const Request* request(const ParseResult& r) { return std::get_if<Request>(&r); }
std::string error(const ParseResult& r) {
  auto* e = std::get_if<std::string>(&r);
  return e ? *e : "";
}

TEST(BankRequestTest, TransferHasAccountsAmountAndId) {
  auto r = parse_request("TRANSFER 3 14 250 run1-0-7\r");
  ASSERT_NE(request(r), nullptr) << error(r);
  EXPECT_EQ(request(r)->command, Command::kTransfer);
  EXPECT_EQ(request(r)->from, 3u);
  EXPECT_EQ(request(r)->to, 14u);
  EXPECT_EQ(request(r)->amount, 250u);
  EXPECT_EQ(request(r)->id, "run1-0-7");
}

TEST(BankRequestTest, SimpleCommandsTakeNoArguments) {
  EXPECT_EQ(request(parse_request("TOTAL"))->command, Command::kTotal);
  EXPECT_EQ(request(parse_request("AUDIT"))->command, Command::kAudit);
  EXPECT_EQ(request(parse_request("PING"))->command, Command::kPing);
  EXPECT_EQ(request(parse_request("BALANCE 9"))->from, 9u);
  EXPECT_EQ(request(parse_request("CHECK a.b:c"))->id, "a.b:c");
  EXPECT_EQ(error(parse_request("TOTAL 1")), "ERROR usage: TOTAL");
  EXPECT_EQ(error(parse_request("AUDIT ")), "ERROR usage: AUDIT");
}

TEST(BankRequestTest, MalformedRequestsAreOneErrorEach) {
  for (const char* line :
       {"", " ", "TRANSFER", "TRANSFER 1 2 3", "TRANSFER 1 2 3 id extra", "TRANSFER  1 2 3 id",
        "TRANSFER -1 2 3 id", "TRANSFER 1 2 0 id", "TRANSFER 1 2 1000000000 id",
        "TRANSFER 1 1 5 id", "TRANSFER 1 2 3 bad/id", "TRANSFER 1 2 3 \xff", "transfer 1 2 3 id",
        "BALANCE", "BALANCE x", "CHECK", "CHECK a b", "NOPE"}) {
    auto r = parse_request(line);
    EXPECT_EQ(request(r), nullptr) << line;
    EXPECT_EQ(error(r).rfind("ERROR ", 0), 0u) << line;
  }
  EXPECT_EQ(error(parse_request("TRANSFER 1 2 3 " + std::string(65, 'x'))).rfind("ERROR bad id", 0),
            0u);
  EXPECT_EQ(error(parse_request(std::string(300, 'A'))), "ERROR line too long");
}

}  // namespace
}  // namespace romulus::bank::bank_request_test
