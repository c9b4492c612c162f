/* Unit tests of the host-side library: addresses (parsing, the Firecracker
 * hybrid-vsock handshake against a fake proxy), JSON <-> msgpack, and the
 * connection object against a fake agent on a socketpair.
 * Prints a line per test and "N passed, M failed" last (tests/check.h);
 * exits non-zero on any failure. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "check.h"
#include "client.h"
#include "json.h"
#include "msg.h"
#include "wire.h"


/* --- addresses ------------------------------------------------------------ */

static bool parses(const char *s, struct addr *a)
{
    struct sa_err e;
    return addr_parse(s, a, &e) == 0;
}

static bool rejected(const char *s)
{
    struct addr a;
    struct sa_err e;
    return addr_parse(s, &a, &e) < 0 && strcmp(e.code, "bad_address") == 0;
}

static bool formats_as(const char *s, const char *want)
{
    struct addr a;
    char out[300];
    if (!parses(s, &a))
        return false;
    addr_format(&a, out, sizeof out);
    return strcmp(out, want) == 0;
}

static void test_addr_unix(void)
{
    struct addr a;
    CHECK(parses("unix:/run/agent.sock", &a) && a.kind == ADDR_UNIX &&
          strcmp(a.path, "/run/agent.sock") == 0);
    CHECK(parses("unix:rel/a:b.sock", &a) && strcmp(a.path, "rel/a:b.sock") == 0);
    CHECK(rejected("unix:"));
    char longp[200] = "unix:/";
    memset(longp + 6, 'x', 107);
    CHECK(rejected(longp));         /* 108-byte path: no room for the NUL */
    longp[6 + 106] = '\0';
    CHECK(parses(longp, &a) && strlen(a.path) == 107);
}

static void test_addr_vsock(void)
{
    struct addr a;
    CHECK(parses("vsock:3:1024", &a) && a.kind == ADDR_VSOCK && a.cid == 3 && a.port == 1024);
    CHECK(parses("vsock:4294967295:4294967295", &a) && a.cid == UINT32_MAX &&
          a.port == UINT32_MAX);
    CHECK(rejected("vsock:3"));
    CHECK(rejected("vsock::1024"));
    CHECK(rejected("vsock:3:"));
    CHECK(rejected("vsock:x:1024"));
    CHECK(rejected("vsock:3:-1"));
    CHECK(rejected("vsock:3:+1"));
    CHECK(rejected("vsock:3:4294967296"));
    CHECK(rejected("vsock:3:1024:5"));
}

static void test_addr_tcp(void)
{
    struct addr a;
    CHECK(parses("tcp:127.0.0.1:7000", &a) && a.kind == ADDR_TCP &&
          strcmp(a.host, "127.0.0.1") == 0 && a.port == 7000);
    CHECK(parses("tcp:localhost:65535", &a) && strcmp(a.host, "localhost") == 0);
    CHECK(parses("tcp:[::1]:7000", &a) && strcmp(a.host, "::1") == 0 && a.port == 7000);
    CHECK(rejected("tcp:::1:7000"));        /* IPv6 without brackets */
    CHECK(rejected("tcp:[::1]7000"));
    CHECK(rejected("tcp:[::1"));
    CHECK(rejected("tcp:localhost"));
    CHECK(rejected("tcp::7000"));
    CHECK(rejected("tcp:[]:7000"));
    CHECK(rejected("tcp:localhost:0"));
    CHECK(rejected("tcp:localhost:65536"));
    CHECK(rejected("tcp:localhost:http"));
}

static void test_addr_fc(void)
{
    struct addr a;
    CHECK(parses("fc:/run/fc/v.sock:1024", &a) && a.kind == ADDR_FC &&
          strcmp(a.path, "/run/fc/v.sock") == 0 && a.port == 1024);
    CHECK(parses("fc:/odd:name.sock:52", &a) && strcmp(a.path, "/odd:name.sock") == 0 &&
          a.port == 52);
    CHECK(rejected("fc:/run/v.sock"));
    CHECK(rejected("fc:/run/v.sock:"));
    CHECK(rejected("fc::52"));
    CHECK(rejected("fc:/run/v.sock:port"));
}

static void test_addr_other(void)
{
    CHECK(rejected(""));
    CHECK(rejected("/run/agent.sock"));
    CHECK(rejected("UNIX:/x"));
    CHECK(rejected("http://x:1"));
    CHECK(formats_as("unix:/a", "unix:/a"));
    CHECK(formats_as("vsock:3:52", "vsock:3:52"));
    CHECK(formats_as("tcp:[::1]:80", "tcp:[::1]:80"));
    CHECK(formats_as("tcp:h:80", "tcp:h:80"));
    CHECK(formats_as("fc:/a:b:7", "fc:/a:b:7"));

    unsetenv("SANDBOX_CONNECT_TIMEOUT");
    CHECK(addr_timeout_from_env() == ADDR_TIMEOUT_DEFAULT_MS);
    setenv("SANDBOX_CONNECT_TIMEOUT", "2.5", 1);
    CHECK(addr_timeout_from_env() == 2500);
    setenv("SANDBOX_CONNECT_TIMEOUT", "soon", 1);
    CHECK(addr_timeout_from_env() == ADDR_TIMEOUT_DEFAULT_MS);
    unsetenv("SANDBOX_CONNECT_TIMEOUT");
}

/* --- the hybrid-vsock handshake against a fake Firecracker proxy ---------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(fd, 8) < 0)
        return -1;
    return fd;
}

/* The child: refuse `refusals` connections the way Firecracker does when the
 * guest is not listening (read CONNECT, close), then accept one, check the
 * CONNECT line, answer "OK 1073741824\n" and the guest's first bytes at once. */
static void fake_proxy(int lfd, int refusals, unsigned port)
{
    char want[32], got[64];
    snprintf(want, sizeof want, "CONNECT %u\n", port);
    for (int i = 0;; i++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            _exit(3);
        size_t n = 0;
        while (n < sizeof got - 1 && (n == 0 || got[n - 1] != '\n')) {
            ssize_t r = read(c, got + n, 1);
            if (r <= 0)
                _exit(4);
            n += (size_t)r;
        }
        got[n] = '\0';
        if (strcmp(got, want) != 0)
            _exit(5);
        if (i < refusals) {
            close(c);
            continue;
        }
        static const char answer[] = "OK 1073741824\nGUEST";
        if (write(c, answer, sizeof answer - 1) != (ssize_t)(sizeof answer - 1))
            _exit(6);
        char drain;
        while (read(c, &drain, 1) > 0)
            ;
        _exit(0);
    }
}

