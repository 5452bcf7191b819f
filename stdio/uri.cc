#include "stdio/uri.h"

#include <map>

namespace runhcs::stdio {

namespace {

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; `plus_is_space` only in a query, as Go's url package does
// (a '+' in a path is a '+').
std::string Unescape(const std::string& s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && Hex(s[i + 1]) >= 0 && Hex(s[i + 2]) >= 0) {
      out += static_cast<char>(Hex(s[i + 1]) * 16 + Hex(s[i + 2]));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

StatusOr<Target> ParseTarget(const std::string& uri) {
  Target t;
  if (uri.empty()) return t;
  size_t scheme_end = uri.find("://");
  std::string scheme = scheme_end == std::string::npos ? "" : uri.substr(0, scheme_end);
  std::string rest = scheme_end == std::string::npos ? uri : uri.substr(scheme_end + 3);
  std::string query;
  if (size_t q = rest.find('?'); q != std::string::npos && !scheme.empty()) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (scheme.empty() || scheme == "fifo") {
    t.kind = Target::kFifo;
  } else if (scheme == "file") {
    t.kind = Target::kFile;
  } else if (scheme == "binary") {
    t.kind = Target::kBinary;
  } else {
    return InvalidArgumentError("unsupported stdio scheme {:?} in {:?}", scheme, uri);
  }
  t.path = scheme.empty() ? rest : Unescape(rest, /*plus_is_space=*/false);
  if (t.path.empty() || t.path[0] != '/') {
    return InvalidArgumentError("stdio target {:?} is not an absolute path", uri);
  }
  // Keys in sorted order, like Go's url.Values iteration in runc-v2.
  std::map<std::string, std::string> kv;
  size_t pos = 0;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    std::string part = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    pos = amp == std::string::npos ? query.size() : amp + 1;
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string k = Unescape(part.substr(0, eq), /*plus_is_space=*/true);
    std::string v =
        eq == std::string::npos ? "" : Unescape(part.substr(eq + 1), /*plus_is_space=*/true);
    kv.emplace(k, v);  // first value wins
  }
  for (auto& [k, v] : kv) {
    t.args.push_back(k);
    if (!v.empty()) t.args.push_back(v);
  }
  return t;
}

}  // namespace runhcs::stdio
