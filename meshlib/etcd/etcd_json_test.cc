#include "meshlib/etcd/internal/etcd_json.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "meshlib/etcd/etcd_client.h"
#include "gtest/gtest.h"

namespace meshlib::etcd_internal {
namespace {

using json = nlohmann::json;

TEST(EtcdJsonTest, RangeResponseAsTheGatewayWritesIt) {
  // Copied from etcd 3.4's gateway output: int64s as strings, base64 bytes.
  json j = json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709",
          "revision":"2","raft_term":"2"},
          "kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1",
                  "value":"YmFy","lease":"7587862072907767821"}],"count":"1"})");
  auto r = ParseRangeResponse(j);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->revision, 2);
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].key, "foo");
  EXPECT_EQ(r->kvs[0].value, "bar");
  EXPECT_EQ(r->kvs[0].lease, 7587862072907767821);
  // An empty range: no "kvs" at all.
  r = ParseRangeResponse(json::parse(R"({"header":{"revision":"7"}})"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->kvs.empty());
  EXPECT_EQ(r->revision, 7);
}

TEST(EtcdJsonTest, BadShapesNameTheField) {
  auto expect = [](const char* text, const char* part) {
    auto r = ParseRangeResponse(json::parse(text));
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_TRUE(absl::StrContains(r.status().message(), part)) << r.status() << " / " << part;
  };
  expect(R"([])", "expected an object");
  expect(R"({})", "\"header\": missing");
  expect(R"({"header":{"revision":"x"}})", "\"revision\": expected an int64");
  expect(R"({"header":{"revision":"99999999999999999999"}})", "expected an int64");
  expect(R"({"header":{"revision":1.5}})", "expected an int64");
  expect(R"({"header":{"revision":"3"},"kvs":{}})", "\"kvs\": expected a list");
  expect(R"({"header":{"revision":"3"},"kvs":[{"value":"YQ=="}]})", "\"key\": missing");
  expect(R"({"header":{"revision":"3"},"kvs":[{"key":"!!"}]})", "not valid base64");
  expect(R"({"header":{"revision":"3"},"kvs":[{"key":"YQ==","version":[]}]})", "\"version\"");
}

TEST(EtcdJsonTest, WatchResponses) {
  auto w = ParseWatchResponse(json::parse(
      R"({"header":{"revision":"4"},"events":[{"kv":{"key":"YQ==","mod_revision":"3","value":"Yg=="}},
          {"type":"DELETE","kv":{"key":"Yw==","mod_revision":"4"}}]})"));
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->events.size(), 2u);
  EXPECT_EQ(w->events[0].type, etcd::WatchEvent::Type::kPut);  // PUT is left out
  EXPECT_EQ(w->events[0].kv.value, "b");
  EXPECT_EQ(w->events[1].type, etcd::WatchEvent::Type::kDelete);
  EXPECT_EQ(w->events[1].kv.mod_revision, 4);

  w = ParseWatchResponse(
      json::parse(R"({"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"})"));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->canceled);
  EXPECT_EQ(w->compact_revision, 4);
  EXPECT_EQ(w->revision, 0);

  w = ParseWatchResponse(json::parse(R"({"compactRevision":"9","created":true})"));
  ASSERT_TRUE(w.ok()) << w.status();  // lowerCamelCase names are read too
  EXPECT_EQ(w->compact_revision, 9);
  EXPECT_TRUE(w->created);

  EXPECT_FALSE(ParseWatchResponse(json::parse(R"({"created":"yes"})")).ok());
  EXPECT_FALSE(ParseWatchResponse(json::parse(R"({"events":[{"type":"EXPLODE","kv":{}}]})")).ok());
  EXPECT_FALSE(ParseWatchResponse(json::parse(R"({"events":[{"type":"PUT"}]})")).ok());
  EXPECT_FALSE(ParseWatchResponse(json::parse(R"({"events":"none"})")).ok());
}