static void test_addr_fc_handshake(void)
{
    char dir[] = "/tmp/test_client.XXXXXX", path[128];
    struct addr a;
    struct sa_err e;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "fc:%s/v.sock:1024", dir);
    CHECK(parses(path, &a));
    int lfd = listen_unix(a.path);
    CHECK(lfd >= 0);
    pid_t pid = fork();
    if (pid == 0)
        fake_proxy(lfd, 3, 1024);
    close(lfd);

    int fd = addr_connect(&a, 5000, &e);
    CHECK(fd >= 0);
    char buf[8] = { 0 };
    if (fd >= 0) {
        /* exactly the guest's bytes follow: nothing of them was eaten */
        size_t n = 0;
        while (n < 5) {
            ssize_t r = read(fd, buf + n, 5 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        CHECK(n == 5 && memcmp(buf, "GUEST", 5) == 0);
        close(fd);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* nobody there at all: retried until the timeout, then a clear error */
    unlink(a.path);
    int64_t t0 = mono_ms();
    fd = addr_connect(&a, 300, &e);
    int64_t took = mono_ms() - t0;
    CHECK(fd < 0 && e.errnum == ENOENT);
    CHECK(took >= 250 && took < 2000);
    rmdir(dir);
}

/* A hostile proxy (or guest behind it) that answers the CONNECT line with
 * 4 KiB and no newline, on every connection: the client reads at most a
 * line's bound (64 bytes) of each answer, and gives up at its timeout. */
static void test_addr_fc_handshake_answer_is_bounded(void)
{
    char dir[] = "/tmp/test_client.XXXXXX", path[128];
    struct addr a;
    struct sa_err e;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "fc:%s/v.sock:1024", dir);
    CHECK(parses(path, &a));
    int lfd = listen_unix(a.path);
    CHECK(lfd >= 0);
    pid_t pid = fork();
    if (pid == 0) {
        static char junk[4096];
        memset(junk, 'A', sizeof junk);
        for (;;) {
            int c = accept(lfd, NULL, NULL);
            if (c < 0)
                _exit(3);
            char ch = 0;
            while (ch != '\n' && read(c, &ch, 1) == 1)
                ;           /* the CONNECT line */
            if (write(c, junk, sizeof junk) < 0) {
                /* the client hung up first: fine */
            }
            while (read(c, &ch, 1) > 0)
                ;           /* until the client gives up on this answer */
            close(c);
        }
    }
    close(lfd);
    int64_t t0 = mono_ms();
    int fd = addr_connect(&a, 300, &e);
    int64_t took = mono_ms() - t0;
    CHECK(fd < 0 && e.errnum == ECONNRESET && strstr(e.msg, "did not answer OK"));
    CHECK(took >= 250 && took < 2000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(a.path);
    rmdir(dir);
}

/* --- JSON <-> msgpack ------------------------------------------------------ */

/* JSON -> msgpack bytes -> msgpack object -> JSON: the text that comes back. */
static char *roundtrip(const char *json)
{
    static char out[8192];
    struct sa_err e;
    msgpack_zone z1, z2;
    msgpack_object o, back;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct buf b;
    char *ret = NULL;
    msgpack_zone_init(&z1, 1024);
    msgpack_zone_init(&z2, 1024);
    msgpack_sbuffer_init(&sb);
    buf_init(&b);
    if (json_parse(json, strlen(json), &z1, &o, &e) == 0) {
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, o);
        size_t off = 0;
        if (msgpack_unpack(sb.data, sb.size, &off, &z2, &back) == MSGPACK_UNPACK_SUCCESS) {
            json_write(&b, &back);
            snprintf(out, sizeof out, "%.*s", (int)buf_size(&b), (char *)buf_ptr(&b));
            ret = out;
        }
    }
    buf_free(&b);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&z1);
    msgpack_zone_destroy(&z2);
    return ret;
}

static bool rt(const char *json, const char *want)
{
    const char *got = roundtrip(json);
    if (got && strcmp(got, want) == 0)
        return true;
    fprintf(stderr, "  round trip of %s: got %s, want %s\n", json, got ? got : "(error)", want);
    return false;
}

static bool rt_same(const char *json)
{
    return rt(json, json);
}

static bool bad_json(const char *json)
{
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    msgpack_zone_init(&z, 1024);
    int r = json_parse(json, strlen(json), &z, &o, &e);
    msgpack_zone_destroy(&z);
    return r < 0 && strcmp(e.code, "bad_json") == 0;
}

static msgpack_object_type parsed_type(const char *json, msgpack_zone *z)
{
    msgpack_object o;
    struct sa_err e;
    if (json_parse(json, strlen(json), z, &o, &e) < 0)
        return (msgpack_object_type)-1;
    return o.type;
}

