// containerd-shim-runhcs-v1: entry point. Parses Go-style single-dash flags
// (-namespace x) and runs the action; see launch.h.
#include <boost/program_options.hpp>

#include <cstdio>
#include <iostream>

#include "base/version.h"
#include "cmd/shim/launch.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  runhcs::shim::Flags f;
  bool version = false;
  po::options_description desc("containerd-shim-runhcs-v1 [flags] start|delete");
  desc.add_options()("namespace", po::value(&f.ns), "containerd namespace")(
      "address", po::value(&f.address), "containerd gRPC socket")(
      "publish-binary", po::value(&f.publish_binary), "containerd binary (unused)")(
      "id", po::value(&f.id), "task id")("bundle", po::value(&f.bundle), "bundle path (delete)")(
      "debug", po::bool_switch(&f.debug), "debug logging")(
      "is-sandbox", po::bool_switch(&f.is_sandbox), "(internal) serve a pod")(
      "version,v", po::bool_switch(&version), "print the version")("action", po::value(&f.action),
                                                                   "start | delete");
  po::positional_options_description pos;
  pos.add("action", 1);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv)
                  .options(desc)
                  .positional(pos)
                  .style(po::command_line_style::default_style |
                         po::command_line_style::allow_long_disguise)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "containerd-shim-runhcs-v1: %s\n", e.what());
    return 2;
  }
  if (version) {
    // The layout of runc-v2's -v.
    std::printf("containerd-shim-runhcs-v1:\n  Version:  %.*s\n  Revision: %.*s\n",
                static_cast<int>(runhcs::Version().size()), runhcs::Version().data(),
                static_cast<int>(runhcs::GitCommit().size()), runhcs::GitCommit().data());
    return 0;
  }
  if (f.action == "start") return runhcs::shim::Start(f);
  if (f.action == "delete") return runhcs::shim::Delete(f);
  if (f.action == "serve") return runhcs::shim::Serve(f);
  if (f.action == "symbolize") return runhcs::shim::Symbolize();
  std::fprintf(stderr, "containerd-shim-runhcs-v1: unknown action %s; want start or delete\n",
               f.action.empty() ? "(none)" : f.action.c_str());
  return 2;
}
