#include "storage/fault_injection.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include <fmt/format.h>

namespace romulus::storage {

// One unsynced change of a file's content, kept for CrashMode::kRandom.
struct FaultInjectingFileSystem::Inode {
  struct Change {
    bool is_truncate = false;
    uint64_t offset = 0;  // write offset, or the new size
    std::vector<uint8_t> bytes;
  };
  std::vector<uint8_t> data;     // volatile
  std::vector<uint8_t> durable;  // as of the last sync
  std::vector<Change> unsynced;  // since the last sync, in order
};

namespace {

void apply_write(std::vector<uint8_t>& data, uint64_t offset, const uint8_t* p, size_t n) {
  if (data.size() < offset + n) data.resize(offset + n, 0);
  if (n > 0) std::memcpy(data.data() + offset, p, n);
}

}  // namespace

class FaultInjectingFileSystem::MemFile final : public File {
 public:
  MemFile(FaultInjectingFileSystem* fs, std::shared_ptr<Inode> inode, std::string path,
          bool writable)
      : fs_(fs),
        inode_(std::move(inode)),
        path_(std::move(path)),
        writable_(writable),
        generation_(fs->generation_) {}

  Status pwrite(uint64_t offset, const uint8_t* data, size_t n) override {
    std::lock_guard lock(fs_->mu_);
    ROMULUS_RETURN_IF_ERROR(check("write"));
    bool tear = false;
    const Status st = fs_->begin_op(kWriteOps, fmt::format("pwrite {} {}@{}", path_, n, offset),
                                    /*tearable=*/true, &tear);
    if (tear) {  // the power went during this write: a prefix of it landed
      const size_t kept = n > 512 ? (n / 2) / 512 * 512 : n / 2;
      write_locked(offset, data, kept);
    }
    ROMULUS_RETURN_IF_ERROR(st);
    write_locked(offset, data, n);
    return Status::ok();
  }

  Status pread(uint64_t offset, uint8_t* data, size_t n) override {
    std::lock_guard lock(fs_->mu_);
    ROMULUS_RETURN_IF_ERROR(check(nullptr));
    const auto& d = inode_->data;
    if (offset > d.size() || d.size() - offset < n) {
      return Status::truncated(
          fmt::format("read {}: {} bytes at {} are past the end of the file", path_, n, offset));
    }
    if (n > 0) std::memcpy(data, d.data() + offset, n);
    return Status::ok();
  }

  Result<uint64_t> size() override {
    std::lock_guard lock(fs_->mu_);
    ROMULUS_RETURN_IF_ERROR(check(nullptr));
    return static_cast<uint64_t>(inode_->data.size());
  }

  Status truncate(uint64_t size) override {
    std::lock_guard lock(fs_->mu_);
    ROMULUS_RETURN_IF_ERROR(check("truncate"));
    ROMULUS_RETURN_IF_ERROR(fs_->begin_op(kWriteOps, fmt::format("truncate {} {}", path_, size)));
    inode_->data.resize(size, 0);
    inode_->unsynced.push_back({true, size, {}});
    return Status::ok();
  }

  Status sync() override {
    std::lock_guard lock(fs_->mu_);
    ROMULUS_RETURN_IF_ERROR(check(nullptr));
    ROMULUS_RETURN_IF_ERROR(fs_->begin_op(kSyncOps, "fdatasync " + path_));
    inode_->durable = inode_->data;
    inode_->unsynced.clear();
    return Status::ok();
  }

 private:
  Status check(const char* writing) const {
    if (generation_ != fs_->generation_) {
      return Status::from_errno(path_ + ": file opened before a simulated crash", EIO);
    }
    if (writing != nullptr && !writable_) {
      return Status::from_errno(fmt::format("{} {}", writing, path_), EBADF);
    }
    return Status::ok();
  }

