// The checkpoint chunk stream, writer -> reader: round trips in both formats,
// arbitrary feeding, and damaged or hostile streams. The atomic-commit
// guarantee is tested directly: no truncation and no single-bit flip of a
// checkpoint ever reaches CheckpointSink::on_end().
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "protocol/checkpoint_reader.h"
#include "protocol/checkpoint_writer.h"
#include "protocol/crc32c.h"
#include "protocol/lz4_stage.h"
#include "protocol/page_codec.h"
#include "protocol/wire_format.h"
#include "tests/support/status_matchers.h"

namespace romulus::protocol::checkpoint_stream_test {
namespace {

using Page = std::array<uint8_t, kPageSize>;

// A receiver: a committed image, and a staging area for the checkpoint in
// flight that is applied only in on_end() (as the backup does).
class ImageSink : public CheckpointSink {
 public:
  explicit ImageSink(uint64_t pages) : image_(pages * kPageSize, 0) {}

  Status on_begin(uint64_t epoch, uint32_t flags) override {
    begins.push_back(epoch);
    last_flags = flags;
    staged_.clear();
    return Status::ok();
  }
  MutablePageView page_for(uint64_t pfn, bool needs_current) override {
    EXPECT_FALSE(staged_.count(pfn)) << "page_for called twice for PFN " << pfn;
    Page& p = staged_[pfn];
    if (needs_current) {
      std::memcpy(p.data(), image_.data() + pfn * kPageSize, kPageSize);
    } else {
      p.fill(0xA5);  // garbage: must be overwritten whole
    }
    return MutablePageView(p);
  }
  Status on_end(uint64_t epoch, uint32_t page_count) override {
    EXPECT_EQ(page_count, staged_.size());
    for (const auto& [pfn, page] : staged_) {
      std::memcpy(image_.data() + pfn * kPageSize, page.data(), kPageSize);
    }
    staged_.clear();
    ends.emplace_back(epoch, page_count);
    return end_status;
  }
  void on_heartbeat(uint64_t ns) override { heartbeats.push_back(ns); }
  void on_enable_compression() override { ++enables; }
  void on_goodbye() override { ++goodbyes; }
  void on_handover() override { ++handovers; }
  void on_dropped() override { ++dropped; }
  Status on_device_state(ByteSpan state) override {
    device_states.emplace_back(state.begin(), state.end());
    return Status::ok();
  }

  const Bytes& image() const { return image_; }

  std::vector<uint64_t> begins;
  std::vector<std::pair<uint64_t, uint32_t>> ends;
  std::vector<uint64_t> heartbeats;
  std::vector<Bytes> device_states;
  uint32_t last_flags = 0;
  int enables = 0;
  int goodbyes = 0;
  int handovers = 0;
  int dropped = 0;
  Status end_status;

 private:
  Bytes image_;
  std::map<uint64_t, Page> staged_;
};

// A sender: the primary's image and page cache, producing a stream.
class Sender {
 public:
  Sender(uint64_t pages, EncodeOptions options = {})
      : pages_(pages), image_(pages * kPageSize, 0), options_(options) {}

  Bytes& stream() { return stream_; }
  const Bytes& image() const { return image_; }
  EncodeStats& stats() { return stats_; }
  PageCache& cache() { return cache_; }

  void enable_compression() {
    put_bytes(stream_, encode_enable_compression());
    format_b_ = true;
  }
  void heartbeat(uint64_t ns) { put_bytes(stream_, encode_heartbeat(ns)); }
  void goodbye() { put_bytes(stream_, encode_goodbye()); }
  void handover() { put_bytes(stream_, encode_handover()); }

  // Dirties `count` random pages (a few words each, or whole pages), then
  // sends them as one checkpoint in `batches` body pieces.
  void checkpoint(std::mt19937& rng, uint64_t epoch, size_t count, int batches = 1,
                  uint32_t flags = kBeginConsistent) {
    std::set<uint64_t> chosen;
    while (chosen.size() < std::min<uint64_t>(count, pages_)) chosen.insert(rng() % pages_);
    std::vector<uint64_t> pfns(chosen.begin(), chosen.end());
    for (uint64_t pfn : pfns) dirty(rng, pfn);
    send(pfns, epoch, batches, flags);
  }

  void dirty(std::mt19937& rng, uint64_t pfn) {
    uint8_t* p = image_.data() + pfn * kPageSize;
    switch (rng() % 4) {
      case 0:  // whole page of noise
        for (size_t i = 0; i < kPageSize; ++i) p[i] = static_cast<uint8_t>(rng());
        break;
      case 1:  // zero page
        std::memset(p, 0, kPageSize);
        break;
      default: {  // a few words
        const int words = 1 + rng() % 20;
        for (int i = 0; i < words; ++i) p[(rng() % kPageSize) & ~size_t{3}] ^= 1 + rng() % 255;
      }
    }
  }

  void send(const std::vector<uint64_t>& pfns, uint64_t epoch, int batches, uint32_t flags) {
    CheckpointFramer framer;
    put_bytes(stream_, framer.begin(epoch, flags));
    Bytes staged(pfns.size() * kPageSize);
    for (size_t i = 0; i < pfns.size(); ++i) {
      std::memcpy(staged.data() + i * kPageSize, image_.data() + pfns[i] * kPageSize, kPageSize);
    }
    const size_t per = (pfns.size() + batches - 1) / std::max(batches, 1);
    for (size_t i = 0; i < pfns.size(); i += std::max<size_t>(per, 1)) {
      const size_t n = std::min(std::max<size_t>(per, 1), pfns.size() - i);
      Bytes body;
      const std::span<const uint64_t> part(pfns.data() + i, n);
      if (format_b_) {
        encode_body_format_b(part, staged.data() + i * kPageSize, cache_, options_, body, &stats_);
      } else {
        encode_body_format_a(part, staged.data() + i * kPageSize, body, &stats_);
      }
      framer.add_body(body, static_cast<uint32_t>(n));
      put_bytes(stream_, body);
    }
    put_bytes(stream_, framer.end());
  }

