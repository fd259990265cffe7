/*
** tls.h — TLS for luacomm on OpenSSL: contexts built from a Lua `tls`
** options table (CONTRACT §8), and the per-connection TLS state that
** conn.c and listener.c drive.
**
** Two layers:
**  - The context builder (lc_tls_ctx_new, lc_tls_client_setup,
**    lc_tls_reason) knows nothing about connections, so any transport
**    can use it (evhttp + bufferevent_openssl too). This API is stable.
**  - lc_tls: one TLS session on a non-blocking socket, read and written
**    by conn.c in place of readv/sendmsg, with its handshake driven by
**    its own events before the connection is handed to Lua.
*/
#ifndef LC_TLS_H
#define LC_TLS_H

#include <openssl/ssl.h>

#include "lc.h"
#include "tlsmod.h"

/* Inside the module the core's functions are reached through the table
** the core published (tlsmod.h): this shared object links against
** neither the host nor core.so. Set by luaopen_luacomm_tls. */
extern const lc_core_api *lc_core;
#define lc_getctx(L) (lc_core->getctx(L))
#define lc_logf (lc_core->logf)
#define lc_module_state(c, slot, size, fini) (lc_core->module_state((c), (slot), (size), (fini)))
#define lc_now() (lc_core->now())
#define lc_timeval(s) (lc_core->timeval(s))
#define lc_push_addrstring(L, sa, len) (lc_core->push_addrstring((L), (sa), (len)))

/* ---- contexts (stable API) ----
**
** For another transport, e.g. a client on bufferevent_openssl:
**   SSL_CTX *ctx = lc_tls_ctx_new(L, idx, 0, err, sizeof err);  // NULL: err
**   SSL *ssl = SSL_new(ctx);
**   SSL_CTX_free(ctx);                                           // ssl keeps it
**   if (lc_tls_client_setup(ssl, lc_tls_server_name(L, idx, host), err, sizeof err) != 0) ...
**   bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
**                                        BEV_OPT_CLOSE_ON_FREE);
**   ... and on a failed handshake, lc_tls_reason(ssl, 0, buf, sizeof buf).
** The context enables partial writes from a moving buffer, releases idle
** record buffers and reads an EOF without close_notify as an end of
** stream; it leaves read-ahead off (bufferevent_openssl relies on
** SSL_pending). */

/* Builds an SSL_CTX from the tls options table at opts_idx:
**   cert, key  PEM files (certificate chain, private key); required when
**              server is 1; on a client, sent when the server asks.
**   ca         PEM file (or directory) to verify peers against; default
**              the system's store.
**   verify     client: check the server's certificate and name (default
**              true; false logs a warning). server: require and check a
**              client certificate (mutual TLS; default false).
**   server_name, handshake_timeout: read by the callers, not here.
** TLS 1.2 is the minimum. Returns the context (the caller owns it), or
** NULL with a message "tls: ..." naming the bad file in err. Raises on
** misuse (a field of the wrong type), like every option in luacomm. */
SSL_CTX *lc_tls_ctx_new(lua_State *L, int opts_idx, int server, char *err, size_t errlen);

/* Prepares a client SSL made from such a context: SNI for a DNS name,
** and, when the context verifies peers, the check that the certificate
** names server_name (an IP literal must be in its IP SANs). Returns 0,
** or -1 with a message in err. */
int lc_tls_client_setup(SSL *ssl, const char *server_name, char *err, size_t errlen);

/* The server name to check for opts.tls at opts_idx: tls.server_name if
** set, else host (the host part of the address being connected to); or,
** when tls.verify_name is false, lc_tls_any_name: the certificate chain is
** verified but no name in it (the caller checks names itself, as a node
** checks that the certificate names the node it claims to be). */
extern const char lc_tls_any_name[];
const char *lc_tls_server_name(lua_State *L, int opts_idx, const char *host);

/* Why a handshake or I/O call on ssl failed (ret is what it returned), as
** "tls: <reason>" in buf: a certificate verification result when there is
** one, else OpenSSL's first queued error, else the system error. Clears
** OpenSSL's error queue. Returns buf. */
const char *lc_tls_reason(SSL *ssl, int ret, char *buf, size_t len);

/* ---- sessions on connections ---- */

/* lc_tls (tlsmod.h) is one session; its lc_tls_done_fn is called once
** when a handshake ends: err is NULL on success, else the reason
** ("tls: ..."); t stays alive, the callee owns it. */

