/* A node_modules-shaped tree, the same every time: packages (some scoped,
 * some with nested node_modules) of package.json, README.md, LICENSE,
 * index.js, lib/ and lib/<dir>/ modules, .d.ts types and the odd large
 * dist/ bundle. Sizes are mostly 0.2..8 KiB with a long tail, and the
 * text is JavaScript-like, so it compresses about as real code does. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

static const char *const syl[] = {"ab", "ar", "be", "co", "da", "el", "fi", "go", "ha", "in",
                                  "jo", "ka", "lo", "me", "no", "op", "pa", "qu", "re", "si",
                                  "to", "un", "va", "we", "xy", "zo"};

static void name(char *out, size_t cap, int parts)
{
    size_t n = 0;
    for (int i = 0; i < parts && n + 3 < cap; i++) {
        const char *s = syl[rnd(sizeof syl / sizeof syl[0])];
        memcpy(out + n, s, 2);
        n += 2;
    }
    out[n] = '\0';
}

/* Line templates: '~' and '^' become identifiers, '$' a number, '%' 32
 * random base64 characters (hashes and source maps do not compress). */
static const char *const lines[] = {
    "'use strict';\n",
    "const ~ = require('./^');\n",
    "module.exports = function ~(options) {\n",
    "  if (typeof options !== 'object' || options === null) options = {};\n",
    "  var result = Object.assign({}, defaults, options);\n",
    "  return ~.call(this, result, $);\n",
    "};\n",
    "function ~(a, b) { return a === b ? 0 : a < b ? -1 : 1; }\n",
    "exports.~ = ^;\n",
    "// ~: keep this in sync with lib/^.js (issue $)\n",
    "  for (let i = 0; i < list.length; i++) { if (list[i] == null) continue; out.push(list[i]); }\n",
    "  throw new TypeError('Expected a string, got ' + typeof input);\n",
    "Object.defineProperty(exports, '__esModule', { value: true });\n",
    "/**\n * @param {string} ~\n * @returns {Promise<void>}\n */\n",
    "//# sourceMappingURL=data:application/json;base64,%%\n",
    "  \"integrity\": \"sha512-%%\",\n",
};

/* One line from a random template; returns the bytes written. */
static size_t emit_line(FILE *f)
{
    char a[16], b[16];
    name(a, sizeof a, 2 + (int)rnd(3));
    name(b, sizeof b, 2 + (int)rnd(3));
    size_t n = 0;
    for (const char *t = lines[rnd(sizeof lines / sizeof lines[0])]; *t; t++) {
        if (*t == '~') {
            n += fputs(a, f) >= 0 ? strlen(a) : 0;
        } else if (*t == '^') {
            n += fputs(b, f) >= 0 ? strlen(b) : 0;
        } else if (*t == '%') {
            static const char b64[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for (int i = 0; i < 32; i++)
                fputc(b64[rnd(64)], f);
            n += 32;
        } else if (*t == '$') {
            int w = fprintf(f, "%u", rnd(9999));
            n += w > 0 ? (size_t)w : 0;
        } else {
            fputc(*t, f);
            n++;
        }
    }
    return n;
}

/* snprintf that dies rather than truncate. */
static void fmt(char *out, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        die("path too long");
}

static void mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0755) < 0 && errno != EEXIST)
                die("mkdir %s: %s", path, strerror(errno));
            *p = '/';
        }
}

/* Create dir/rel with size bytes of text. 0 when that name exists already
 * (random names collide now and then), 1 when written. */
static int write_file(const char *dir, const char *rel, size_t size)
{
    char path[4096];
    fmt(path, sizeof path, "%s/%s", dir, rel);
    mkdirs(path);
    FILE *f = fopen(path, "wxe");
    if (!f && errno == EEXIST)
        return 0;
    if (!f)
        die("create %s: %s", path, strerror(errno));
    size_t n = 0;
    while (n < size)
        n += emit_line(f);
    if (fclose(f) != 0)
        die("write %s: %s", path, strerror(errno));
    return 1;
}

/* Mostly small, a long tail: 200 B .. 8 KiB, one in 40 up to 200 KiB. */
static size_t file_size(void)
{
    if (rnd(40) == 0)
        return 20000 + rnd(180000);
    return 200 + rnd(1 + rnd(8000));
}

/* One package under base; returns the files written. */
static long package(const char *dir, const char *base, long budget, int depth)
{
    char pkg[64], rel[1024], sub[16], mod[16];
    name(pkg, sizeof pkg, 2 + (int)rnd(3));
    if (rnd(8) == 0) {           /* a scoped package */
        char scope[16];
        name(scope, sizeof scope, 2);
        fmt(rel, sizeof rel, "%s/@%s/%s", base, scope, pkg);
    } else {
        fmt(rel, sizeof rel, "%s/%s", base, pkg);
    }
    char root[1024];
    fmt(root, sizeof root, "%s", rel);
    long files = 0, want = 4 + rnd(1 + rnd(60));
    static const char *const fixed[] = {"package.json", "README.md", "LICENSE", "index.js"};
    for (int i = 0; i < 4 && files < budget; i++) {
        fmt(rel, sizeof rel, "%s/%s", root, fixed[i]);
        files += write_file(dir, rel, i == 1 ? 1000 + rnd(6000) : i == 2 ? 1077 : file_size() / 4 + 100);
    }
    for (long tries = 0; files < want && files < budget && tries < 4 * want; tries++) {
        name(mod, sizeof mod, 2 + (int)rnd(3));
        switch (rnd(6)) {
        case 0:
            name(sub, sizeof sub, 2);
            fmt(rel, sizeof rel, "%s/lib/%s/%s.js", root, sub, mod);
            break;
        case 1:
            fmt(rel, sizeof rel, "%s/types/%s.d.ts", root, mod);
            break;
        case 2:
            fmt(rel, sizeof rel, "%s/dist/%s.min.js", root, mod);
            break;
        default:
            fmt(rel, sizeof rel, "%s/lib/%s.js", root, mod);
        }
        files += write_file(dir, rel, file_size());
    }
    if (depth == 0 && rnd(5) == 0) {        /* nested dependencies */
        fmt(rel, sizeof rel, "%s/node_modules", root);
        for (int i = 0, k = 1 + (int)rnd(3); i < k && files < budget; i++)
            files += package(dir, rel, budget - files, depth + 1);
    }
    return files;
}

int bench_tree(int argc, char **argv)
{
    if (argc != 3)
        die("usage: tree DIR N");
    long n = bench_count(argv[2], "N");
    long files = 0;
    while (files < n)
        files += package(argv[1], "node_modules", n - files, 0);
    printf("tree_files %ld\n", files);
    return 0;
}
