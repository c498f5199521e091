// romulus-bank: a TCP bank over SQLite, its database in the Romulus arena through
// the `romulus` VFS, so a failover resumes it with every committed transfer.
//
//   romulus-bank [--port N] [--listen ADDR] [--db NAME] [--vfs romulus|default]
//                [--journal-mode delete|truncate|persist|wal] [--synchronous off|normal|full]
//                [--accounts 100] [--initial 1000]
//
// Under a supervisor it listens on 127.0.0.1:<ROMULUS_SERVICE_PORT>; alone on
// ADDR:N (default 127.0.0.1:7100; --port 0 picks a free port, printed on start).
// --vfs default (with a file path as --db) runs the same bank on an ordinary
// file, the single-machine baseline of docs/performance.md.
//
// Protocol (request grammar in bank_request.h), one reply line per request:
//   TRANSFER <from> <to> <amount> <id>  -> OK <id> | DUPLICATE <id> | REFUSED insufficient funds
//   BALANCE <account>                   -> BALANCE <n>
//   CHECK <id>                          -> FOUND <id> <from> <to> <amount> | NOT_FOUND <id>
//   TOTAL                               -> TOTAL <sum of balances>
//   AUDIT                               -> AUDIT ok total=<n> transfers=<k> | AUDIT FAILED <why>
//   PING                                -> PONG
// or "ERROR <what>". A line longer than 256 bytes gets "ERROR line too long" and
// the connection is closed.
//
// Each TRANSFER is one SQL transaction (BEGIN IMMEDIATE .. COMMIT); its reply is
// written only after COMMIT returned, and the output proxy holds it until the
// checkpoint holding the commit is acknowledged. A transfer id is recorded once:
// a repeated id is answered DUPLICATE (the transfer was committed before) and
// changes nothing. AUDIT checks the invariants: PRAGMA integrity_check is ok,
// the balances sum to accounts * initial, and every account's balance is its
// initial balance plus what the transfer log says it received minus what it sent.
//
// Threads: one. The io_context and the SQLite connection run on main().
#include <signal.h>
#include <sqlite3.h>

#include <array>
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>,
// which g++ 12 rejects in C++20 mode, so <utility> comes before it.
#include <utility>
// (a separate include block, so that clang-format keeps this order)
#include <boost/asio.hpp>

#include "examples/bank/bank_request.h"
#include "examples/support/line_server.h"
#include "guest/guest.h"
#include "guest/sqlite/sqlite_vfs.h"

namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
using asio::ip::tcp;
using romulus::bank::Command;
using romulus::bank::Request;

struct Options {
  std::string listen = "127.0.0.1";
  uint16_t port = 7100;
  std::string db = "bank.db";
  std::string vfs = "romulus";
  std::string journal_mode = "wal";
  std::string synchronous = "off";
  uint32_t accounts = 100;
  int64_t initial = 1000;
};

// A prepared statement, finalized on destruction.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { finalize(); }
  void finalize() {
    sqlite3_finalize(st_);
    st_ = nullptr;
  }
  int prepare(sqlite3* db, const char* sql) {
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st_, nullptr);
  }
  sqlite3_stmt* get() const { return st_; }
  // Resets and clears bindings, so the statement holds no read transaction open.
  void reset() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }

 private:
  sqlite3_stmt* st_ = nullptr;
};

// The accounts and the transfer log in one SQLite database. Not thread-safe.
class Bank {
 public:
  ~Bank() {
    for (Statement* s : all_statements()) s->finalize();
    sqlite3_close(db_);
  }