TEST(EtcdJsonTest, ErrorBodies) {
  json unary = json::parse(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  absl::Status st = ErrorFromBody(404, &unary, unary.dump());
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "HTTP 404: etcdserver: requested lease not found");

  json stream = json::parse(
      R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}})");
  st = ErrorFromBody(200, &stream, stream.dump());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "etcdserver: no leader");

  st = ErrorFromBody(500, nullptr, "<html>oops</html>");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "HTTP 500: <html>oops</html>");
  st = ErrorFromBody(400, nullptr, "");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  json fine = json::parse(R"({"header":{}})");
  EXPECT_TRUE(ErrorFromBody(200, &fine, "").ok());
}

TEST(EtcdJsonTest, StreamSplitterFindsObjectsAcrossPieces) {
  const std::string stream =
      "{\"result\":{\"a\":\"}{\\\"\"}}\n{\"result\":{\"b\":[1,{\"c\":2}]}}\n  {\"x\":1}";
  for (size_t step : {1, 2, 5, 1000}) {
    JsonStreamSplitter s(1024);
    std::vector<std::string> out;
    for (size_t i = 0; i < stream.size(); i += step) {
      ASSERT_TRUE(s.Append(absl::string_view(stream).substr(i, step), &out).ok());
    }
    ASSERT_EQ(out.size(), 3u) << step;
    EXPECT_EQ(out[0], "{\"result\":{\"a\":\"}{\\\"\"}}");
    EXPECT_EQ(out[1], "{\"result\":{\"b\":[1,{\"c\":2}]}}");
    EXPECT_EQ(out[2], "{\"x\":1}");
    EXPECT_EQ(s.buffered(), 0u);
  }
}

TEST(EtcdJsonTest, StreamSplitterRejectsGarbageAndHugeMessages) {
  JsonStreamSplitter s(1024);
  std::vector<std::string> out;
  EXPECT_TRUE(s.Append("{\"a\":1}", &out).ok());
  absl::Status st = s.Append("x{}", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "between JSON messages")) << st;
  EXPECT_EQ(s.Append("{}", &out), st);  // sticks
  EXPECT_EQ(out.size(), 1u);

  JsonStreamSplitter small(16);
  st = small.Append("{\"a\":\"" + std::string(20, 'x'), &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  JsonStreamSplitter small2(16);
  st = small2.Append("{\"a\":\"" + std::string(20, 'x') + "\"}", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;

  JsonStreamSplitter mismatched(1024);
  st = mismatched.Append("{\"a\":[1}]", &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "\"}\" closes a \"[\"")) << st;

  JsonStreamSplitter deep(1 << 20);
  st = deep.Append(std::string(100, '['), &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);  // starts with '[' : not an object
  JsonStreamSplitter deep2(1 << 20);
  st = deep2.Append("{" + std::string(100, '['), &out);
  EXPECT_TRUE(absl::StrContains(st.message(), "nested deeper")) << st;
}

TEST(EtcdJsonTest, Int64AsStringOrNumber) {
  json j = json::parse(R"({"a":"-5","b":7,"c":"","d":"1e3","e":18446744073709551615,"f":null})");
  EXPECT_EQ(Int64Field(j, "a").value(), -5);
  EXPECT_EQ(Int64Field(j, "b").value(), 7);
  EXPECT_FALSE(Int64Field(j, "c").ok());
  EXPECT_FALSE(Int64Field(j, "d").ok());
  EXPECT_FALSE(Int64Field(j, "e").ok());
  EXPECT_EQ(Int64Field(j, "f").value(), 0);
  EXPECT_EQ(Int64Field(j, "missing").value(), 0);
  EXPECT_EQ(Base64("foo"), "Zm9v");
}

TEST(EtcdJsonTest, PrefixRangeEnd) {
  EXPECT_EQ(etcd::PrefixRangeEnd("/a/"), "/a0");
  EXPECT_EQ(etcd::PrefixRangeEnd("a\xff"), "b");
  EXPECT_EQ(etcd::PrefixRangeEnd("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(etcd::PrefixRangeEnd(""), std::string(1, '\0'));
}

}  // namespace
}  // namespace meshlib::etcd_internal