 private:
  uint64_t pages_;
  Bytes image_;
  EncodeOptions options_;
  PageCache cache_{1 << 20};
  EncodeStats stats_;
  Bytes stream_;
  bool format_b_ = false;
};

uint32_t test_seed() {
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  return seed;
}

// Feeds `stream` in pieces of random size (1 = one byte at a time).
Status feed_in_pieces(CheckpointReader& reader, ByteSpan stream, std::mt19937& rng,
                      size_t max_piece) {
  while (!stream.empty()) {
    const size_t n = std::min<size_t>(stream.size(), 1 + rng() % max_piece);
    ROMULUS_RETURN_IF_ERROR(reader.feed(stream.first(n)));
    stream = stream.subspan(n);
  }
  return Status::ok();
}

constexpr uint64_t kGuestPages = 256;

TEST(CheckpointStream, FormatARoundTrip) {
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed);
  std::mt19937 rng(seed);
  Sender sender(kGuestPages);
  for (uint64_t epoch = 1; epoch <= 4; ++epoch) sender.checkpoint(rng, epoch, 1 + rng() % 40, 3);
  sender.goodbye();

  ImageSink sink(kGuestPages);
  CheckpointReader reader(kGuestPages, &sink);
  ASSERT_OK(reader.feed(sender.stream())) << reader.finish().to_string();
  EXPECT_OK(reader.finish());
  EXPECT_EQ(reader.format(), Format::kA);
  EXPECT_EQ(sink.ends.size(), 4u);
  EXPECT_EQ(sink.goodbyes, 1);
  EXPECT_EQ(reader.bytes_consumed(), sender.stream().size());
  EXPECT_TRUE(sink.image() == sender.image());
}

TEST(CheckpointStream, FormatBRoundTripWithEveryCodecAndLz4Mode) {
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed);
  for (CodecId codec : {CodecId::kNone, CodecId::kRunSkip, CodecId::kXbzrle}) {
    for (auto lz4 :
         {EncodeOptions::Lz4::kOff, EncodeOptions::Lz4::kAuto, EncodeOptions::Lz4::kAlways}) {
      SCOPED_TRACE(std::string(codec_name(codec)) + " lz4 " + std::to_string(int(lz4)));
      std::mt19937 rng(seed);
      EncodeOptions options;
      options.codec = codec;
      options.lz4 = lz4;
      options.max_chunk_bytes = 8 << 10 << (rng() % 4);
      Sender sender(kGuestPages, options);
      sender.enable_compression();
      for (uint64_t epoch = 1; epoch <= 6; ++epoch) {
        sender.checkpoint(rng, epoch, 1 + rng() % 60, 1 + rng() % 4);
      }
      sender.goodbye();
      ImageSink sink(kGuestPages);
      CheckpointReader reader(kGuestPages, &sink);
      const Status s = reader.feed(sender.stream());
      ASSERT_OK(s);
      EXPECT_OK(reader.finish());
      EXPECT_EQ(reader.format(), Format::kB);
      EXPECT_EQ(sink.ends.size(), 6u);
      EXPECT_TRUE(sink.image() == sender.image());
      if (lz4 == EncodeOptions::Lz4::kOff) {
        EXPECT_EQ(sender.stats().lz4_chunks, 0u);
      }
    }
  }
}

TEST(CheckpointStream, FeedingInRandomPiecesOrByteByByteGivesTheSameResult) {
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed);
  std::mt19937 rng(seed);
  Sender sender(kGuestPages);
  sender.checkpoint(rng, 1, 30);  // Format A full sync
  sender.heartbeat(111);
  sender.enable_compression();
  for (uint64_t epoch = 2; epoch <= 5; ++epoch) {
    sender.checkpoint(rng, epoch, 1 + rng() % 30, 2);
    sender.heartbeat(epoch * 1000);
  }
  sender.goodbye();

  ImageSink whole(kGuestPages);
  CheckpointReader whole_reader(kGuestPages, &whole);
  ASSERT_OK(whole_reader.feed(sender.stream()));

  for (size_t max_piece : {size_t{1}, size_t{3}, size_t{700}, size_t{50000}}) {
    SCOPED_TRACE(max_piece);
    ImageSink sink(kGuestPages);
    CheckpointReader reader(kGuestPages, &sink);
    ASSERT_OK(feed_in_pieces(reader, sender.stream(), rng, max_piece));
    EXPECT_OK(reader.finish());
    EXPECT_EQ(sink.begins, whole.begins);
    EXPECT_EQ(sink.ends, whole.ends);
    EXPECT_EQ(sink.heartbeats, whole.heartbeats);
    EXPECT_EQ(sink.enables, 1);
    EXPECT_TRUE(sink.image() == sender.image());
  }
  EXPECT_EQ(whole.heartbeats, (std::vector<uint64_t>{111, 2000, 3000, 4000, 5000}));
}

TEST(CheckpointStream, EnableCompressionTakesEffectAtTheNextCheckpoint) {
  std::mt19937 rng(1);
  Sender sender(kGuestPages);
  sender.checkpoint(rng, 1, 5);
  ImageSink sink(kGuestPages);
  CheckpointReader reader(kGuestPages, &sink);
  ASSERT_OK(reader.feed(sender.stream()));
  EXPECT_EQ(reader.format(), Format::kA);
  sender.stream().clear();
  sender.enable_compression();
  ASSERT_OK(reader.feed(sender.stream()));
  EXPECT_EQ(reader.format(), Format::kB);
  EXPECT_EQ(sink.enables, 1);
}

