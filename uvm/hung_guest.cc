#include "uvm/hung_guest.h"

#include "base/log.h"

namespace runhcs::uvm {

Status TerminateIfGuestHung(UtilityVm* vm, Status kill, const std::string& what,
                            std::chrono::milliseconds probe) {
  if (kill.code() != Code::kDeadlineExceeded && kill.code() != Code::kUnavailable) return kill;
  auto agent = vm->agent();
  if (!agent) return kill;  // the VM is already gone: its processes exit anyway
  apb::PingRequest ping;
  apb::PingResponse pong;
  Status alive = agent->Ping(ping, &pong, AgentClient::Within(probe));
  if (alive.ok()) return kill;
  std::string why = fmt::format("the guest answered neither the SIGKILL of {} ({}) nor a ping ({})",
                                what, kill.ToString(), alive.ToString());
  spdlog::error("vm {}: {}: killing the VM", vm->id(), why);
  vm->Terminate(why);
  return OkStatus();
}

}  // namespace runhcs::uvm
