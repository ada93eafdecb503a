// ngtcp2's callbacks for one QUIC connection (user_data: the Connection;
// stream_user_data: the StreamSink of the stream), turned into calls on the
// connection and its streams.
#include <gnutls/crypto.h>

#include <algorithm>

#include "mech/quic/connection.h"
#include "mech/quic/quic.h"
#include "mech/quic/stream.h"

namespace hooker::quic {

static StreamSink* sink(void* sud) { return static_cast<StreamSink*>(sud); }
static Connection& self(void* ud) { return *static_cast<Connection*>(ud); }

int Connection::on_handshake_completed(ngtcp2_conn*, void* ud) {
  self(ud).open_pending();
  return 0;
}

int Connection::on_extend_streams(ngtcp2_conn*, uint64_t, void* ud) {
  self(ud).open_pending();
  return 0;
}

int Connection::on_stream_open(ngtcp2_conn* c, int64_t id, void* ud) {
  Connection& me = self(ud);
  if (ngtcp2_conn_is_local_stream(c, id)) return 0;
  auto in = std::make_unique<Incoming>(me.m_, me, id);
  ngtcp2_conn_set_stream_user_data(c, id, static_cast<StreamSink*>(in.get()));
  me.incoming_[id] = std::move(in);
  return 0;
}

int Connection::on_recv_stream_data(ngtcp2_conn* c, uint32_t flags, int64_t id, uint64_t offset,
                                    const uint8_t* data, size_t len, void* ud, void* sud) {
  Connection& me = self(ud);
  // Hookerd took the bytes in: the connection's credit grows at once, so
  // one stream whose application reads slowly holds up only itself.
  ngtcp2_conn_extend_max_offset(c, len);
  StreamSink* s = sink(sud);
  if (!s) return 0;  // retired: its read side is shut already
  s->on_data(offset, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
  auto it = me.incoming_.find(id);
  if (it != me.incoming_.end() && it->second.get() == s && it->second->header)
    me.m_.match(*it->second);  // may bind or drop it
  return 0;
}

int Connection::on_acked(ngtcp2_conn*, int64_t, uint64_t offset, uint64_t len, void*,
                         void* sud) {
  if (StreamSink* s = sink(sud)) s->on_acked(offset, len);
  return 0;
}

int Connection::on_stream_close(ngtcp2_conn* c, uint32_t flags, int64_t id, uint64_t code,
                                void* ud, void* sud) {
  Connection& me = self(ud);
  // The peer may open another in its place.
  if (!ngtcp2_conn_is_local_stream(c, id)) ngtcp2_conn_extend_max_streams_bidi(c, 1);
  // An error code: it ended by a reset (the peer's STOP_SENDING, say, on a
  // stream with nothing more to send), not by both FINs.
  bool reset = flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET;
  if (StreamSink* s = sink(sud)) s->on_closed(reset ? code : 0);
  auto it = me.incoming_.find(id);
  if (it != me.incoming_.end()) {
    me.dropped_.push_back(std::move(it->second));
    me.incoming_.erase(it);
  }
  return 0;
}

int Connection::on_stream_reset(ngtcp2_conn*, int64_t, uint64_t, uint64_t code, void*,
                                void* sud) {
  if (StreamSink* s = sink(sud)) s->on_reset(peer_reset_why(code));
  return 0;
}


int Connection::on_extend_stream_data(ngtcp2_conn*, int64_t, uint64_t, void*, void* sud) {
  if (StreamSink* s = sink(sud)) s->on_credit();
  return 0;
}

void Connection::on_rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

int Connection::on_new_cid(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len,
                           void* ud) {
  cid->datalen = len;
  if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, len) != 0 ||
      gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  self(ud).register_cid(*cid);
  return 0;
}

int Connection::on_remove_cid(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud) {
  Connection& me = self(ud);
  me.m_.remove_cid(*cid);
  auto& v = me.cids_;
  v.erase(std::remove_if(v.begin(), v.end(), [&](const ngtcp2_cid& c) { return ngtcp2_cid_eq(&c, cid); }),
          v.end());
  return 0;
}

}  // namespace hooker::quic