TEST(CheckpointStream, BodiesEncodedOnSeveralThreadsAreSentInOrder) {
  const uint32_t seed = test_seed();
  SCOPED_TRACE(seed);
  std::mt19937 rng(seed);
  constexpr uint64_t kPages = 4096;
  Bytes image(kPages * kPageSize);
  PageCache cache(8 << 20);
  EncodeOptions options;

  Bytes stream = encode_enable_compression();
  for (uint64_t epoch = 1; epoch <= 3; ++epoch) {
    std::vector<uint64_t> pfns;
    for (uint64_t pfn = 0; pfn < kPages; ++pfn) {
      if (rng() % 3 == 0) pfns.push_back(pfn);
    }
    for (uint64_t pfn : pfns) {
      for (int k = 0; k < 8; ++k) image[pfn * kPageSize + (rng() % kPageSize)] = rng();
    }
    constexpr int kThreads = 4;
    std::vector<Bytes> bodies(kThreads);
    std::vector<std::thread> threads;
    const size_t per = (pfns.size() + kThreads - 1) / kThreads;
    Bytes staged(pfns.size() * kPageSize);
    for (size_t i = 0; i < pfns.size(); ++i) {
      std::memcpy(&staged[i * kPageSize], &image[pfns[i] * kPageSize], kPageSize);
    }
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const size_t lo = std::min(pfns.size(), t * per), hi = std::min(pfns.size(), lo + per);
        encode_body_format_b(std::span(pfns).subspan(lo, hi - lo), &staged[lo * kPageSize], cache,
                             options, bodies[t], nullptr);
      });
    }
    for (auto& th : threads) th.join();
    CheckpointFramer framer;
    put_bytes(stream, framer.begin(epoch, kBeginConsistent));
    for (int t = 0; t < kThreads; ++t) {
      const size_t lo = std::min(pfns.size(), t * per), hi = std::min(pfns.size(), lo + per);
      framer.add_body(bodies[t], static_cast<uint32_t>(hi - lo));
      put_bytes(stream, bodies[t]);
    }
    put_bytes(stream, framer.end());
  }
  ImageSink sink(kPages);
  CheckpointReader reader(kPages, &sink);
  const Status s = reader.feed(stream);
  ASSERT_OK(s);
  EXPECT_EQ(sink.ends.size(), 3u);
  EXPECT_TRUE(sink.image() == image);
}

TEST(CheckpointStream, ZeroPagesMissingTheCacheCostLittleWithLz4Auto) {
  Sender sender(64);
  sender.enable_compression();
  std::vector<uint64_t> pfns = {1, 2, 3, 4, 5, 6, 7, 8};  // all-zero pages, never sent before
  sender.send(pfns, 1, 1, kBeginConsistent);
  EXPECT_EQ(sender.stats().whole_pages, 8u);
  EXPECT_EQ(sender.stats().lz4_chunks, 1u);
  EXPECT_LT(sender.stats().wire_bytes, 300u);
}

// The epoch engine encodes a compare tracker's pages where they lie (its shadow,
// one pointer per page) rather than from contiguous staging: the bytes on the
// wire must not depend on where the pages were read from.
TEST(CheckpointStream, PagesGivenOnePointerEachEncodeLikeContiguousPages) {
  std::mt19937 rng(11);
  constexpr size_t kPages = kMaxPfnBatch + 100;  // Format A: more than one PFN array
  Bytes contiguous(kPages * kPageSize);
  for (size_t i = 0; i < contiguous.size(); i += 64) contiguous[i] = static_cast<uint8_t>(rng());
  // The same pages scattered, in reverse order, through a larger buffer.
  Bytes scattered(2 * kPages * kPageSize);
  std::vector<uint8_t*> at(kPages);
  std::vector<uint64_t> pfns(kPages);
  for (size_t i = 0; i < kPages; ++i) {
    at[i] = scattered.data() + (2 * (kPages - 1 - i) + 1) * kPageSize;
    std::memcpy(at[i], contiguous.data() + i * kPageSize, kPageSize);
    pfns[i] = 3 * i + 1;
  }
  const std::vector<const uint8_t*> where(at.begin(), at.end());
  EncodeOptions options;
  PageCache cache_a(4 << 20), cache_b(4 << 20);
  Bytes body_a, body_b;
  EncodeStats stats_a, stats_b;
  for (int round = 0; round < 2; ++round) {  // second round: cache hits (RUN/SKIP deltas)
    body_a.clear();
    body_b.clear();
    encode_body_format_b(pfns, contiguous.data(), cache_a, options, body_a, &stats_a);
    encode_body_format_b(pfns, where, cache_b, options, body_b, &stats_b);
    EXPECT_EQ(body_a, body_b) << "Format B, round " << round;
    for (size_t i = 0; i < kPages; i += 7) {
      contiguous[i * kPageSize + 100] ^= 0x5a;
      at[i][100] ^= 0x5a;
    }
  }
  EXPECT_EQ(stats_a.wire_bytes, stats_b.wire_bytes);
  body_a.clear();
  body_b.clear();
  encode_body_format_a(pfns, contiguous.data(), body_a, nullptr);
  encode_body_format_a(pfns, where, body_b, nullptr);
  EXPECT_EQ(body_a, body_b) << "Format A";
}

TEST(CheckpointStream, ChunksStayWithinTheTargetSize) {
  std::mt19937 rng(7);
  EncodeOptions options;
  options.lz4 = EncodeOptions::Lz4::kOff;
  options.max_chunk_bytes = 10000;
  Bytes pages(100 * kPageSize);
  for (auto& b : pages) b = static_cast<uint8_t>(rng());
  std::vector<uint64_t> pfns(100);
  for (size_t i = 0; i < pfns.size(); ++i) pfns[i] = i * 2;
  PageCache cache(1 << 20);
  Bytes body;
  encode_body_format_b(pfns, pages.data(), cache, options, body, nullptr);
  // Walk the chunks.
  ByteReader r(body);
  int compressed = 0;
  while (!r.empty()) {
    int32_t type = 0;
    ASSERT_OK(r.read_i32(&type, "type"));
    size_t size = 0;
    if (type > 0) {
      size = 4 + 8 * static_cast<size_t>(type);
      ASSERT_OK(r.skip(8 * static_cast<size_t>(type), "pfns"));
    } else {
      ASSERT_EQ(type, XC_SAVE_ID_COMPRESSED_DATA);
      uint32_t len = 0;
      ASSERT_OK(r.read_u32(&len, "len"));
      ASSERT_OK(r.skip(len, "payload"));
      size = 8 + len;
      ++compressed;
    }
    EXPECT_LE(size, options.max_chunk_bytes);
  }
  EXPECT_GE(compressed, 100 * 4097 / 10000);
}

// ---- Truncation and damage.

// A small stream: a Format A checkpoint, ENABLE_COMPRESSION, two Format B
// checkpoints, GOODBYE. Returns the offsets just past each checkpoint's tail.
Bytes small_stream(std::vector<size_t>* checkpoint_ends) {
  std::mt19937 rng(42);
  Sender sender(16);
  sender.checkpoint(rng, 1, 2);
  checkpoint_ends->push_back(sender.stream().size());
  sender.heartbeat(5);
  sender.enable_compression();
  sender.checkpoint(rng, 2, 3);
  checkpoint_ends->push_back(sender.stream().size());
  sender.checkpoint(rng, 3, 2, 2);
  checkpoint_ends->push_back(sender.stream().size());
  sender.goodbye();
  return sender.stream();
}

