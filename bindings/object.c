/*
** object.c — what every userdata type of the module shares, written once:
** the metatable (R3: methods, __index, __gc, __close, __tostring) and the
** life of a handle's userdata (R4-R6: a cheap type check, "closed" first,
** one owner pointer, one idempotent close).
**
** Two shapes of object use it. Tasks, timers and conds live inside their
** userdata. Connections, listeners and UDP sockets are malloc'ed handles
** that may outlive their userdata (a connection lingers to flush): Lua then
** holds an lc_hud, which points at the handle, and the handle points back
** through h->owner so that whichever side goes first detaches the other.
*/
#include "lc.h"

/* Default __tostring: "luacomm.cond (0x...)". */
static int plain_tostring (lua_State *L) {
  const lc_class *k = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushfstring(L, "%s (%p)", k->name, lua_touserdata(L, 1));
  return 1;
}

/* __tostring of a handle: "luacomm.conn (fd 7)" or "luacomm.conn (closed)". */
static int hud_tostring (lua_State *L) {
  const lc_class *k = lua_touserdata(L, lua_upvalueindex(1));
  lc_hud *u = lc_tohud(L, 1, k);
  if (u->h == NULL) lua_pushfstring(L, "%s (closed)", k->name);
  else lua_pushfstring(L, "%s (fd %d)", k->name, (int)k->fd(u->h));
  return 1;
}

/*
** Registers the metatable of class k: its methods as __index, k->close as
** __close and (unless k->gc is set) __gc, and __tostring; then k->funcs in
** the module table, with the context as upvalue. Stack on entry and exit:
** module table, ctx (as every lc_*_open gets it). The class must outlive
** the state (a static const).
*/
void lc_newclass (lua_State *L, const lc_class *k) {
  luaL_newmetatable(L, k->name); /* mt */
  lua_newtable(L);
  luaL_setfuncs(L, k->methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, k->close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, k->gc ? k->gc : k->close);
  lua_setfield(L, -2, "__gc");
  lua_pushlightuserdata(L, (void *)k); /* mt, k */
  if (k->tostring) lua_pushcfunction(L, k->tostring);
  else lua_pushcclosure(L, k->fd ? hud_tostring : plain_tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  if (k->funcs) {
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2); /* mod, ctx, mod, ctx */
    luaL_setfuncs(L, k->funcs, 1);
    lua_pop(L, 1);
  }
}

/* ---- handles seen from Lua ---- */

/* Pushes a new userdata of class k pointing at no handle yet: "closed"
** until lc_hud_attach (R5), so an error in between leaves nothing __gc
** could trip on. */
lc_hud *lc_newhud (lua_State *L, const lc_class *k) {
  lc_hud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->cls = k;
  u->h = NULL;
  u->user_closed = 0;
  luaL_setmetatable(L, k->name);
  return u;
}

/* Ties the userdata and the handle: each can now detach the other. */
void lc_hud_attach (lc_hud *u, lc_handle *h) {
  u->h = h;
  h->owner = &u->h;
}

/* close(), __close and __gc of every handle class (R6): idempotent. The
** handle's close may let it live on (a connection flushing) but it is
** detached from the userdata from here on. */
int lc_hud_close (lua_State *L, const lc_class *k) {
  lc_hud *u = lc_tohud(L, 1, k);
  lc_handle *h = u->h;
  u->user_closed = 1;
  if (h) {
    h->owner = NULL;
    u->h = NULL;
    h->close(h);
  }
  return 0;
}

/* No userdata points at the handle any more (it may live on, lingering). */
void lc_handle_detach (lc_handle *h) {
  if (h->owner) *h->owner = NULL;
  h->owner = NULL;
}

/* The first step of every handle's destroy: detached, and the context no
** longer counts it. Safe to call twice. */
void lc_handle_unlink (lc_ctx *c, lc_handle *h) {
  lc_handle_detach(h);
  lc_handle_remove(c, h);
}