  // Opens (creating on first start) the database; a one-line error on failure.
  std::string open(const Options& o) {
    accounts_ = o.accounts;
    initial_ = o.initial;
    const char* vfs = o.vfs == "default" ? nullptr : o.vfs.c_str();
    if (int rc =
            sqlite3_open_v2(o.db.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
        rc != SQLITE_OK) {
      return "cannot open the database " + o.db + ": " + sqlite3_errstr(rc);
    }
    sqlite3_busy_timeout(db_, 5000);
    std::string pragmas =
        "PRAGMA journal_mode=" + o.journal_mode + "; PRAGMA synchronous=" + o.synchronous + ";";
    if (std::string e = exec(pragmas); !e.empty()) return e;
    if (std::string e =
            exec("BEGIN IMMEDIATE;"
                 "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                 "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT "
                 "NULL);"
                 "CREATE TABLE IF NOT EXISTS transfers(id TEXT PRIMARY KEY, src INTEGER NOT NULL, "
                 "dst INTEGER NOT NULL, amount INTEGER NOT NULL) WITHOUT ROWID;");
        !e.empty()) {
      return e;
    }
    int64_t existing = -1;
    if (std::string e = query_int("SELECT value FROM meta WHERE key = 'accounts'", existing);
        !e.empty() && existing != -1) {
      return e;
    }
    if (existing == -1) {
      std::string sql = "INSERT INTO meta VALUES('accounts', " + std::to_string(accounts_) +
                        "), ('initial', " + std::to_string(initial_) +
                        "); WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
                        "WHERE i + 1 < " +
                        std::to_string(accounts_) + ") INSERT INTO accounts SELECT i, " +
                        std::to_string(initial_) + " FROM n;";
      if (std::string e = exec(sql); !e.empty()) return e;
    } else {
      // An existing bank keeps its own shape, whatever the options say.
      int64_t initial = 0;
      (void)query_int("SELECT value FROM meta WHERE key = 'initial'", initial);
      accounts_ = static_cast<uint32_t>(existing);
      initial_ = initial;
    }
    if (std::string e = exec("COMMIT"); !e.empty()) return e;
    const std::pair<Statement*, const char*> sqls[] = {
        {&begin_, "BEGIN IMMEDIATE"},
        {&commit_, "COMMIT"},
        {&rollback_, "ROLLBACK"},
        {&find_, "SELECT src, dst, amount FROM transfers WHERE id = ?1"},
        {&balance_, "SELECT balance FROM accounts WHERE id = ?1"},
        {&debit_, "UPDATE accounts SET balance = balance - ?2 WHERE id = ?1"},
        {&credit_, "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1"},
        {&record_, "INSERT INTO transfers VALUES(?1, ?2, ?3, ?4)"},
        {&total_, "SELECT sum(balance) FROM accounts"},
    };
    for (auto [st, sql] : sqls) {
      if (st->prepare(db_, sql) != SQLITE_OK) return std::string("prepare: ") + sqlite3_errmsg(db_);
    }
    return "";
  }

  uint32_t accounts() const { return accounts_; }
  int64_t transfers() {
    int64_t n = 0;
    (void)query_int("SELECT count(*) FROM transfers", n);
    return n;
  }
  std::string journal_mode() {
    sqlite3_stmt* st = nullptr;
    std::string mode = "?";
    if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      mode = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return mode;
  }

  std::string execute(std::string_view line) {
    auto parsed = romulus::bank::parse_request(line);
    if (auto* error = std::get_if<std::string>(&parsed)) return *error;
    const Request& r = std::get<Request>(parsed);
    switch (r.command) {
      case Command::kTransfer:
        return transfer(r);
      case Command::kBalance:
        return balance(r.from);
      case Command::kCheck:
        return check(r.id);
      case Command::kTotal:
        return total();
      case Command::kAudit:
        return audit();
      case Command::kPing:
        return "PONG";
    }
    return "ERROR unknown command";
  }

 private:
  std::array<Statement*, 9> all_statements() {
    return {&begin_, &commit_, &rollback_, &find_, &balance_, &debit_, &credit_, &record_, &total_};
  }

  std::string exec(const std::string& sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string e = msg ? msg : sqlite3_errmsg(db_);
      sqlite3_free(msg);
      return e;
    }
    return "";
  }