TEST(CheckpointStreamDamage, TruncationAtEveryByteNeverCommitsTheCutCheckpoint) {
  std::vector<size_t> ends;
  const Bytes stream = small_stream(&ends);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    ImageSink sink(16);
    CheckpointReader reader(16, &sink);
    const Status s = reader.feed(ByteSpan(stream).first(cut));
    ASSERT_OK(s) << "cut " << cut << ": " << s.to_string();
    const size_t complete =
        std::count_if(ends.begin(), ends.end(), [&](size_t e) { return e <= cut; });
    ASSERT_EQ(sink.ends.size(), complete) << "cut " << cut;
    if (cut < stream.size()) {
      EXPECT_EQ(reader.finish().code(), StatusCode::kTruncated) << "cut " << cut;
    } else {
      EXPECT_OK(reader.finish());
    }
  }
}

// Every single-bit flip of a checkpoint is rejected before on_end: the
// atomic-commit guarantee.
void expect_every_bit_flip_rejected(const Bytes& prefix, const Bytes& checkpoint) {
  {
    ImageSink sink(16);
    CheckpointReader reader(16, &sink);
    ASSERT_OK(reader.feed(prefix));
    ASSERT_OK(reader.feed(checkpoint));
    ASSERT_EQ(sink.ends.size(), 1u) << "the undamaged checkpoint must commit";
  }
  for (size_t bit = 0; bit < checkpoint.size() * 8; ++bit) {
    Bytes damaged = checkpoint;
    damaged[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    ImageSink sink(16);
    CheckpointReader reader(16, &sink);
    ASSERT_OK(reader.feed(prefix));
    const Status s = reader.feed(damaged);
    ASSERT_TRUE(sink.ends.empty()) << "bit " << bit << " flipped and the checkpoint committed";
    EXPECT_FALSE(reader.finish().is_ok()) << "bit " << bit;
    (void)s;
  }
}

TEST(CheckpointStreamDamage, EveryBitFlipInAFormatBCheckpointIsRejectedBeforeCommit) {
  std::mt19937 rng(3);
  Sender sender(16);
  sender.enable_compression();
  const Bytes prefix = sender.stream();
  sender.stream().clear();
  sender.checkpoint(rng, 9, 3);
  expect_every_bit_flip_rejected(prefix, sender.stream());
}

TEST(CheckpointStreamDamage, EveryBitFlipInAFormatACheckpointIsRejectedBeforeCommit) {
  std::mt19937 rng(4);
  Sender sender(16);
  sender.checkpoint(rng, 9, 1);
  expect_every_bit_flip_rejected({}, sender.stream());
}

TEST(CheckpointStreamDamage, EveryBitFlipInAnLz4CheckpointIsRejectedBeforeCommit) {
  EncodeOptions options;
  options.lz4 = EncodeOptions::Lz4::kAlways;
  Sender sender(16, options);
  sender.enable_compression();
  const Bytes prefix = sender.stream();
  sender.stream().clear();
  sender.send({2, 3}, 5, 1, kBeginConsistent);  // zero pages: compress well
  ASSERT_EQ(sender.stats().lz4_chunks, 1u);
  expect_every_bit_flip_rejected(prefix, sender.stream());
}

// ---- Hand-built hostile streams.

class StreamBuilder {
 public:
  StreamBuilder& i32(int32_t v) {
    return put([&] { put_i32(b_, v); });
  }
  StreamBuilder& u32(uint32_t v) {
    return put([&] { put_u32(b_, v); });
  }
  StreamBuilder& u64(uint64_t v) {
    return put([&] { put_u64(b_, v); });
  }
  StreamBuilder& u8(uint8_t v) {
    return put([&] { put_u8(b_, v); });
  }
  StreamBuilder& bytes(ByteSpan s) {
    return put([&] { put_bytes(b_, s); });
  }
  StreamBuilder& begin(uint64_t epoch, uint32_t flags = 0) {
    crc_start_ = b_.size();
    return i32(kChunkCheckpointBegin).u64(epoch).u32(flags);
  }
  StreamBuilder& pfns(std::vector<uint64_t> v) {
    i32(static_cast<int32_t>(v.size()));
    for (uint64_t p : v) u64(p);
    return *this;
  }
  StreamBuilder& compressed(CodecId codec, ByteSpan records) {
    return i32(XC_SAVE_ID_COMPRESSED_DATA)
        .u32(static_cast<uint32_t>(2 + records.size()))
        .u8(static_cast<uint8_t>(codec))
        .u8(0)
        .bytes(records);
  }
  // End of body and a tail with a correct CRC.
  StreamBuilder& end(uint64_t epoch, uint32_t pages) {
    i32(0).u64(epoch).u32(pages);
    return u32(crc32c(ByteSpan(b_).subspan(crc_start_)));
  }
  const Bytes& bytes() const { return b_; }

 private:
  template <typename F>
  StreamBuilder& put(F f) {
    f();
    return *this;
  }
  Bytes b_;
  size_t crc_start_ = 0;
};

Status read_stream(const Bytes& stream, ImageSink* sink = nullptr, uint64_t guest_pages = 16) {
  ImageSink local(guest_pages);
  CheckpointReader reader(guest_pages, sink ? sink : &local);
  return reader.feed(stream);
}

const Bytes kUnchanged = {0x00};  // RUN/SKIP record: page unchanged

Bytes whole_page_record(uint8_t fill) {
  Bytes r(1 + kPageSize, fill);
  r[0] = 0x80;
  return r;
}

void expect_corrupt(const Status& s, const std::string& fragment) {
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
  EXPECT_NE(s.message().find(fragment), std::string::npos)
      << "message \"" << s.message() << "\" lacks \"" << fragment << "\"";
}

TEST(CheckpointStreamHostile, HandBuiltValidCheckpointIsAccepted) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(17)
      .pfns({1, 3})
      .compressed(CodecId::kRunSkip, Bytes{0x00, 0x00})
      .end(17, 2);
  ImageSink sink(16);
  ASSERT_OK(read_stream(b.bytes(), &sink));
  EXPECT_EQ(sink.ends.size(), 1u);
}

