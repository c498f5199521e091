// Fuzz target for the checkpoint chunk stream reader (protocol/checkpoint_reader.h).
//
// Input: 4 header bytes, then stream bytes.
//   byte 0, selector: bit 0 = prepend ENABLE_COMPRESSION (Format B stream);
//                     bit 1 = wrap the stream bytes as the body of checkpoint 1
//                             with a correct tail (page count = byte 1, CRC
//                             computed), so the fuzzer reaches on_end();
//                     bit 2 = append GOODBYE;
//                     bit 3 = append HANDOVER (after GOODBYE if both).
//   byte 1: page count for the wrapped tail.
//   bytes 2-3: seed of the piece sizes the stream is fed in.
// The stream is fed twice, whole and in pieces; both readers must make the
// same sink calls and end with the same status. The sink keeps a 64-page
// image and traps on calls the reader must never make (PFN out of range or not
// increasing, on_end without a matching page count).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "protocol/checkpoint_reader.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/wire_format.h"

using namespace romulus;
using namespace romulus::protocol;

namespace {

constexpr uint64_t kPages = 64;

class FuzzSink : public CheckpointSink {
 public:
  // Back to a fresh zeroed image (sinks are reused: allocating 256 KiB per
  // run would dominate the fuzzer's time).
  void reset() {
    calls_.clear();
    std::memset(image_.data(), 0, image_.size());  // memset: fast even at -O0
    staged_count_ = 0;
    has_last_ = false;
  }
  Status on_begin(uint64_t epoch, uint32_t flags) override {
    log(1, epoch);
    log(2, flags);
    staged_count_ = 0;
    has_last_ = false;
    return Status::ok();
  }
  MutablePageView page_for(uint64_t pfn, bool needs_current) override {
    if (pfn >= kPages) __builtin_trap();
    if (has_last_ && pfn <= last_) __builtin_trap();
    has_last_ = true;
    last_ = pfn;
    log(3, pfn * 2 + needs_current);
    if (staged_count_ == staged_.size()) staged_.emplace_back();
    staged_pfn_[staged_count_] = pfn;
    uint8_t* page = staged_[staged_count_++].data();
    if (needs_current) {
      std::memcpy(page, &image_[pfn * kPageSize], kPageSize);
    } else {
      std::memset(page, 0xA5, kPageSize);
    }
    return MutablePageView(page, kPageSize);
  }
  Status on_end(uint64_t epoch, uint32_t page_count) override {
    if (page_count != staged_count_) __builtin_trap();
    for (size_t i = 0; i < staged_count_; ++i) {
      std::memcpy(&image_[staged_pfn_[i] * kPageSize], staged_[i].data(), kPageSize);
    }
    log(4, epoch);
    log(5, page_count);
    return Status::ok();
  }
  Status on_device_state(ByteSpan state) override {
    if (state.size() > kMaxDeviceState) __builtin_trap();
    log(10, state.size());
    return Status::ok();
  }
  void on_heartbeat(uint64_t ns) override { log(6, ns); }
  void on_enable_compression() override { log(7, 0); }
  void on_goodbye() override { log(8, 0); }
  void on_handover() override { log(9, 0); }
  void on_dropped() override { log(10, 0); }

  const std::vector<uint64_t>& calls() const { return calls_; }
  const std::vector<uint8_t>& image() const { return image_; }

 private:
  void log(uint64_t what, uint64_t v) {
    calls_.push_back(what);
    calls_.push_back(v);
  }
  std::vector<uint64_t> calls_;
  std::vector<uint8_t> image_ = std::vector<uint8_t>(kPages * kPageSize);
  std::vector<std::array<uint8_t, kPageSize>> staged_;  // grows to the pages of one checkpoint
  std::array<uint64_t, kPages> staged_pfn_{};
  size_t staged_count_ = 0;
  bool has_last_ = false;
  uint64_t last_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint8_t selector = data[0];
  const uint8_t wrapped_pages = data[1];
  uint32_t rng = data[2] | (data[3] << 8) | 1u;
  const ByteSpan raw(data + 4, size - 4);

  Bytes stream;
  if (selector & 1) put_bytes(stream, encode_enable_compression());
  if (selector & 2) {
    CheckpointFramer framer;
    put_bytes(stream, framer.begin(1, kBeginConsistent));
    framer.add_body(raw, wrapped_pages);
    put_bytes(stream, raw);
    put_bytes(stream, framer.end());
  } else {
    put_bytes(stream, raw);
  }
  if (selector & 4) put_bytes(stream, encode_goodbye());
  if (selector & 8) put_bytes(stream, encode_handover());

  static FuzzSink sinks[2];
  FuzzSink* whole_sink = &sinks[0];
  FuzzSink* piece_sink = &sinks[1];
  whole_sink->reset();
  piece_sink->reset();
  CheckpointReader whole(kPages, whole_sink);
  const Status whole_status = whole.feed(stream);

  CheckpointReader pieces(kPages, piece_sink);
  Status piece_status;
  ByteSpan rest(stream);
  while (!rest.empty()) {
    rng = rng * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(rest.size(), 1 + (rng >> 16) % 300);
    piece_status = pieces.feed(rest.first(n));
    if (!piece_status.is_ok()) break;
    rest = rest.subspan(n);
  }
  if (!(piece_status == whole_status)) __builtin_trap();
  if (!(pieces.finish() == whole.finish())) __builtin_trap();
  if (piece_sink->calls() != whole_sink->calls()) __builtin_trap();
  if (std::memcmp(piece_sink->image().data(), whole_sink->image().data(), kPages * kPageSize) !=
      0) {
    __builtin_trap();
  }
  if (whole_status.is_ok() && whole.bytes_consumed() != stream.size()) __builtin_trap();
  return 0;
}
