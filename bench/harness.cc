// runhcs-bench: runhcs against containerd-shim-runc-v2, side by side, through
// a private containerd driven over its own gRPC API (the orchestrator's side).
// Every figure is reported with the ratio runhcs / runc-v2 measured in the
// same run, interleaved, with the same OCI runtime under both shims.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/fd.h"
#include "base/io.h"
#include "base/thread_annotations.h"
#include "containerd/events/task.pb.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/events/v1/events.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "runhcs/options.pb.h"
#include "tests/ctrd_client.h"
#include "tests/subprocess.h"
#include "ttrpc/client.h"

namespace runhcs::bench {
namespace {

namespace ctrs = testing::ctrs;
namespace tasks = testing::tasks;
namespace evs = testing::evs;
using Clock = std::chrono::steady_clock;
using testing::ReadFileOr;

constexpr char kNs[] = "bench";

struct Config {
  int runs = 50;
  int warmup = 2;
  int execs_per_series = 50;
  int exec_growth = 1000;
  int exec_warmup = 100;
  int containers = 50;
  int rpc_calls = 2000;
  int pods = 3;
  int burst = 500;
  int streaming = 20;
  std::string out_dir = "bench/results";
  std::vector<std::string> oci_runtimes = {"runc", "crun"};
};

struct Shim {
  std::string label;    // "runhcs" | "runc-v2"
  std::string runtime;  // containerd runtime name
};
const Shim kShims[] = {{"runhcs", "io.containerd.runhcs.v1"}, {"runc-v2", "io.containerd.runc.v2"}};

// The order of the two shims in round i: alternating, so that neither always
// runs right after the other's background work (event delivery, GC).
std::vector<Shim> Order(int i) {
  if (i % 2 == 0) return {kShims[0], kShims[1]};
  return {kShims[1], kShims[0]};
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct ProcMem {
  double rss_kib = 0, pss_kib = 0;
  int threads = 0;
};

ProcMem MemOf(pid_t pid) {
  ProcMem m;
  std::stringstream smaps(ReadFileOr("/proc/" + std::to_string(pid) + "/smaps_rollup"));
  for (std::string line; std::getline(smaps, line);) {
    if (line.rfind("Rss:", 0) == 0) m.rss_kib = std::stod(line.substr(4));
    if (line.rfind("Pss:", 0) == 0) m.pss_kib = std::stod(line.substr(4));
  }
  std::stringstream status(ReadFileOr("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Threads:", 0) == 0) m.threads = std::stoi(line.substr(8));
  }
  return m;
}

pid_t ParentOf(pid_t pid) {
  std::stringstream status(ReadFileOr("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("PPid:", 0) == 0) return std::stoi(line.substr(5));
  }
  return 0;
}

using Client = testing::CtrdClient;
using EventLog = testing::TaskEvents;

class Bench {
 public:
  Bench(Config cfg, testing::Containerd* ctrd, const std::string& rootfs, nlohmann::json base_spec)
      : cfg_(std::move(cfg)),
        ctrd_(ctrd),
        client_(ctrd->grpc_address(), kNs),
        rootfs_(rootfs),
        base_spec_(std::move(base_spec)),
        events_(&client_) {}

  runhcs::wkt::Any Options(const Shim& shim, const std::string& oci) {
    runhcs::wkt::Any any;
    if (shim.label == "runhcs") {
      containerd::runhcs::v1::Options o;
      o.set_oci_runtime(oci);
      any.set_type_url("containerd.runhcs.v1.Options");
      any.set_value(o.SerializeAsString());
    } else {
      containerd::runc::v1::Options o;
      o.set_binary_name(oci);
      any.set_type_url("containerd.runc.v1.Options");
      any.set_value(o.SerializeAsString());
    }
    return any;
  }

  nlohmann::json Spec(const std::string& id, const std::vector<std::string>& args,
                      const std::map<std::string, std::string>& annotations = {}) {
    nlohmann::json s = base_spec_;
    for (const auto& [k, v] : annotations) s["annotations"][k] = v;
    s["process"]["args"] = args;
    s["hostname"] = id;
    s["linux"]["cgroupsPath"] = std::string("/") + kNs + "/" + id;
    return s;
  }

  // Milliseconds of each phase of the last Lifecycle/Exec, in order.
  using Phases = std::vector<std::pair<std::string, double>>;
  Phases last_phases;
  void Mark(const std::string& phase, Clock::time_point* t) {
    auto now = Clock::now();
    last_phases.emplace_back(phase, std::chrono::duration<double, std::milli>(now - *t).count());
    *t = now;
  }

  // Container + task, started. Returns the init pid.
  uint32_t StartContainer(const Shim& shim, const std::string& oci, const std::string& id,
                          const std::vector<std::string>& args,
                          const std::map<std::string, std::string>& annotations = {}) {
    auto t = Clock::now();
    uint32_t pid =
        testing::CreateAndStart(&client_, id, shim.runtime, Options(shim, oci),
                                Spec(id, args, annotations), [&] { Mark("create", &t); });
    Mark("start", &t);
    return pid;
  }

  void WaitTask(const std::string& id, const std::string& exec_id = "") {
    tasks::WaitRequest w;
    w.set_container_id(id);
    w.set_exec_id(exec_id);
    tasks::WaitResponse wr;
    Client::Check(client_.tasks().Wait(client_.Ctx().get(), w, &wr), "wait");
  }

  void DeleteContainer(const std::string& id) {
    tasks::DeleteTaskRequest d;
    d.set_container_id(id);
    tasks::DeleteResponse dr;
    Client::Check(client_.tasks().Delete(client_.Ctx().get(), d, &dr), "delete task");
    ctrs::DeleteContainerRequest dc;
    dc.set_id(id);
    runhcs::wkt::Empty e;
    Client::Check(client_.containers().Delete(client_.Ctx().get(), dc, &e), "delete container");
  }

  void Kill(const std::string& id) {
    tasks::KillRequest k;
    k.set_container_id(id);
    k.set_signal(9);
    runhcs::wkt::Empty e;
    Client::Check(client_.tasks().Kill(client_.Ctx().get(), k, &e), "kill");
  }

  // 1. create + start + wait + delete of /bin/true, in ms.
  double Lifecycle(const Shim& shim, const std::string& oci, const std::string& id) {
    last_phases.clear();
    auto t0 = Clock::now();
    StartContainer(shim, oci, id, {"/bin/true"});
    auto t = Clock::now();
    WaitTask(id);
    Mark("wait", &t);
    DeleteContainer(id);
    Mark("delete", &t);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    lifecycle_ids_.push_back(id);
    return ms;
  }

  // 2. exec + start + wait + delete of /bin/true, in ms.
  double Exec(const std::string& id, const std::string& exec_id) {
    last_phases.clear();
    auto t0 = Clock::now();
    auto t = t0;
    tasks::ExecProcessRequest ex;
    ex.set_container_id(id);
    ex.set_exec_id(exec_id);
    nlohmann::json p = base_spec_["process"];
    p["args"] = {"/bin/true"};
    ex.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
    ex.mutable_spec()->set_value(p.dump());
    runhcs::wkt::Empty e;
    Client::Check(client_.tasks().Exec(client_.Ctx().get(), ex, &e), "exec");
    Mark("exec", &t);
    tasks::StartRequest st;
    st.set_container_id(id);
    st.set_exec_id(exec_id);
    tasks::StartResponse str;
    Client::Check(client_.tasks().Start(client_.Ctx().get(), st, &str), "start exec");
    Mark("start", &t);
    WaitTask(id, exec_id);
    Mark("wait", &t);
    tasks::DeleteProcessRequest dp;
    dp.set_container_id(id);
    dp.set_exec_id(exec_id);
    tasks::DeleteResponse dr;
    Client::Check(client_.tasks().DeleteProcess(client_.Ctx().get(), dp, &dr), "delete exec");
    Mark("delete", &t);
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }

  // `cfg_.streaming` execs of `cat` in one container, each with stdin,
  // stdout and stderr fifos; once all run and data flows through every one,
  // the shim's thread count. The streams end (stdin closed) before return.
  int StreamingThreads(const Shim& shim) {
    std::string id = "stream-" + shim.label;
    uint32_t init = StartContainer(shim, "runc", id, {"/bin/sleep", "100000"});
    pid_t shim_pid = ParentOf(static_cast<pid_t>(init));
    std::string dir = ctrd_->dir() + "/fifos-" + id;
    std::filesystem::create_directories(dir);
    struct Stream {
      std::string exec_id;
      runhcs::UniqueFd in_w, out_r, err_r;
    };
    std::vector<Stream> streams;
    for (int i = 0; i < cfg_.streaming; ++i) {
      Stream st;
      st.exec_id = fmt::format("s{}", i);
      std::string in = fmt::format("{}/{}-in", dir, i), out = fmt::format("{}/{}-out", dir, i),
                  err = fmt::format("{}/{}-err", dir, i);
      for (const auto& f : {in, out, err}) ::mkfifo(f.c_str(), 0600);
      // Our ends first, non-blocking, so neither side waits for the other.
      st.out_r.reset(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      st.err_r.reset(::open(err.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      runhcs::UniqueFd in_r(::open(in.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      st.in_w.reset(::open(in.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
      tasks::ExecProcessRequest ex;
      ex.set_container_id(id);
      ex.set_exec_id(st.exec_id);
      ex.set_stdin(in);
      ex.set_stdout(out);
      ex.set_stderr(err);
      nlohmann::json p = base_spec_["process"];
      p["args"] = {"/bin/sh", "-c", "cat; echo done >&2"};
      ex.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
      ex.mutable_spec()->set_value(p.dump());
      runhcs::wkt::Empty e;
      Client::Check(client_.tasks().Exec(client_.Ctx().get(), ex, &e), "exec");
      tasks::StartRequest sr;
      sr.set_container_id(id);
      sr.set_exec_id(st.exec_id);
      tasks::StartResponse srr;
      Client::Check(client_.tasks().Start(client_.Ctx().get(), sr, &srr), "start exec");
      streams.push_back(std::move(st));
    }
    // Data through every stream: a line in, the same line out.
    for (auto& st : streams) {
      std::string line = "ping " + st.exec_id + "\n";
      (void)!::write(st.in_w.get(), line.data(), line.size());
      std::string got;
      for (int k = 0; k < 500 && got.find('\n') == std::string::npos; ++k) {
        char buf[256];
        ssize_t n = ::read(st.out_r.get(), buf, sizeof buf);
        if (n > 0) got.append(buf, static_cast<size_t>(n));
        if (n <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (got != line) throw std::runtime_error("streaming exec " + st.exec_id + ": echoed " + got);
    }
    int threads = testing::ThreadsOf(shim_pid);
    std::printf("   %s: %d threads with %d execs streaming\n", shim.label.c_str(), threads,
                cfg_.streaming);
    for (auto& st : streams) {
      st.in_w.reset();  // cat ends: EOF, then CloseIO (as ctr; runc-v2 needs it)
      tasks::CloseIORequest cr;
      cr.set_container_id(id);
      cr.set_exec_id(st.exec_id);
      cr.set_stdin(true);
      runhcs::wkt::Empty ce;
      Client::Check(client_.tasks().CloseIO(client_.Ctx().get(), cr, &ce), "close io");
      WaitTask(id, st.exec_id);
      tasks::DeleteProcessRequest dp;
      dp.set_container_id(id);
      dp.set_exec_id(st.exec_id);
      tasks::DeleteResponse dr;
      Client::Check(client_.tasks().DeleteProcess(client_.Ctx().get(), dp, &dr), "delete exec");
    }
    streams.clear();
    Kill(id);
    WaitTask(id);
    DeleteContainer(id);
    std::filesystem::remove_all(dir);
    return threads;
  }

  std::string Bundle(const std::string& id) {
    return ctrd_->dir() + "/state/io.containerd.runtime.v2.task/" + kNs + "/" + id;
  }

  // Every lifecycle's events in order: create, start, exit, delete.
  int CheckEventOrder() {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    int bad = 0;
    const std::vector<std::string> want = {"/tasks/create", "/tasks/start", "/tasks/exit",
                                           "/tasks/delete"};
    for (const auto& id : lifecycle_ids_) {
      if (events_.Topics(id) != want) ++bad;
    }
    return bad;
  }

  struct Row {
    std::string section, metric, unit;
    double runhcs = 0, runc = 0;
  };
  std::vector<Row> rows;

  void Add(std::string section, std::string metric, std::string unit, double a, double b) {
    rows.push_back({std::move(section), std::move(metric), std::move(unit), a, b});
    std::printf("  %-28s %-22s %10.2f %10.2f   ratio %.2f\n", rows.back().section.c_str(),
                rows.back().metric.c_str(), a, b, b > 0 ? a / b : 0);
    std::fflush(stdout);
  }

  // phase -> shim label -> samples (ms).
  using PhaseSamples = std::map<std::string, std::map<std::string, std::vector<double>>>;
  // Where the time of a series goes: the p50 of each client-visible phase.
  void AddPhases(const std::string& sec, PhaseSamples& s, const std::vector<std::string>& order) {
    for (const auto& ph : order) {
      Add(sec, ph + " p50", "ms", Percentile(s[ph]["runhcs"], .5),
          Percentile(s[ph]["runc-v2"], .5));
    }
  }

  void Run() {
    int seq = 0;
    for (const auto& oci : cfg_.oci_runtimes) {
      std::printf("== lifecycle, %s (runs=%d)\n", oci.c_str(), cfg_.runs);
      std::map<std::string, std::vector<double>> lat;
      PhaseSamples lc_phases;
      for (int i = 0; i < cfg_.warmup + cfg_.runs; ++i) {
        for (const auto& shim : Order(i)) {  // interleaved
          double ms = Lifecycle(shim, oci, fmt::format("lc-{}-{}", shim.label, seq++));
          if (i >= cfg_.warmup) {
            lat[shim.label].push_back(ms);
            for (const auto& [ph, v] : last_phases) lc_phases[ph][shim.label].push_back(v);
          }
        }
      }
      std::string sec = "lifecycle (" + oci + ")";
      Add(sec, "p50", "ms", Percentile(lat["runhcs"], .5), Percentile(lat["runc-v2"], .5));
      Add(sec, "p99", "ms", Percentile(lat["runhcs"], .99), Percentile(lat["runc-v2"], .99));
      AddPhases(sec, lc_phases, {"create", "start", "wait", "delete"});

      std::printf("== exec, %s (execs=%d)\n", oci.c_str(), cfg_.execs_per_series);
      std::map<std::string, std::vector<double>> ex;
      PhaseSamples ex_phases;
      for (const auto& shim : kShims)
        StartContainer(shim, oci, "ex-" + shim.label + "-" + oci, {"/bin/sleep", "100000"});
      for (int i = 0; i < cfg_.warmup + cfg_.execs_per_series; ++i) {
        for (const auto& shim : Order(i)) {
          double ms = Exec("ex-" + shim.label + "-" + oci, fmt::format("e{}", i));
          if (i >= cfg_.warmup) {
            ex[shim.label].push_back(ms);
            for (const auto& [ph, v] : last_phases) ex_phases[ph][shim.label].push_back(v);
          }
        }
      }
      sec = "exec (" + oci + ")";
      Add(sec, "p50", "ms", Percentile(ex["runhcs"], .5), Percentile(ex["runc-v2"], .5));
      Add(sec, "p99", "ms", Percentile(ex["runhcs"], .99), Percentile(ex["runc-v2"], .99));
      AddPhases(sec, ex_phases, {"exec", "start", "wait", "delete"});
      for (const auto& shim : kShims) {
        std::string id = "ex-" + shim.label + "-" + oci;
        Kill(id);
        WaitTask(id);
        DeleteContainer(id);
      }
    }

    std::printf("== exec burst (runc, %d at once)\n", cfg_.burst);
    std::map<std::string, testing::BurstResult> burst;
    for (const auto& shim : kShims) {
      std::string id = "burst-" + shim.label;
      uint32_t init = StartContainer(shim, "runc", id, {"/bin/sleep", "100000"});
      std::this_thread::sleep_for(std::chrono::seconds(3));
      pid_t shim_pid = ParentOf(static_cast<pid_t>(init));
      int idle_threads = testing::ThreadsOf(shim_pid);
      burst[shim.label] =
          testing::ExecBurst(&client_, id, base_spec_["process"], cfg_.burst, shim_pid);
      std::printf("   %s: %d/%d ok, idle threads %d, peak %d\n", shim.label.c_str(),
                  burst[shim.label].ok, cfg_.burst, idle_threads, burst[shim.label].peak_threads);
      Kill(id);
      WaitTask(id);
      DeleteContainer(id);
    }
    std::string bsec = fmt::format("exec burst ({} at once, runc)", cfg_.burst);
    Add(bsec, "succeeded", "", burst["runhcs"].ok, burst["runc-v2"].ok);
    Add(bsec, "p50 of those", "ms", Percentile(burst["runhcs"].ms, .5),
        Percentile(burst["runc-v2"].ms, .5));
    Add(bsec, "p99 of those", "ms", Percentile(burst["runhcs"].ms, .99),
        Percentile(burst["runc-v2"].ms, .99));
    Add(bsec, "peak shim threads", "", burst["runhcs"].peak_threads, burst["runc-v2"].peak_threads);

    std::printf("== busy shim: %d execs streaming at once (runc)\n", cfg_.streaming);
    std::map<std::string, int> busy;
    for (const auto& shim : kShims) busy[shim.label] = StreamingThreads(shim);
    Add(fmt::format("{} execs streaming stdin/stdout/stderr", cfg_.streaming), "shim threads", "",
        busy["runhcs"], busy["runc-v2"]);

    std::printf("== idle shim memory and RPC overhead (runc)\n");
    std::map<std::string, ProcMem> idle;
    std::map<std::string, std::vector<double>> rpc;
    for (const auto& shim : kShims) {
      std::string id = "idle-" + shim.label;
      uint32_t init = StartContainer(shim, "runc", id, {"/bin/sleep", "100000"});
      std::this_thread::sleep_for(std::chrono::seconds(2));  // settle
      idle[shim.label] = MemOf(ParentOf(static_cast<pid_t>(init)));
      auto c = ttrpc::Client::Dial(UnixAddress::Parse(ReadFileOr(Bundle(id) + "/address")));
      if (!c.ok()) throw std::runtime_error("dial shim: " + c.status().ToString());
      containerd::task::v2::StateRequest sr;
      sr.set_id(id);
      containerd::task::v2::StateResponse resp;
      for (int i = 0; i < cfg_.rpc_calls; ++i) {
        auto t0 = Clock::now();
        Status st = containerd::task::v2::TaskClient(c->get()).State(sr, &resp);
        if (!st.ok()) throw std::runtime_error("State: " + st.ToString());
        if (i >= 50)
          rpc[shim.label].push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
    }
    Add("idle shim", "RSS", "KiB", idle["runhcs"].rss_kib, idle["runc-v2"].rss_kib);
    Add("idle shim", "PSS", "KiB", idle["runhcs"].pss_kib, idle["runc-v2"].pss_kib);
    Add("idle shim", "threads", "", idle["runhcs"].threads, idle["runc-v2"].threads);
    Add("State RPC on shim socket", "p50", "us", Percentile(rpc["runhcs"], .5),
        Percentile(rpc["runc-v2"], .5));
    Add("State RPC on shim socket", "p99", "us", Percentile(rpc["runhcs"], .99),
        Percentile(rpc["runc-v2"], .99));

    std::printf("== shim RSS after %d execs (runc)\n", cfg_.exec_growth);
    std::map<std::string, double> before, after;
    for (const auto& shim : kShims) {
      std::string id = "idle-" + shim.label;
      pid_t shim_pid =
          static_cast<pid_t>(std::atoi(ReadFileOr(Bundle(id) + "/init.pid", "0").c_str()));
      shim_pid = ParentOf(shim_pid);
      // Warm-up first: the first execs page in the exec code path and raise
      // the heap and the thread-stack cache to their working size once;
      // growth is what more execs add after that (a leak keeps growing).
      for (int i = 0; i < cfg_.exec_warmup; ++i) Exec(id, fmt::format("w{}", i));
      before[shim.label] = MemOf(shim_pid).rss_kib;
      for (int i = 0; i < cfg_.exec_growth; ++i) Exec(id, fmt::format("g{}", i));
      std::this_thread::sleep_for(std::chrono::seconds(1));
      after[shim.label] = MemOf(shim_pid).rss_kib;
    }
    std::string gsec = fmt::format("{} execs", cfg_.exec_growth);
    Add(gsec, fmt::format("RSS before (after {} warm-up execs)", cfg_.exec_warmup), "KiB",
        before["runhcs"], before["runc-v2"]);
    Add(gsec, "RSS after", "KiB", after["runhcs"], after["runc-v2"]);
    Add(gsec, "RSS growth", "%", 100 * (after["runhcs"] / before["runhcs"] - 1),
        100 * (after["runc-v2"] / before["runc-v2"] - 1));
    for (const auto& shim : kShims) {
      Kill("idle-" + shim.label);
      WaitTask("idle-" + shim.label);
      DeleteContainer("idle-" + shim.label);
    }

    std::printf("== %d running containers per shim (runc)\n", cfg_.containers);
    std::map<std::string, ProcMem> total;
    for (const auto& shim : kShims) {
      std::vector<std::string> ids;
      for (int i = 0; i < cfg_.containers; ++i) {
        std::string id = fmt::format("many-{}-{}", shim.label, i);
        uint32_t init = StartContainer(shim, "runc", id, {"/bin/sleep", "100000"});
        ProcMem m = MemOf(ParentOf(static_cast<pid_t>(init)));
        (void)m;
        ids.push_back(id);
      }
      std::this_thread::sleep_for(std::chrono::seconds(2));
      for (const auto& id : ids) {
        pid_t init =
            static_cast<pid_t>(std::atoi(ReadFileOr(Bundle(id) + "/init.pid", "0").c_str()));
        ProcMem m = MemOf(ParentOf(init));
        total[shim.label].rss_kib += m.rss_kib;
        total[shim.label].pss_kib += m.pss_kib;
        total[shim.label].threads += m.threads;
      }
      for (const auto& id : ids) {
        Kill(id);
        WaitTask(id);
        DeleteContainer(id);
      }
    }
    std::string sec = fmt::format("{} containers, all shims", cfg_.containers);
    Add(sec, "RSS", "KiB", total["runhcs"].rss_kib, total["runc-v2"].rss_kib);
    Add(sec, "PSS", "KiB", total["runhcs"].pss_kib, total["runc-v2"].pss_kib);
    Add(sec, "threads", "", total["runhcs"].threads, total["runc-v2"].threads);

    if (cfg_.pods > 0) Pods();

    event_order_violations = CheckEventOrder();
    std::printf("== event order: %d of %zu lifecycles out of order\n", event_order_violations,
                lifecycle_ids_.size());
  }

  // The pid and the descendants of `root`, memory summed.
  static ProcMem TreeMem(pid_t root) {
    std::map<pid_t, std::vector<pid_t>> children;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      pid_t pid = std::atoi(e.path().filename().c_str());
      if (pid > 0) children[ParentOf(pid)].push_back(pid);
    }
    ProcMem total;
    std::vector<pid_t> todo = {root};
    while (!todo.empty()) {
      pid_t p = todo.back();
      todo.pop_back();
      ProcMem m = MemOf(p);
      total.rss_kib += m.rss_kib;
      total.pss_kib += m.pss_kib;
      total.threads += m.threads;
      for (pid_t c : children[p]) todo.push_back(c);
    }
    return total;
  }

  // 7. Pods (CRI annotations): start of a sandbox and its first workload,
  // and what one pod costs in memory (its shim and everything under it:
  // QEMU and virtiofsd for a VM).
  void Pods() {
    struct Kind {
      std::string label;
      Shim shim;
      bool hypervisor;
    };
    const Kind kinds[] = {{"runhcs", kShims[0], false},
                          {"runc-v2", kShims[1], false},
                          {"runhcs-vm", kShims[0], true}};
    std::map<std::string, std::vector<double>> start;
    std::map<std::string, ProcMem> mem;
    std::printf("== pods (sandbox + 1 workload; %d each)\n", cfg_.pods);
    for (int i = 0; i < cfg_.pods; ++i) {
      for (const auto& k : kinds) {
        std::string pod = fmt::format("pod-{}-{}", k.label, i), w = pod + "-w";
        std::map<std::string, std::string> sb = {{"io.kubernetes.cri.container-type", "sandbox"},
                                                 {"io.kubernetes.cri.sandbox-id", pod}};
        if (k.hypervisor) {
          sb["io.containerd.runhcs.v1.isolation"] = "hypervisor";
          sb["io.containerd.runhcs.v1.vm-accelerator"] = "tcg";
        }
        std::map<std::string, std::string> wl = {{"io.kubernetes.cri.container-type", "container"},
                                                 {"io.kubernetes.cri.sandbox-id", pod}};
        auto t0 = Clock::now();
        uint32_t init = StartContainer(k.shim, "runc", pod, {"/bin/sleep", "100000"}, sb);
        StartContainer(k.shim, "runc", w, {"/bin/sleep", "100000"}, wl);
        start[k.label].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (i == 0) {
          std::this_thread::sleep_for(std::chrono::seconds(1));
          // The shim: its pid file, or (runc-v2) the parent of the sandbox's init.
          pid_t shim =
              static_cast<pid_t>(std::atoi(ReadFileOr(Bundle(pod) + "/shim.pid", "0").c_str()));
          if (shim <= 0) shim = ParentOf(static_cast<pid_t>(init));
          if (shim > 0) mem[k.label] = TreeMem(shim);
        }
        for (const auto& id : {w, pod}) {
          Kill(id);
          WaitTask(id);
          DeleteContainer(id);
        }
      }
    }
    Add("pod (process isolation)", "start p50", "ms", Percentile(start["runhcs"], .5),
        Percentile(start["runc-v2"], .5));
    Add("pod (process isolation)", "PSS of one pod", "KiB", mem["runhcs"].pss_kib,
        mem["runc-v2"].pss_kib);
    Add("pod (runhcs VM, TCG) vs process pod (runc-v2)", "start p50", "ms",
        Percentile(start["runhcs-vm"], .5), Percentile(start["runc-v2"], .5));
    Add("pod (runhcs VM, TCG) vs process pod (runc-v2)", "PSS of one pod", "KiB",
        mem["runhcs-vm"].pss_kib, mem["runc-v2"].pss_kib);
  }

  int event_order_violations = 0;
  size_t lifecycles() const { return lifecycle_ids_.size(); }

 private:
  Config cfg_;
  testing::Containerd* ctrd_;
  Client client_;
  std::string rootfs_;
  nlohmann::json base_spec_;
  EventLog events_;
  std::vector<std::string> lifecycle_ids_;
};

const Bench::Row* Find(const Bench& b, const std::string& section, const std::string& metric) {
  for (const auto& r : b.rows) {
    if (r.section == section && r.metric == metric) return &r;
  }
  return nullptr;
}

// The targets, met or missed by how much; for a missed latency
// target, the share of the phase spent in the OCI runtime call.
void WriteTargets(const Bench& b, const Config& cfg, std::ostream& md) {
  md << "\n## Targets\n\n| target | measured | verdict |\n|---|---:|---|\n";
  auto verdict = [&](const std::string& name, double value, double limit, const std::string& unit) {
    md << fmt::format(
        "| {} {} {}{} | {:.2f}{} | {} |\n", name, "<=", limit, unit, value, unit,
        value <= limit ? "met" : fmt::format("missed by {:.2f}{}", value - limit, unit));
    return value <= limit;
  };
  if (auto* r = Find(b, "idle shim", "RSS"))
    verdict("idle RSS ratio", r->runhcs / r->runc, 0.25, "");
  std::vector<std::string> notes;
  for (const auto& oci : cfg.oci_runtimes) {
    for (const auto& [sec, phase] :
         {std::pair{"lifecycle", "create"}, std::pair{"exec", "start"}}) {
      std::string section = fmt::format("{} ({})", sec, oci);
      auto* r = Find(b, section, "p50");
      if (!r || !verdict(section + " p50 ratio", r->runhcs / r->runc, 0.8, "")) {
        auto* ph = Find(b, section, std::string(phase) + " p50");
        if (r && ph) {
          notes.push_back(fmt::format(
              "{}: the {} phase (the OCI runtime's `{} {}` and what the shim does around it) is "
              "{:.1f} of {:.1f} ms under runhcs and {:.1f} of {:.1f} ms under runc-v2; the other "
              "phases together are {:.1f} ms against {:.1f} ms.",
              section, phase, oci, sec == std::string("exec") ? "exec" : "create", ph->runhcs,
              r->runhcs, ph->runc, r->runc, r->runhcs - ph->runhcs, r->runc - ph->runc));
        }
      }
    }
  }
  std::string gsec = fmt::format("{} execs", cfg.exec_growth);
  if (auto* r = Find(b, gsec, "RSS growth"))
    verdict("RSS growth after " + gsec, r->runhcs, 1.0, " %");
  for (const auto& n : notes) md << "\n" << n << "\n";
  md << "\nWhere the CPU time goes, per program and inside the shim: `profile.md` here "
        "(`bench/profile.sh`).\n";
}

void WriteResults(const Bench& b, const Config& cfg, const std::string& machine) {
  std::string dir = cfg.out_dir;
  ::mkdir(dir.c_str(), 0755);
  std::ofstream md(dir + "/results.md");
  md << "# runhcs vs containerd-shim-runc-v2\n\n"
     << "Generated by `runhcs-bench` (bench/README.md). " << machine << "\n\n"
     << "Each row: the same workload through `io.containerd.runhcs.v1` and "
        "`io.containerd.runc.v2`, interleaved in one run against one private containerd, "
        "same OCI runtime. Ratio = runhcs / runc-v2 (lower is better).\n\n"
     << "| section | metric | unit | runhcs | runc-v2 | ratio |\n|---|---|---|---:|---:|---:|\n";
  std::ofstream dat(dir + "/ratios.dat");
  int n = 0;
  for (const auto& r : b.rows) {
    double ratio = r.runc > 0 ? r.runhcs / r.runc : 0;
    md << fmt::format("| {} | {} | {} | {:.2f} | {:.2f} | {:.2f} |\n", r.section, r.metric, r.unit,
                      r.runhcs, r.runc, ratio);
    // Phase rows ("create p50", ...) stay in the table only.
    if (r.unit != "%" && r.metric.find("before") == std::string::npos &&
        r.metric.find(' ') == std::string::npos) {
      dat << n++ << " \"" << r.section << " " << r.metric << "\" " << ratio << "\n";
    }
  }
  md << fmt::format(
      "\nEvent order (create, start, exit, delete per lifecycle): {} of {} out of order.\n",
      b.event_order_violations, b.lifecycles());
  WriteTargets(b, cfg, md);
  dat.close();
  std::ofstream gp(dir + "/chart.gp");
  gp << "set terminal pngcairo size 1200,700 font ',10'\n"
     << "set output '" << dir << "/ratios.png'\n"
     << "set title 'runhcs / containerd-shim-runc-v2 (lower is better)'\n"
     << "set style fill solid 0.6\nset boxwidth 0.7\nset xtics rotate by -40 left\n"
     << "set yrange [0:*]\nset grid ytics\nset arrow from graph 0, first 1 to graph 1, first 1 "
        "nohead lc rgb 'red'\n"
     << "plot '" << dir << "/ratios.dat' using 1:3:xtic(2) with boxes notitle\n";
  gp.close();
  if (testing::RunCommand({"gnuplot", dir + "/chart.gp"}).exit_code != 0) {
    std::fprintf(stderr, "gnuplot failed; no chart\n");
  }
  std::printf("results: %s/results.md, %s/ratios.png\n", dir.c_str(), dir.c_str());
}

}  // namespace
}  // namespace runhcs::bench

int main(int argc, char** argv) {
  using namespace runhcs;
  bench::Config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--runs")
      cfg.runs = std::stoi(next());
    else if (a == "--execs")
      cfg.execs_per_series = std::stoi(next());
    else if (a == "--exec-growth")
      cfg.exec_growth = std::stoi(next());
    else if (a == "--containers")
      cfg.containers = std::stoi(next());
    else if (a == "--pods")
      cfg.pods = std::stoi(next());
    else if (a == "--burst")
      cfg.burst = std::stoi(next());
    else if (a == "--streaming")
      cfg.streaming = std::stoi(next());
    else if (a == "--out")
      cfg.out_dir = next();
    else if (a == "--quick") {
      cfg.runs = 8;
      cfg.execs_per_series = 8;
      cfg.exec_growth = 100;
      cfg.exec_warmup = 20;
      cfg.containers = 5;
      cfg.rpc_calls = 300;
      cfg.pods = 1;
      cfg.burst = 50;
      cfg.streaming = 5;
    } else {
      std::fprintf(stderr,
                   "usage: runhcs-bench [--runs N] [--execs N] [--exec-growth N] [--containers N] "
                   "[--pods N] [--burst N] [--streaming N] [--out DIR] [--quick]\n");
      return 2;
    }
  }
  std::string scratch = testing::MakeTempDir("runhcs-bench");
  // crun 1.8 needs the unified controllers hidden on hybrid hosts; both shims
  // and both runtimes run in this same namespace.
  if (!testing::MaskUnifiedControllersForCrun(scratch)) {
    std::fprintf(stderr, "cannot set up the private mount namespace (root needed)\n");
    return 1;
  }
  std::string rootfs = scratch + "/rootfs";
  testing::MakeBusyboxRootfs(rootfs);
  if (testing::RunCommand({"runc", "spec", "--bundle", scratch}).exit_code != 0) return 1;
  auto spec = nlohmann::json::parse(testing::ReadFileOr(scratch + "/config.json"));
  spec["process"]["terminal"] = false;
  spec["root"]["path"] = rootfs;
  spec["root"]["readonly"] = false;
  int rc = 0;
  {
    testing::Containerd ctrd(RUNHCS_SHIM_DIR);
    if (!ctrd.ok()) {
      std::fprintf(stderr, "containerd did not start:\n%s\n", ctrd.log().c_str());
      return 1;
    }
    std::string machine = fmt::format("{} cores; {}", std::thread::hardware_concurrency(),
                                      testing::RunCommand({"containerd", "--version"}).out);
    machine.erase(std::remove(machine.begin(), machine.end(), '\n'), machine.end());
    try {
      bench::Bench b(cfg, &ctrd, rootfs, spec);
      b.Run();
      bench::WriteResults(b, cfg, machine);
      rc = b.event_order_violations == 0 ? 0 : 3;
    } catch (const std::exception& e) {
      std::fprintf(
          stderr, "bench failed: %s\n--- containerd log tail:\n%s\n", e.what(),
          ctrd.log().substr(ctrd.log().size() > 4000 ? ctrd.log().size() - 4000 : 0).c_str());
      rc = 1;
    }
  }
  testing::RunCommand({"rm", "-rf", scratch});
  return rc;
}