// The primary's network thread sends heartbeats whenever its wire idles, also
// between two chunks of a checkpoint; they are not part of its CRC.
TEST(CheckpointStreamHostile, HeartbeatBetweenChunksOfACheckpointIsAcceptedOutsideTheCrc) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(17).pfns({1, 3});
  const size_t between = b.bytes().size();
  b.compressed(CodecId::kRunSkip, Bytes{0x00, 0x00}).end(17, 2);
  Bytes stream = b.bytes();
  const Bytes hb = encode_heartbeat(42);
  stream.insert(stream.begin() + static_cast<long>(between), hb.begin(), hb.end());
  const size_t before_end = stream.size() - 20;  // end of body: i32 + u64 + u32 + u32
  stream.insert(stream.begin() + static_cast<long>(before_end), hb.begin(), hb.end());
  ImageSink sink(16);
  ASSERT_OK(read_stream(stream, &sink));
  EXPECT_EQ(sink.ends.size(), 1u);
  EXPECT_EQ(sink.heartbeats, (std::vector<uint64_t>{42, 42}));
}

// DEVICE_STATE (a VM's devices): once, inside a consistent checkpoint, under
// its CRC; the bytes reach the sink before the checkpoint's on_end().
TEST(CheckpointStreamDeviceState, TravelsInsideAConsistentCheckpointUnderItsCrc) {
  const Bytes devices = {'Q', 'E', 'V', 'M', 0, 1, 2, 3};
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(17, kBeginConsistent).pfns({1});
  b.bytes(encode_device_state(devices));
  b.compressed(CodecId::kRunSkip, Bytes{0x00}).end(17, 1);
  ImageSink sink(16);
  ASSERT_OK(read_stream(b.bytes(), &sink));
  ASSERT_EQ(sink.device_states.size(), 1u);
  EXPECT_EQ(sink.device_states[0], devices);
  EXPECT_EQ(sink.ends.size(), 1u);
  // Any of its bytes flipped: the CRC refuses the checkpoint.
  for (size_t i = 0; i < devices.size(); ++i) {
    Bytes bad = b.bytes();
    const size_t at = 4 + 4 + 12 + 4 + 8 + 8 + i;  // enable, begin, PFN array, DEVICE_STATE header
    ASSERT_EQ(bad[at], devices[i]);
    bad[at] ^= 0x40;
    ImageSink s2(16);
    expect_corrupt(read_stream(bad, &s2), "CRC");
    EXPECT_TRUE(s2.ends.empty());
  }
}

TEST(CheckpointStreamDeviceState, OnlyOnceAndOnlyInAConsistentCheckpoint) {
  const Bytes chunk = encode_device_state(Bytes{1, 2, 3});
  {
    StreamBuilder b;
    b.bytes(chunk);
    expect_corrupt(read_stream(b.bytes()), "DEVICE_STATE outside a checkpoint");
  }
  {
    StreamBuilder b;
    b.begin(3, kBeginFullSync).bytes(chunk);
    expect_corrupt(read_stream(b.bytes()), "DEVICE_STATE in a pre-copy round");
  }
  {
    StreamBuilder b;
    b.begin(3, kBeginConsistent).bytes(chunk).bytes(chunk);
    expect_corrupt(read_stream(b.bytes()), "a second DEVICE_STATE in one checkpoint");
  }
}

TEST(CheckpointStreamDeviceState, AnOversizeLengthIsRefusedBeforeAnyAllocation) {
  StreamBuilder b;
  b.begin(3, kBeginConsistent).i32(kChunkDeviceState).u32(kMaxDeviceState + 1);
  expect_corrupt(read_stream(b.bytes()), "exceeds limit");
}

TEST(CheckpointStreamDeviceState, AReceiverThatKeepsNoneRefusesIt) {
  struct NoDevices final : CheckpointSink {
    Status on_begin(uint64_t, uint32_t) override { return Status::ok(); }
    MutablePageView page_for(uint64_t, bool) override { return MutablePageView(page); }
    Status on_end(uint64_t, uint32_t) override { return Status::ok(); }
    Page page{};
  } sink;
  StreamBuilder b;
  b.begin(3, kBeginConsistent).bytes(encode_device_state(Bytes{7}));
  CheckpointReader reader(16, &sink);
  const Status s = reader.feed(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.to_string();
  EXPECT_NE(s.message().find("device state"), std::string::npos) << s.message();
}

TEST(CheckpointStreamHostile, PfnOutOfRange) {
  StreamBuilder b;
  b.begin(17).pfns({70000});
  ImageSink sink(65536);
  CheckpointReader reader(65536, &sink);
  const Status s = reader.feed(b.bytes());
  EXPECT_EQ(s.message(), "checkpoint 17: PFN 70000 out of range (guest has 65536 pages)");
}

TEST(CheckpointStreamHostile, PfnsNotIncreasingAcrossArrays) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(1).pfns({5, 6}).pfns({4});
  expect_corrupt(read_stream(b.bytes()), "PFN 4 after PFN 6");
}

TEST(CheckpointStreamHostile, DuplicatePfn) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(1).pfns({5, 5});
  expect_corrupt(read_stream(b.bytes()), "duplicate PFN 5");
}

TEST(CheckpointStreamHostile, MorePagesThanPfns) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({5})
      .compressed(CodecId::kRunSkip, Bytes{0, 0});
  expect_corrupt(read_stream(b.bytes()), "page record with no PFN waiting");
}

TEST(CheckpointStreamHostile, RecordsBeforeAnyPfn) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(1).compressed(CodecId::kRunSkip, kUnchanged);
  expect_corrupt(read_stream(b.bytes()), "page record with no PFN waiting (0 PFNs received");
}

TEST(CheckpointStreamHostile, FewerPagesThanPfnsAtEndOfBody) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({5, 6})
      .compressed(CodecId::kRunSkip, kUnchanged)
      .end(1, 1);
  expect_corrupt(read_stream(b.bytes()), "1 PFNs still waiting");
}

TEST(CheckpointStreamHostile, TailEpochMismatch) {
  StreamBuilder b;
  b.begin(17).end(18, 0);
  expect_corrupt(read_stream(b.bytes()), "checkpoint 17: tail epoch 18 does not match");
}

TEST(CheckpointStreamHostile, TailPageCountMismatch) {
  StreamBuilder b;
  b.begin(17).pfns({2}).bytes(Bytes(kPageSize, 1)).end(17, 2);
  expect_corrupt(read_stream(b.bytes()), "tail says 2 pages, the body carried 1");
}

