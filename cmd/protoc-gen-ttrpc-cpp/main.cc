// protoc-gen-ttrpc-cpp: generates typed C++ TTRPC stubs for every service of
// a .proto file, as protoc-gen-go-ttrpc does for Go.
//
// For `service Foo` in package a.b it writes <file>.ttrpc.h/.cc holding, in
// namespace a::b:
//  - FooServer: one virtual method per RPC. A method that is not overridden
//    answers Unimplemented. A plain method returns a Status and fills the
//    response (it runs on a server worker); a method named in an `async`
//    parameter instead gets a ttrpc::TypedResponder and answers later, from
//    any thread (it runs on the connection's reader and must return at once).
//  - RegisterFooServer(server, impl): registers every RPC of `impl`.
//  - FooClient: one method per RPC over a ttrpc::Client, with per-client
//    default CallOptions and a per-call override; and for each, an ...Async
//    form that returns at once and calls `done(status, response)` when the
//    answer comes (ttrpc::Client::CallAsync says on which thread).
//
// Parameters (comma-separated): async=<package>.<Service>.<Method>, any
// number of times. An async name that matches no RPC is an error, so a typo
// fails the build instead of silently registering a plain handler.
//
// Streaming RPCs are refused: the project's TTRPC speaks unary calls only.
#include <google/protobuf/compiler/code_generator.h>
#include <google/protobuf/compiler/plugin.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/printer.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace pb = google::protobuf;

std::string StripProto(const std::string& name) {
  const std::string ext = ".proto";
  if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
    return name.substr(0, name.size() - ext.size());
  }
  return name;
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string Namespace(const pb::FileDescriptor* file) {
  return Replace(file->package(), ".", "::");
}

// The C++ name protoc's C++ generator gives a message: nested types joined
// by '_', qualified from the global namespace.
std::string ClassName(const pb::Descriptor* d) {
  std::string name = d->name();
  for (const pb::Descriptor* outer = d->containing_type(); outer;
       outer = outer->containing_type()) {
    name = outer->name() + "_" + name;
  }
  std::string ns = Namespace(d->file());
  return ns.empty() ? "::" + name : "::" + ns + "::" + name;
}

// The printer variables of one RPC: its service, name, full name and the
// C++ types of its request and response.
std::map<std::string, std::string> MethodVars(const pb::MethodDescriptor* m) {
  return {{"svc", m->service()->name()},
          {"name", m->name()},
          {"full", m->full_name()},
          {"in", ClassName(m->input_type())},
          {"out", ClassName(m->output_type())}};
}

class Generator : public pb::compiler::CodeGenerator {
 public:
  bool Generate(const pb::FileDescriptor* file, const std::string& parameter,
                pb::compiler::GeneratorContext* ctx, std::string* error) const override {
    if (file->service_count() == 0) return true;
    std::vector<std::pair<std::string, std::string>> options;
    pb::compiler::ParseGeneratorParameter(parameter, &options);
    std::set<std::string> async;
    for (const auto& [k, v] : options) {
      if (k != "async") {
        *error = "unknown parameter '" + k + "'";
        return false;
      }
      async.insert(v);
    }
    for (int i = 0; i < file->service_count(); ++i) {
      const pb::ServiceDescriptor* s = file->service(i);
      for (int j = 0; j < s->method_count(); ++j) {
        const pb::MethodDescriptor* m = s->method(j);
        if (m->client_streaming() || m->server_streaming()) {
          *error = m->full_name() + ": streaming RPCs are not supported";
          return false;
        }
      }
    }
    // "pkg.Service.Method": a name whose service is in this file must name
    // one of its methods; other files' names are theirs to match.
    for (const auto& a : async) {
      size_t dot = a.rfind('.');
      const pb::ServiceDescriptor* s =
          dot == std::string::npos ? nullptr : file->pool()->FindServiceByName(a.substr(0, dot));
      if (s && s->file() == file && !s->FindMethodByName(a.substr(dot + 1))) {
        *error = "async=" + a + " names no RPC of " + file->name();
        return false;
      }
    }
    const std::string base = StripProto(file->name());
    WriteHeader(file, base, async, ctx);
    WriteSource(file, base, async, ctx);
    return true;
  }