  std::string query_int(const char* sql, int64_t& out) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return sqlite3_errmsg(db_);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? "" : sqlite3_errstr(rc);
  }

  // Steps a statement that returns no row (or whose row is not needed); resets it.
  int run(Statement& st) {
    int rc = sqlite3_step(st.get());
    st.reset();
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
  }

  std::string fail(const char* what, int rc) {
    std::string reply = std::string("ERROR ") + what + ": " + sqlite3_errstr(rc);
    if (!sqlite3_get_autocommit(db_)) run(rollback_);
    return reply;
  }

  std::string transfer(const Request& r) {
    if (r.from >= accounts_ || r.to >= accounts_) return "ERROR no such account";
    const std::string id(r.id);
    if (int rc = run(begin_); rc != SQLITE_DONE) return fail("begin", rc);
    sqlite3_bind_text(find_.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    int rc = sqlite3_step(find_.get());
    if (rc == SQLITE_ROW) {
      const bool same = sqlite3_column_int64(find_.get(), 0) == r.from &&
                        sqlite3_column_int64(find_.get(), 1) == r.to &&
                        sqlite3_column_int64(find_.get(), 2) == r.amount;
      find_.reset();
      run(rollback_);
      return same ? "DUPLICATE " + id : "ERROR id " + id + " was used for another transfer";
    }
    find_.reset();
    if (rc != SQLITE_DONE) return fail("lookup", rc);
    sqlite3_bind_int64(balance_.get(), 1, r.from);
    rc = sqlite3_step(balance_.get());
    const int64_t balance = rc == SQLITE_ROW ? sqlite3_column_int64(balance_.get(), 0) : 0;
    balance_.reset();
    if (rc != SQLITE_ROW) return fail("balance", rc);
    if (balance < r.amount) {
      run(rollback_);
      return "REFUSED insufficient funds";
    }
    sqlite3_bind_int64(debit_.get(), 1, r.from);
    sqlite3_bind_int64(debit_.get(), 2, r.amount);
    if (rc = run(debit_); rc != SQLITE_DONE) return fail("debit", rc);
    sqlite3_bind_int64(credit_.get(), 1, r.to);
    sqlite3_bind_int64(credit_.get(), 2, r.amount);
    if (rc = run(credit_); rc != SQLITE_DONE) return fail("credit", rc);
    sqlite3_bind_text(record_.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(record_.get(), 2, r.from);
    sqlite3_bind_int64(record_.get(), 3, r.to);
    sqlite3_bind_int64(record_.get(), 4, r.amount);
    if (rc = run(record_); rc != SQLITE_DONE) return fail("record", rc);
    if (rc = run(commit_); rc != SQLITE_DONE) return fail("commit", rc);
    return "OK " + id;
  }

  std::string balance(uint32_t account) {
    if (account >= accounts_) return "ERROR no such account";
    sqlite3_bind_int64(balance_.get(), 1, account);
    int rc = sqlite3_step(balance_.get());
    std::string reply = rc == SQLITE_ROW
                            ? "BALANCE " + std::to_string(sqlite3_column_int64(balance_.get(), 0))
                            : std::string("ERROR ") + sqlite3_errstr(rc);
    balance_.reset();
    return reply;
  }

  std::string check(std::string_view id) {
    sqlite3_bind_text(find_.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    int rc = sqlite3_step(find_.get());
    std::string reply;
    if (rc == SQLITE_ROW) {
      reply = "FOUND " + std::string(id) + " " +
              std::to_string(sqlite3_column_int64(find_.get(), 0)) + " " +
              std::to_string(sqlite3_column_int64(find_.get(), 1)) + " " +
              std::to_string(sqlite3_column_int64(find_.get(), 2));
    } else if (rc == SQLITE_DONE) {
      reply = "NOT_FOUND " + std::string(id);
    } else {
      reply = std::string("ERROR ") + sqlite3_errstr(rc);
    }
    find_.reset();
    return reply;
  }

  std::string total() {
    int rc = sqlite3_step(total_.get());
    std::string reply = rc == SQLITE_ROW
                            ? "TOTAL " + std::to_string(sqlite3_column_int64(total_.get(), 0))
                            : std::string("ERROR ") + sqlite3_errstr(rc);
    total_.reset();
    return reply;
  }

  std::string audit() {
    sqlite3_stmt* st = nullptr;
    std::string integrity;
    if (sqlite3_prepare_v2(db_, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        if (!integrity.empty()) integrity += "; ";
        integrity += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      }
    }
    sqlite3_finalize(st);
    if (integrity != "ok") return "AUDIT FAILED integrity_check: " + integrity;
    // Each account's net flow by the log, in one pass over the transfers.
    std::map<int64_t, int64_t> flow;
    int64_t transfers = 0;
    if (sqlite3_prepare_v2(db_, "SELECT src, dst, amount FROM transfers", -1, &st, nullptr) !=
        SQLITE_OK) {
      return std::string("AUDIT FAILED ") + sqlite3_errmsg(db_);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
      const int64_t amount = sqlite3_column_int64(st, 2);
      flow[sqlite3_column_int64(st, 0)] -= amount;
      flow[sqlite3_column_int64(st, 1)] += amount;
      ++transfers;
    }
    sqlite3_finalize(st);
    int64_t sum = 0, wrong = 0, rows = 0;
    if (sqlite3_prepare_v2(db_, "SELECT id, balance FROM accounts", -1, &st, nullptr) !=
        SQLITE_OK) {
      return std::string("AUDIT FAILED ") + sqlite3_errmsg(db_);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
      const int64_t id = sqlite3_column_int64(st, 0), balance = sqlite3_column_int64(st, 1);
      sum += balance;
      ++rows;
      if (balance != initial_ + flow[id]) ++wrong;
    }
    sqlite3_finalize(st);
    const int64_t expected = initial_ * static_cast<int64_t>(accounts_);
    if (rows != accounts_) return "AUDIT FAILED " + std::to_string(rows) + " accounts";
    if (sum != expected) {
      return "AUDIT FAILED total " + std::to_string(sum) + " != " + std::to_string(expected);
    }
    if (wrong != 0) {
      return "AUDIT FAILED " + std::to_string(wrong) + " balances disagree with the transfer log";
    }
    return "AUDIT ok total=" + std::to_string(sum) + " transfers=" + std::to_string(transfers);
  }

  sqlite3* db_ = nullptr;
  uint32_t accounts_ = 0;
  int64_t initial_ = 0;
  Statement begin_, commit_, rollback_, find_, balance_, debit_, credit_, record_, total_;
};

using Server = romulus::examples::LineServer<Bank>;

Options parse_options(int argc, char** argv) {
  Options o;
  po::options_description desc("usage: romulus-bank [options]");
  desc.add_options()("help,h", "show this help")(
      "port", po::value(&o.port)->default_value(o.port),
      "TCP port when run alone (0: pick a free one); under Romulus ROMULUS_SERVICE_PORT wins")(
      "listen", po::value(&o.listen)->default_value(o.listen), "address to listen on alone")(
      "db", po::value(&o.db)->default_value(o.db),
      "database name (a file path with --vfs default)")(
      "vfs", po::value(&o.vfs)->default_value(o.vfs),
      "romulus (the database in the arena) or default (SQLite's own, on a file)")(
      "journal-mode", po::value(&o.journal_mode)->default_value(o.journal_mode),
      "delete, truncate, persist or wal")("synchronous",
                                          po::value(&o.synchronous)->default_value(o.synchronous),
                                          "off, normal or full (costs nothing on the romulus VFS)")(
      "accounts", po::value(&o.accounts)->default_value(o.accounts), "accounts on first start")(
      "initial", po::value(&o.initial)->default_value(o.initial), "each account's first balance");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      std::exit(0);
    }
    const std::string modes[] = {"delete", "truncate", "persist", "wal"};
    if (std::find(std::begin(modes), std::end(modes), o.journal_mode) == std::end(modes)) {
      throw std::runtime_error("--journal-mode must be delete, truncate, persist or wal");
    }
    if (o.synchronous != "off" && o.synchronous != "normal" && o.synchronous != "full") {
      throw std::runtime_error("--synchronous must be off, normal or full");
    }
    if (o.vfs != "romulus" && o.vfs != "default") {
      throw std::runtime_error("--vfs must be romulus or default");
    }
    if (o.accounts < 2 || o.accounts > 1000000) {
      throw std::runtime_error("--accounts must be 2 to 1000000");
    }
    if (o.initial < 0 || o.initial > 1000000000) {
      throw std::runtime_error("--initial must be 0 to 1000000000");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-bank: %s\n", e.what());
    std::cerr << desc << "\n";
    std::exit(2);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  std::optional<uint16_t> service_port;
  bool resumed = false;
  uint64_t resumed_epoch = 0;
  if (options.vfs == "romulus") {
    auto arena = romulus::guest::attach();
    if (!arena.is_ok()) {
      std::fprintf(stderr, "romulus-bank: %s\n", arena.status().to_string().c_str());
      return 1;
    }
    service_port = arena->service_port();
    resumed = arena->resumed();
    resumed_epoch = arena->resumed_epoch().value_or(0);
    if (auto st = romulus::guest::register_sqlite_vfs(); !st.is_ok()) {
      std::fprintf(stderr, "romulus-bank: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  Bank bank;
  if (std::string e = bank.open(options); !e.empty()) {
    std::fprintf(stderr, "romulus-bank: %s\n", e.c_str());
    return 1;
  }
  asio::io_context io;
  std::unique_ptr<Server> server;
  try {
    tcp::endpoint endpoint =
        service_port ? tcp::endpoint(asio::ip::address_v4::loopback(), *service_port)
                     : tcp::endpoint(asio::ip::make_address(options.listen), options.port);
    server = std::make_unique<Server>(io, endpoint, bank, romulus::bank::kMaxRequestLine + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "romulus-bank: cannot listen: %s\n", e.what());
    return 1;
  }
  const int64_t transfers = bank.transfers();
  if (resumed) {
    std::printf("romulus-bank: resumed at epoch %llu with %lld transfers\n",
                static_cast<unsigned long long>(resumed_epoch), static_cast<long long>(transfers));
  }
  std::printf("romulus-bank: %u accounts, %lld transfers, journal mode %s, vfs %s\n",
              bank.accounts(), static_cast<long long>(transfers), bank.journal_mode().c_str(),
              options.vfs.c_str());
  std::printf("romulus-bank: listening on %s:%u\n", server->address().c_str(),
              static_cast<unsigned>(server->port()));
  std::fflush(stdout);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    server->stop();
    io.stop();
  });
  server->start();
  io.run();
  std::printf("romulus-bank: stopped\n");
  return 0;
}