/* The JSON written for a msgpack value given as raw bytes. */
static bool writes_as(const void *mp, size_t n, const char *want)
{
    msgpack_zone z;
    msgpack_object o;
    struct buf b;
    size_t off = 0;
    bool ok = false;
    msgpack_zone_init(&z, 1024);
    buf_init(&b);
    if (msgpack_unpack(mp, n, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS) {
        json_write(&b, &o);
        ok = buf_size(&b) == strlen(want) && memcmp(buf_ptr(&b), want, strlen(want)) == 0;
        if (!ok)
            fprintf(stderr, "  wrote %.*s, want %s\n", (int)buf_size(&b), (char *)buf_ptr(&b),
                    want);
    }
    buf_free(&b);
    msgpack_zone_destroy(&z);
    return ok;
}

static void test_json_basic(void)
{
    CHECK(rt_same("{\"type\":\"ping\",\"id\":1}"));
    CHECK(rt_same("{\"a\":[1,-1,0,true,false,null,\"x\"],\"b\":{},\"c\":[]}"));
    CHECK(rt(" \t{ \"a\" : [ 1 , 2 ] }\r\n ", "{\"a\":[1,2]}"));
    CHECK(rt_same("{\"b\":1,\"a\":2,\"b\":3}"));       /* frame order, duplicates kept */
    CHECK(rt_same("\"\""));
    CHECK(rt_same("[[[]]]"));
    CHECK(rt("-0", "0"));
}

static void test_json_strings(void)
{
    CHECK(rt("\"\\u00e9\"", "\"\xc3\xa9\""));
    CHECK(rt("\"\\u20AC\"", "\"\xe2\x82\xac\""));
    CHECK(rt("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""));    /* surrogate pair */
    CHECK(rt("\"\\uDBFF\\uDFFF\"", "\"\xf4\x8f\xbf\xbf\""));    /* U+10FFFF */
    CHECK(rt_same("\"caf\xc3\xa9 \xf0\x9f\x98\x80\""));          /* raw UTF-8 kept */
    CHECK(rt("\"\\b\\f\\n\\r\\t\\u001f\\\"\\\\\\/\"", "\"\\b\\f\\n\\r\\t\\u001f\\\"\\\\/\""));
    CHECK(rt("\"a\\u0000b\"", "\"a\\u0000b\""));                /* NUL survives */
    CHECK(rt("\"\\u007f\"", "\"\x7f\""));
}

static void test_json_numbers(void)
{
    CHECK(rt_same("18446744073709551615"));
    CHECK(rt_same("9223372036854775807"));
    CHECK(rt_same("9223372036854775808"));
    CHECK(rt_same("-9223372036854775808"));
    CHECK(rt_same("-1"));
    CHECK(bad_json("18446744073709551616"));
    CHECK(bad_json("-9223372036854775809"));
    CHECK(bad_json("99999999999999999999999"));
    CHECK(rt_same("1.5"));
    CHECK(rt_same("1.0"));
    CHECK(rt_same("0.1"));
    CHECK(rt_same("-0.0"));
    CHECK(rt("1E2", "100.0"));
    CHECK(rt("1e300", "1e+300"));
    CHECK(rt("1.5e10", "15000000000.0"));
    CHECK(rt("-1.25e3", "-1250.0"));
    CHECK(rt_same("1e+17"));
    CHECK(rt_same("1e-05"));
    CHECK(rt_same("123456.789"));
    CHECK(rt("2.5e-3", "0.0025"));
    CHECK(rt_same("3.141592653589793"));
    CHECK(rt_same("5e-324"));
    CHECK(bad_json("1e400"));
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    CHECK(parsed_type("1", &z) == MSGPACK_OBJECT_POSITIVE_INTEGER);
    CHECK(parsed_type("-1", &z) == MSGPACK_OBJECT_NEGATIVE_INTEGER);
    CHECK(parsed_type("1.0", &z) == MSGPACK_OBJECT_FLOAT64);
    CHECK(parsed_type("1e0", &z) == MSGPACK_OBJECT_FLOAT64);
    msgpack_zone_destroy(&z);
    /* float32 from the wire: shortest text for a float */
    static const uint8_t f32[] = { 0xca, 0x3d, 0xcc, 0xcc, 0xcd };  /* 0.1f */
    CHECK(writes_as(f32, sizeof f32, "0.1"));
    static const uint8_t nan64[] = { 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0 };
    CHECK(writes_as(nan64, sizeof nan64, "null"));
}

static void test_json_base64(void)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    CHECK(parsed_type("{\"$base64\":\"aGk=\"}", &z) == MSGPACK_OBJECT_BIN);
    CHECK(parsed_type("{\"$base64\":\"aGk=\",\"x\":1}", &z) == MSGPACK_OBJECT_MAP);
    CHECK(parsed_type("{\"$base64x\":\"aGk=\"}", &z) == MSGPACK_OBJECT_MAP);
    msgpack_zone_destroy(&z);
    CHECK(rt("{\"$base64\":\"aGk=\"}", "\"hi\""));             /* valid UTF-8: a string */
    CHECK(rt("{\"$base64\":\"aGk\"}", "\"hi\""));              /* padding optional */
    CHECK(rt("{\"$base64\":\"\"}", "\"\""));
    CHECK(rt_same("{\"$base64\":\"/w==\"}"));                  /* 0xff: not UTF-8 */
    CHECK(rt_same("{\"$base64\":\"AAEC/f7/\"}"));
    CHECK(rt_same("{\"d\":{\"$base64\":\"wyg=\"}}"));
    CHECK(rt("{\"d\":{\"$base64\":\"aGkK\"}}", "{\"d\":\"hi\\n\"}"));
    CHECK(bad_json("{\"$base64\":1}"));
    CHECK(bad_json("{\"$base64\":\"a\"}"));
    CHECK(bad_json("{\"$base64\":\"aG!k\"}"));
    CHECK(bad_json("{\"$base64\":\"aGk=\\n\"}"));

    /* bin that is not UTF-8 is written as $base64 */
    static const uint8_t bad1[] = { 0xc4, 2, 0xc3, 0x28 };            /* truncated 2-byte */
    static const uint8_t bad2[] = { 0xc4, 2, 0xc0, 0x80 };            /* overlong NUL */
    static const uint8_t bad3[] = { 0xc4, 3, 0xed, 0xa0, 0x80 };      /* UTF-8 surrogate */
    static const uint8_t bad4[] = { 0xc4, 4, 0xf4, 0x90, 0x80, 0x80 }; /* above U+10FFFF */
    static const uint8_t good[] = { 0xc4, 4, 'a', '\n', '"', 0x01 };
    static const uint8_t badstr[] = { 0xa1, 0xff };                  /* str, not UTF-8 */
    CHECK(writes_as(bad1, sizeof bad1, "{\"$base64\":\"wyg=\"}"));
    CHECK(writes_as(bad2, sizeof bad2, "{\"$base64\":\"wIA=\"}"));
    CHECK(writes_as(bad3, sizeof bad3, "{\"$base64\":\"7aCA\"}"));
    CHECK(writes_as(bad4, sizeof bad4, "{\"$base64\":\"9JCAgA==\"}"));
    CHECK(writes_as(good, sizeof good, "\"a\\n\\\"\\u0001\""));
    CHECK(writes_as(badstr, sizeof badstr, "{\"$base64\":\"/w==\"}"));
    /* a non-string key is written as the string of its JSON text */
    static const uint8_t intkey[] = { 0x81, 0x01, 0xa1, 'x' };
    CHECK(writes_as(intkey, sizeof intkey, "{\"1\":\"x\"}"));
}

static void test_json_malformed(void)
{
    static const char *const bad[] = {
        "", " ", "{", "}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{a:1}", "{'a':1}",
        "[1,]", "[1 2]", "[", "tru", "nul", "True", "NaN", "Infinity", "\"abc", "01",
        "-01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "\"\\x\"", "\"\\u12\"",
        "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
        "\"\\ud800\\ud800\"", "\"\\ud800x\"", "\"a\tb\"", "\"a\nb\"", "\"\xff\"",
        "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"", "\"\xf4\x90\x80\x80\"",
        "{\"a\":1} x", "{\"a\":1}{}", "\xef\xbb\xbf{}", "/* */{}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool r = bad_json(bad[i]);
        if (!r)
            fprintf(stderr, "  accepted malformed JSON #%zu: %s\n", i, bad[i]);
        CHECK(r);
    }
    /* a NUL byte inside the text is not JSON */
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    msgpack_zone_init(&z, 1024);
    CHECK(json_parse("\"a\0b\"", 5, &z, &o, &e) < 0);
    CHECK(json_parse("{\"a\":1}", 7, &z, &o, &e) == 0);
    CHECK(json_parse("{\"a\":1} \n", 9, &z, &o, &e) == 0);
    /* the error names where */
    CHECK(json_parse("{\"a\":x}", 7, &z, &o, &e) < 0 && strstr(e.msg, "byte 6") != NULL);
    msgpack_zone_destroy(&z);
}

/* Parsed and written back without msgpack-c in between (its unpacker stops
 * at 32 levels; the agent's validator at 16). */
static bool parse_write_same(const char *json)
{
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    struct buf b;
    bool ok = false;
    msgpack_zone_init(&z, 1024);
    buf_init(&b);
    if (json_parse(json, strlen(json), &z, &o, &e) == 0) {
        json_write(&b, &o);
        ok = buf_size(&b) == strlen(json) && memcmp(buf_ptr(&b), json, buf_size(&b)) == 0;
    }
    buf_free(&b);
    msgpack_zone_destroy(&z);
    return ok;
}

static char *nested(int depth, const char *open, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close);
    char *s = malloc((size_t)depth * (lo + lc) + 2);
    size_t n = 0;
    for (int i = 0; i < depth; i++, n += lo)
        memcpy(s + n, open, lo);
    s[n++] = '1';
    for (int i = 0; i < depth; i++, n += lc)
        memcpy(s + n, close, lc);
    s[n] = '\0';
    return s;
}

static void test_json_depth(void)
{
    char *ok_arr = nested(JSON_MAX_DEPTH, "[", "]");
    char *deep_arr = nested(JSON_MAX_DEPTH + 1, "[", "]");
    char *ok_obj = nested(JSON_MAX_DEPTH, "{\"a\":", "}");
    char *deep_obj = nested(JSON_MAX_DEPTH + 1, "{\"a\":", "}");
    char *huge = nested(100000, "[", "]");
    CHECK(parse_write_same(ok_arr));
    CHECK(bad_json(deep_arr));
    CHECK(parse_write_same(ok_obj));
    CHECK(bad_json(deep_obj));
    CHECK(bad_json(huge));              /* no stack exhaustion */
    free(ok_arr);
    free(deep_arr);
    free(ok_obj);
    free(deep_obj);
    free(huge);
}

static void test_json_utf8(void)
{
    CHECK(json_utf8_valid("", 0));
    CHECK(json_utf8_valid("abc", 3));
    CHECK(json_utf8_valid("\xc2\x80", 2));
    CHECK(json_utf8_valid("\xef\xbf\xbf", 3));
    CHECK(json_utf8_valid("\xf0\x90\x80\x80", 4));
    CHECK(!json_utf8_valid("\x80", 1));
    CHECK(!json_utf8_valid("\xc1\xbf", 2));
    CHECK(!json_utf8_valid("\xe0\x9f\xbf", 3));
    CHECK(!json_utf8_valid("\xf0\x8f\xbf\xbf", 4));
    CHECK(!json_utf8_valid("\xf5\x80\x80\x80", 4));
    CHECK(!json_utf8_valid("\xe2\x82", 2));
}

/* --- the connection against a fake agent ------------------------------------ */

static void send_all(int fd, struct buf *b)
{
    while (buf_size(b) > 0) {
        ssize_t n = write(fd, buf_ptr(b), buf_size(b));
        if (n <= 0)
            return;
        buf_consume(b, (size_t)n);
    }
}

static void hello_frame(struct buf *b, uint32_t max_frame)
{
    static const char *const caps[] = { "exec", "stdin", "signal", NULL };
    struct wire_hello h = {
        .agent = "sandbox-agent 9.9.9", .caps = caps, .boot_id = "b", .user = "u",
        .workdir = "/w", .max_frame = max_frame, .stdin_window = 12345,
    };
    wire_msg_hello(b, &h);
}

/* A client on one end of a socketpair whose other end already holds `pre`. */
static int open_with(struct buf *pre, struct client **c, int *peer, struct sa_err *e)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    send_all(sv[1], pre);
    *peer = sv[1];
    return client_open_fd(sv[0], 1000, c, e);
}

