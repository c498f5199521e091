// Page codec throughput: RUN/SKIP, XBZRLE and LZ4 encode/decode over a working
// set of 2048 realistic pages (8 MiB per copy, larger than L2), for each change
// pattern, against the physical baselines: memcmp of two identical copies (a
// full compare) and memcpy of the same bytes.
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

#include "protocol/lz4_stage.h"
#include "protocol/page_codec.h"
#include "protocol/page_compare.h"
#include "tests/support/page_patterns.h"

namespace {

using romulus::protocol::Bytes;
using romulus::protocol::ByteSpan;
using romulus::protocol::CodecId;
using romulus::protocol::kPageSize;
using romulus::protocol::MutablePageView;
using romulus::protocol::PageView;
using romulus::testing::Change;

constexpr size_t kPages = 2048;
constexpr uint64_t kSeed = 20240601;

// The receiver's copies (old) and the guest's pages after one epoch (cur).
struct Workload {
  std::vector<uint8_t> old_pages;
  std::vector<uint8_t> cur_pages;
  const uint8_t* old_page(size_t i) const { return old_pages.data() + i * kPageSize; }
  const uint8_t* cur_page(size_t i) const { return cur_pages.data() + i * kPageSize; }
};

const Workload& workload(Change change) {
  static const auto* kAll = [] {
    auto* all = new Workload[4];
    for (int c = 0; c < 4; ++c) {
      std::mt19937_64 rng(kSeed);
      all[c].old_pages = romulus::testing::make_working_set(kPages, rng);
      all[c].cur_pages = all[c].old_pages;
      for (size_t i = 0; i < kPages; ++i) {
        romulus::testing::apply_change(all[c].cur_pages.data() + i * kPageSize,
                                       static_cast<Change>(c), rng);
      }
    }
    return all;
  }();
  return kAll[static_cast<int>(change)];
}

void set_throughput(benchmark::State& state, size_t pages) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * pages * kPageSize));
}

void BM_MemcmpIdentical(benchmark::State& state) {
  const Workload& w = workload(Change::kUnchanged);
  const std::vector<uint8_t> copy = w.old_pages;
  for (auto _ : state) {
    int acc = 0;
    for (size_t i = 0; i < kPages; ++i) {
      acc |= std::memcmp(w.old_page(i), copy.data() + i * kPageSize, kPageSize);
    }
    benchmark::DoNotOptimize(acc);
  }
  set_throughput(state, kPages);
}

// The comparison inside the encoders alone, per implementation, on identical pages.
void BM_DiffWords(benchmark::State& state, romulus::protocol::CompareImpl impl) {
  if (!romulus::protocol::compare_impl_available(impl)) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  const Workload& w = workload(Change::kUnchanged);
  const std::vector<uint8_t> copy = w.old_pages;
  romulus::protocol::WordDiffMap map;
  for (auto _ : state) {
    bool any = false;
    for (size_t i = 0; i < kPages; ++i) {
      any |= romulus::protocol::diff_words_with(impl, w.old_page(i), copy.data() + i * kPageSize,
                                                &map);
    }
    benchmark::DoNotOptimize(any);
  }
  set_throughput(state, kPages);
}

void BM_Memcpy(benchmark::State& state) {
  const Workload& w = workload(Change::kUnchanged);
  std::vector<uint8_t> dst(w.old_pages.size(), 1);
  for (auto _ : state) {
    for (size_t i = 0; i < kPages; ++i) {
      std::memcpy(dst.data() + i * kPageSize, w.old_page(i), kPageSize);
    }
    benchmark::ClobberMemory();
  }
  set_throughput(state, kPages);
}

