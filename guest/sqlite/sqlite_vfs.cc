// The `romulus` SQLite VFS (see sqlite_vfs.h): SQLite's C callbacks over an
// ArenaFileStore, with process-local locks.
//
// Lock rules (SQLite's, as the unix VFS keeps them between the connections of
// one process): SHARED needs no PENDING/EXCLUSIVE held by another connection;
// RESERVED needs SHARED and no other RESERVED/PENDING/EXCLUSIVE; EXCLUSIVE takes
// PENDING first (so no new SHARED is granted) and succeeds once this connection
// is the only SHARED holder. The WAL index's slot locks follow xShmLock's rules:
// a slot is held by many SHARED or one EXCLUSIVE.
#include "guest/sqlite/sqlite_vfs.h"

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <vector>

#include "guest/guest.h"

namespace romulus::guest {
namespace sqlite {

struct VfsFile;

// One file's process-local lock state, shared by every connection of this
// process that opened it. Guarded by mu.
struct FileLocks {
  std::mutex mu;
  int shared = 0;  // connections holding SHARED or more
  VfsFile* reserved = nullptr;
  VfsFile* pending = nullptr;
  VfsFile* exclusive = nullptr;
  // WAL index
  bool shm_fresh = true;  // no connection of this process has mapped it yet
  int shm_users = 0;
  std::array<int, SQLITE_SHM_NLOCK> slot_shared{};
  std::array<VfsFile*, SQLITE_SHM_NLOCK> slot_exclusive{};
};

struct VfsFile {
  sqlite3_file base;  // first: SQLite sees a VfsFile* as a sqlite3_file*
  SqliteVfs* vfs;
  int index;
  int lock = SQLITE_LOCK_NONE;
  bool delete_on_close = false;
  std::string name;
  FileLocks* locks;
  bool shm_mapped = false;
  uint16_t shm_shared = 0;     // slots this connection holds SHARED
  uint16_t shm_exclusive = 0;  // slots this connection holds EXCLUSIVE
};

namespace {

VfsFile* as_file(sqlite3_file* f) { return reinterpret_cast<VfsFile*>(f); }
SqliteVfs* as_vfs(sqlite3_vfs* v) { return static_cast<SqliteVfs*>(v->pAppData); }

int x_close(sqlite3_file* f) {
  VfsFile* p = as_file(f);
  if (p->delete_on_close) (void)p->vfs->store().remove(p->name);
  p->~VfsFile();
  return SQLITE_OK;
}

int x_read(sqlite3_file* f, void* buf, int amount, sqlite3_int64 offset) {
  VfsFile* p = as_file(f);
  if (amount < 0 || offset < 0) return SQLITE_IOERR_READ;
  auto* out = static_cast<uint8_t*>(buf);
  size_t got = p->vfs->store().read(p->index, static_cast<uint64_t>(offset),
                                    std::span<uint8_t>(out, static_cast<size_t>(amount)));
  if (got < static_cast<size_t>(amount)) {
    std::memset(out + got, 0, static_cast<size_t>(amount) - got);  // SQLite's contract
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

int store_error_to_sqlite(StoreError e, int io_error) {
  switch (e) {
    case StoreError::kOk:
      return SQLITE_OK;
    case StoreError::kFull:
      return SQLITE_FULL;
    default:
      return io_error;
  }
}

int x_write(sqlite3_file* f, const void* buf, int amount, sqlite3_int64 offset) {
  VfsFile* p = as_file(f);
  if (amount < 0 || offset < 0) return SQLITE_IOERR_WRITE;
  StoreError e = p->vfs->store().write(
      p->index, static_cast<uint64_t>(offset),
      std::span<const uint8_t>(static_cast<const uint8_t*>(buf), static_cast<size_t>(amount)));
  return store_error_to_sqlite(e, SQLITE_IOERR_WRITE);
}

int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
  VfsFile* p = as_file(f);
  if (size < 0) return SQLITE_IOERR_TRUNCATE;
  return store_error_to_sqlite(p->vfs->store().truncate(p->index, static_cast<uint64_t>(size)),
                               SQLITE_IOERR_TRUNCATE);
}

// Durability is output commit's: a reply leaves the primary only once the
// checkpoint holding the write is acknowledged. Nothing to flush here.
int x_sync(sqlite3_file*, int) { return SQLITE_OK; }

int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
  VfsFile* p = as_file(f);
  *size = static_cast<sqlite3_int64>(p->vfs->store().size(p->index));
  return SQLITE_OK;
}

int x_lock(sqlite3_file* f, int level) {
  VfsFile* p = as_file(f);
  if (p->lock >= level) return SQLITE_OK;
  FileLocks& l = *p->locks;
  std::lock_guard g(l.mu);
  if (level == SQLITE_LOCK_SHARED) {
    if ((l.pending && l.pending != p) || (l.exclusive && l.exclusive != p)) return SQLITE_BUSY;
    ++l.shared;
    p->lock = SQLITE_LOCK_SHARED;
    return SQLITE_OK;
  }
  if (p->lock < SQLITE_LOCK_SHARED) return SQLITE_MISUSE;  // SQLite always takes SHARED first
  if (level == SQLITE_LOCK_RESERVED) {
    if ((l.reserved && l.reserved != p) || (l.pending && l.pending != p) ||
        (l.exclusive && l.exclusive != p)) {
      return SQLITE_BUSY;
    }
    l.reserved = p;
    p->lock = SQLITE_LOCK_RESERVED;
    return SQLITE_OK;
  }
  // EXCLUSIVE (SQLite never asks for PENDING itself): PENDING first, so no new
  // reader gets in, then wait (by SQLITE_BUSY and retry) for readers to leave.
  if ((l.pending && l.pending != p) || (l.exclusive && l.exclusive != p) ||
      (l.reserved && l.reserved != p)) {
    return SQLITE_BUSY;
  }
  l.pending = p;
  if (l.shared > 1) {
    p->lock = SQLITE_LOCK_PENDING;
    return SQLITE_BUSY;
  }
  l.exclusive = p;
  p->lock = SQLITE_LOCK_EXCLUSIVE;
  return SQLITE_OK;
}

int x_unlock(sqlite3_file* f, int level) {
  VfsFile* p = as_file(f);
  if (p->lock <= level) return SQLITE_OK;
  FileLocks& l = *p->locks;
  std::lock_guard g(l.mu);
  if (l.exclusive == p) l.exclusive = nullptr;
  if (l.pending == p) l.pending = nullptr;
  if (l.reserved == p) l.reserved = nullptr;
  if (level == SQLITE_LOCK_NONE && p->lock >= SQLITE_LOCK_SHARED) --l.shared;
  p->lock = level;
  return SQLITE_OK;
}

int x_check_reserved_lock(sqlite3_file* f, int* out) {
  VfsFile* p = as_file(f);
  FileLocks& l = *p->locks;
  std::lock_guard g(l.mu);
  *out = (l.reserved || l.pending || l.exclusive) ? 1 : 0;
  return SQLITE_OK;
}

int x_file_control(sqlite3_file*, int, void*) { return SQLITE_NOTFOUND; }
int x_sector_size(sqlite3_file*) { return static_cast<int>(kBlockSize); }
// Overwriting a block never changes its neighbours (a write is all-or-nothing
// per call), so SQLite need not rewrite whole sectors.
int x_device_characteristics(sqlite3_file*) { return SQLITE_IOCAP_POWERSAFE_OVERWRITE; }

int x_shm_map(sqlite3_file* f, int region, int region_size, int extend, void volatile** out) {
  VfsFile* p = as_file(f);
  *out = nullptr;
  FileLocks& l = *p->locks;
  {
    std::lock_guard g(l.mu);
    if (l.shm_fresh) {
      // The first mapping in this process: whatever the index holds was written
      // by a process that no longer exists (or caught mid-update by a
      // checkpoint); zeroed, SQLite rebuilds it from the WAL.
      p->vfs->store().shm_zero(p->index);
      l.shm_fresh = false;
    }
    if (!p->shm_mapped) {
      p->shm_mapped = true;
      ++l.shm_users;
    }
  }
  uint8_t* r = nullptr;
  StoreError e = p->vfs->store().shm_region(p->index, region, static_cast<size_t>(region_size),
                                            extend != 0, &r);
  if (e == StoreError::kFull) return SQLITE_NOMEM;  // SQLite's code for "no shm region"
  if (e != StoreError::kOk) return SQLITE_IOERR_SHMMAP;
  *out = r;
  return SQLITE_OK;
}

int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  VfsFile* p = as_file(f);
  if (offset < 0 || n < 1 || offset + n > SQLITE_SHM_NLOCK) return SQLITE_IOERR_SHMLOCK;
  FileLocks& l = *p->locks;
  std::lock_guard g(l.mu);
  const uint16_t mask = static_cast<uint16_t>(((1u << n) - 1) << offset);
  if (flags & SQLITE_SHM_UNLOCK) {
    for (int i = offset; i < offset + n; ++i) {
      if ((p->shm_shared >> i) & 1) --l.slot_shared[i];
      if (l.slot_exclusive[i] == p) l.slot_exclusive[i] = nullptr;
    }
    p->shm_shared &= static_cast<uint16_t>(~mask);
    p->shm_exclusive &= static_cast<uint16_t>(~mask);
    return SQLITE_OK;
  }
  if (flags & SQLITE_SHM_SHARED) {
    for (int i = offset; i < offset + n; ++i) {
      if (l.slot_exclusive[i] && l.slot_exclusive[i] != p) return SQLITE_BUSY;
    }
    for (int i = offset; i < offset + n; ++i) {
      if (!((p->shm_shared >> i) & 1)) ++l.slot_shared[i];
    }
    p->shm_shared |= mask;
    return SQLITE_OK;
  }
  for (int i = offset; i < offset + n; ++i) {
    const int others = l.slot_shared[i] - ((p->shm_shared >> i) & 1);
    if (others > 0 || (l.slot_exclusive[i] && l.slot_exclusive[i] != p)) return SQLITE_BUSY;
  }
  for (int i = offset; i < offset + n; ++i) l.slot_exclusive[i] = p;
  p->shm_exclusive |= mask;
  return SQLITE_OK;
}

void x_shm_barrier(sqlite3_file* f) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  VfsFile* p = as_file(f);
  std::lock_guard g(p->locks->mu);  // as the unix VFS: a mutex is a barrier for other threads
}

int x_shm_unmap(sqlite3_file* f, int delete_flag) {
  VfsFile* p = as_file(f);
  if (!p->shm_mapped) return SQLITE_OK;
  FileLocks& l = *p->locks;
  std::lock_guard g(l.mu);
  for (int i = 0; i < SQLITE_SHM_NLOCK; ++i) {
    if ((p->shm_shared >> i) & 1) --l.slot_shared[i];
    if (l.slot_exclusive[i] == p) l.slot_exclusive[i] = nullptr;
  }
  p->shm_shared = p->shm_exclusive = 0;
  p->shm_mapped = false;
  if (--l.shm_users == 0 && delete_flag) p->vfs->store().shm_free(p->index);
  return SQLITE_OK;
}

const sqlite3_io_methods kIoMethods = {
    2,  // iVersion: with the xShm* methods, no xFetch
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_file_size,
    x_lock,
    x_unlock,
    x_check_reserved_lock,
    x_file_control,
    x_sector_size,
    x_device_characteristics,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    nullptr,
    nullptr,
};

int x_open(sqlite3_vfs* v, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  SqliteVfs* vfs = as_vfs(v);
  f->pMethods = nullptr;  // until opened: SQLite then calls no xClose
  std::string file_name;
  const bool temp = name == nullptr;
  if (temp) {
    file_name = "/romulus-temp/" + std::to_string(vfs->next_temp_id());
  } else {
    file_name = name;
  }
  const bool create = (flags & SQLITE_OPEN_CREATE) != 0;
  const bool exclusive = (flags & SQLITE_OPEN_EXCLUSIVE) != 0;
  if (!temp && (flags & SQLITE_OPEN_MAIN_DB) != 0) {
    if (int rc = vfs->import_if_on_disk(file_name); rc != SQLITE_OK) return rc;
  }
  int index = -1;
  StoreError e = vfs->store().open_file(file_name, create || temp, exclusive, temp, &index);
  if (e == StoreError::kFull) return SQLITE_FULL;
  if (e != StoreError::kOk) return SQLITE_CANTOPEN;
  auto* p = new (f) VfsFile{};
  p->base.pMethods = &kIoMethods;
  p->vfs = vfs;
  p->index = index;
  p->delete_on_close = temp || (flags & SQLITE_OPEN_DELETEONCLOSE) != 0;
  p->name = std::move(file_name);
  p->locks = &vfs->locks_for(index);
  if (out_flags) *out_flags = flags;
  return SQLITE_OK;
}

int x_delete(sqlite3_vfs* v, const char* name, int) {
  StoreError e = as_vfs(v)->store().remove(name);
  if (e == StoreError::kNotFound) return SQLITE_IOERR_DELETE_NOENT;
  return e == StoreError::kOk ? SQLITE_OK : SQLITE_IOERR_DELETE;
}

int x_access(sqlite3_vfs* v, const char* name, int flags, int* out) {
  ArenaFileStore& store = as_vfs(v)->store();
  // As the unix VFS: an empty file does not "exist" (an empty journal is not hot).
  *out = flags == SQLITE_ACCESS_EXISTS ? store.exists_nonempty(name) : store.exists(name);
  return SQLITE_OK;
}

// Names are kept as given: the arena has no directories, and the resumed
// process on the backup may run in another working directory.
int x_full_pathname(sqlite3_vfs*, const char* name, int n_out, char* out) {
  const size_t len = std::strlen(name);
  if (len + 1 > static_cast<size_t>(n_out) || len > kMaxNameBytes) return SQLITE_CANTOPEN;
  std::memcpy(out, name, len + 1);
  return SQLITE_OK;
}

void* x_dl_open(sqlite3_vfs* v, const char* name) {
  sqlite3_vfs* b = as_vfs(v)->base();
  return b->xDlOpen(b, name);
}
void x_dl_error(sqlite3_vfs* v, int n, char* out) {
  sqlite3_vfs* b = as_vfs(v)->base();
  b->xDlError(b, n, out);
}
void (*x_dl_sym(sqlite3_vfs* v, void* h, const char* sym))(void) {
  sqlite3_vfs* b = as_vfs(v)->base();
  return b->xDlSym(b, h, sym);
}
void x_dl_close(sqlite3_vfs* v, void* h) {
  sqlite3_vfs* b = as_vfs(v)->base();
  b->xDlClose(b, h);
}
int x_randomness(sqlite3_vfs* v, int n, char* out) {
  sqlite3_vfs* b = as_vfs(v)->base();
  return b->xRandomness(b, n, out);
}
int x_sleep(sqlite3_vfs* v, int us) {
  sqlite3_vfs* b = as_vfs(v)->base();
  return b->xSleep(b, us);
}
int x_current_time(sqlite3_vfs* v, double* out) {
  sqlite3_vfs* b = as_vfs(v)->base();
  return b->xCurrentTime(b, out);
}
int x_get_last_error(sqlite3_vfs*, int, char*) { return 0; }
int x_current_time_int64(sqlite3_vfs* v, sqlite3_int64* out) {
  sqlite3_vfs* b = as_vfs(v)->base();
  if (b->iVersion >= 2 && b->xCurrentTimeInt64) return b->xCurrentTimeInt64(b, out);
  double d = 0;
  int rc = b->xCurrentTime(b, &d);
  *out = static_cast<sqlite3_int64>(d * 86400000.0);
  return rc;
}

}  // namespace