static void test_client_hello(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    int peer = -1;
    buf_init(&b);
    hello_frame(&b, 4096);
    CHECK(open_with(&b, &c, &peer, &e) == 0);
    if (c) {
        const struct client_hello *h = client_hello(c);
        CHECK(h->protocol == 1 && strcmp(h->agent, "sandbox-agent 9.9.9") == 0);
        CHECK(h->max_frame == 4096 && h->stdin_window == 12345);
        CHECK(strcmp(h->workdir, "/w") == 0);
        CHECK(client_has_cap(c, "stdin") && !client_has_cap(c, "pty"));

        /* a request over max_frame is refused and leaves the queue as it was */
        struct wire_enc w;
        static char big[5000];
        size_t before = client_pending(c);
        client_begin(c, &w, "stdin");
        wire_kv_uint(&w, "cmd", 1);
        wire_kv_bin(&w, "data", big, sizeof big);
        CHECK(client_end(c, &w, &e) < 0 && strcmp(e.code, "frame_too_large") == 0);
        CHECK(client_pending(c) == before);

        /* a length over max_frame is an error before any payload arrives */
        static const uint8_t hdr[] = { 0, 0, 0x13, 0x88 };     /* 5000 */
        buf_append(&b, hdr, sizeof hdr);
        send_all(peer, &b);
        msgpack_object m;
        CHECK(client_recv(c, 1000, &m, &e) < 0 && strcmp(e.code, "frame_too_large") == 0);
        client_free(c);
    }
    close(peer);
    buf_free(&b);
}