/* A session on fd (which the caller keeps owning) made from ctx (which
** stays the caller's; the session holds its own reference). A client
** session checks server_name as lc_tls_client_setup says. NULL with err
** filled when OpenSSL cannot make it. */
lc_tls *lc_tls_new(lc_ctx *c, SSL_CTX *ctx, evutil_socket_t fd, int server, const char *server_name, char *err,
                   size_t errlen);

/* Starts the handshake on the session's own events (once: later calls do
** nothing); done runs from the loop when it ends or when timeout seconds
** (if > 0) pass. */
void lc_tls_start(lc_tls *t, double timeout, lc_tls_done_fn done, void *arg);

/* The handshake finished well: I/O may begin. */
int lc_tls_ready(const lc_tls *t);

/* Why the handshake failed ("tls: ..."), or NULL when it did not. */
const char *lc_tls_failure(const lc_tls *t);

/* Frees the session and its events, never the fd. With notify, and a
** finished handshake, a close_notify alert is sent first (best effort). */
void lc_tls_free(lc_tls *t, int notify);

/* Decrypted input into buf, until len bytes or the socket has no more
** (the 1-byte test knob passes len 1). Returns bytes read; 0 at the
** peer's end of stream; -1 with errno (EAGAIN when nothing is there yet). */
ssize_t lc_tls_read(lc_tls *t, char *buf, size_t len);

/* Encrypts and sends the head of out, draining what was sent; at most cap
** bytes. Returns bytes sent, or -1 with errno (EAGAIN: try again when
** writable). */
ssize_t lc_tls_write(lc_tls *t, struct evbuffer *out, size_t cap);

/* Decrypted bytes OpenSSL holds that no readiness event will announce:
** the reader must be run again by hand while this is non-zero. */
int lc_tls_pending(const lc_tls *t);

/* Pushes conn:tls()'s table: version, cipher, peer (subject CN or nil),
** peer_names (the certificate's DNS names), verified. */
int lc_tls_push_info(lua_State *L, const lc_tls *t);

/* ---- accepting ---- */

/* lc_tls_server (tlsmod.h): a listener's TLS, a context plus the
** handshakes it has under way. */

/* Reads opts.tls at opts_idx (a listen options table) into a server, or
** returns NULL: with err empty when there is no tls option, else with the
** reason. Raises on misuse. */
lc_tls_server *lc_tls_server_new(lua_State *L, int opts_idx, char *err, size_t errlen);

/* Takes fd (just accepted, now owned here) through a server handshake.
** A success lands in the server's ready list (lc_tls_server_pop); a
** failure is logged, counted in tls_failures and closed here. Either way
** notify(arg) runs afterwards, from the loop. */
void lc_tls_accept(lc_tls_server *srv, lc_ctx *c, evutil_socket_t fd, lc_tls_notify_fn notify, void *arg);

/* The oldest session whose handshake succeeded, with its fd (both owned by
** the caller from then on), or NULL. */
lc_tls *lc_tls_server_pop(lc_tls_server *srv, evutil_socket_t *fd);

/* Sessions waiting in the ready list. */
int lc_tls_server_ready(const lc_tls_server *srv);

/* Handshakes under way (the listener pauses accepting past its queue). */
int lc_tls_server_inflight(const lc_tls_server *srv);

/* Cancels the handshakes under way (closing their sockets) and frees. */
void lc_tls_server_free(lc_tls_server *srv);

/* ---- HTTPS (tls_http.c) and the module (tls_mod.c) ---- */

SSL_CTX *lc_tls_https_server_ctx(lua_State *L, int opts_idx, lc_ctx *c, char *err, size_t errlen);
struct bufferevent *lc_tls_https_server_bev(struct event_base *base, SSL_CTX *ctx);
struct bufferevent *lc_tls_https_client_bev(lua_State *L, struct event_base *base, int tls_idx, const char *name,
                                            SSL **ssl, char *err, size_t errlen);
int lc_tls_https_finished(const SSL *ssl);
const char *lc_tls_https_reason(SSL *ssl, char *buf, size_t len);
int lc_crypto_hmac_sha256(lua_State *L);
int lc_crypto_random_bytes(lua_State *L);
int lc_crypto_equal_consttime(lua_State *L);
int luaopen_luacomm_tls(lua_State *L);

#endif