SqliteVfs::SqliteVfs(std::string name, std::unique_ptr<ArenaFileStore> store, sqlite3_vfs* base)
    : name_(std::move(name)), store_(std::move(store)), base_(base) {
  std::memset(&vfs_, 0, sizeof(vfs_));
  vfs_.iVersion = 2;
  vfs_.szOsFile = sizeof(VfsFile);
  vfs_.mxPathname = static_cast<int>(kMaxNameBytes);
  vfs_.zName = name_.c_str();
  vfs_.pAppData = this;
  vfs_.xOpen = x_open;
  vfs_.xDelete = x_delete;
  vfs_.xAccess = x_access;
  vfs_.xFullPathname = x_full_pathname;
  vfs_.xDlOpen = x_dl_open;
  vfs_.xDlError = x_dl_error;
  vfs_.xDlSym = x_dl_sym;
  vfs_.xDlClose = x_dl_close;
  vfs_.xRandomness = x_randomness;
  vfs_.xSleep = x_sleep;
  vfs_.xCurrentTime = x_current_time;
  vfs_.xGetLastError = x_get_last_error;
  vfs_.xCurrentTimeInt64 = x_current_time_int64;
}

SqliteVfs::~SqliteVfs() { sqlite3_vfs_unregister(&vfs_); }