TEST(CheckpointStreamHostile, CrcMismatchNamesBothValues) {
  StreamBuilder b;
  b.begin(17).pfns({2}).bytes(Bytes(kPageSize, 1)).end(17, 1);
  Bytes stream = b.bytes();
  stream[30] ^= 1;  // inside the page
  const Status s = read_stream(stream);
  expect_corrupt(s, "checkpoint 17: CRC mismatch (computed 0x");
  expect_corrupt(s, ", tail says 0x");
}

TEST(CheckpointStreamHostile, CompressedDataInFormatA) {
  StreamBuilder b;
  b.begin(1).compressed(CodecId::kRunSkip, kUnchanged);
  expect_corrupt(read_stream(b.bytes()), "COMPRESSED_DATA in a Format A checkpoint");
}

TEST(CheckpointStreamHostile, OversizeCompressedLength) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(9000000);
  expect_corrupt(read_stream(b.bytes()), "COMPRESSED_DATA length 9000000 exceeds limit 8388608");
}

TEST(CheckpointStreamHostile, CompressedLengthTooShortForItsHeader) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(1)
      .u8(1);
  expect_corrupt(read_stream(b.bytes()), "shorter than its header");
}

TEST(CheckpointStreamHostile, OversizePfnArray) {
  StreamBuilder b;
  b.begin(1).i32(kMaxPfnBatch + 1);
  expect_corrupt(read_stream(b.bytes()), "PFN array of 1025 entries exceeds limit 1024");
}

TEST(CheckpointStreamHostile, OversizeLz4RawLength) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(8)
      .u8(1)
      .u8(kPayloadLz4)
      .u32(kMaxDecodedPayload + 1)
      .u8(0)
      .u8(0);
  expect_corrupt(read_stream(b.bytes()), "LZ4 raw length 8388609 exceeds limit");
}

TEST(CheckpointStreamHostile, Lz4RawLengthImpossibleForTheBlockSizeIsRejectedBeforeDecoding) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(8)
      .u8(1)
      .u8(kPayloadLz4)
      .u32(1 << 20)
      .u8(0)
      .u8(0);
  expect_corrupt(read_stream(b.bytes()), "LZ4 raw length 1048576 impossible for a 2-byte block");
}

TEST(CheckpointStreamHostile, TooManyPfnsWaitingForRecords) {
  const uint64_t guest = 2 * kMaxPendingPfns;
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(1);
  uint64_t pfn = 0;
  for (uint64_t array = 0; array <= kMaxPendingPfns / kMaxPfnBatch; ++array) {
    b.i32(kMaxPfnBatch);
    for (int i = 0; i < kMaxPfnBatch; ++i) b.u64(pfn++);
  }
  ImageSink sink(1);  // pages are never requested
  CheckpointReader reader(guest, &sink);
  expect_corrupt(reader.feed(b.bytes()), "more than 1048576 PFNs waiting for their pages");
}

TEST(CheckpointStreamHostile, MalformedLz4Block) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(9)
      .u8(1)
      .u8(kPayloadLz4)
      .u32(100)
      .u8(0xff)
      .u8(0xff)
      .u8(0xff);
  expect_corrupt(read_stream(b.bytes()), "checkpoint 1: COMPRESSED_DATA: ");
}

TEST(CheckpointStreamHostile, UnknownPayloadFlags) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(3)
      .u8(1)
      .u8(0x02)
      .u8(0);
  expect_corrupt(read_stream(b.bytes()), "unknown payload flags 0x2");
}

TEST(CheckpointStreamHostile, UnknownCodec) {
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .compressed(static_cast<CodecId>(7), kUnchanged);
  expect_corrupt(read_stream(b.bytes()), "unknown codec 7");
}

// docs/protocol.md, "Handshake": the Hello's codec list binds the stream. A
// reader told the listed codecs refuses a payload of any other, with or
// without LZ4, before decoding any of its records.
TEST(CheckpointStreamHostile, PayloadOfACodecTheHelloDidNotListIsCorrupt) {
  const CodecId listed[] = {CodecId::kRunSkip};
  const auto read_listed = [&](const Bytes& stream, ImageSink* sink) {
    CheckpointReader reader(16, sink, listed);
    return reader.feed(stream);
  };
  StreamBuilder ok;
  ok.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .compressed(CodecId::kRunSkip, kUnchanged);
  ImageSink sink(16);
  EXPECT_OK(read_listed(ok.bytes(), &sink));

  StreamBuilder plain;
  plain.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .compressed(CodecId::kXbzrle, Bytes{0x00});
  ImageSink plain_sink(16);
  expect_corrupt(read_listed(plain.bytes(), &plain_sink),
                 "codec 2 (xbzrle) is not in the Hello's codec list");

  Bytes record(1 + kPageSize, 0x33);  // XBZRLE whole-page record
  record[0] = 0x02;
  Bytes block;
  ASSERT_TRUE(lz4_compress(record, block));
  StreamBuilder lz4;
  lz4.i32(XC_SAVE_ID_ENABLE_COMPRESSION)
      .begin(1)
      .pfns({1})
      .i32(XC_SAVE_ID_COMPRESSED_DATA)
      .u32(static_cast<uint32_t>(2 + 4 + block.size()))
      .u8(static_cast<uint8_t>(CodecId::kXbzrle))
      .u8(kPayloadLz4)
      .u32(static_cast<uint32_t>(record.size()))
      .bytes(block);
  ImageSink lz4_sink(16);
  expect_corrupt(read_listed(lz4.bytes(), &lz4_sink), "is not in the Hello's codec list");
  // The reader without a list (every known codec) accepts the same stream.
  EXPECT_OK(read_stream(lz4.bytes()));
}

TEST(CheckpointStreamHostile, PayloadEndingInsideARecord) {
  Bytes record = whole_page_record(3);
  record.resize(100);
  StreamBuilder b;
  b.i32(XC_SAVE_ID_ENABLE_COMPRESSION).begin(1).pfns({1}).compressed(CodecId::kRunSkip, record);
  expect_corrupt(read_stream(b.bytes()), "runskip record for PFN 1");
}

TEST(CheckpointStreamHostile, UnknownChunkTypes) {
  expect_corrupt(read_stream(StreamBuilder().i32(-5).bytes()), "unknown chunk type -5");
  expect_corrupt(read_stream(StreamBuilder().begin(1).i32(-99).bytes()),
                 "checkpoint 1: unknown chunk type -99");
}