static void test_client_bad_hello(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    struct wire_enc w;
    int peer = -1;
    buf_init(&b);
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", 2);
    wire_end(&w);
    CHECK(open_with(&b, &c, &peer, &e) < 0 && strstr(e.msg, "protocol 2") != NULL);
    close(peer);

    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "ok");
    wire_end(&w);
    CHECK(open_with(&b, &c, &peer, &e) < 0);
    close(peer);

    /* the agent hangs up before its hello */
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    close(sv[1]);
    CHECK(client_open_fd(sv[0], 1000, &c, &e) < 0 && strcmp(e.code, "closed") == 0);
    buf_free(&b);
}

static void test_client_call(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    int peer = -1;
    buf_init(&b);
    hello_frame(&b, WIRE_MAX_FRAME_DEFAULT);
    /* replies arrive after an unrelated event; the call skips it */
    wire_msg_output(&b, 9, 3, WIRE_STDOUT, 0, 0, "x", 1);
    struct wire_enc w;
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", 1);
    wire_kv_uint(&w, "time_ms", 42);
    wire_end(&w);
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "error");
    wire_kv_uint(&w, "id", 2);
    wire_kv_str(&w, "code", "ENOENT");
    wire_kv_str(&w, "message", "exec nope: No such file or directory");
    wire_kv_str(&w, "stage", "exec");
    wire_end(&w);
    CHECK(open_with(&b, &c, &peer, &e) == 0);
    if (c) {
        msgpack_object r;
        uint64_t id = client_begin(c, &w, "ping");
        CHECK(id == 1 && client_end(c, &w, &e) == 0);
        CHECK(client_call(c, id, 1000, &r, &e) == 0);
        uint64_t t = 0;
        CHECK(wire_obj_uint(wire_get(&r, "time_ms"), &t) && t == 42);
        id = client_begin(c, &w, "exec");
        CHECK(client_end(c, &w, &e) == 0);
        CHECK(client_call(c, id, 1000, &r, &e) == 1);
        CHECK(strcmp(e.code, "ENOENT") == 0 && e.errnum == ENOENT);
        CHECK(strcmp(e.msg, "exec nope: No such file or directory") == 0);
        CHECK(wire_obj_is(wire_get(&r, "stage"), "exec"));

        /* the requests reached the peer as two well-formed frames */
        uint8_t got[256];
        ssize_t n = read(peer, got, sizeof got);
        uint32_t len = 0;
        CHECK(n > 4 && wire_frame_peek(got, (size_t)n, 1 << 20, &len, &e) == 1);
        CHECK(len == 15 && memcmp(got + 4, "\x82\xa4type\xa4ping\xa2id\x01", 15) == 0);

        /* end of stream */
        shutdown(peer, SHUT_WR);
        CHECK(client_recv(c, 1000, &r, &e) < 0 && strcmp(e.code, "closed") == 0);
        client_free(c);
    }
    close(peer);
    buf_free(&b);
}

static void test_client_reply_err(void)
{
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    msgpack_zone_init(&z, 1024);
    static const char j1[] = "{\"type\":\"error\",\"id\":3,\"code\":\"window_exceeded\","
                             "\"message\":\"too much\"}";
    CHECK(json_parse(j1, strlen(j1), &z, &o, &e) == 0);
    CHECK(client_reply_err(&o, &e) < 0 && strcmp(e.code, "window_exceeded") == 0 &&
          e.errnum == 0 && strcmp(e.msg, "too much") == 0);
    static const char j2[] = "{\"type\":\"error\",\"code\":\"brand_new\"}";
    CHECK(json_parse(j2, strlen(j2), &z, &o, &e) == 0);
    CHECK(client_reply_err(&o, &e) < 0 && strcmp(e.code, "unknown") == 0 &&
          strcmp(e.msg, "brand_new") == 0);
    CHECK(client_msg_is(&o, "error") && !client_msg_is(&o, "ok") && !client_msg_id(&o, 3));
    msgpack_zone_destroy(&z);
}

/* --- a hostile agent -------------------------------------------------------- */
/* The guest runs untrusted root code that can replace the agent: whatever it
 * sends must leave the host bounded in memory and time. */

/* A hello whose max_frame is a u64 the agent chose. */
static void hello_with_max(struct buf *b, uint64_t max_frame)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", 1);
    wire_kv_uint(&w, "max_frame", max_frame);
    wire_end(&w);
}

static void test_hostile_max_frame_is_capped_by_the_host(void)
{
    static const uint64_t claims[] = { 1ull << 32, UINT32_MAX, UINT64_MAX, 64u << 20 };
    for (size_t i = 0; i < sizeof claims / sizeof *claims; i++) {
        struct buf b;
        struct client *c = NULL;
        struct sa_err e;
        int peer = -1;
        buf_init(&b);
        hello_with_max(&b, claims[i]);
        CHECK(open_with(&b, &c, &peer, &e) == 0);
        if (c) {
            CHECK(client_hello(c)->max_frame == CLIENT_MAX_FRAME);
            /* a header announcing more than the host's bound is refused
             * before any payload is buffered */
            uint32_t len = CLIENT_MAX_FRAME + 1;
            uint8_t hdr[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                               (uint8_t)len };
            CHECK(write(peer, hdr, sizeof hdr) == 4);
            msgpack_object m;
            CHECK(client_recv(c, 1000, &m, &e) < 0 && strcmp(e.code, "frame_too_large") == 0);
            client_free(c);
        }
        close(peer);
        buf_free(&b);
    }
}

/* A hello with one str field set to s[0..n). */
static void hello_with_str(struct buf *b, const char *key, const char *s, size_t n)
{
    struct wire_enc w;
    wire_begin(&w, b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", 1);
    wire_key(&w, key);
    msgpack_pack_str(&w.pk, n);
    msgpack_pack_str_body(&w.pk, s, n);
    wire_end(&w);
}

static bool hello_refused(const char *key, const char *s, size_t n)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    int peer = -1;
    buf_init(&b);
    hello_with_str(&b, key, s, n);
    int r = open_with(&b, &c, &peer, &e);
    client_free(c);
    close(peer);
    buf_free(&b);
    return r < 0 && strcmp(e.code, "bad_frame") == 0;
}