Result<std::unique_ptr<SqliteVfs>> SqliteVfs::create(std::string name,
                                                     std::unique_ptr<ArenaFileStore> store,
                                                     bool make_default) {
  if (int rc = sqlite3_initialize(); rc != SQLITE_OK) {
    return Status::io_error(std::string("sqlite3_initialize: ") + sqlite3_errstr(rc));
  }
  if (store == nullptr) return Status::invalid_argument("SqliteVfs::create: no store");
  if (sqlite3_vfs_find(name.c_str()) != nullptr) {
    return Status::invalid_argument("a SQLite VFS named '" + name + "' is registered already");
  }
  sqlite3_vfs* base = sqlite3_vfs_find(nullptr);
  if (base == nullptr) return Status::unsupported("SQLite has no default VFS to delegate to");
  store->remove_temp_files();
  std::unique_ptr<SqliteVfs> vfs(new SqliteVfs(std::move(name), std::move(store), base));
  if (int rc = sqlite3_vfs_register(&vfs->vfs_, make_default ? 1 : 0); rc != SQLITE_OK) {
    return Status::io_error(std::string("sqlite3_vfs_register: ") + sqlite3_errstr(rc));
  }
  return vfs;
}

Status SqliteVfs::make_default() {
  if (int rc = sqlite3_vfs_register(&vfs_, 1); rc != SQLITE_OK) {
    return Status::io_error(std::string("sqlite3_vfs_register: ") + sqlite3_errstr(rc));
  }
  return Status::ok();
}

