// Envelopes larger than a frame: split into fragments and reassembled, with every malformed
// sequence refused and the receiver's buffer bounded by bytes actually received.
#include "net/fragment.h"

#include <gtest/gtest.h>

#include "net/frame.h"

namespace tributary::net {
namespace {

v1::Envelope Big(size_t bytes, char fill = 'x') {
  v1::Envelope e = MakeEnvelope("job");
  e.mutable_opening()->set_challenge_id(7);
  e.mutable_opening()->set_state(std::string(bytes, fill));
  e.set_signature(std::string(64, 's'));
  return e;
}

TEST(Fragment, SplitsInOrderAndReassemblesTheSignedEnvelopeExactly) {
  const v1::Envelope e = Big(10'000);
  const auto pieces = FragmentEnvelope(e, 3, 1024);
  ASSERT_EQ(pieces.size(), (e.ByteSizeLong() + 1023) / 1024);
  Reassembler r(1 << 20);
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_EQ(pieces[i].job_id(), "job");
    EXPECT_EQ(pieces[i].fragment().index(), i);
    EXPECT_LE(pieces[i].fragment().data().size(), 1024u);
    auto got = r.Add(pieces[i].fragment());
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->has_value(), i + 1 == pieces.size());
    if (got->has_value()) {
      EXPECT_EQ((*got)->SerializeAsString(), e.SerializeAsString()) << "the signature travels with it";
    }
  }
  EXPECT_EQ(r.buffered_bytes(), 0u);
}

TEST(Fragment, TwoMessagesInterleaveByIdAndOtherTrafficPasses) {
  const v1::Envelope a = Big(5'000, 'a'), b = Big(3'000, 'b');
  const auto pa = FragmentEnvelope(a, 1, 1000), pb = FragmentEnvelope(b, 2, 1000);
  Reassembler r(1 << 20);
  std::vector<v1::Envelope> done;
  for (size_t i = 0; i < std::max(pa.size(), pb.size()); ++i) {
    for (const auto* p : {&pa, &pb}) {
      if (i >= p->size()) continue;
      auto got = r.Add((*p)[i].fragment());
      ASSERT_TRUE(got.ok());
      if (*got) done.push_back(**got);
    }
  }
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].opening().state(), b.opening().state());
  EXPECT_EQ(done[1].opening().state(), a.opening().state());
}

TEST(Fragment, MalformedSequencesAreProtocolErrorsAndFreeTheirBytes) {
  const auto pieces = FragmentEnvelope(Big(4'000), 9, 1000);
  ASSERT_GE(pieces.size(), 4u);
  auto expect_refused = [](Result<std::optional<v1::Envelope>> r, const std::string& says) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kProtocolError);
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().ToString();
  };
  {
    Reassembler r;
    expect_refused(r.Add(pieces[1].fragment()), "starts at fragment 1");
  }
  {
    Reassembler r;
    ASSERT_TRUE(r.Add(pieces[0].fragment()).ok());
    expect_refused(r.Add(pieces[2].fragment()), "fragment 2 arrived where 1 was due");
    EXPECT_EQ(r.buffered_bytes(), 0u);
    ASSERT_TRUE(r.Add(pieces[0].fragment()).ok()) << "the message may start over";
  }
  {
    Reassembler r;
    ASSERT_TRUE(r.Add(pieces[0].fragment()).ok());
    v1::Fragment other_count = pieces[1].fragment();
    other_count.set_count(other_count.count() + 1);
    expect_refused(r.Add(other_count), "count changed");
  }
  {
    Reassembler r;
    v1::Fragment zero = pieces[0].fragment();
    zero.set_count(0);
    expect_refused(r.Add(zero), "fragment 0 of 0");
  }
  {
    Reassembler r(2'500);  // the bound counts what arrived, whatever the count declares
    ASSERT_TRUE(r.Add(pieces[0].fragment()).ok());
    ASSERT_TRUE(r.Add(pieces[1].fragment()).ok());
    expect_refused(r.Add(pieces[2].fragment()), "bound");
    EXPECT_EQ(r.buffered_bytes(), 0u);
  }
  {
    Reassembler r;
    v1::Fragment garbage;
    garbage.set_message_id(1);
    garbage.set_count(1);
    garbage.set_data("\xff\xff\xff\xff not an envelope");
    expect_refused(r.Add(garbage), "does not parse");
    v1::Envelope nested = MakeEnvelope("job");
    *nested.mutable_fragment() = pieces[0].fragment();
    v1::Fragment outer;
    outer.set_message_id(2);
    outer.set_count(1);
    outer.set_data(nested.SerializeAsString());
    expect_refused(r.Add(outer), "inside a fragment");
  }
}

}  // namespace
}  // namespace tributary::net
