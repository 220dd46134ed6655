/*
 * fingerprint: an osaas workload in C, to show that the process API (docs/workload-api.md)
 * needs nothing of Python. Per URL of its unit it reports the final status, the body's length
 * and its SHA-256, or why there is none. The standard C library only: its own MessagePack
 * subset (what the process API uses) and its own SHA-256.
 *
 * Build: cc -O2 -std=c11 -Wall -Wextra -static -o fingerprint fingerprint.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAME (16u * 1024u * 1024u)
#define MAX_DEPTH 16
#define MAX_ITEMS 1000
#define MAX_OUT (MAX_FRAME)

/* ---- exit codes (the process API's) ---------------------------------------------------- */

enum { EXIT_DONE = 0, EXIT_PARTIAL = 1, EXIT_BROKEN = 2, EXIT_BAD_INPUT = 3 };

static void die(const char *why) {
    fprintf(stderr, "fingerprint: %s\n", why);
    exit(EXIT_BROKEN);
}

/* ---- SHA-256 (FIPS 180-4) -------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t length;
    uint8_t block[64];
    size_t used;
} Sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(Sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_hex(const uint8_t *data, size_t size, char out[65]) {
    Sha256 s = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19},
                0, {0}, 0};
    size_t i = 0;
    for (; i + 64 <= size; i += 64) sha256_block(&s, data + i);
    uint8_t tail[128] = {0};
    size_t rest = size - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t blocks = rest + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)size * 8;
    for (int k = 0; k < 8; k++) tail[blocks * 64 - 1 - k] = (uint8_t)(bits >> (8 * k));
    for (size_t k = 0; k < blocks; k++) sha256_block(&s, tail + 64 * k);
    for (int k = 0; k < 8; k++) sprintf(out + 8 * k, "%08x", s.h[k]);
    out[64] = '\0';
}

/* ---- MessagePack: reading a frame into values ------------------------------------------ */

typedef enum { V_NIL, V_BOOL, V_INT, V_FLOAT, V_STR, V_BIN, V_ARRAY, V_MAP } Kind;

typedef struct Value {
    Kind kind;
    int64_t integer;          /* V_INT, V_BOOL */
    const uint8_t *bytes;     /* V_STR, V_BIN: into the frame */
    uint32_t size;            /* bytes of V_STR/V_BIN; entries of V_ARRAY; pairs of V_MAP */
    struct Value *items;      /* V_ARRAY: size values; V_MAP: 2 * size (key, value, ...) */
} Value;

typedef struct {
    const uint8_t *p, *end;
} Reader;