static void test_hostile_hello_strings_are_bounded(void)
{
    /* a NUL would cut the workdir the gateway reports as the session's cwd */
    CHECK(hello_refused("workdir", "/w\0/elsewhere", 13));
    CHECK(hello_refused("user", "root\0", 5));
    static char big[CLIENT_HELLO_STR_MAX + 1];
    memset(big, 'a', sizeof big);
    CHECK(hello_refused("agent", big, sizeof big));
    CHECK(hello_refused("workdir", big, sizeof big));
    /* at the bound it is accepted */
    CHECK(!hello_refused("agent", big, CLIENT_HELLO_STR_MAX));

    /* more capabilities than any agent has are refused, not copied */
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    struct wire_enc w;
    int peer = -1;
    buf_init(&b);
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", 1);
    wire_key(&w, "capabilities");
    msgpack_pack_array(&w.pk, CLIENT_CAPS_MAX + 1);
    for (int i = 0; i <= CLIENT_CAPS_MAX; i++)
        msgpack_pack_str_with_body(&w.pk, "x", 1);
    wire_end(&w);
    CHECK(open_with(&b, &c, &peer, &e) < 0 && strcmp(e.code, "bad_frame") == 0);
    client_free(c);
    close(peer);
    buf_free(&b);
}

static void test_hostile_flood_does_not_outlast_the_call_timeout(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    int peer = -1;
    buf_init(&b);
    hello_frame(&b, WIRE_MAX_FRAME_DEFAULT);
    CHECK(open_with(&b, &c, &peer, &e) == 0);
    if (c) {
        /* the agent fills the socket with unrelated events and hangs up: a
         * call whose time is up must say so after the first of them, not
         * read on for as long as the agent keeps sending */
        fcntl(peer, F_SETFL, O_NONBLOCK);
        wire_msg_output(&b, 999, 1, WIRE_STDOUT, 0, 0, "x", 1);
        size_t frame = buf_size(&b);
        while (write(peer, buf_ptr(&b), frame) == (ssize_t)frame)
            ;
        shutdown(peer, SHUT_WR);
        struct wire_enc w;
        msgpack_object r;
        uint64_t id = client_begin(c, &w, "ping");
        CHECK(client_end(c, &w, &e) == 0);
        CHECK(client_call(c, id, 0, &r, &e) < 0 && e.errnum == ETIMEDOUT);
        client_free(c);
    }
    close(peer);
    buf_free(&b);
}

static void test_hostile_reads_stop_at_one_whole_frame(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    int peer = -1;
    buf_init(&b);
    hello_frame(&b, 4096);
    CHECK(open_with(&b, &c, &peer, &e) == 0);
    if (c) {
        /* the agent sends as fast as the socket takes it (without the
         * bound, 100 reads buffer ~100 x 64 KiB); a caller that keeps
         * calling client_read without client_next buffers at most one
         * whole frame and one read more, and the agent waits */
        fcntl(peer, F_SETFL, O_NONBLOCK);
        while (buf_size(&b) < 32768)
            wire_msg_output(&b, 999, 1, WIRE_STDOUT, 0, 0, "x", 1);
        size_t pos = 0;
        for (int i = 0; i < 100; i++) {
            ssize_t n;      /* the batch again and again, cut wherever the socket is full */
            while ((n = write(peer, buf_ptr(&b) + pos, buf_size(&b) - pos)) > 0)
                pos = (pos + (size_t)n) % buf_size(&b);
            CHECK(client_read(c, &e) == 1);
        }
        CHECK(client_buffered(c) <= WIRE_HDR_LEN + 4096 + CLIENT_READ_CHUNK);
        msgpack_object m;
        CHECK(client_next(c, &m, &e) == 1 && client_msg_is(&m, "output"));
        client_free(c);
    }
    close(peer);
    buf_free(&b);
}

static void test_hostile_silent_agent_does_not_hang_auth(void)
{
    struct buf b;
    struct client *c = NULL;
    struct sa_err e;
    struct wire_enc w;
    int peer = -1;
    buf_init(&b);
    wire_begin(&w, &b);
    wire_kv_str(&w, "type", "hello");
    wire_kv_uint(&w, "protocol", 1);
    wire_kv_bool(&w, "auth_required", true);
    wire_end(&w);
    CHECK(open_with(&b, &c, &peer, &e) == 0);
    if (c) {
        /* the agent never answers: the auth gives up after the connect
         * timeout (SANDBOX_CONNECT_TIMEOUT), not never */
        setenv("SANDBOX_CONNECT_TIMEOUT", "0.2", 1);
        pid_t pid = fork();
        if (pid == 0) {
            sleep(3);       /* then hang up: the old code ended with "closed" */
            _exit(0);
        }
        close(peer);        /* the child holds the agent's end */
        peer = -1;
        CHECK(client_auth(c, "t", 1, &e) < 0 && e.errnum == ETIMEDOUT);
        unsetenv("SANDBOX_CONNECT_TIMEOUT");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        client_free(c);
    }
    close(peer);
    buf_free(&b);
}

static void test_hostile_error_text_is_printable(void)
{
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    msgpack_zone_init(&z, 1024);
    /* terminal escapes, a NUL and a stray byte from the agent */
    static const char j[] = "{\"type\":\"error\",\"code\":\"EIO\","
                            "\"message\":\"a\\u001b]0;owned\\u0007b\\u0000c\\u009bd\"}";
    CHECK(json_parse(j, strlen(j), &z, &o, &e) == 0);
    CHECK(client_reply_err(&o, &e) < 0 && strcmp(e.code, "EIO") == 0);
    CHECK(strcmp(e.msg, "a?]0;owned?b?c??d") == 0);   /* C1: one ? a byte */
    msgpack_zone_destroy(&z);
}


/* --- command-line helpers --------------------------------------------------- */