  void write_locked(uint64_t offset, const uint8_t* data, size_t n) {
    apply_write(inode_->data, offset, data, n);
    inode_->unsynced.push_back({false, offset, std::vector<uint8_t>(data, data + n)});
  }

  FaultInjectingFileSystem* const fs_;
  const std::shared_ptr<Inode> inode_;
  const std::string path_;
  const bool writable_;
  const uint64_t generation_;
};

class FaultInjectingFileSystem::MemLock final : public FileLock {
 public:
  MemLock(FaultInjectingFileSystem* fs, std::string path, uint64_t generation)
      : fs_(fs), path_(std::move(path)), generation_(generation) {}
  ~MemLock() override {
    std::lock_guard lock(fs_->mu_);
    const auto it = fs_->locks_.find(path_);
    if (it != fs_->locks_.end() && it->second == generation_) fs_->locks_.erase(it);
  }

 private:
  FaultInjectingFileSystem* const fs_;
  const std::string path_;
  const uint64_t generation_;
};

Result<std::unique_ptr<FileLock>> FaultInjectingFileSystem::lock(const std::string& path) {
  std::lock_guard lock(mu_);
  if (!parent_exists(path)) return Status::from_errno("open " + path, ENOENT);
  if (locks_.contains(path)) return Status::refused(path + " is locked by another process");
  if (!names_.contains(path)) names_.emplace(path, Node{false, std::make_shared<Inode>()});
  locks_[path] = generation_;
  return std::unique_ptr<FileLock>(new MemLock(this, path, generation_));
}

FaultInjectingFileSystem::FaultInjectingFileSystem() = default;
FaultInjectingFileSystem::~FaultInjectingFileSystem() = default;

Status FaultInjectingFileSystem::begin_op(unsigned kind, const std::string& what, bool tearable,
                                          bool* tear, bool frees_space) {
  ++ops_;
  op_log_.push_back(what);
  if (power_cut_at_ && ops_ > *power_cut_at_) {
    if (!power_off_ && tearable && tear_ && tear != nullptr) *tear = true;
    power_off_ = true;
    return Status::from_errno(what + " (simulated power cut)", EIO);
  }
  if (fail_at_ && (kind & fail_which_) != 0 && !(frees_space && fail_errno_ == ENOSPC)) {
    ++fail_counted_;
    if (fail_counted_ > *fail_at_) {
      if (fail_once_) fail_at_.reset();
      return Status::from_errno(what + " (injected)", fail_errno_);
    }
  }
  return Status::ok();
}

bool FaultInjectingFileSystem::parent_exists(const std::string& path) const {
  const std::string parent = parent_dir(path);
  if (parent == "/" || parent == ".") return true;
  const auto it = names_.find(parent);
  return it != names_.end() && it->second.is_dir;
}

Result<std::unique_ptr<File>> FaultInjectingFileSystem::open(const std::string& path,
                                                             OpenMode mode) {
  std::lock_guard lock(mu_);
  auto it = names_.find(path);
  if (mode == OpenMode::kCreate) {
    ROMULUS_RETURN_IF_ERROR(begin_op(kWriteOps, "create " + path));
    if (!parent_exists(path)) return Status::from_errno("open " + path, ENOENT);
    if (it != names_.end() && it->second.is_dir) return Status::from_errno("open " + path, EISDIR);
    if (it == names_.end()) {
      it = names_.emplace(path, Node{false, std::make_shared<Inode>()}).first;
    } else {
      it->second.inode->data.clear();
      it->second.inode->unsynced.push_back({true, 0, {}});
    }
  } else {
    if (it == names_.end()) return Status::from_errno("open " + path, ENOENT);
    if (it->second.is_dir) return Status::from_errno("open " + path, EISDIR);
  }
  return std::unique_ptr<File>(new MemFile(this, it->second.inode, path, mode != OpenMode::kRead));
}

Status FaultInjectingFileSystem::rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(mu_);
  ROMULUS_RETURN_IF_ERROR(begin_op(kWriteOps, fmt::format("rename {} {}", from, to)));
  const auto it = names_.find(from);
  if (it == names_.end() || !parent_exists(to)) {
    return Status::from_errno(fmt::format("rename {} to {}", from, to), ENOENT);
  }
  Node node = it->second;
  names_.erase(it);
  names_[to] = std::move(node);
  return Status::ok();
}

