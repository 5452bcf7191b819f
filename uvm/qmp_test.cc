// QmpClient against a scripted QEMU on the other end of a socketpair.
#include "uvm/qmp.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "base/io.h"

namespace runhcs::uvm {
namespace {

constexpr char kGreeting[] =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})"
    "\n";

// The QEMU side: reads one command line per entry of `answers` and writes
// the answer (which may hold several lines: events first).
struct FakeQemu {
  UniqueFd host, qemu;
  std::vector<std::string> commands;
  std::thread t;

  explicit FakeQemu(std::vector<std::string> answers, bool greet = true) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host.reset(sv[0]);
    qemu.reset(sv[1]);
    t = std::thread([this, answers, greet] {
      if (greet) (void)WriteAll(qemu.get(), kGreeting);
      std::string buf;
      for (const auto& a : answers) {
        size_t nl;
        while ((nl = buf.find('\n')) == std::string::npos) {
          char c[512];
          ssize_t n = ::read(qemu.get(), c, sizeof c);
          if (n <= 0) return;
          buf.append(c, static_cast<size_t>(n));
        }
        commands.push_back(buf.substr(0, nl));
        buf.erase(0, nl + 1);
        (void)WriteAll(qemu.get(), a);
      }
    });
  }
  ~FakeQemu() {
    ::shutdown(qemu.get(), SHUT_RDWR);  // a read still waiting returns
    if (t.joinable()) t.join();
  }
  void Join() { t.join(); }
};

auto Soon() { return QmpClient::Clock::now() + std::chrono::seconds(5); }

TEST(QmpClient, NegotiatesThenRunsCommandsSkippingEvents) {
  FakeQemu q(
      {"{\"return\": {}}\n",
       "{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {\"status\": \"running\"}}\n"});
  auto c = QmpClient::Handshake(std::move(q.host), Soon());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = c->Execute("query-status");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["status"], "running");
  q.Join();
  ASSERT_EQ(q.commands.size(), 2u);
  EXPECT_EQ(q.commands[0], R"({"execute":"qmp_capabilities"})");
  EXPECT_EQ(q.commands[1], R"({"execute":"query-status"})");
}

// Events that came with a command's answer wait for WaitEvent; it takes the
// first that matches, skips the rest, and reads on for one still to come.
TEST(QmpClient, WaitEventFindsKeptAndLaterEventsByNameAndData) {
  FakeQemu q({"{\"return\": {}}\n",
              "{\"event\": \"VSERPORT_CHANGE\", \"data\": {\"id\": \"other\", \"open\": false}}\n"
              "{\"event\": \"VSERPORT_CHANGE\", \"data\": {\"id\": \"port\", \"open\": false}, "
              "\"timestamp\": {\"seconds\": 1796299068, \"microseconds\": 714279}}\n"
              "{\"return\": {}}\n"});
  auto c = QmpClient::Handshake(std::move(q.host), Soon());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->Execute("stop").ok());
  q.Join();
  auto port = [](bool open) {
    return [open](const nlohmann::json& e) {
      return e["data"].value("id", "") == "port" && e["data"]["open"] == open;
    };
  };
  auto closed = c->WaitEvent("VSERPORT_CHANGE", port(false), Soon());
  ASSERT_TRUE(closed.ok()) << closed.status().ToString();
  EXPECT_EQ((*closed)["data"]["id"], "port");
  EXPECT_EQ(QmpClient::EventTimeUs(*closed), 1796299068714279);
  // Taken: not found twice.
  auto again = c->WaitEvent("VSERPORT_CHANGE", port(false),
                            QmpClient::Clock::now() + std::chrono::milliseconds(50));
  EXPECT_EQ(again.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(again.status().message().find("VSERPORT_CHANGE"), std::string::npos);
  // One that comes later, after one that does not match.
  ASSERT_TRUE(
      WriteAll(q.qemu.get(),
               "{\"event\": \"RESUME\"}\n"
               "{\"event\": \"VSERPORT_CHANGE\", \"data\": {\"id\": \"port\", \"open\": true}}\n")
          .ok());
  auto opened = c->WaitEvent("VSERPORT_CHANGE", port(true), Soon());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)["data"]["open"], true);
  EXPECT_EQ(QmpClient::EventTimeUs(*opened), 0);  // no timestamp
  // Any RESUME (kept while reading on).
  EXPECT_TRUE(c->WaitEvent("RESUME", nullptr, Soon()).ok());
  ::shutdown(q.qemu.get(), SHUT_RDWR);
  EXPECT_EQ(c->WaitEvent("STOP", nullptr, Soon()).status().code(), Code::kUnavailable);
}

TEST(QmpClient, SendsArgumentsAndReportsQemusErrorAsFailedPrecondition) {
  FakeQemu q({"{\"return\": {}}\n",
              "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Bus 'rp9' not found\"}}\n"});
  auto c = QmpClient::Handshake(std::move(q.host), Soon());
  ASSERT_TRUE(c.ok());
  auto r = c->Execute("device_add", {{"driver", "virtio-net-pci"}, {"bus", "rp9"}});
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("Bus 'rp9' not found"), std::string::npos);
  q.Join();
  EXPECT_EQ(q.commands[1],
            R"({"arguments":{"bus":"rp9","driver":"virtio-net-pci"},"execute":"device_add"})");
}

TEST(QmpClient, NoGreetingIsFailedPreconditionAndGarbageIsInternal) {
  {
    FakeQemu q({}, /*greet=*/false);
    (void)WriteAll(q.qemu.get(), "{\"return\": {}}\n");
    EXPECT_EQ(QmpClient::Handshake(std::move(q.host), Soon()).status().code(),
              Code::kFailedPrecondition);
  }
  {
    FakeQemu q({"not json\n"});
    EXPECT_EQ(QmpClient::Handshake(std::move(q.host), Soon()).status().code(), Code::kInternal);
  }
}

TEST(QmpClient, SilenceIsDeadlineExceededAndAClosedSocketUnavailable) {
  FakeQemu q({"{\"return\": {}}\n"});
  auto c = QmpClient::Handshake(std::move(q.host), Soon());
  ASSERT_TRUE(c.ok());
  auto t0 = QmpClient::Clock::now();
  auto r = c->Execute("stop", nullptr, t0 + std::chrono::milliseconds(100));
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_LT(QmpClient::Clock::now() - t0, std::chrono::seconds(2));
  q.Join();  // the fake has answered all it was scripted to
  q.qemu.reset();
  EXPECT_EQ(c->Execute("cont").status().code(), Code::kUnavailable);
}

TEST(QmpClient, ConnectGivesUpAtTheDeadlineWhenNobodyListens) {
  auto r = QmpClient::Connect("/nonexistent/qmp.sock",
                              QmpClient::Clock::now() + std::chrono::milliseconds(50));
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace runhcs::uvm