static void test_signal_parse(void)
{
    /* names, with and without SIG, any case; Linux numbering */
    CHECK(client_signal_parse("TERM") == 15);
    CHECK(client_signal_parse("SIGTERM") == 15);
    CHECK(client_signal_parse("sigkill") == 9);
    CHECK(client_signal_parse("Hup") == 1);
    CHECK(client_signal_parse("INT") == 2 && client_signal_parse("QUIT") == 3);
    CHECK(client_signal_parse("USR1") == 10 && client_signal_parse("SIGUSR2") == 12);
    CHECK(client_signal_parse("CHLD") == 17 && client_signal_parse("CLD") == 17);
    CHECK(client_signal_parse("CONT") == 18 && client_signal_parse("STOP") == 19);
    CHECK(client_signal_parse("TSTP") == 20 && client_signal_parse("WINCH") == 28);
    CHECK(client_signal_parse("IOT") == 6 && client_signal_parse("ABRT") == 6);
    CHECK(client_signal_parse("IO") == 29 && client_signal_parse("POLL") == 29);
    CHECK(client_signal_parse("STKFLT") == 16 && client_signal_parse("PWR") == 30);
    CHECK(client_signal_parse("SYS") == 31);
#ifdef __linux__
    CHECK(client_signal_parse("TERM") == SIGTERM && client_signal_parse("URG") == SIGURG);
    CHECK(client_signal_parse("VTALRM") == SIGVTALRM && client_signal_parse("XFSZ") == SIGXFSZ);
    CHECK(client_signal_parse("RTMIN") == SIGRTMIN && client_signal_parse("RTMAX") == SIGRTMAX);
#endif
    /* real-time signals, as glibc and bash count them */
    CHECK(client_signal_parse("RTMIN") == 34 && client_signal_parse("SIGRTMIN+1") == 35);
    CHECK(client_signal_parse("rtmin+30") == 64 && client_signal_parse("RTMAX") == 64);
    CHECK(client_signal_parse("RTMAX-30") == 34 && client_signal_parse("SIGRTMAX-2") == 62);
    CHECK(client_signal_parse("RTMIN+31") < 0 && client_signal_parse("RTMAX-31") < 0);
    CHECK(client_signal_parse("RTMIN+") < 0 && client_signal_parse("RTMIN-1") < 0);
    CHECK(client_signal_parse("RTMAX+1") < 0 && client_signal_parse("RTMIN+x") < 0);
    /* numbers 1..64 */
    CHECK(client_signal_parse("9") == 9 && client_signal_parse("1") == 1);
    CHECK(client_signal_parse("64") == 64 && client_signal_parse("32") == 32);
    CHECK(client_signal_parse("0") < 0 && client_signal_parse("65") < 0);
    CHECK(client_signal_parse("-9") < 0 && client_signal_parse("+9") < 0);
    CHECK(client_signal_parse("9x") < 0 && client_signal_parse(" 9") < 0);
    CHECK(client_signal_parse("99999999999999999999999") < 0);
    /* not signals */
    CHECK(client_signal_parse("") < 0 && client_signal_parse("SIG") < 0);
    CHECK(client_signal_parse("TERMX") < 0 && client_signal_parse("SIGSIGTERM") < 0);
    CHECK(client_signal_parse("SIG TERM") < 0 && client_signal_parse("KILL ") < 0);
    CHECK(client_signal_parse("AVERYLONGNAMEINDEED") < 0);
    /* and back */
    char nm[16];
    CHECK(strcmp(client_signal_name(15, nm, sizeof nm), "TERM") == 0);
    CHECK(strcmp(client_signal_name(6, nm, sizeof nm), "ABRT") == 0);
    CHECK(strcmp(client_signal_name(36, nm, sizeof nm), "RTMIN+2") == 0);
    CHECK(strcmp(client_signal_name(64, nm, sizeof nm), "RTMAX") == 0);
    CHECK(client_signal_name(32, nm, sizeof nm) == NULL);
    CHECK(client_signal_name(0, nm, sizeof nm) == NULL);
    for (int sig = 1; sig <= 64; sig++) {
        if (client_signal_name(sig, nm, sizeof nm))
            CHECK(client_signal_parse(nm) == sig);
    }
}

static void test_parse_numbers(void)
{
    uint64_t v = 0;
    CHECK(client_parse_id("1", &v) == 0 && v == 1);
    CHECK(client_parse_id("18446744073709551615", &v) == 0 && v == UINT64_MAX);
    CHECK(client_parse_id("18446744073709551616", &v) < 0);
    CHECK(client_parse_id("0", &v) < 0 && client_parse_id("", &v) < 0);
    CHECK(client_parse_id("-1", &v) < 0 && client_parse_id("+1", &v) < 0);
    CHECK(client_parse_id("1 ", &v) < 0 && client_parse_id("0x10", &v) < 0);

    CHECK(client_parse_secs("2", &v) == 0 && v == 2000);
    CHECK(client_parse_secs("0.5", &v) == 0 && v == 500);
    CHECK(client_parse_secs(".25", &v) == 0 && v == 250);
    CHECK(client_parse_secs("1.5", &v) == 0 && v == 1500);
    CHECK(client_parse_secs("0.0001", &v) == 0 && v == 1);     /* rounded up, never none */
    CHECK(client_parse_secs("1e3", &v) == 0 && v == 1000000);
    CHECK(client_parse_secs("0", &v) < 0 && client_parse_secs("0.0", &v) < 0);
    CHECK(client_parse_secs("-1", &v) < 0 && client_parse_secs("+1", &v) < 0);
    CHECK(client_parse_secs("", &v) < 0 && client_parse_secs("1s", &v) < 0);
    CHECK(client_parse_secs("inf", &v) < 0 && client_parse_secs("nan", &v) < 0);
    CHECK(client_parse_secs(" 1", &v) < 0 && client_parse_secs("1e13", &v) < 0);
    CHECK(client_parse_secs("0x10", &v) < 0);
}

static bool fmt_is(void (*fn)(uint64_t, char *, size_t), uint64_t ms, const char *want)
{
    char out[64];
    fn(ms, out, sizeof out);
    if (strcmp(out, want) == 0)
        return true;
    fprintf(stderr, "  %llu ms: got '%s', want '%s'\n", (unsigned long long)ms, out, want);
    return false;
}