TEST(CheckpointStreamHostile, UnknownBeginFlags) {
  expect_corrupt(read_stream(StreamBuilder().begin(1, 0x10).bytes()), "unknown begin flags 0x10");
}

TEST(CheckpointStreamHostile, DataAfterGoodbye) {
  expect_corrupt(read_stream(StreamBuilder().i32(kChunkGoodbye).u8(0).bytes()),
                 "data after GOODBYE (at stream offset 4)");
}

TEST(CheckpointStreamDropped, DroppedBetweenCheckpointsEndsTheStreamAndIsNotAGoodbye) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  ASSERT_OK(reader.feed(StreamBuilder().begin(4).end(4, 0).i32(kChunkDropped).bytes()));
  EXPECT_EQ(sink.dropped, 1);
  EXPECT_EQ(sink.goodbyes, 0);
  EXPECT_TRUE(reader.saw_dropped());
  EXPECT_FALSE(reader.saw_goodbye());
  EXPECT_OK(reader.finish());
}

TEST(CheckpointStreamDropped, DroppedInsideACheckpointVoidsIt) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  StreamBuilder b;
  const Bytes page(kPageSize, 0x42);  // Format A: the raw page follows its PFN
  b.begin(7).pfns({1}).bytes(page).i32(kChunkDropped);
  ASSERT_OK(reader.feed(b.bytes()));
  EXPECT_EQ(sink.dropped, 1);
  EXPECT_TRUE(sink.ends.empty());  // the checkpoint in flight never commits
  EXPECT_FALSE(reader.in_checkpoint());
  EXPECT_EQ(sink.image()[1 * kPageSize], 0);
}

TEST(CheckpointStreamHostile, DataAfterDropped) {
  expect_corrupt(read_stream(StreamBuilder().i32(kChunkDropped).u8(0).bytes()),
                 "data after DROPPED (at stream offset 4)");
}

TEST(CheckpointStreamHandover, HandoverBetweenCheckpointsEndsTheStreamAndIsNotAGoodbye) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  ASSERT_OK(reader.feed(StreamBuilder().begin(4).end(4, 0).i32(kChunkHandover).bytes()));
  EXPECT_EQ(sink.ends.size(), 1u);
  EXPECT_EQ(sink.handovers, 1);
  EXPECT_EQ(sink.goodbyes, 0);
  EXPECT_EQ(sink.dropped, 0);
  EXPECT_TRUE(reader.saw_handover());
  EXPECT_FALSE(reader.saw_goodbye());
  EXPECT_FALSE(reader.saw_dropped());
  EXPECT_OK(reader.finish());  // a stream may end right after HANDOVER
}

TEST(CheckpointStreamHandover, HandoverInsideACheckpointIsCorrupt) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  const Status s = reader.feed(StreamBuilder().begin(1).i32(kChunkHandover).bytes());
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), "checkpoint 1: HANDOVER inside a checkpoint");
  EXPECT_EQ(sink.handovers, 0);
  EXPECT_FALSE(reader.saw_handover());
  EXPECT_EQ(reader.finish(), s);
}

TEST(CheckpointStreamHandover, DataAfterHandoverIsCorrupt) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  ASSERT_OK(reader.feed(encode_handover()));
  const Status s = reader.feed(encode_heartbeat(1));
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_EQ(s.message(), "data after HANDOVER (at stream offset 4)");
  EXPECT_TRUE(sink.heartbeats.empty());
  EXPECT_EQ(reader.finish(), s);
}

// Every split of a stream ending in HANDOVER into two feeds gives the calls
// and the result of the whole stream; cut short, it is truncated and the
// handover is not reported.
TEST(CheckpointStreamHandover, AnySplitOfAStreamEndingInHandoverGivesTheSameResult) {
  std::mt19937 rng(42);
  Sender sender(16);
  sender.checkpoint(rng, 1, 2);
  sender.heartbeat(5);
  sender.enable_compression();
  sender.checkpoint(rng, 2, 3);
  sender.handover();
  const Bytes& stream = sender.stream();

  ImageSink whole(16);
  CheckpointReader whole_reader(16, &whole);
  ASSERT_OK(whole_reader.feed(stream));
  ASSERT_OK(whole_reader.finish());
  ASSERT_EQ(whole.handovers, 1);
  ASSERT_EQ(whole.ends.size(), 2u);

  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    ImageSink sink(16);
    CheckpointReader reader(16, &sink);
    ASSERT_OK(reader.feed(ByteSpan(stream).first(cut))) << "cut " << cut;
    if (cut < stream.size()) {
      EXPECT_EQ(sink.handovers, 0) << "cut " << cut;
      EXPECT_EQ(reader.finish().code(), StatusCode::kTruncated) << "cut " << cut;
    }
    ASSERT_OK(reader.feed(ByteSpan(stream).subspan(cut))) << "cut " << cut;
    EXPECT_OK(reader.finish()) << "cut " << cut;
    EXPECT_EQ(sink.begins, whole.begins) << "cut " << cut;
    EXPECT_EQ(sink.ends, whole.ends) << "cut " << cut;
    EXPECT_EQ(sink.heartbeats, whole.heartbeats) << "cut " << cut;
    EXPECT_EQ(sink.handovers, 1) << "cut " << cut;
    EXPECT_TRUE(reader.saw_handover()) << "cut " << cut;
    EXPECT_FALSE(reader.saw_goodbye()) << "cut " << cut;
    EXPECT_EQ(reader.bytes_consumed(), stream.size()) << "cut " << cut;
    EXPECT_TRUE(sink.image() == sender.image()) << "cut " << cut;
  }

  ImageSink bytewise(16);
  CheckpointReader bytewise_reader(16, &bytewise);
  ASSERT_OK(feed_in_pieces(bytewise_reader, stream, rng, 1));
  EXPECT_OK(bytewise_reader.finish());
  EXPECT_EQ(bytewise.ends, whole.ends);
  EXPECT_EQ(bytewise.handovers, 1);
  EXPECT_TRUE(bytewise.image() == sender.image());
}