static int take(Reader *r, size_t n, const uint8_t **out) {
    if ((size_t)(r->end - r->p) < n) return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

static uint64_t big_endian(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static int read_value(Reader *r, Value *v, int depth);

static int read_many(Reader *r, Value *v, uint32_t count, uint32_t per, int depth) {
    /* Every value takes at least one byte: a count beyond what is left is a lie. */
    if ((uint64_t)count * per > (uint64_t)(r->end - r->p)) return -1;
    v->size = count;
    v->items = calloc((size_t)count * per + 1, sizeof(Value));
    if (v->items == NULL) return -1;
    for (uint64_t i = 0; i < (uint64_t)count * per; i++)
        if (read_value(r, &v->items[i], depth + 1) != 0) return -1;
    return 0;
}

static int read_bytes(Reader *r, Value *v, Kind kind, uint32_t n) {
    v->kind = kind;
    v->size = n;
    return take(r, n, &v->bytes);
}

static int read_value(Reader *r, Value *v, int depth) {
    const uint8_t *p;
    if (depth > MAX_DEPTH || take(r, 1, &p) != 0) return -1;
    uint8_t t = *p;
    memset(v, 0, sizeof *v);
    if (t <= 0x7f) { v->kind = V_INT; v->integer = t; return 0; }
    if (t >= 0xe0) { v->kind = V_INT; v->integer = (int8_t)t; return 0; }
    if ((t & 0xf0) == 0x80) { v->kind = V_MAP; return read_many(r, v, t & 0x0f, 2, depth); }
    if ((t & 0xf0) == 0x90) { v->kind = V_ARRAY; return read_many(r, v, t & 0x0f, 1, depth); }
    if ((t & 0xe0) == 0xa0) return read_bytes(r, v, V_STR, t & 0x1f);
    int width;
    switch (t) {
    case 0xc0: v->kind = V_NIL; return 0;
    case 0xc2: case 0xc3: v->kind = V_BOOL; v->integer = t == 0xc3; return 0;
    case 0xc4: case 0xc5: case 0xc6: case 0xd9: case 0xda: case 0xdb:
        width = (t == 0xc4 || t == 0xd9) ? 1 : (t == 0xc5 || t == 0xda) ? 2 : 4;
        if (take(r, (size_t)width, &p) != 0) return -1;
        return read_bytes(r, v, t >= 0xd9 ? V_STR : V_BIN, (uint32_t)big_endian(p, width));
    case 0xca: case 0xcb:
        v->kind = V_FLOAT;
        return take(r, t == 0xca ? 4 : 8, &p);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        width = 1 << (t - 0xcc);
        if (take(r, (size_t)width, &p) != 0) return -1;
        v->kind = V_INT;
        v->integer = (int64_t)big_endian(p, width);
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        width = 1 << (t - 0xd0);
        if (take(r, (size_t)width, &p) != 0) return -1;
        uint64_t raw = big_endian(p, width);
        int shift = 64 - 8 * width;
        v->kind = V_INT;
        v->integer = (int64_t)(raw << shift) >> shift;
        return 0;
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf:
        width = (t == 0xdc || t == 0xde) ? 2 : 4;
        if (take(r, (size_t)width, &p) != 0) return -1;
        v->kind = t <= 0xdd ? V_ARRAY : V_MAP;
        return read_many(r, v, (uint32_t)big_endian(p, width), v->kind == V_MAP ? 2 : 1, depth);
    default:
        return -1; /* ext types and the rest: not in the process API */
    }
}

static void free_value(Value *v) {
    if (v->kind != V_ARRAY && v->kind != V_MAP) return;
    uint32_t n = v->kind == V_MAP ? 2 * v->size : v->size;
    for (uint32_t i = 0; v->items != NULL && i < n; i++) free_value(&v->items[i]);
    free(v->items);
}

static const Value *get(const Value *map, const char *key) {
    if (map == NULL || map->kind != V_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->size; i++) {
        const Value *k = &map->items[2 * i];
        if (k->kind == V_STR && k->size == n && memcmp(k->bytes, key, n) == 0) return &map->items[2 * i + 1];
    }
    return NULL;
}

static int is_str(const Value *v, const char *text) {
    return v != NULL && v->kind == V_STR && v->size == strlen(text) && memcmp(v->bytes, text, v->size) == 0;
}

/* One frame from stdin into `buffer` (freed by the caller), parsed into `v`. */
static int read_frame(uint8_t **buffer, Value *v) {
    uint8_t head[4];
    if (fread(head, 1, 4, stdin) != 4) return -1;
    uint32_t n = (uint32_t)big_endian(head, 4);
    if (n == 0 || n > MAX_FRAME) die("a frame from the peer is empty or over 16 MiB");
    *buffer = malloc(n);
    if (*buffer == NULL) die("out of memory");
    if (fread(*buffer, 1, n, stdin) != n) return -1;
    Reader r = {*buffer, *buffer + n};
    if (read_value(&r, v, 0) != 0 || r.p != r.end || v->kind != V_MAP) die("a malformed frame from the peer");
    return 0;
}

/* ---- MessagePack: writing -------------------------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t used, cap;
} Out;

static void put(Out *o, const void *bytes, size_t n) {
    if (o->used + n > MAX_OUT) die("a frame to the peer would be over 16 MiB");
    if (o->used + n > o->cap) {
        o->cap = (o->used + n) * 2;
        o->data = realloc(o->data, o->cap);
        if (o->data == NULL) die("out of memory");
    }
    memcpy(o->data + o->used, bytes, n);
    o->used += n;
}

static void put_head(Out *o, uint8_t tag, int width, uint64_t n) {
    uint8_t b[9] = {tag};
    for (int i = 0; i < width; i++) b[1 + i] = (uint8_t)(n >> (8 * (width - 1 - i)));
    put(o, b, 1 + (size_t)width);
}

static void put_map(Out *o, uint32_t pairs) {
    if (pairs < 16) put_head(o, (uint8_t)(0x80 | pairs), 0, 0);
    else put_head(o, 0xde, 2, pairs);
}

static void put_array(Out *o, uint32_t count) {
    if (count < 16) put_head(o, (uint8_t)(0x90 | count), 0, 0);
    else if (count <= 0xffff) put_head(o, 0xdc, 2, count);
    else put_head(o, 0xdd, 4, count);
}

static void put_str_n(Out *o, const void *text, size_t n) {
    if (n < 32) put_head(o, (uint8_t)(0xa0 | n), 0, 0);
    else if (n <= 0xff) put_head(o, 0xd9, 1, n);
    else if (n <= 0xffff) put_head(o, 0xda, 2, n);
    else put_head(o, 0xdb, 4, n);
    put(o, text, n);
}

static void put_str(Out *o, const char *text) { put_str_n(o, text, strlen(text)); }
static void put_nil(Out *o) { put_head(o, 0xc0, 0, 0); }
static void put_bool(Out *o, int yes) { put_head(o, yes ? 0xc3 : 0xc2, 0, 0); }

static void put_int(Out *o, int64_t n) {
    if (n >= 0 && n <= 0x7f) put_head(o, (uint8_t)n, 0, 0);
    else if (n >= 0) put_head(o, 0xcf, 8, (uint64_t)n);
    else put_head(o, 0xd3, 8, (uint64_t)n);
}

static void send_frame(Out *body) {
    uint8_t head[4] = {(uint8_t)(body->used >> 24), (uint8_t)(body->used >> 16), (uint8_t)(body->used >> 8),
                       (uint8_t)body->used};
    if (fwrite(head, 1, 4, stdout) != 4 || fwrite(body->data, 1, body->used, stdout) != body->used ||
        fflush(stdout) != 0)
        die("cannot write to the peer");
    body->used = 0;
}

/* ---- the workload ---------------------------------------------------------------------- */

static void send_result(int status, Out *records, uint32_t count, const char *error) {
    Out frame = {0};
    put_map(&frame, 4);
    put_str(&frame, "type"); put_str(&frame, "result");
    put_str(&frame, "status"); put_int(&frame, status);
    put_str(&frame, "payload"); put_map(&frame, 1);
    put_str(&frame, "items"); put_array(&frame, count);
    if (count) put(&frame, records->data, records->used);
    put_str(&frame, "error");
    if (error) put_str(&frame, error); else put_nil(&frame);
    send_frame(&frame);
    free(frame.data);
    exit(status);
}

/* The record of one answered fetch: url, status, length, sha256, truncated, error. */
static void put_record(Out *o, const Value *url, const Value *answer) {
    const Value *status = get(answer, "status"), *body = get(answer, "body");
    const Value *error = get(answer, "error"), *message = get(answer, "message");
    const Value *truncated = get(answer, "truncated");
    int answered = status != NULL && status->kind == V_INT;
    put_map(o, 6);
    put_str(o, "url"); put_str_n(o, url->bytes, url->size);
    put_str(o, "status");
    if (answered) put_int(o, status->integer); else put_nil(o);
    put_str(o, "length");
    if (answered && body != NULL && body->kind == V_BIN) put_int(o, body->size); else put_nil(o);
    put_str(o, "sha256");
    if (answered && body != NULL && body->kind == V_BIN) {
        char hex[65];
        sha256_hex(body->bytes, body->size, hex);
        put_str(o, hex);
    } else {
        put_nil(o);
    }
    put_str(o, "truncated"); put_bool(o, truncated != NULL && truncated->kind == V_BOOL && truncated->integer);
    put_str(o, "error");
    if (answered) {
        put_nil(o);
    } else {
        char line[512];
        int n = snprintf(line, sizeof line, "%.*s%s%.*s", error && error->kind == V_STR ? (int)error->size : 7,
                         error && error->kind == V_STR ? (const char *)error->bytes : "unknown",
                         message && message->kind == V_STR ? ": " : "",
                         message && message->kind == V_STR ? (int)message->size : 0,
                         message && message->kind == V_STR ? (const char *)message->bytes : "");
        put_str_n(o, line, n < 0 ? 0 : (size_t)n >= sizeof line ? sizeof line - 1 : (size_t)n);
    }
}

int main(void) {
    uint8_t *unit_frame;
    Value unit;
    if (read_frame(&unit_frame, &unit) != 0) die("no unit from the peer");
    if (!is_str(get(&unit, "type"), "unit")) die("the first frame is not a unit");
    const Value *version = get(&unit, "version");
    if (version == NULL || version->kind != V_INT || version->integer != 1) die("not process API version 1");
    const Value *items = get(get(&unit, "payload"), "items");
    if (items == NULL || items->kind != V_ARRAY || items->size == 0 || items->size > MAX_ITEMS)
        send_result(EXIT_BAD_INPUT, NULL, 0, "payload.items must be a list of 1 to 1000 items");
    for (uint32_t i = 0; i < items->size; i++) {
        const Value *url = get(&items->items[i], "url");
        if (url == NULL || url->kind != V_STR || url->size == 0 || url->size > 8192)
            send_result(EXIT_BAD_INPUT, NULL, 0, "every item needs a url of 1 to 8192 characters");
    }

    /* One fetch at a time: the peer paces them per website anyway. */
    Out records = {0}, frame = {0};
    uint32_t done = 0;
    for (uint32_t i = 0; i < items->size; i++) {
        const Value *url = get(&items->items[i], "url");
        put_map(&frame, 5);
        put_str(&frame, "type"); put_str(&frame, "fetch");
        put_str(&frame, "id"); put_int(&frame, (int64_t)i + 1);
        put_str(&frame, "method"); put_str(&frame, "GET");
        put_str(&frame, "url"); put_str_n(&frame, url->bytes, url->size);
        put_str(&frame, "want_body"); put_bool(&frame, 1);
        send_frame(&frame);

        uint8_t *answer_frame;
        Value answer;
        if (read_frame(&answer_frame, &answer) != 0) die("the peer went away");
        const Value *id = get(&answer, "id");
        if (!is_str(get(&answer, "type"), "fetch_result") || id == NULL || id->kind != V_INT ||
            id->integer != (int64_t)i + 1)
            die("an answer that is not this fetch's result");
        if (is_str(get(&answer, "error"), "limit")) {
            free_value(&answer);
            free(answer_frame);
            break; /* the unit's allowance is used up: report what is done */
        }
        put_record(&records, url, &answer);
        done++;
        free_value(&answer);
        free(answer_frame);
    }
    if (done < items->size) send_result(EXIT_PARTIAL, &records, done, "the peer's fetch allowance ran out");
    send_result(EXIT_DONE, &records, done, NULL);
}