static void test_fmt_time(void)
{
    CHECK(fmt_is(client_fmt_secs, 2000, "2"));
    CHECK(fmt_is(client_fmt_secs, 1500, "1.5"));
    CHECK(fmt_is(client_fmt_secs, 1, "0.001"));
    CHECK(fmt_is(client_fmt_secs, 1010, "1.01"));
    CHECK(fmt_is(client_fmt_secs, 0, "0"));

    CHECK(fmt_is(client_fmt_duration, 0, "0ms"));
    CHECK(fmt_is(client_fmt_duration, 999, "999ms"));
    CHECK(fmt_is(client_fmt_duration, 1000, "1.0s"));
    CHECK(fmt_is(client_fmt_duration, 12345, "12.3s"));
    CHECK(fmt_is(client_fmt_duration, 59999, "59.9s"));    /* truncated, not "60.0s" */
    CHECK(fmt_is(client_fmt_duration, 60000, "1m00s"));
    CHECK(fmt_is(client_fmt_duration, 303000, "5m03s"));
    CHECK(fmt_is(client_fmt_duration, 3599999, "59m59s"));
    CHECK(fmt_is(client_fmt_duration, 3600000, "1h00m"));
    CHECK(fmt_is(client_fmt_duration, 7500000, "2h05m"));
    CHECK(fmt_is(client_fmt_duration, 86399999, "23h59m"));
    CHECK(fmt_is(client_fmt_duration, 86400000, "1d00h"));
    CHECK(fmt_is(client_fmt_duration, 100800000 + 172800000, "3d04h"));
    CHECK(fmt_is(client_fmt_duration, UINT64_MAX, "213503982334d14h"));

    CHECK(fmt_is(client_fmt_utc, 0, "1970-01-01T00:00:00Z"));
    CHECK(fmt_is(client_fmt_utc, 1764288000999, "2025-11-28T00:00:00Z"));
    CHECK(fmt_is(client_fmt_utc, 951782400000, "2000-02-29T00:00:00Z"));
}

/* argv given as a JSON array, joined. */
static bool joins_as(const char *json, const char *want)
{
    msgpack_zone z;
    msgpack_object o;
    struct sa_err e;
    struct buf b;
    bool ok = false;
    msgpack_zone_init(&z, 1024);
    buf_init(&b);
    if (json_parse(json, strlen(json), &z, &o, &e) == 0) {
        client_join_argv(&b, &o);
        ok = buf_size(&b) == strlen(want) &&
             (buf_size(&b) == 0 || memcmp(buf_ptr(&b), want, strlen(want)) == 0);
        if (!ok)
            fprintf(stderr, "  joined %s: got [%.*s], want [%s]\n", json, (int)buf_size(&b),
                    (char *)buf_ptr(&b), want);
    }
    buf_free(&b);
    msgpack_zone_destroy(&z);
    return ok;
}

static void test_join_argv(void)
{
    CHECK(joins_as("[\"sleep\",\"10\"]", "sleep 10"));
    CHECK(joins_as("[\"ls\",\"-la\",\"/a_b/c.d\",\"x=y,z@w%1+2:3\"]",
                   "ls -la /a_b/c.d x=y,z@w%1+2:3"));
    CHECK(joins_as("[\"sh\",\"-c\",\"echo hi; exit 3\"]", "sh -c 'echo hi; exit 3'"));
    CHECK(joins_as("[\"echo\",\"\"]", "echo ''"));
    CHECK(joins_as("[\"echo\",\"it's\"]", "echo 'it'\\''s'"));
    CHECK(joins_as("[\"printf\",\"a\\nb\\u001b[2J\\u007f\"]", "printf 'a?b?[2J?'"));
    CHECK(joins_as("[\"echo\",\"caf\\u00e9\",\"\\u0085\"]", "echo 'caf\xc3\xa9' '?""?'"));
    CHECK(joins_as("[\"echo\",\"a\\u0000b\"]", "echo 'a?b'"));
    CHECK(joins_as("[\"x\",{\"$base64\":\"/w==\"}]", "x ?"));           /* bin, not str */
    CHECK(joins_as("[]", ""));
    CHECK(joins_as("{}", "?"));
    CHECK(joins_as("[\"a\",1]", "a ?"));
    /* invalid UTF-8 inside a str */
    msgpack_object arg = { .type = MSGPACK_OBJECT_STR,
                           .via.str = { .size = 3, .ptr = "a\xff" "b" } };
    msgpack_object arr = { .type = MSGPACK_OBJECT_ARRAY, .via.array = { .size = 1, .ptr = &arg } };
    struct buf b;
    buf_init(&b);
    client_join_argv(&b, &arr);
    CHECK(buf_size(&b) == 5 && memcmp(buf_ptr(&b), "'a?b'", 5) == 0);
    buf_free(&b);
}

static void test_fit_width(void)
{
    static const char s[] = "sleep 1000";
    CHECK(client_fit_width(s, 10, 80) == 10);
    CHECK(client_fit_width(s, 10, 10) == 10);
    CHECK(client_fit_width(s, 10, 5) == 5);
    CHECK(client_fit_width(s, 10, 0) == 0);
    CHECK(client_fit_width("", 0, 5) == 0);
    static const char u[] = "caf\xc3\xa9 \xf0\x9f\x98\x80!";     /* 7 characters, 11 bytes */
    CHECK(client_fit_width(u, 11, 4) == 5);     /* never half of the é */
    CHECK(client_fit_width(u, 11, 3) == 3);
    CHECK(client_fit_width(u, 11, 6) == 10);
    CHECK(client_fit_width(u, 11, 7) == 11);
    CHECK(client_fit_width("\xff\xfe", 2, 1) == 1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    static const struct check_test tests[] = {
        CHECK_TEST(test_addr_unix),
        CHECK_TEST(test_addr_vsock),
        CHECK_TEST(test_addr_tcp),
        CHECK_TEST(test_addr_fc),
        CHECK_TEST(test_addr_other),
        CHECK_TEST(test_addr_fc_handshake),
        CHECK_TEST(test_addr_fc_handshake_answer_is_bounded),
        CHECK_TEST(test_json_basic),
        CHECK_TEST(test_json_strings),
        CHECK_TEST(test_json_numbers),
        CHECK_TEST(test_json_base64),
        CHECK_TEST(test_json_malformed),
        CHECK_TEST(test_json_depth),
        CHECK_TEST(test_json_utf8),
        CHECK_TEST(test_client_hello),
        CHECK_TEST(test_client_bad_hello),
        CHECK_TEST(test_client_call),
        CHECK_TEST(test_client_reply_err),
        CHECK_TEST(test_hostile_max_frame_is_capped_by_the_host),
        CHECK_TEST(test_hostile_hello_strings_are_bounded),
        CHECK_TEST(test_hostile_flood_does_not_outlast_the_call_timeout),
        CHECK_TEST(test_hostile_reads_stop_at_one_whole_frame),
        CHECK_TEST(test_hostile_silent_agent_does_not_hang_auth),
        CHECK_TEST(test_hostile_error_text_is_printable),
        CHECK_TEST(test_signal_parse),
        CHECK_TEST(test_parse_numbers),
        CHECK_TEST(test_fmt_time),
        CHECK_TEST(test_join_argv),
        CHECK_TEST(test_fit_width),
    };
    return check_run(tests, sizeof tests / sizeof *tests);
}