TEST(CheckpointStreamHostile, ChunksThatBelongBetweenCheckpointsAreRejectedInside) {
  expect_corrupt(read_stream(StreamBuilder().begin(1).i32(XC_SAVE_ID_ENABLE_COMPRESSION).bytes()),
                 "ENABLE_COMPRESSION inside a checkpoint");
  expect_corrupt(read_stream(StreamBuilder().begin(1).i32(kChunkGoodbye).bytes()),
                 "GOODBYE inside a checkpoint");
  expect_corrupt(read_stream(StreamBuilder().begin(1).i32(kChunkHandover).bytes()),
                 "HANDOVER inside a checkpoint");
  expect_corrupt(read_stream(StreamBuilder().begin(1).begin(2).bytes()),
                 "CHECKPOINT_BEGIN inside a checkpoint");
}

TEST(CheckpointStreamHostile, BodyChunksOutsideACheckpoint) {
  expect_corrupt(read_stream(StreamBuilder().pfns({1}).bytes()), "outside a checkpoint");
  expect_corrupt(read_stream(StreamBuilder().i32(0).bytes()), "end of body outside a checkpoint");
  expect_corrupt(read_stream(StreamBuilder().i32(XC_SAVE_ID_COMPRESSED_DATA).bytes()),
                 "COMPRESSED_DATA outside a checkpoint");
}

TEST(CheckpointStreamHostile, EnableCompressionTwice) {
  expect_corrupt(read_stream(StreamBuilder()
                                 .i32(XC_SAVE_ID_ENABLE_COMPRESSION)
                                 .i32(XC_SAVE_ID_ENABLE_COMPRESSION)
                                 .bytes()),
                 "ENABLE_COMPRESSION received twice");
}

TEST(CheckpointStreamHostile, FirstErrorSticks) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  const Status first = reader.feed(StreamBuilder().i32(-5).bytes());
  ASSERT_FALSE(first.is_ok());
  const uint64_t consumed = reader.bytes_consumed();
  EXPECT_EQ(reader.feed(encode_heartbeat(1)), first);
  EXPECT_EQ(reader.finish(), first);
  EXPECT_EQ(reader.bytes_consumed(), consumed);
  EXPECT_TRUE(sink.heartbeats.empty());
}

TEST(CheckpointStreamHostile, SinkErrorsFailTheStreamWithContext) {
  ImageSink sink(16);
  sink.end_status = Status::io_error("disk full");
  CheckpointReader reader(16, &sink);
  const Status s = reader.feed(StreamBuilder().begin(4).end(4, 0).bytes());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), "checkpoint 4: commit: disk full");
}

TEST(CheckpointStreamHostile, EndOfInputBetweenCheckpointsWithoutGoodbyeIsTruncated) {
  ImageSink sink(16);
  CheckpointReader reader(16, &sink);
  ASSERT_OK(reader.feed(StreamBuilder().begin(4).end(4, 0).bytes()));
  EXPECT_FALSE(reader.in_checkpoint());
  EXPECT_EQ(reader.finish().code(), StatusCode::kTruncated);
}

// The bytes of the chunks without a checkpoint, as printed in docs/protocol.md.
TEST(CheckpointStreamExample, ChunksOutsideCheckpointsMatchTheDocumentedBytes) {
  EXPECT_EQ(encode_enable_compression(), (Bytes{0xf3, 0xff, 0xff, 0xff}));
  EXPECT_EQ(encode_heartbeat(0x0102030405060708),
            (Bytes{0x9b, 0xff, 0xff, 0xff, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}));
  EXPECT_EQ(encode_goodbye(), (Bytes{0x9a, 0xff, 0xff, 0xff}));
  EXPECT_EQ(encode_dropped(), (Bytes{0x99, 0xff, 0xff, 0xff}));
  EXPECT_EQ(encode_handover(), (Bytes{0x98, 0xff, 0xff, 0xff}));
}

// ---- The worked example of docs/protocol.md, "Chunks".

constexpr uint32_t kDocumentedExampleCrc = 0x15886985;  // as printed in docs/protocol.md

TEST(CheckpointStreamExample, TinyFormatBCheckpointMatchesTheDocumentedBytes) {
  // Receiver and sender both hold PFN 5 as zeros; word 2 becomes 0xdeadbeef.
  PageCache cache(1 << 20);
  Page zero{};
  uint8_t scratch[kMaxPageRecord];
  cache.encode(5, PageView(zero), CodecId::kRunSkip, scratch);  // the cache now knows PFN 5
  Page page{};
  store_u32(page.data() + 8, 0xdeadbeef);
  const uint64_t pfn = 5;

  EncodeOptions options;
  options.lz4 = EncodeOptions::Lz4::kOff;
  CheckpointFramer framer;
  Bytes stream = framer.begin(1, kBeginConsistent);
  Bytes body;
  encode_body_format_b(std::span(&pfn, 1), page.data(), cache, options, body, nullptr);
  framer.add_body(body, 1);
  put_bytes(stream, body);
  put_bytes(stream, framer.end());

  const Bytes expected = {
      0x9c, 0xff, 0xff, 0xff,                       // CHECKPOINT_BEGIN (-100)
      0x01, 0,    0,    0,    0,    0,    0,    0,  //   epoch 1
      0x01, 0x00, 0x00, 0x00,                       //   flags: CONSISTENT
      0x01, 0x00, 0x00, 0x00,                       // PFN array of 1
      0x05, 0,    0,    0,    0,    0,    0,    0,  //   PFN 5
      0xf4, 0xff, 0xff, 0xff,                       // COMPRESSED_DATA (-12)
      0x09, 0x00, 0x00, 0x00,                       //   length 9
      0x01, 0x00,                                   //   codec runskip, no LZ4
      0x82, 0x01, 0xef, 0xbe, 0xad, 0xde, 0x00,     //   SKIP 2, RUN 1 deadbeef, END
      0x00, 0x00, 0x00, 0x00,                       // end of body (0)
      0x01, 0,    0,    0,    0,    0,    0,    0,  //   tail: epoch 1
      0x01, 0x00, 0x00, 0x00,                       //   page count 1
  };
  ASSERT_EQ(stream.size(), expected.size() + 4);
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), stream.begin()));
  EXPECT_EQ(load_u32(stream.data() + expected.size()), crc32c(expected));
  std::printf("CRC32C of the example: 0x%08x\n", crc32c(expected));
  EXPECT_EQ(load_u32(stream.data() + expected.size()), kDocumentedExampleCrc);
}

}  // namespace
}  // namespace romulus::protocol::checkpoint_stream_test
