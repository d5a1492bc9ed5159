/*
 * test_http.c - the HTTP serving layer in one process (so CI runs it under ASan + UBSan):
 * request parsing verdicts for the three APIs, and a live server (hd_http over the in-process
 * backend in its replay mode, no model) answering raw-socket clients: whole and streamed
 * chat with a tool call, Anthropic events, completions, errors, metrics, a client that hangs
 * up mid-stream (its sequence released), and shutdown with requests in flight.
 * The end-to-end suite with the official clients is tests/api/.
 */
#include "hd_test.h"
#include "hadal/api.h"
#include "hadal/http.h"
#include "hadal/tokenizer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EOS "<｜end▁of▁sentence｜>"
#define DSML "｜DSML｜"

static hd_tok_h test_tok(void)
{
    static hd_tok_h tok;
    if (tok == NULL) {
        char path[1200];
        const char *src = getenv("HD_SOURCE_DIR");
        snprintf(path, sizeof(path), "%s/coordinator/data/tokenizer-deepseek-v4/tokenizer.json",
                 src ? src : ".");
        if (hd_tok_create(path, &tok) != HD_OK) {
            return NULL;
        }
    }
    return tok;
}

/* ---- parsing verdicts ---- */

HD_TEST(http_request_verdicts)
{
    static const struct {
        hd_http_api_t api;
        const char *body;
        int status;
    } cases[] = {
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 200},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"n\":3,"
                           "\"stop\":[\"a\",\"b\"],\"seed\":5,\"reasoning_effort\":\"max\","
                           "\"logprobs\":true,\"top_logprobs\":4,\"tools\":[{\"type\":\"function\","
                           "\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
                           "\"response_format\":{\"type\":\"json_object\"}}", 200},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[", 400},
        {HD_HTTP_API_CHAT, "[]", 400},
        {HD_HTTP_API_CHAT, "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 404},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[]}", 400},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"max_tokens\":\"9\"}", 400},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"bogus\":1}", 400},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"max_tokens\":100000}", 400},
        {HD_HTTP_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                           "\"top_logprobs\":3}", 400},
        {HD_HTTP_API_COMPLETION, "{\"model\":\"m\",\"prompt\":\"abc\",\"max_tokens\":3}", 200},
        {HD_HTTP_API_COMPLETION, "{\"model\":\"m\",\"prompt\":[[1,2,3]]}", 200},
        {HD_HTTP_API_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", 400},
        {HD_HTTP_API_COMPLETION, "{\"model\":\"m\",\"prompt\":\"\"}", 400},
        {HD_HTTP_API_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"echo\":true}", 400},
        {HD_HTTP_API_MESSAGES, "{\"model\":\"m\",\"max_tokens\":5,\"system\":\"s\",\"messages\":["
                               "{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                               "\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\"},{\"type\":"
                               "\"tool_use\",\"id\":\"i\",\"name\":\"f\",\"input\":{\"x\":1.50}}]},"
                               "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
                               "\"tool_use_id\":\"i\",\"content\":\"ok\"}]}],\"tools\":[{\"name\":"
                               "\"f\",\"input_schema\":{\"type\":\"object\"}}],\"thinking\":{"
                               "\"type\":\"enabled\",\"budget_tokens\":2000}}", 200},
        {HD_HTTP_API_MESSAGES, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", 400},
        {HD_HTTP_API_MESSAGES, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
                               "\"content\":\"q\"}]}", 400},
        {HD_HTTP_API_MESSAGES, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                               "\"content\":[{\"type\":\"image\"}]}]}", 400},
    };
    hd_tok_h tok = test_tok();
    HD_CHECK_TRUE(tok != NULL);
    for (size_t i = 0; tok != NULL && i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[256];
        int st = hd_http_check_request(cases[i].api, cases[i].body, strlen(cases[i].body), tok,
                                       "m", 4096, msg, sizeof(msg));
        HD_CHECK_MSG(st == cases[i].status, "case %zu: %d, want %d (%s)", i, st,
                     cases[i].status, msg);
    }
}

/* ---- a live server ---- */

typedef struct {
    hd_http_h http;
    volatile int stop;
    int port;
} srv_t;

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    hd_http_run(s->http);
    return NULL;
}

/* One request on a fresh connection (Connection: close); the whole answer, or NULL. */
static char *http_do(int port, const char *method, const char *path, const char *headers,
                     const char *body, size_t max_read)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    size_t blen = body ? strlen(body) : 0;
    size_t cap = blen + 1024, len = 0;
    char *req = malloc(cap);
    snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu"
             "\r\n\r\n%s", method, path, headers ? headers : "", blen, body ? body : "");
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
        free(req);
        close(fd);
        return NULL;
    }
    free(req);
    char *out = malloc(1 << 20);
    while (len < (1u << 20) - 1 && len < max_read) {
        ssize_t n = recv(fd, out + len, (1u << 20) - 1 - len, 0);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    out[len] = '\0';
    close(fd);
    return out;
}

static double metric(int port, const char *name)
{
    char *m = http_do(port, "GET", "/metrics", NULL, NULL, SIZE_MAX);
    double v = -1;
    char key[160];
    snprintf(key, sizeof(key), "\n%s", name);
    char *p = m ? strstr(m, key) : NULL;
    if (p != NULL) {
        p = strchr(p + 1, ' ');
        v = p ? atof(p + 1) : -1;
    }
    free(m);
    return v;
}

static bool wait_metric(int port, const char *name, double want)
{
    for (int i = 0; i < 400; i++) {
        if (metric(port, name) == want) {
            return true;
        }
        usleep(10 * 1000);
    }
    return false;
}

