// Which node of a pair holds the newer image, asked before a primary with a
// durable image (--data-dir) starts its guest (docs/design.md, "The durable
// image": losing both nodes).
//
// A primary started fresh runs its guest from its own durable image (or an
// empty arena); the backup it then syncs is overwritten. When both nodes come
// back after losing both, the backup usually holds the newer image (it had
// every acknowledged checkpoint; the primary's disk has only what it held when
// it last was a backup). So before the guest runs, the primary connects,
// reads the epoch in the backup's Reply, and either leaves (GOODBYE: the
// backup waits for the real stream) or, if the backup's image is newer, hands
// the pair to it (HANDOVER: the backup takes over at once from its image).
//
// Also the link's Hello and sender options for a PrimaryConfig, made here once
// for this question and for PrimaryNode's stream.
//
// Blocking; any thread. Runs its own io thread for the one connection.
#pragma once

#include <cstdint>
#include <functional>

#include "checkpoint/primary.h"
#include "checkpoint/tcp_sender.h"
#include "common/status.h"
#include "protocol/handshake.h"

namespace romulus::checkpoint {

// The Hello this primary opens every stream with (its session must be set).
protocol::Hello link_hello(const PrimaryConfig& config);
// How its sender connects: timeouts and TLS.
SenderOptions link_options(const PrimaryConfig& config);

struct BackupImage {
  uint64_t epoch = 0;        // of the backup's committed image; 0: none
  bool handed_over = false;  // HANDOVER was sent: the backup takes over from it
};

// Connects to config.backup, reads its committed epoch, and hands the pair
// over if that is newer than `own_epoch` (calling `before_handover` first:
// with a witness, the lease goes before the HANDOVER), else says GOODBYE.
// Unavailable or refused when the backup cannot be asked (then nothing was
// said to it).
Result<BackupImage> compare_with_backup(const PrimaryConfig& config, uint64_t own_epoch,
                                        const std::function<void()>& before_handover);

}  // namespace romulus::checkpoint
