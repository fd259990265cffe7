/*
 * http_floor: the "hello" server of bench/http.sh in C on libevent's evhttp
 * with no Lua: the floor that http.serve, built on the same evhttp, runs
 * into. The base is set up as luacomm's (epoll changelist on), the answer is
 * the same (200 "hello", the same default Content-Type), written the way
 * evhttp writes it from its request callback.
 *
 * usage: http_floor PORT   (127.0.0.1:PORT until killed)
 */
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

static void on_request(struct evhttp_request *req, void *arg) {
  (void)arg;
  evbuffer_add(evhttp_request_get_output_buffer(req), "hello", 5);
  evhttp_send_reply(req, 200, NULL, NULL);
}

int main(int argc, char **argv) {
  struct event_config *cfg = event_config_new();
  struct event_base *base;
  struct evhttp *http;
  if (argc != 2 || cfg == NULL) {
    fprintf(stderr, "usage: http_floor PORT\n");
    return 2;
  }
  event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  http = base ? evhttp_new(base) : NULL;
  if (http == NULL) return 1;
  evhttp_set_gencb(http, on_request, NULL);
  evhttp_set_default_content_type(http, "text/plain; charset=utf-8");
  if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(argv[1])) != 0) {
    perror("http_floor: bind");
    return 1;
  }
  event_base_dispatch(base);
  evhttp_free(http);
  event_base_free(base);
  return 0;
}