 private:
  static void WriteHeader(const pb::FileDescriptor* file, const std::string& base,
                          const std::set<std::string>& async, pb::compiler::GeneratorContext* ctx) {
    std::unique_ptr<pb::io::ZeroCopyOutputStream> out(ctx->Open(base + ".ttrpc.h"));
    pb::io::Printer p(out.get(), '$');
    p.Print("// Generated from $file$ by protoc-gen-ttrpc-cpp. Do not edit.\n", "file",
            file->name());
    p.Print("#pragma once\n\n#include <string_view>\n\n");
    std::set<std::string> includes = {base + ".pb.h"};
    for (int i = 0; i < file->service_count(); ++i) {
      const pb::ServiceDescriptor* s = file->service(i);
      for (int j = 0; j < s->method_count(); ++j) {
        includes.insert(StripProto(s->method(j)->input_type()->file()->name()) + ".pb.h");
        includes.insert(StripProto(s->method(j)->output_type()->file()->name()) + ".pb.h");
      }
    }
    for (const auto& inc : includes) p.Print("#include \"$inc$\"\n", "inc", inc);
    p.Print(
        "#include <functional>\n#include <string>\n\n#include \"ttrpc/client.h\"\n#include "
        "\"ttrpc/server.h\"\n\n");
    p.Print("namespace $ns$ {\n\n", "ns", Namespace(file));
    for (int i = 0; i < file->service_count(); ++i) {
      const pb::ServiceDescriptor* s = file->service(i);
      std::map<std::string, std::string> vars = {{"svc", s->name()}, {"full", s->full_name()}};
      p.Print(vars,
              "// Server side of $full$. Override the RPCs served; the others answer\n"
              "// Unimplemented.\n"
              "class $svc$Server {\n"
              " public:\n"
              "  static constexpr std::string_view kServiceName = \"$full$\";\n"
              "  virtual ~$svc$Server() = default;\n\n");
      for (int j = 0; j < s->method_count(); ++j) {
        const pb::MethodDescriptor* m = s->method(j);
        std::map<std::string, std::string> mv = MethodVars(m);
        if (async.count(m->full_name())) {
          p.Print(
              mv,
              "  // Async: runs on the connection's reader, must return at once and\n"
              "  // answer through `responder` (from any thread).\n"
              "  virtual void $name$(const ::runhcs::ttrpc::CallContext& ctx, const $in$& req,\n"
              "                      ::runhcs::ttrpc::TypedResponder<$out$> responder);\n");
        } else {
          p.Print(mv,
                  "  virtual ::runhcs::Status $name$(const ::runhcs::ttrpc::CallContext& ctx, "
                  "const $in$& req,\n"
                  "                                  $out$* resp);\n");
        }
      }
      p.Print(vars,
              "};\n\n"
              "// Registers every RPC of $full$ on `server`, served by `impl`, which\n"
              "// must outlive the server.\n"
              "void Register$svc$Server(::runhcs::ttrpc::Server* server, $svc$Server* impl);\n\n"
              "// Client side of $full$ over a connection it does not own.\n"
              "class $svc$Client {\n"
              " public:\n"
              "  static constexpr std::string_view kServiceName = \"$full$\";\n"
              "  explicit $svc$Client(::runhcs::ttrpc::Client* channel,\n"
              "                       ::runhcs::ttrpc::CallOptions defaults = {})\n"
              "      : channel_(channel), defaults_(std::move(defaults)) {}\n\n");
      for (int j = 0; j < s->method_count(); ++j) {
        const pb::MethodDescriptor* m = s->method(j);
        std::map<std::string, std::string> mv = MethodVars(m);
        p.Print(mv,
                "  ::runhcs::Status $name$(const $in$& req, $out$* resp) const {\n"
                "    return $name$(req, resp, defaults_);\n"
                "  }\n"
                "  ::runhcs::Status $name$(const $in$& req, $out$* resp,\n"
                "                          const ::runhcs::ttrpc::CallOptions& opts) const;\n"
                "  void $name$Async(const $in$& req,\n"
                "                   std::function<void(::runhcs::Status, $out$)> done) const {\n"
                "    $name$Async(req, std::move(done), defaults_);\n"
                "  }\n"
                "  void $name$Async(const $in$& req,\n"
                "                   std::function<void(::runhcs::Status, $out$)> done,\n"
                "                   const ::runhcs::ttrpc::CallOptions& opts) const;\n");
      }
      p.Print(
          "\n  ::runhcs::ttrpc::Client* channel() const { return channel_; }\n"
          "  const ::runhcs::ttrpc::CallOptions& defaults() const { return defaults_; }\n\n"
          " private:\n"
          "  ::runhcs::ttrpc::Client* channel_;\n"
          "  ::runhcs::ttrpc::CallOptions defaults_;\n"
          "};\n\n");
    }
    p.Print("}  // namespace $ns$\n", "ns", Namespace(file));
  }

