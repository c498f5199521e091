// Page codec throughput: RUN/SKIP, XBZRLE and LZ4 encode/decode over two
// working sets of realistic pages, for each change pattern, against the
// physical baselines of the same set: memcmp of two identical copies (a full
// compare) and memcpy of the same bytes.
//
//   l2     128 pages (512 KiB per copy, old + cur = 1 MiB): in L2, compute-bound
//   16MiB  2048 pages (8 MiB per copy, old + cur = 16 MiB): memory-bound
//
// Every buffer is page-aligned (protocol/page_buffer.h), as the page cache's
// slots and the staging buffer are in production. Benchmark names end in the
// set: encode/runskip/sparse/l2. bench/codec_ratios.py runs this binary
// several times and prints the median ratios of each run to its baselines.
//
// Throughput is bytes of page data per second (SetBytesProcessed); the counter
// bytes_per_page is the mean record size. Results and the command that produced
// them: docs/performance.md, "Codecs".
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/reference_decoder.h"
#include "protocol/lz4_stage.h"
#include "protocol/page_buffer.h"
#include "protocol/page_codec.h"
#include "protocol/page_compare.h"
#include "protocol/runskip.h"
#include "tests/support/page_patterns.h"

namespace {

using romulus::protocol::Bytes;
using romulus::protocol::ByteSpan;
using romulus::protocol::CodecId;
using romulus::protocol::kPageSize;
using romulus::protocol::MutablePageView;
using romulus::protocol::PageView;
using romulus::testing::Change;

using romulus::protocol::PageBuffer;

constexpr uint64_t kSeed = 20240601;

// The working sets, by their number of pages.
struct WorkingSet {
  size_t pages;
  const char* name;
};
constexpr WorkingSet kSets[] = {{128, "l2"}, {2048, "16MiB"}};

PageBuffer copy_of(const uint8_t* src, size_t pages) {
  PageBuffer b = romulus::protocol::allocate_pages(pages);
  std::memcpy(b.get(), src, pages * kPageSize);
  return b;
}

// The receiver's copies (old) and the guest's pages after one epoch (cur).
struct Workload {
  size_t pages = 0;
  PageBuffer old_pages;
  PageBuffer cur_pages;
  const uint8_t* old_page(size_t i) const { return old_pages.get() + i * kPageSize; }
  const uint8_t* cur_page(size_t i) const { return cur_pages.get() + i * kPageSize; }
};

// Built on first use; the same seed for every set and pattern.
const Workload& workload(Change change, size_t pages) {
  static auto* const kAll = new Workload[2][4];
  Workload& w = kAll[pages == kSets[0].pages ? 0 : 1][static_cast<int>(change)];
  if (w.pages == 0) {
    std::mt19937_64 rng(kSeed);
    const std::vector<uint8_t> old = romulus::testing::make_working_set(pages, rng);
    w.old_pages = copy_of(old.data(), pages);
    w.cur_pages = copy_of(old.data(), pages);
    for (size_t i = 0; i < pages; ++i) {
      romulus::testing::apply_change(w.cur_pages.get() + i * kPageSize, change, rng);
    }
    w.pages = pages;
  }
  return w;
}

void set_throughput(benchmark::State& state, size_t pages) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * pages * kPageSize));
}

void BM_MemcmpIdentical(benchmark::State& state, size_t pages) {
  const Workload& w = workload(Change::kUnchanged, pages);
  const PageBuffer copy = copy_of(w.old_page(0), pages);
  for (auto _ : state) {
    int acc = 0;
    for (size_t i = 0; i < pages; ++i) {
      acc |= std::memcmp(w.old_page(i), copy.get() + i * kPageSize, kPageSize);
    }
    benchmark::DoNotOptimize(acc);
  }
  set_throughput(state, pages);
}

// The comparison inside the encoders alone, per implementation, on identical pages.
void BM_DiffWords(benchmark::State& state, romulus::protocol::CompareImpl impl, size_t pages) {
  if (!romulus::protocol::compare_impl_available(impl)) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  const Workload& w = workload(Change::kUnchanged, pages);
  const PageBuffer copy = copy_of(w.old_page(0), pages);
  romulus::protocol::WordDiffMap map;
  for (auto _ : state) {
    uint32_t any = 0;
    for (size_t i = 0; i < pages; ++i) {
      any |= romulus::protocol::diff_word_blocks_with(impl, w.old_page(i),
                                                      copy.get() + i * kPageSize, &map);
    }
    benchmark::DoNotOptimize(any);
  }
  set_throughput(state, pages);
}

