#include "storage/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace romulus::storage {

File::~File() = default;
FileLock::~FileLock() = default;
FileSystem::~FileSystem() = default;

namespace {

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }

  Status pwrite(uint64_t offset, const uint8_t* data, size_t n) override {
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, data, n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status::from_errno(fmt::format("write {} ({} bytes at {})", path_, n, offset),
                                  errno);
      }
      data += w;
      n -= static_cast<size_t>(w);
      offset += static_cast<uint64_t>(w);
    }
    return Status::ok();
  }

  Status pread(uint64_t offset, uint8_t* data, size_t n) override {
    while (n > 0) {
      const ssize_t r = ::pread(fd_, data, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::from_errno(fmt::format("read {} ({} bytes at {})", path_, n, offset), errno);
      }
      if (r == 0) {
        return Status::truncated(
            fmt::format("read {}: {} bytes at {} are past the end of the file", path_, n, offset));
      }
      data += r;
      n -= static_cast<size_t>(r);
      offset += static_cast<uint64_t>(r);
    }
    return Status::ok();
  }

  Result<uint64_t> size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return Status::from_errno("stat " + path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  Status truncate(uint64_t size) override {
    while (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) {
        return Status::from_errno(fmt::format("truncate {} to {} bytes", path_, size), errno);
      }
    }
    return Status::ok();
  }

  Status sync() override {
    while (::fdatasync(fd_) != 0) {
      if (errno != EINTR) return Status::from_errno("fdatasync " + path_, errno);
    }
    return Status::ok();
  }

 private:
  const int fd_;
  const std::string path_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // releases the flock

 private:
  const int fd_;
};

class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<FileLock>> lock(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::from_errno("open " + path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::refused(path + " is locked by another process");
      }
      return Status::from_errno("lock " + path, err);
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(fd));
  }

  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override {
    int flags = O_CLOEXEC;
    switch (mode) {
      case OpenMode::kRead:
        flags |= O_RDONLY;
        break;
      case OpenMode::kReadWrite:
        flags |= O_RDWR;
        break;
      case OpenMode::kCreate:
        flags |= O_RDWR | O_CREAT | O_TRUNC;
        break;
    }
    int fd;
    do {
      fd = ::open(path.c_str(), flags, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Status::from_errno("open " + path, errno);
    return std::unique_ptr<File>(new PosixFile(fd, path));
  }

  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::from_errno(fmt::format("rename {} to {}", from, to), errno);
    }
    return Status::ok();
  }

  Status remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::from_errno("remove " + path, errno);
    return Status::ok();
  }

  Status sync_dir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::from_errno("open directory " + dir, errno);
    Status st;
    while (::fsync(fd) != 0) {
      if (errno != EINTR) {
        st = Status::from_errno("fsync directory " + dir, errno);
        break;
      }
    }
    ::close(fd);
    return st;
  }

  Result<bool> exists(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return Status::from_errno("stat " + path, errno);
  }

  Status make_dir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) == 0) return Status::ok();
    const int err = errno;
    struct stat st {};
    if (err == EEXIST && ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      return Status::ok();
    }
    return Status::from_errno("create directory " + dir, err);
  }

  Result<std::vector<std::string>> list(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Status::from_errno("list directory " + dir, errno);
    std::vector<std::string> names;
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return Status::from_errno("list directory " + dir, err);
    return names;
  }
};

}  // namespace

FileSystem& posix_file_system() {
  static PosixFileSystem fs;
  return fs;
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

Status write_file_atomically(FileSystem& fs, const std::string& path, const uint8_t* data,
                             size_t n) {
  const std::string tmp = path + ".tmp";
  {
    ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> f, fs.open(tmp, OpenMode::kCreate));
    ROMULUS_RETURN_IF_ERROR(f->pwrite(0, data, n));
    ROMULUS_RETURN_IF_ERROR(f->sync());
  }
  ROMULUS_RETURN_IF_ERROR(fs.rename(tmp, path));
  return fs.sync_dir(parent_dir(path));
}

Result<std::vector<uint8_t>> read_whole_file(FileSystem& fs, const std::string& path) {
  ROMULUS_ASSIGN_OR_RETURN(std::unique_ptr<File> f, fs.open(path, OpenMode::kRead));
  ROMULUS_ASSIGN_OR_RETURN(const uint64_t size, f->size());
  std::vector<uint8_t> data(size);
  ROMULUS_RETURN_IF_ERROR(f->pread(0, data.data(), data.size()));
  return data;
}

}  // namespace romulus::storage
