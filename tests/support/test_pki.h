// TestPki: a throwaway certificate authority for tests, made with the
// `openssl` command in a temp dir (removed by the destructor): CAs, and
// certificates whose CN and subjectAltName are a name (DNS) or an address
// (IP). available() is false, and nothing is made, without the command; tests
// then skip. Header-only; one test thread.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "common/tls.h"

namespace romulus::testing {

class TestPki {
 public:
  TestPki() {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) return;
    std::string tmpl = (std::filesystem::temp_directory_path() / "romulus-pki-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) dir_ = tmpl;
  }
  ~TestPki() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  bool available() const { return !dir_.empty(); }
  std::string path(const std::string& file) const { return dir_ + "/" + file; }

  // <name>.crt and <name>.key: a self-signed CA.
  bool make_ca(const std::string& name) {
    return run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
               path(name + ".key") + " -out " + path(name + ".crt") + " -days 2 -subj /CN=" + name);
  }
  // <name>.crt and <name>.key signed by `ca`; `san` is "DNS:<name>" unless given
  // (e.g. "IP:127.0.0.1").
  bool issue(const std::string& name, const std::string& ca, std::string san = "") {
    if (san.empty()) san = "DNS:" + name;
    if (!run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
             path(name + ".key") + " -out " + path(name + ".csr") + " -subj /CN=" + name)) {
      return false;
    }
    std::ofstream(path(name + ".ext")) << "subjectAltName=" << san << "\n";
    return run("openssl x509 -req -in " + path(name + ".csr") + " -CA " + path(ca + ".crt") +
               " -CAkey " + path(ca + ".key") + " -CAcreateserial -out " + path(name + ".crt") +
               " -days 2 -extfile " + path(name + ".ext"));
  }
  // The identity of `name` trusting `ca`, requiring the peer to be `peer`.
  Result<std::shared_ptr<common::TlsIdentity>> identity(const std::string& name,
                                                        const std::string& ca,
                                                        const std::string& peer = "") const {
    return common::TlsIdentity::load(
        {path(name + ".crt"), path(name + ".key"), path(ca + ".crt"), peer});
  }

 private:
  static bool run(const std::string& cmd) {
    return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
  }
  std::string dir_;
};

}  // namespace romulus::testing