void BM_Memcpy(benchmark::State& state, size_t pages) {
  const Workload& w = workload(Change::kUnchanged, pages);
  PageBuffer dst = copy_of(w.cur_page(0), pages);
  for (auto _ : state) {
    for (size_t i = 0; i < pages; ++i) {
      std::memcpy(dst.get() + i * kPageSize, w.old_page(i), kPageSize);
    }
    benchmark::ClobberMemory();
  }
  set_throughput(state, pages);
}

void BM_Encode(benchmark::State& state, CodecId codec, Change change, size_t pages) {
  const Workload& w = workload(change, pages);
  alignas(64) uint8_t out[romulus::protocol::kMaxPageRecord];
  size_t total = 0;
  for (auto _ : state) {
    total = 0;
    for (size_t i = 0; i < pages; ++i) {
      total += romulus::protocol::encode_page_record(codec, w.old_page(i),
                                                     PageView(w.cur_page(i), kPageSize), out);
    }
    benchmark::DoNotOptimize(out);
  }
  set_throughput(state, pages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / static_cast<double>(pages);
}

// RUN/SKIP encode with a chosen page comparison (runskip_encode_with).
void BM_EncodeWith(benchmark::State& state, romulus::protocol::CompareImpl impl, Change change,
                   size_t pages) {
  if (!romulus::protocol::compare_impl_available(impl)) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  const Workload& w = workload(change, pages);
  alignas(64) uint8_t out[romulus::protocol::kMaxPageRecord];
  for (auto _ : state) {
    for (size_t i = 0; i < pages; ++i) {
      romulus::protocol::runskip_encode_with(impl, w.old_page(i),
                                             PageView(w.cur_page(i), kPageSize), out);
    }
    benchmark::DoNotOptimize(out);
  }
  set_throughput(state, pages);
}

using DecodeFn = romulus::Result<size_t> (*)(CodecId, ByteSpan, MutablePageView);

void BM_Decode(benchmark::State& state, CodecId codec, Change change, size_t pages,
               DecodeFn decode) {
  const Workload& w = workload(change, pages);
  Bytes records;
  std::vector<size_t> offsets;
  for (size_t i = 0; i < pages; ++i) {
    offsets.push_back(records.size());
    records.resize(records.size() + romulus::protocol::kMaxPageRecord);
    const size_t n = romulus::protocol::encode_page_record(
        codec, w.old_page(i), PageView(w.cur_page(i), kPageSize), records.data() + offsets[i]);
    records.resize(offsets[i] + n);
  }
  offsets.push_back(records.size());
  // Applying a record twice gives the same page, so every pass decodes the
  // same records onto the receiver's image.
  PageBuffer image = copy_of(w.old_page(0), pages);
  for (auto _ : state) {
    for (size_t i = 0; i < pages; ++i) {
      auto r = decode(codec, ByteSpan(records.data() + offsets[i], offsets[i + 1] - offsets[i]),
                      MutablePageView(image.get() + i * kPageSize, kPageSize));
      if (!r.is_ok()) state.SkipWithError("decode failed");
    }
    benchmark::ClobberMemory();
  }
  if (std::memcmp(image.get(), w.cur_page(0), pages * kPageSize) != 0) {
    state.SkipWithError("decoded image differs");
  }
  set_throughput(state, pages);
  state.counters["bytes_per_page"] =
      static_cast<double>(records.size()) / static_cast<double>(pages);
}

romulus::Result<size_t> decode_production(CodecId codec, ByteSpan in, MutablePageView page) {
  return romulus::protocol::decode_page_record(codec, in, page);
}

romulus::Result<size_t> decode_reference(CodecId, ByteSpan in, MutablePageView page) {
  return romulus::bench::reference_runskip_decode(in, page);
}

// LZ4 of each whole current page (no delta).
void BM_Lz4Compress(benchmark::State& state, Change change, size_t pages) {
  const Workload& w = workload(change, pages);
  Bytes block;
  block.reserve(kPageSize);
  size_t total = 0;
  for (auto _ : state) {
    total = 0;
    for (size_t i = 0; i < pages; ++i) {
      const bool smaller =
          romulus::protocol::lz4_compress(ByteSpan(w.cur_page(i), kPageSize), block);
      total += smaller ? block.size() : kPageSize;
    }
    benchmark::DoNotOptimize(block.data());
  }
  set_throughput(state, pages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / static_cast<double>(pages);
}

void BM_Lz4Decompress(benchmark::State& state, Change change, size_t pages) {
  const Workload& w = workload(change, pages);
  std::vector<Bytes> blocks(pages);
  size_t total = 0;
  for (size_t i = 0; i < pages; ++i) {
    if (!romulus::protocol::lz4_compress(ByteSpan(w.cur_page(i), kPageSize), blocks[i])) {
      blocks[i].clear();  // sent raw; decoding it is a copy
    }
    total += blocks[i].empty() ? kPageSize : blocks[i].size();
  }
  PageBuffer image = romulus::protocol::allocate_pages(pages);
  Bytes out;
  out.reserve(kPageSize);
  for (auto _ : state) {
    for (size_t i = 0; i < pages; ++i) {
      uint8_t* dst = image.get() + i * kPageSize;
      if (blocks[i].empty()) {
        std::memcpy(dst, w.cur_page(i), kPageSize);
        continue;
      }
      if (!romulus::protocol::lz4_decompress(blocks[i], kPageSize, out).is_ok()) {
        state.SkipWithError("lz4 decode failed");
      }
      std::memcpy(dst, out.data(), kPageSize);
    }
    benchmark::ClobberMemory();
  }
  set_throughput(state, pages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / static_cast<double>(pages);
}

void register_all() {
  using romulus::protocol::CompareImpl;
  const Change changes[] = {Change::kSparse, Change::kClustered, Change::kDense,
                            Change::kUnchanged};
  for (const WorkingSet& set : kSets) {
    const std::string at = std::string("/") + set.name;
    const size_t pages = set.pages;
    benchmark::RegisterBenchmark(("baseline/memcmp_identical" + at).c_str(), BM_MemcmpIdentical,
                                 pages);
    benchmark::RegisterBenchmark(("baseline/memcpy" + at).c_str(), BM_Memcpy, pages);
    for (auto [impl, name] :
         {std::pair{CompareImpl::kPortable, "portable"}, std::pair{CompareImpl::kSse2, "sse2"},
          std::pair{CompareImpl::kAvx2, "avx2"}, std::pair{CompareImpl::kAvx512, "avx512"}}) {
      benchmark::RegisterBenchmark((std::string("diff_words_identical/") + name + at).c_str(),
                                   BM_DiffWords, impl, pages);
    }
    for (Change c : {Change::kSparse, Change::kClustered}) {
      for (auto [impl, name] :
           {std::pair{CompareImpl::kAvx2, "avx2"}, std::pair{CompareImpl::kAvx512, "avx512"}}) {
        benchmark::RegisterBenchmark((std::string("encode/runskip_") + name + "/" +
                                      std::string(romulus::testing::change_name(c)) + at)
                                         .c_str(),
                                     BM_EncodeWith, impl, c, pages);
      }
    }
    for (auto [codec, name] :
         {std::pair{CodecId::kRunSkip, "runskip"}, std::pair{CodecId::kXbzrle, "xbzrle"}}) {
      for (Change c : changes) {
        const std::string suffix =
            std::string(name) + "/" + std::string(romulus::testing::change_name(c)) + at;
        benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), BM_Encode, codec, c, pages);
        benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), BM_Decode, codec, c, pages,
                                     decode_production);
        if (codec == CodecId::kRunSkip) {
          // The same records through a plain one-pass decoder (bench/reference_decoder.h).
          benchmark::RegisterBenchmark(
              ("decode/runskip_reference/" + std::string(romulus::testing::change_name(c)) + at)
                  .c_str(),
              BM_Decode, codec, c, pages, decode_reference);
        }
      }
    }
    for (Change c : changes) {
      const std::string suffix = "lz4/" + std::string(romulus::testing::change_name(c)) + at;
      benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), BM_Lz4Compress, c, pages);
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), BM_Lz4Decompress, c, pages);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
