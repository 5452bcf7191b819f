// RuntimeProcess: the exec::Process of a process-isolated container, run by
// the OCI runtime on the host.
//
//  - init: the container was created (`runtime create`) before this exists;
//    Start runs `runtime start`.
//  - exec: Start opens the stdio, writes the OCI Process to a file and runs
//    `runtime exec --detach --pid-file`.
// Exits come from the Reaper (the shim is the subreaper), on a thread of
// their own. Signals go through a pidfd, so a recycled pid is never hit.
#pragma once

#include <memory>
#include <string>

#include "base/fd.h"
#include "base/reaper.h"
#include "base/thread_annotations.h"
#include "exec/exec.h"
#include "exec/process.h"
#include "oci/runtime.h"
#include "stdio/process_io.h"

namespace runhcs::proctask {

class RuntimeProcess : public exec::Process {
 public:
  // `expect` was taken before `runtime create` and is held until Start
  // watches the init pid (an init killed before start is then still seen).
  // `kill_all_on_exit`: the container has no pid namespace of its own, so
  // when init exits the rest of its processes are SIGKILLed before the exit
  // is reported (they would hold its stdio open).
  static std::unique_ptr<RuntimeProcess> ForInit(std::shared_ptr<oci::Runtime> runtime,
                                                 std::string id, pid_t pid,
                                                 std::unique_ptr<stdio::ProcessIo> io,
                                                 Reaper::Expectation expect,
                                                 bool kill_all_on_exit = false);
  static std::unique_ptr<RuntimeProcess> ForExec(std::shared_ptr<oci::Runtime> runtime,
                                                 std::string id, std::string exec_id,
                                                 std::string bundle, std::string process_json,
                                                 exec::Stdio stdio, stdio::IoContext ctx);
  ~RuntimeProcess() override;

  StatusOr<uint32_t> Start(ExitCallback on_exit) override;
  Status Signal(uint32_t signal) override;
  Status ResizePty(uint32_t width, uint32_t height) override;
  void CloseStdin() override;
  void Terminate() override;
  void ReleaseIo(std::function<void()> done) override;

  RuntimeProcess() = default;

 private:
  StatusOr<uint32_t> StartExec(ExitCallback on_exit);
  void OpenPidfd();

  std::shared_ptr<oci::Runtime> runtime_;
  std::string id_, exec_id_, bundle_, process_json_;
  exec::Stdio stdio_;
  stdio::IoContext ctx_;
  bool init_ = false;
  bool kill_all_on_exit_ = false;
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  stdio::IoSlot io_;
  Reaper::Expectation init_expect_;
};

}  // namespace runhcs::proctask
