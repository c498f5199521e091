#include "checkpoint/image_compare.h"

#include <thread>

#include "common/asio.h"

namespace romulus::checkpoint {

namespace {
// How long the last word (GOODBYE or HANDOVER) may take to reach the backup.
constexpr std::chrono::seconds kLastWordWithin{1};
}  // namespace

protocol::Hello link_hello(const PrimaryConfig& config) {
  protocol::Hello hello;
  hello.page_size = protocol::kPageSize;
  hello.word_size = protocol::kWordSize;
  hello.guest_page_count = config.memory_bytes / protocol::kPageSize;
  hello.session_id = config.session_id;
  hello.codecs = {protocol::CodecId::kNone, protocol::CodecId::kRunSkip,
                  protocol::CodecId::kXbzrle};
  return hello;
}

SenderOptions link_options(const PrimaryConfig& config) {
  SenderOptions so;
  so.failover_timeout = config.failover_timeout;
  so.heartbeat = config.heartbeat;
  so.tls = config.tls;
  so.insecure = config.insecure;
  return so;
}

Result<BackupImage> compare_with_backup(const PrimaryConfig& config, uint64_t own_epoch,
                                        const std::function<void()>& before_handover) {
  if (!config.backup) return Status::invalid_argument("no backup to compare images with");
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  struct Join {
    boost::asio::io_context& io;
    std::thread& t;
    ~Join() {
      io.stop();
      t.join();
    }
  } join{io, io_thread};

  protocol::Reply reply;
  auto sender =
      TcpSender::connect(io, *config.backup, link_hello(config), link_options(config), {}, &reply);
  if (!sender.is_ok()) return sender.status();
  BackupImage out;
  out.epoch = reply.last_committed_epoch;
  if (out.epoch > own_epoch) {
    if (before_handover) before_handover();
    (*sender)->handover(kLastWordWithin);
    out.handed_over = true;
  } else {
    (*sender)->goodbye(kLastWordWithin);
  }
  return out;
}

}  // namespace romulus::checkpoint