FileLocks& SqliteVfs::locks_for(int file_index) {
  std::lock_guard g(locks_mu_);
  auto& slot = locks_[file_index];
  if (!slot) slot = std::make_unique<FileLocks>();
  return *slot;
}

int SqliteVfs::import_if_on_disk(const std::string& name) {
  if (!import_from_disk_ || store_->exists(name)) return SQLITE_OK;
  struct stat st {};
  if (::stat(name.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return SQLITE_OK;
  for (const char* beside : {"-wal", "-journal"}) {
    struct stat b {};
    if (::stat((name + beside).c_str(), &b) == 0 && b.st_size > 0) {
      std::fprintf(stderr,
                   "romulus sqlite: not importing %s: %s%s beside it holds changes not in the "
                   "database; open it once with sqlite3 to recover them (sqlite3 %s 'PRAGMA "
                   "wal_checkpoint(TRUNCATE)'), then start again\n",
                   name.c_str(), name.c_str(), beside, name.c_str());
      return SQLITE_CANTOPEN;
    }
  }
  std::vector<uint8_t> bytes;
  {
    std::FILE* f = std::fopen(name.c_str(), "rb");
    if (f == nullptr) return SQLITE_OK;  // gone meanwhile: nothing to import
    bytes.resize(static_cast<size_t>(st.st_size));
    const size_t n = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    if (n != bytes.size()) {
      std::fprintf(stderr, "romulus sqlite: not importing %s: read %zu of %zu bytes\n",
                   name.c_str(), n, bytes.size());
      return SQLITE_IOERR;
    }
  }
  const StoreError e = store_->create_with(name, bytes);
  if (e == StoreError::kExists) return SQLITE_OK;  // another thread imported it first
  if (e != StoreError::kOk) {
    std::fprintf(stderr, "romulus sqlite: importing %s (%zu bytes) into the arena: %s%s\n",
                 name.c_str(), bytes.size(), std::string(store_error_name(e)).c_str(),
                 e == StoreError::kFull ? "; give the guest more memory (--memory)" : "");
    return e == StoreError::kFull ? SQLITE_FULL : SQLITE_CANTOPEN;
  }
  std::fprintf(stderr,
               "romulus sqlite: imported %s (%zu bytes) into the arena; from now on the arena's "
               "copy is the database (the file on disk is left as it was)\n",
               name.c_str(), bytes.size());
  return SQLITE_OK;
}

int SqliteVfs::next_temp_id() {
  std::lock_guard g(locks_mu_);
  return ++temp_id_;
}

}  // namespace sqlite

namespace {
struct Registration {
  std::mutex mu;
  std::unique_ptr<sqlite::SqliteVfs> vfs;  // never destroyed: SQLite keeps the pointer
};
Registration& registration() {
  static Registration* r = new Registration();
  return *r;
}
}  // namespace

Status register_sqlite_vfs(bool make_default) {
  Registration& r = registration();
  std::lock_guard g(r.mu);
  if (r.vfs) return make_default ? r.vfs->make_default() : Status::ok();
  auto arena = attach();
  if (!arena.is_ok()) return arena.status().context("registering the romulus SQLite VFS");
  auto store = sqlite::ArenaFileStore::open(arena->segment());
  if (!store) {
    return Status::io_error(
        "registering the romulus SQLite VFS: the arena has no room for the file table; give "
        "the guest more memory (--memory)");
  }
  auto vfs = sqlite::SqliteVfs::create(kSqliteVfsName, std::move(store), make_default);
  if (!vfs.is_ok()) return vfs.status().context("registering the romulus SQLite VFS");
  const char* import = std::getenv(kEnvSqliteImport);
  (*vfs)->set_import_from_disk(arena->supervised() && !arena->resumed() &&
                               !(import != nullptr && std::string_view(import) == "0"));
  r.vfs = std::move(*vfs);
  return Status::ok();
}

}  // namespace romulus::guest