Status FaultInjectingFileSystem::remove(const std::string& path) {
  std::lock_guard lock(mu_);
  ROMULUS_RETURN_IF_ERROR(begin_op(kWriteOps, "remove " + path, false, nullptr, true));
  if (names_.erase(path) == 0) return Status::from_errno("remove " + path, ENOENT);
  return Status::ok();
}

Status FaultInjectingFileSystem::sync_dir(const std::string& dir) {
  std::lock_guard lock(mu_);
  ROMULUS_RETURN_IF_ERROR(begin_op(kSyncOps, "fsync directory " + dir));
  if (dir != "/" && !names_.contains(dir)) {
    return Status::from_errno("open directory " + dir, ENOENT);
  }
  std::erase_if(durable_names_, [&](const auto& e) { return parent_dir(e.first) == dir; });
  for (const auto& [path, node] : names_) {
    if (parent_dir(path) == dir) durable_names_[path] = node;
  }
  return Status::ok();
}

Result<bool> FaultInjectingFileSystem::exists(const std::string& path) {
  std::lock_guard lock(mu_);
  return path == "/" || names_.contains(path);
}

Status FaultInjectingFileSystem::make_dir(const std::string& dir) {
  std::lock_guard lock(mu_);
  const auto it = names_.find(dir);
  if (dir == "/" || (it != names_.end() && it->second.is_dir)) return Status::ok();
  ROMULUS_RETURN_IF_ERROR(begin_op(kWriteOps, "mkdir " + dir));
  if (it != names_.end()) return Status::from_errno("create directory " + dir, EEXIST);
  if (!parent_exists(dir)) return Status::from_errno("create directory " + dir, ENOENT);
  names_[dir] = Node{true, nullptr};
  return Status::ok();
}

Result<std::vector<std::string>> FaultInjectingFileSystem::list(const std::string& dir) {
  std::lock_guard lock(mu_);
  if (dir != "/" && !names_.contains(dir)) {
    return Status::from_errno("list directory " + dir, ENOENT);
  }
  std::vector<std::string> out;
  for (const auto& [path, node] : names_) {
    if (parent_dir(path) == dir) out.push_back(path.substr(path.find_last_of('/') + 1));
  }
  return out;
}

uint64_t FaultInjectingFileSystem::mutating_ops() const {
  std::lock_guard lock(mu_);
  return ops_;
}

std::vector<std::string> FaultInjectingFileSystem::op_log() const {
  std::lock_guard lock(mu_);
  return op_log_;
}

void FaultInjectingFileSystem::cut_power_after(uint64_t ops, bool tear_write) {
  std::lock_guard lock(mu_);
  power_cut_at_ = ops_ + ops;
  tear_ = tear_write;
  power_off_ = false;
}

bool FaultInjectingFileSystem::power_cut() const {
  std::lock_guard lock(mu_);
  return power_off_;
}

void FaultInjectingFileSystem::fail_after(uint64_t ops, int err, FaultOps which, bool once) {
  std::lock_guard lock(mu_);
  fail_at_ = ops;
  fail_errno_ = err;
  fail_which_ = which;
  fail_once_ = once;
  fail_counted_ = 0;
}

void FaultInjectingFileSystem::clear_faults() {
  std::lock_guard lock(mu_);
  fail_at_.reset();
  power_cut_at_.reset();
  power_off_ = false;
}

