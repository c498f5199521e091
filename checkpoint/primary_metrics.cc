#include "checkpoint/primary_metrics.h"

#include <string>
#include <vector>

namespace romulus::checkpoint {

namespace {

std::vector<std::string> primary_state_names() {
  using Traits = common::StateTraits<PrimaryState>;
  std::vector<std::string> names;
  for (int s = static_cast<int>(PrimaryState::kStarting);
       s <= static_cast<int>(PrimaryState::kStopping); ++s) {
    names.emplace_back(Traits::name(static_cast<PrimaryState>(s)));
  }
  return names;
}

double d(uint64_t v) { return static_cast<double>(v); }

}  // namespace

void render_primary_metrics(const PrimaryMetrics& m, common::MetricsText& out) {
  const auto& t = m.totals;
  out.one_hot("romulus_state", "The role's current state (1 for the current one).", "state",
              primary_state_names(), common::StateTraits<PrimaryState>::name(m.state));
  out.counter("romulus_checkpoints_total", "Consistent checkpoints sent to the backup.",
              d(t.epochs));
  out.family("romulus_checkpoints_by_trigger_total", "counter",
             "Consistent checkpoints by what started them: the first of a stream (sync), the "
             "interval (timer), held output under --commit eager (output).");
  out.sample("romulus_checkpoints_by_trigger_total", d(t.sync_checkpoints), {{"trigger", "sync"}});
  out.sample("romulus_checkpoints_by_trigger_total", d(t.timer_checkpoints),
             {{"trigger", "timer"}});
  out.sample("romulus_checkpoints_by_trigger_total", d(t.output_checkpoints),
             {{"trigger", "output"}});
  out.counter("romulus_checkpoints_guest_waiting_total",
              "Checkpoints started by held output while the guest was waiting for input, so "
              "without waiting for the gap (a part of trigger=\"output\").",
              d(t.guest_waiting_checkpoints));
  out.counter("romulus_guest_stopped_seconds_total",
              "Time the guest spent stopped in checkpoint pauses.",
              static_cast<double>(t.stopped_us_total) / 1e6);
  out.gauge("romulus_guest_stopped_fraction",
            "Fraction of wall time the guest was stopped in pauses over the last 5 s.",
            t.stopped_fraction);
  out.gauge("romulus_commit_eager",
            "1 under --commit eager (output-triggered checkpoints), 0 under interval.",
            m.commit_eager ? 1 : 0);
  out.gauge("romulus_last_committed_epoch",
            "Highest epoch the backup acknowledged (committed there).", d(t.acked_epoch));
  out.gauge("romulus_last_sent_epoch", "Highest epoch fully sent to the backup.", d(t.sent_epoch));
  out.gauge("romulus_interval_seconds", "Checkpoint interval asked for.", m.interval_seconds);
  out.histogram("romulus_pause_seconds",
                "Guest pause per checkpoint, from pause requested to guest running again.",
                m.pause);
  // The same pauses, part by part (docs/operations.md, "Where a reply's time goes").
  out.family("romulus_pause_phase_seconds", "histogram",
             "Each part of a checkpoint's pause: stop (until the guest is stopped), collect "
             "(the dirty set), copy (to staging), resume (re-arming tracking, then running "
             "again).");
  for (const auto& [p, name] : kPausePhases) {
    out.histogram_series("romulus_pause_phase_seconds", {{"phase", std::string(name)}},
                         m.pause_phases[static_cast<size_t>(p)]);
  }
  out.family("romulus_checkpoint_bytes_total", "counter",
             "Checkpoint bytes: raw (dirty pages x page size) and wire (encoded, with framing).");
  out.sample("romulus_checkpoint_bytes_total", d(t.raw_bytes_total), {{"kind", "raw"}});
  out.sample("romulus_checkpoint_bytes_total", d(t.wire_bytes_total), {{"kind", "wire"}});
  out.counter("romulus_dirty_pages_total", "Dirty pages sent in checkpoints.",
              d(t.dirty_pages_total));
  out.counter("romulus_stretched_intervals_total",
              "Checkpoints started late because the previous one was still being sent.",
              d(t.stretched_intervals));
  out.counter("romulus_postponed_pauses_total",
              "Pauses that gave up waiting for the guest's Update sections to close.",
              d(t.postponed_pauses));
  out.counter("romulus_staging_overflows_total",
              "Checkpoints whose dirty set overflowed staging (sent while paused).",
              d(t.overflowed_staging));
  out.counter("romulus_pages_copied_after_resume_total",
              "Dirty pages copied after the guest resumed (copy-before-write), not in the pause.",
              d(t.copied_after_resume_total));
  out.counter("romulus_pages_copied_on_write_total",
              "Of those, pages copied on the guest's first write to them, before it.",
              d(t.copied_on_write_total));
  out.counter("romulus_page_cache_lookups_total", "Sender page cache lookups.", d(t.cache_lookups));
  out.counter("romulus_page_cache_hits_total", "Sender page cache hits.", d(t.cache_hits));
  out.counter("romulus_page_cache_misses_total", "Sender page cache misses.", d(t.cache_misses));
  out.counter("romulus_page_cache_evictions_total", "Sender page cache evictions.",
              d(t.cache_evictions));
  out.counter("romulus_page_cache_overflows_total", "Pages the sender page cache could not hold.",
              d(t.cache_overflows));
  if (m.output) {
    const auto& o = m.output->stats;
    out.gauge("romulus_output_held_bytes",
              "Guest output held: awaiting an acknowledgement or a slow client.", d(o.bytes_held));
    out.gauge("romulus_output_oldest_held_seconds", "How long the oldest held byte has waited.",
              o.oldest_held_ms / 1000.0);
    out.counter("romulus_output_released_bytes_total", "Guest output released to clients.",
                d(o.bytes_released));
    out.counter("romulus_output_to_guest_bytes_total", "Client bytes forwarded to the guest.",
                d(o.bytes_to_guest));
    out.counter("romulus_output_connections_total", "Client connections accepted.",
                d(o.connections));
    out.gauge("romulus_output_open_connections", "Client connections open.", d(o.open_connections));
    out.gauge("romulus_output_buffering",
              "1 while output is held until acknowledged, 0 while released at once.",
              o.buffering ? 1 : 0);
    out.histogram("romulus_output_added_latency_seconds",
                  "Latency output commit added to guest output: read from the guest to released.",
                  m.output->added_latency);
  }
  // Where that latency goes, hop by hop (docs/operations.md, "Where a reply's time goes").
  out.family("romulus_output_path_seconds", "histogram",
             "Held output's path through its checkpoint, by hop: wait (held -> pause begins), "
             "pause, send (resumed -> handed to the sender), ack (-> acknowledged), release "
             "(acknowledged -> written to the client).");
  for (OutputHop h : kOutputHops) {
    out.histogram_series("romulus_output_path_seconds", {{"hop", std::string(output_hop_name(h))}},
                         m.output_hops[static_cast<size_t>(h)]);
  }
  if (m.output) {
    out.histogram_series("romulus_output_path_seconds", {{"hop", "release"}},
                         m.output->release_after_ack);
  }
  std::vector<std::string> trackers;
  for (const auto& [kind, name] : kTrackerKindNames) {
    if (kind != TrackerKind::kAuto) trackers.emplace_back(name);
  }
  out.one_hot("romulus_tracker", "The dirty tracker (1 for it).", "tracker", trackers,
              tracker_kind_name(m.tracker));
  if (m.hybrid) {
    out.gauge("romulus_tracker_chunks", "uffd-hybrid: the arena's chunks (2 MiB each).",
              d(m.hybrid->chunks));
    out.gauge("romulus_tracker_async_chunks",
              "uffd-hybrid: chunks on the asynchronous userfaultfd now (hot); the rest are on "
              "the synchronous one.",
              d(m.hybrid->async_chunks));
    out.counter("romulus_tracker_chunk_moves_total",
                "uffd-hybrid: chunks moved between the two userfaultfds (either way).",
                d(m.hybrid->moves));
  }
  if (m.lease) {
    out.gauge("romulus_owner", "1 while this node owns the pair (holds the witness lease).",
              m.lease->owner ? 1 : 0);
    out.gauge("romulus_lease_remaining_seconds",
              "Time left on this node's lease by its own conservative clock (0 unless owner).",
              m.lease->remaining_seconds);
  }
}

}  // namespace romulus::checkpoint