  static void WriteSource(const pb::FileDescriptor* file, const std::string& base,
                          const std::set<std::string>& async, pb::compiler::GeneratorContext* ctx) {
    std::unique_ptr<pb::io::ZeroCopyOutputStream> out(ctx->Open(base + ".ttrpc.cc"));
    pb::io::Printer p(out.get(), '$');
    p.Print("// Generated from $file$ by protoc-gen-ttrpc-cpp. Do not edit.\n", "file",
            file->name());
    p.Print("#include \"$base$.ttrpc.h\"\n\n", "base", base);
    p.Print("namespace $ns$ {\n\n", "ns", Namespace(file));
    for (int i = 0; i < file->service_count(); ++i) {
      const pb::ServiceDescriptor* s = file->service(i);
      std::map<std::string, std::string> vars = {{"svc", s->name()}, {"full", s->full_name()}};
      for (int j = 0; j < s->method_count(); ++j) {
        const pb::MethodDescriptor* m = s->method(j);
        std::map<std::string, std::string> mv = MethodVars(m);
        if (async.count(m->full_name())) {
          p.Print(mv,
                  "void $svc$Server::$name$(const ::runhcs::ttrpc::CallContext&, const $in$&,\n"
                  "                         ::runhcs::ttrpc::TypedResponder<$out$> responder) {\n"
                  "  responder.Fail(::runhcs::NotImplementedError(\"method $name$ not "
                  "implemented\"));\n"
                  "}\n\n");
        } else {
          p.Print(mv,
                  "::runhcs::Status $svc$Server::$name$(const ::runhcs::ttrpc::CallContext&, "
                  "const $in$&, $out$*) {\n"
                  "  return ::runhcs::NotImplementedError(\"method $name$ not implemented\");\n"
                  "}\n\n");
        }
        p.Print(
            mv,
            "::runhcs::Status $svc$Client::$name$(const $in$& req, $out$* resp,\n"
            "                                     const ::runhcs::ttrpc::CallOptions& opts) "
            "const {\n"
            "  return channel_->Call(kServiceName, \"$name$\", req, resp, opts);\n"
            "}\n\n"
            "void $svc$Client::$name$Async(const $in$& req,\n"
            "                              std::function<void(::runhcs::Status, $out$)> done,\n"
            "                              const ::runhcs::ttrpc::CallOptions& opts) const {\n"
            "  channel_->CallAsync(\n"
            "      kServiceName, \"$name$\", req.SerializeAsString(),\n"
            "      [done = std::move(done)](::runhcs::Status st, std::string payload) {\n"
            "        $out$ resp;\n"
            "        if (st.ok() && !resp.ParseFromString(payload)) {\n"
            "          st = ::runhcs::InternalError(\"ttrpc: cannot decode $out$ from $name$\");\n"
            "        }\n"
            "        done(std::move(st), std::move(resp));\n"
            "      },\n"
            "      opts);\n"
            "}\n\n");
      }
      p.Print(vars,
              "void Register$svc$Server(::runhcs::ttrpc::Server* server, $svc$Server* impl) {\n"
              "  const std::string svc(\"$full$\");\n");
      for (int j = 0; j < s->method_count(); ++j) {
        const pb::MethodDescriptor* m = s->method(j);
        std::map<std::string, std::string> mv = MethodVars(m);
        if (async.count(m->full_name())) {
          p.Print(mv,
                  "  server->RegisterAsync<$in$, $out$>(\n"
                  "      svc, \"$name$\",\n"
                  "      [impl](const ::runhcs::ttrpc::CallContext& ctx, const $in$& req,\n"
                  "             ::runhcs::ttrpc::TypedResponder<$out$> r) {\n"
                  "        impl->$name$(ctx, req, std::move(r));\n"
                  "      });\n");
        } else {
          p.Print(mv,
                  "  server->Register<$in$, $out$>(\n"
                  "      svc, \"$name$\",\n"
                  "      [impl](const ::runhcs::ttrpc::CallContext& ctx, const $in$& req, $out$* "
                  "resp) {\n"
                  "        return impl->$name$(ctx, req, resp);\n"
                  "      });\n");
        }
      }
      p.Print("}\n\n");
    }
    p.Print("}  // namespace $ns$\n", "ns", Namespace(file));
  }
};

}  // namespace

int main(int argc, char** argv) {
  Generator gen;
  return google::protobuf::compiler::PluginMain(argc, argv, &gen);
}