HD_TEST(http_server_replay)
{
    static const hd_http_replay_t scripts[] = {
        {"tool", "Looking.\n\n<" DSML "tool_calls>\n<" DSML "invoke name=\"get_weather\">\n<" DSML
                 "parameter name=\"city\" string=\"true\">Paris</" DSML "parameter>\n</" DSML
                 "invoke>\n</" DSML "tool_calls>" EOS},
        {"text", "Hello there. STOP now." EOS},
        {"long", "w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w "
                 "w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w "
                 "w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w"},
    };
    hd_tok_h tok = test_tok();
    hd_api_local_h l = NULL;
    srv_t s = {0};
    pthread_t th;
    char *r;
    HD_CHECK_TRUE(tok != NULL);
    if (tok == NULL) {
        return;
    }
    hd_api_local_params_t lp = {.sched = {.n_columns = 1, .max_running = 8, .max_waiting = 8,
                                          .step_tokens = 256, .prefill_chunk = 64,
                                          .max_context = 1024},
                                .vocab_size = 1 << 30, .step_delay_us = 2000};
    HD_CHECK_INT_EQ(hd_api_local_create(&lp, &l), HD_OK);
    hd_http_params_t hp = {.port = 0, .model_name = "m", .tok = tok,
                           .backend = hd_api_local_backend(l), .timeout_s = 5,
                           .replay = scripts, .n_replay = 3, .stop = &s.stop};
    HD_CHECK_INT_EQ(hd_http_create(&hp, &s.http), HD_OK);
    if (s.http == NULL) {
        hd_api_local_destroy(l);
        return;
    }
    s.port = hd_http_port(s.http);
    pthread_create(&th, NULL, srv_main, &s);

    const char *chat = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}],"
                       "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}";
    r = http_do(s.port, "POST", "/v1/chat/completions", "X-Hadal-Replay: tool\r\n", chat, SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "200 OK") && strstr(r, "\"finish_reason\":\"tool_calls\"") &&
                     strstr(r, "\"name\":\"get_weather\"") &&
                     strstr(r, "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"") &&
                     strstr(r, "\"content\":\"Looking.\""),
                 "tool call answer: %s", r ? r : "(none)");
    free(r);
    const char *stream = "{\"model\":\"m\",\"stream\":true,\"stop\":\"STOP\",\"stream_options\":"
                         "{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    r = http_do(s.port, "POST", "/v1/chat/completions", "X-Hadal-Replay: text\r\n", stream, SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "text/event-stream") && strstr(r, "data: [DONE]") &&
                     strstr(r, "\"completion_tokens\":") && !strstr(r, "STOP") &&
                     strstr(r, "\"finish_reason\":\"stop\""),
                 "stream: %s", r ? r : "(none)");
    free(r);
    const char *anth = "{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,\"tools\":[{\"name\":"
                       "\"get_weather\",\"input_schema\":{\"type\":\"object\"}}],\"messages\":[{"
                       "\"role\":\"user\",\"content\":\"w?\"}]}";
    r = http_do(s.port, "POST", "/v1/messages", "X-Hadal-Replay: tool\r\n", anth, SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "event: message_start") && strstr(r, "\"type\":\"tool_use\"") &&
                     strstr(r, "input_json_delta") && strstr(r, "\"stop_reason\":\"tool_use\"") &&
                     strstr(r, "event: message_stop"),
                 "anthropic stream: %s", r ? r : "(none)");
    free(r);
    r = http_do(s.port, "POST", "/v1/completions", "X-Hadal-Replay: text\r\n",
                "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":3}", SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "\"finish_reason\":\"length\"") &&
                     strstr(r, "\"completion_tokens\":3"), "completion: %s", r ? r : "(none)");
    free(r);
    r = http_do(s.port, "POST", "/v1/chat/completions", NULL, "{\"model\":", SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "400 Bad Request") && strstr(r, "invalid_request_error"),
                 "bad json: %s", r ? r : "(none)");
    free(r);
    r = http_do(s.port, "POST", "/v1/messages", NULL, "{\"model\":", SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "\"type\":\"error\""), "anthropic error: %s", r ? r : "(none)");
    free(r);
    r = http_do(s.port, "GET", "/nowhere", NULL, NULL, SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "404"), "404: %s", r ? r : "(none)");
    free(r);
    r = http_do(s.port, "GET", "/v1/models", NULL, NULL, SIZE_MAX);
    HD_CHECK_MSG(r && strstr(r, "\"id\":\"m\""), "models: %s", r ? r : "(none)");
    free(r);

    /* a client that reads a little of a stream and hangs up: its sequence is released */
    const char *longreq = "{\"model\":\"m\",\"stream\":true,\"max_tokens\":200,\"messages\":[{"
                          "\"role\":\"user\",\"content\":\"x\"}]}";
    r = http_do(s.port, "POST", "/v1/chat/completions", "X-Hadal-Replay: long\r\n", longreq, 600);
    free(r);
    HD_CHECK_MSG(wait_metric(s.port, "hadal:kv_sequences", 0), "sequence not released");
    HD_CHECK_MSG(wait_metric(s.port, "hadal:http_requests_in_flight", 0), "job not freed");
    HD_CHECK_TRUE(metric(s.port, "hadal:client_disconnects_total") >= 1);

    /* shutdown with a request in flight: answered (cancelled) and freed, nothing leaks */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[512];
    snprintf(req, sizeof(req), "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Hadal-Replay:"
             " long\r\nContent-Length: %zu\r\n\r\n%s", strlen(longreq), longreq);
    HD_CHECK_INT_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    send(fd, req, strlen(req), MSG_NOSIGNAL);
    HD_CHECK_MSG(wait_metric(s.port, "hadal:kv_sequences", 1), "no sequence in flight");
    s.stop = 1;
    pthread_join(th, NULL);
    hd_http_destroy(s.http);
    hd_api_local_destroy(l);
    close(fd);
}