void BM_Encode(benchmark::State& state, CodecId codec, Change change) {
  const Workload& w = workload(change);
  uint8_t out[romulus::protocol::kMaxPageRecord];
  size_t total = 0;
  for (auto _ : state) {
    total = 0;
    for (size_t i = 0; i < kPages; ++i) {
      total += romulus::protocol::encode_page_record(codec, w.old_page(i),
                                                     PageView(w.cur_page(i), kPageSize), out);
    }
    benchmark::DoNotOptimize(out);
  }
  set_throughput(state, kPages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / kPages;
}

void BM_Decode(benchmark::State& state, CodecId codec, Change change) {
  const Workload& w = workload(change);
  Bytes records;
  std::vector<size_t> offsets;
  for (size_t i = 0; i < kPages; ++i) {
    offsets.push_back(records.size());
    records.resize(records.size() + romulus::protocol::kMaxPageRecord);
    const size_t n = romulus::protocol::encode_page_record(
        codec, w.old_page(i), PageView(w.cur_page(i), kPageSize), records.data() + offsets[i]);
    records.resize(offsets[i] + n);
  }
  offsets.push_back(records.size());
  // Applying a record twice gives the same page, so every pass decodes the
  // same records onto the receiver's image.
  std::vector<uint8_t> image = w.old_pages;
  for (auto _ : state) {
    for (size_t i = 0; i < kPages; ++i) {
      auto r = romulus::protocol::decode_page_record(
          codec, ByteSpan(records.data() + offsets[i], offsets[i + 1] - offsets[i]),
          MutablePageView(image.data() + i * kPageSize, kPageSize));
      if (!r.is_ok()) state.SkipWithError("decode failed");
    }
    benchmark::ClobberMemory();
  }
  if (std::memcmp(image.data(), w.cur_pages.data(), image.size()) != 0) {
    state.SkipWithError("decoded image differs");
  }
  set_throughput(state, kPages);
  state.counters["bytes_per_page"] = static_cast<double>(records.size()) / kPages;
}

// LZ4 of each whole current page (no delta).
void BM_Lz4Compress(benchmark::State& state, Change change) {
  const Workload& w = workload(change);
  Bytes block;
  block.reserve(kPageSize);
  size_t total = 0;
  for (auto _ : state) {
    total = 0;
    for (size_t i = 0; i < kPages; ++i) {
      const bool smaller =
          romulus::protocol::lz4_compress(ByteSpan(w.cur_page(i), kPageSize), block);
      total += smaller ? block.size() : kPageSize;
    }
    benchmark::DoNotOptimize(block.data());
  }
  set_throughput(state, kPages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / kPages;
}

void BM_Lz4Decompress(benchmark::State& state, Change change) {
  const Workload& w = workload(change);
  std::vector<Bytes> blocks(kPages);
  size_t total = 0;
  for (size_t i = 0; i < kPages; ++i) {
    if (!romulus::protocol::lz4_compress(ByteSpan(w.cur_page(i), kPageSize), blocks[i])) {
      blocks[i].clear();  // sent raw; decoding it is a copy
    }
    total += blocks[i].empty() ? kPageSize : blocks[i].size();
  }
  std::vector<uint8_t> image(w.cur_pages.size());
  Bytes out;
  out.reserve(kPageSize);
  for (auto _ : state) {
    for (size_t i = 0; i < kPages; ++i) {
      uint8_t* dst = image.data() + i * kPageSize;
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
  set_throughput(state, kPages);
  state.counters["bytes_per_page"] = static_cast<double>(total) / kPages;
}

void register_all() {
  benchmark::RegisterBenchmark("baseline/memcmp_identical", BM_MemcmpIdentical);
  benchmark::RegisterBenchmark("baseline/memcpy", BM_Memcpy);
  using romulus::protocol::CompareImpl;
  for (auto [impl, name] :
       {std::pair{CompareImpl::kPortable, "portable"}, std::pair{CompareImpl::kSse2, "sse2"},
        std::pair{CompareImpl::kAvx2, "avx2"}, std::pair{CompareImpl::kAvx512, "avx512"}}) {
    benchmark::RegisterBenchmark((std::string("diff_words_identical/") + name).c_str(),
                                 BM_DiffWords, impl);
  }
  const Change changes[] = {Change::kSparse, Change::kClustered, Change::kDense,
                            Change::kUnchanged};
  for (auto [codec, name] :
       {std::pair{CodecId::kRunSkip, "runskip"}, std::pair{CodecId::kXbzrle, "xbzrle"}}) {
    for (Change c : changes) {
      const std::string suffix =
          std::string(name) + "/" + std::string(romulus::testing::change_name(c));
      benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), BM_Encode, codec, c);
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), BM_Decode, codec, c);
    }
  }
  for (Change c : changes) {
    const std::string suffix = "lz4/" + std::string(romulus::testing::change_name(c));
    benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), BM_Lz4Compress, c);
    benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), BM_Lz4Decompress, c);
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