void FaultInjectingFileSystem::crash(CrashMode mode, uint64_t seed) {
  std::lock_guard lock(mu_);
  std::mt19937_64 rng(seed);
  const auto coin = [&] { return (rng() & 1) != 0; };

  // Directory entries first: which files and directories exist after the reboot.
  switch (mode) {
    case CrashMode::kDropUnsynced:
      names_ = durable_names_;
      break;
    case CrashMode::kKeepUnsynced:
      break;
    case CrashMode::kRandom: {
      Namespace merged;
      std::vector<std::string> paths;
      for (const auto& e : names_) paths.push_back(e.first);
      for (const auto& e : durable_names_) paths.push_back(e.first);
      std::sort(paths.begin(), paths.end());
      paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
      for (const std::string& p : paths) {
        const auto v = names_.find(p);
        const auto d = durable_names_.find(p);
        const bool same = v != names_.end() && d != durable_names_.end() &&
                          v->second.is_dir == d->second.is_dir &&
                          v->second.inode == d->second.inode;
        const auto pick = same || coin() ? v : names_.end();
        if (pick != names_.end()) {
          merged[p] = pick->second;
        } else if (d != durable_names_.end()) {
          merged[p] = d->second;
        }
      }
      names_ = std::move(merged);
      break;
    }
  }
  // Entries whose directory did not survive are gone too (map order: parents first).
  for (auto it = names_.begin(); it != names_.end();) {
    if (!parent_exists(it->first)) {
      it = names_.erase(it);
    } else {
      ++it;
    }
  }
  durable_names_ = names_;

  // Then each surviving file's content.
  for (auto& [path, node] : names_) {
    if (node.is_dir) continue;
    Inode& inode = *node.inode;
    switch (mode) {
      case CrashMode::kDropUnsynced:
        inode.data = inode.durable;
        break;
      case CrashMode::kKeepUnsynced:
        break;
      case CrashMode::kRandom: {
        std::vector<uint8_t> data = inode.durable;
        for (const Inode::Change& c : inode.unsynced) {
          if (!coin()) continue;
          if (c.is_truncate) {
            data.resize(c.offset, 0);
            continue;
          }
          size_t n = c.bytes.size();
          if (n > 512 && coin()) n = (rng() % (n / 512)) * 512;  // torn at a sector
          apply_write(data, c.offset, c.bytes.data(), n);
        }
        inode.data = std::move(data);
        break;
      }
    }
    inode.durable = inode.data;
    inode.unsynced.clear();
  }
  ++generation_;
  locks_.clear();
  power_cut_at_.reset();
  power_off_ = false;
  fail_at_.reset();
}

Result<std::vector<uint8_t>> FaultInjectingFileSystem::contents(const std::string& path) const {
  std::lock_guard lock(mu_);
  const auto it = names_.find(path);
  if (it == names_.end() || it->second.is_dir) return Status::from_errno("open " + path, ENOENT);
  return it->second.inode->data;
}

Status FaultInjectingFileSystem::set_contents(const std::string& path, std::vector<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (!parent_exists(path)) return Status::from_errno("open " + path, ENOENT);
  auto& node = names_[path];
  if (!node.inode) node.inode = std::make_shared<Inode>();
  node.inode->data = std::move(data);
  node.inode->durable = node.inode->data;
  node.inode->unsynced.clear();
  durable_names_[path] = node;
  return Status::ok();
}

// ---- ErrorInjectingFileSystem

class ErrorInjectingFileSystem::WrappedFile final : public File {
 public:
  WrappedFile(ErrorInjectingFileSystem* fs, std::unique_ptr<File> base, std::string path)
      : fs_(fs), base_(std::move(base)), path_(std::move(path)) {}
  Status pwrite(uint64_t offset, const uint8_t* data, size_t n) override {
    ROMULUS_RETURN_IF_ERROR(
        fs_->begin_op(FaultInjectingFileSystem::kWriteOps,
                      fmt::format("write {} ({} bytes at {})", path_, n, offset)));
    return base_->pwrite(offset, data, n);
  }
  Status pread(uint64_t offset, uint8_t* data, size_t n) override {
    return base_->pread(offset, data, n);
  }
  Result<uint64_t> size() override { return base_->size(); }
  Status truncate(uint64_t size) override {
    ROMULUS_RETURN_IF_ERROR(fs_->begin_op(FaultInjectingFileSystem::kWriteOps,
                                          fmt::format("truncate {} to {} bytes", path_, size)));
    return base_->truncate(size);
  }
  Status sync() override {
    ROMULUS_RETURN_IF_ERROR(
        fs_->begin_op(FaultInjectingFileSystem::kSyncOps, "fdatasync " + path_));
    return base_->sync();
  }

