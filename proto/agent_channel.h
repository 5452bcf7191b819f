// What the host and the guest agent agree on outside the messages of
// runhcs.agent.v1.Agent (proto/runhcs/agent.proto): the names by which the
// agent finds, inside the VM, the devices the host gave it. The host's QEMU
// arguments (uvm/) and the agent (guest/) both take them from here.
#pragma once

namespace runhcs::agent {

// The virtio-serial port (QEMU `virtserialport,name=`) the agent serves the
// Agent service on; the guest sees it under /sys/class/virtio-ports.
inline constexpr char kPortName[] = "runhcs.agent";

// The serial (QEMU `virtio-blk-*,serial=`) of the read-only system disk the
// agent mounts at /usr (guest/image/build-image.sh makes it).
inline constexpr char kSystemDiskSerial[] = "runhcs-system";

}  // namespace runhcs::agent
