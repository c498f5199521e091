// Virtqueue status: each virtio device's queues as QEMU sees them, read over
// QMP (x-query-virtio, x-query-virtio-status, x-query-virtio-queue-status;
// QEMU 7.2 has them), for diagnosing a device whose queue stalls.
//
// On a takeover, read after the committed device state is loaded and before
// the VM continues, each queue pairs the two halves of the checkpoint: QEMU's
// own index of the next descriptor it will take (last_avail_idx) comes from
// the device state; the guest's avail index (shadow_avail_idx, read from the
// ring at load) and the used index come from the committed RAM. So `inuse`
// (taken, not yet returned) is the device state's view checked against the
// RAM's: for virtio-net it is 0 at every pause (QEMU completes a queued
// transmit when the VM stops, net/net.c net_vm_change_state_handler), and
// nonzero would name descriptors that no one will ever complete after the
// takeover. `waiting` (shadow_avail_idx - last_avail_idx) is what the guest
// queued that QEMU has not taken yet; a kick at `cont` takes it.
//
// Diagnostic only: the callers log it and go on if it cannot be read (a QEMU
// without the x- commands). Threading: the QmpClient's.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "common/status.h"
#include "vm/qmp_client.h"

namespace romulus::vm {

struct VirtqueueStatus {
  std::string device;  // QEMU's name for it ("virtio-net")
  std::string path;    // its QOM path
  uint32_t queue = 0;
  uint16_t last_avail_idx = 0;    // the next descriptor QEMU takes (device state)
  uint16_t shadow_avail_idx = 0;  // the guest's avail index as QEMU last read it (RAM)
  uint16_t used_idx = 0;          // descriptors returned to the guest (RAM)
  uint32_t inuse = 0;             // taken by QEMU, not yet returned
  // Of the device (x-query-virtio-status): the driver said DRIVER_OK (else
  // QEMU takes nothing from its queues), and QEMU has not marked it broken.
  bool driver_ok = true;
  bool broken = false;

  // Queued by the guest, not yet taken by QEMU (indices wrap at 2^16).
  uint16_t waiting() const { return static_cast<uint16_t>(shadow_avail_idx - last_avail_idx); }
};

// Every queue of every virtio device. Errors: a QMP refusal (no such
// command: a QEMU older than 7.2), a reply not of the documented shape
// (kCorrupt), the deadline.
Result<std::vector<VirtqueueStatus>> query_virtqueues(QmpClient& qmp, Deadline deadline);

// One reply of x-query-virtio-queue-status, checked (exposed for tests).
Result<VirtqueueStatus> parse_virtqueue_status(const boost::json::value& reply);

// One line: "virtio-net queue 0: guest queued 6308, QEMU took 6076, returned
// 6076; queue 1: ...", with "(N taken, not returned)" after a queue whose
// inuse is not 0, and "(broken)" or "(driver not ready)" after a device's
// name when so.
std::string describe_virtqueues(std::span<const VirtqueueStatus> queues);

}  // namespace romulus::vm