 private:
  ErrorInjectingFileSystem* const fs_;
  const std::unique_ptr<File> base_;
  const std::string path_;
};

ErrorInjectingFileSystem::ErrorInjectingFileSystem(FileSystem& base) : base_(base) {}
ErrorInjectingFileSystem::~ErrorInjectingFileSystem() = default;

Status ErrorInjectingFileSystem::begin_op(unsigned kind, const std::string& what,
                                          bool frees_space) {
  std::lock_guard lock(mu_);
  ++ops_;
  if (fail_at_ && (kind & fail_which_) != 0 && !(frees_space && fail_errno_ == ENOSPC)) {
    ++fail_counted_;
    if (fail_counted_ > *fail_at_) {
      if (fail_once_) fail_at_.reset();
      return Status::from_errno(what + " (injected)", fail_errno_);
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<File>> ErrorInjectingFileSystem::open(const std::string& path,
                                                             OpenMode mode) {
  if (mode == OpenMode::kCreate)
    ROMULUS_RETURN_IF_ERROR(begin_op(FaultInjectingFileSystem::kWriteOps, "create " + path));
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> file, base_.open(path, mode));
  return std::unique_ptr<File>(new WrappedFile(this, std::move(file), path));
}

Status ErrorInjectingFileSystem::rename(const std::string& from, const std::string& to) {
  ROMULUS_RETURN_IF_ERROR(
      begin_op(FaultInjectingFileSystem::kWriteOps, fmt::format("rename {} to {}", from, to)));
  return base_.rename(from, to);
}

Status ErrorInjectingFileSystem::remove(const std::string& path) {
  ROMULUS_RETURN_IF_ERROR(
      begin_op(FaultInjectingFileSystem::kWriteOps, "remove " + path, /*frees_space=*/true));
  return base_.remove(path);
}

Status ErrorInjectingFileSystem::sync_dir(const std::string& dir) {
  ROMULUS_RETURN_IF_ERROR(begin_op(FaultInjectingFileSystem::kSyncOps, "fsync directory " + dir));
  return base_.sync_dir(dir);
}

Result<bool> ErrorInjectingFileSystem::exists(const std::string& path) {
  return base_.exists(path);
}

Status ErrorInjectingFileSystem::make_dir(const std::string& dir) {
  ROMULUS_RETURN_IF_ERROR(begin_op(FaultInjectingFileSystem::kWriteOps, "create directory " + dir));
  return base_.make_dir(dir);
}

Result<std::vector<std::string>> ErrorInjectingFileSystem::list(const std::string& dir) {
  return base_.list(dir);
}

Result<std::unique_ptr<FileLock>> ErrorInjectingFileSystem::lock(const std::string& path) {
  return base_.lock(path);
}

void ErrorInjectingFileSystem::fail_after(uint64_t ops, int err, FaultOps which, bool once) {
  std::lock_guard lock(mu_);
  fail_at_ = ops;
  fail_errno_ = err;
  fail_which_ = which;
  fail_once_ = once;
  fail_counted_ = 0;
}

void ErrorInjectingFileSystem::clear_faults() {
  std::lock_guard lock(mu_);
  fail_at_.reset();
}

uint64_t ErrorInjectingFileSystem::mutating_ops() const {
  std::lock_guard lock(mu_);
  return ops_;
}

}  // namespace romulus::storage
