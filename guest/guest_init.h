// PID-1 duties of the guest agent in the utility VM: the filesystems a
// Linux userland expects, the kernel modules the VM's devices need, and
// finding the host channel.
#pragma once

#include <string>

#include "base/status.h"

namespace runhcs::guest {

// Mounts proc, sys, devtmpfs, devpts, /dev/shm, /run, /tmp and the cgroup2
// hierarchy; creates /dev/fd and friends. Best effort per mount: the first
// failure is returned after trying the rest.
Status MountBasics();

// Loads the modules listed one path per line in `list` (dependencies first,
// as the image build ordered them). A module already loaded is fine.
Status LoadModules(const std::string& list);

// The name (vda, ...) of the block device whose serial (a virtio disk's
// serial= in QEMU) is `serial`, under sysfs's block directory `sys_block`,
// waiting up to `timeout_ms` for it and for `dev`/<name> to appear.
// NotFound if they never do.
StatusOr<std::string> FindBlockDevice(const std::string& serial, int timeout_ms,
                                      const std::string& sys_block = "/sys/block",
                                      const std::string& dev = "/dev");

// Mounts the system disk (the virtio disk whose serial is
// agent::kSystemDiskSerial) read-only (ext4) at `where` (/usr: /bin, /sbin,
// /lib and /lib64 link there), waiting up to `timeout_ms` for the disk.
Status MountSystemDisk(const std::string& where, int timeout_ms);

// Makes the guest hand its free memory back to the host page by page. Two
// kernel defaults keep freed memory resident on the host (measured on an idle
// 2 vCPU / 1 GiB VM: ~25 MiB of its ~130):
//  - each CPU's free-page list may hold a share of the zone derived from the
//    low watermark, which transparent huge pages raise to ~44 MiB: ~27 MiB
//    per CPU; pages on those lists are not free to the balloon. We set
//    vm.percpu_pagelist_high_fraction (`proc_sys`/vm/...) to kPcpFraction,
//    which puts each list at the kernel's floor (four batches, ~1 MiB);
//  - free page reporting reports only free blocks of 2 MiB (the pageblock
//    order), so memory freed in smaller pieces stays with the VM. We set the
//    order (`sys_module`/page_reporting/parameters/page_reporting_order) to
//    0: every free page is reported, two seconds after it was freed, in
//    batches; a reported page the guest takes again costs the host a zeroed
//    page fault.
// Call after the balloon driver is loaded: its registration resets the order.
// Both files must exist; the first failure is returned after trying both.
inline constexpr int kPcpFraction = 1000;
Status TuneMemoryReturn(const std::string& proc_sys = "/proc/sys",
                        const std::string& sys_module = "/sys/module");

// The /dev node of the virtio-serial port named `name`, waiting up to
// `timeout_ms` for it to appear. NotFound if it never does.
StatusOr<std::string> FindVirtioPort(const std::string& name, int timeout_ms);

}  // namespace runhcs::guest
