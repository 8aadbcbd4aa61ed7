/* The row hash of connectif_sync.hashing in C: same values as its numpy code, about ten times faster.
 *
 * Why C: change detection hashes every row of every run (its source values, its CSV values and its key);
 * numpy needs several passes over 8-byte copies of every byte for it (about 8 ns a byte), and no library
 * at hand exposes a stable vectorised string hash over Arrow buffers (pyarrow has none; polars' and
 * duckdb's are not stable across versions; numba would add 150 MB to every process). This module is
 * optional: when it cannot be built (no compiler), connectif_sync.hashing uses its numpy code, which gives
 * the same values (tests compare both with a plain-Python reference).
 *
 * hash_rows(columns, n, out): for each of n rows, the hash of the row's values of every column joined
 * with the unit separator 0x1f (a null value counts as empty), i.e. sum((byte + 1) * P^i) mod 2^64 over
 * the joined bytes, xor (joined length * golden ratio), then the splitmix64 finaliser.
 * ``columns`` is a sequence of (offsets, data, validity or None, offset, large) tuples taken from Arrow
 * string (large=False, int32 offsets) or large_string (large=True, int64 offsets) arrays; ``out`` is a
 * writable buffer of n uint64. With a writable ``sizes`` buffer of n int64, the same pass also writes each
 * row's size in bytes as pyarrow's CSV writer renders it (connectif_sync.chunk.row_bytes), which the
 * chunk writer needs to cut files and would otherwise cost another pass over every value; with a writable
 * ``masks`` buffer of n int64, each row's empty-field mask (bit c: column c < 63 null or empty) as well.
 * The GIL is released while hashing.
 *
 * An open-addressing hash table over 64-bit hashes (linear probing, Fibonacci slot from the hash) replaces
 * sorting and binary searches where every row of a full scan is looked up by its source hash:
 * positions_build(table, keys) / positions_find(table, keys, needles, found, at) index the positions of an
 * array of keys in an int32 table (position + 1; 0 = empty; 4 bytes a slot, against 16 bytes a key for a
 * sorted copy and its order) and find needles in it.
 *
 * keyset_add(table, keys, dup) / keyset_rehash(old, new): the duplicate rule's set of kept keys, an open-addressing
 * table of the keys themselves (8 bytes a slot). merge_latest(older, newer, at, out): two sorted tables of
 * hashes merged, the newer row winning (the commit's snapshot).
 *
 * email_rows(column, n, offsets, data, status): the email field's ASCII shaping and EMAIL_PATTERN's check in
 * one pass (connectif_sync.shape.shape_email).
 *
 * pg_hash_int64 / pg_hash_text and mysql_crc_rows compute the source hashes PostgreSQL and MariaDB compute in
 * SQL, from the values a read of whole rows decoded (connectif_sync.client_hash): the database then skips
 * that work for every row of a first run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_hash64.h"
/* Powers of HASH_P (mod 2^64). */
#define P1 HASH_P
#define P2 (P1 * HASH_P)
#define P3 (P2 * HASH_P)
#define P4 (P3 * HASH_P)
#define P5 (P4 * HASH_P)
#define P6 (P5 * HASH_P)
#define P7 (P6 * HASH_P)
#define P8 (P7 * HASH_P)

typedef struct {
    Py_buffer offsets;
    Py_buffer data;
    Py_buffer validity;
    int has_validity;
    int large;
    Py_ssize_t offset;
} column_t;

static void release_columns(column_t *cols, Py_ssize_t k) {
    for (Py_ssize_t c = 0; c < k; c++) {
        PyBuffer_Release(&cols[c].offsets);
        PyBuffer_Release(&cols[c].data);
        if (cols[c].has_validity) PyBuffer_Release(&cols[c].validity);
    }
}

static inline int64_t offset_at(const column_t *c, Py_ssize_t i) {
    if (c->large) return ((const int64_t *)c->offsets.buf)[c->offset + i];
    return ((const int32_t *)c->offsets.buf)[c->offset + i];
}

static inline int is_valid(const column_t *c, Py_ssize_t i) {
    if (!c->has_validity) return 1;
    Py_ssize_t bit = c->offset + i;
    return (((const uint8_t *)c->validity.buf)[bit >> 3] >> (bit & 7)) & 1;
}

/* Check every buffer against n rows before the GIL is released: a bad call raises, never reads out of
 * bounds. Returns 0 on success, -1 with an exception set. */
static int check_column(const column_t *c, Py_ssize_t n, Py_ssize_t index) {
    Py_ssize_t width = c->large ? 8 : 4;
    if (c->offset < 0 || c->offsets.len < (c->offset + n + 1) * width) {
        PyErr_Format(PyExc_ValueError, "column %zd: offsets buffer too short for %zd rows", index, n);
        return -1;
    }
    if (c->has_validity && c->validity.len < (c->offset + n + 7) / 8) {
        PyErr_Format(PyExc_ValueError, "column %zd: validity buffer too short for %zd rows", index, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = offset_at(c, i), b = offset_at(c, i + 1);
        if (a < 0 || b < a || b > (int64_t)c->data.len) {
            PyErr_Format(PyExc_ValueError, "column %zd: value %zd lies outside the data buffer", index, i);
            return -1;
        }
    }
    return 0;
}

/* HASH_P^r and sum(HASH_P^j, j < r) for r = 0..8: a word of r bytes adds sum((b_j + 1) * P^j) =
 * word_terms(w) + ONES[r] to the hash at the running power, which then advances by POWERS[r]. */
static const uint64_t POWERS[9] = {1, P1, P2, P3, P4, P5, P6, P7, P8};
static const uint64_t ONES[9] = {0, 1, 1 + P1, 1 + P1 + P2, 1 + P1 + P2 + P3, 1 + P1 + P2 + P3 + P4,
                                 1 + P1 + P2 + P3 + P4 + P5, 1 + P1 + P2 + P3 + P4 + P5 + P6,
                                 1 + P1 + P2 + P3 + P4 + P5 + P6 + P7};

/* Eight bytes as one little-endian word (byte j in bits 8j..8j+7), whatever the machine's byte order. */
static inline uint64_t load_word(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* sum(b_j * P^j) over the bytes b_j of w: eight independent multiplies, one in the hash's dependency chain. */
static inline uint64_t word_terms(uint64_t w) {
    return (w & 0xff) + ((w >> 8) & 0xff) * P1 + ((w >> 16) & 0xff) * P2 + ((w >> 24) & 0xff) * P3 +
           ((w >> 32) & 0xff) * P4 + ((w >> 40) & 0xff) * P5 + ((w >> 48) & 0xff) * P6 + (w >> 56) * P7;
}

/* How many bytes of w are a double quote (0x22): exact, no carry crosses a byte. */
static inline int64_t word_quotes(uint64_t w) {
    const uint64_t low7 = 0x7F7F7F7F7F7F7F7FULL;
    uint64_t x = w ^ 0x2222222222222222ULL;
    uint64_t zero = ~(((x & low7) + low7) | x) & ~low7; /* bit 7 of each byte that was a quote */
    return (int64_t)(((zero >> 7) * 0x0101010101010101ULL) >> 56);
}

/* One value's bytes into the running hash (and its count of double quotes when count_quotes). Words of
 * eight bytes; the last 1-7 bytes as one word too (masked) when eight bytes can be read there without
 * leaving the buffer (``limit``: its end), else byte by byte: a value of ~9 bytes spent most of its time in
 * the byte loop, whose running power is a multiply chain (bench/README.md, session 18). */
static inline void hash_bytes(const uint8_t *p, const uint8_t *end, const uint8_t *limit, uint64_t *hp,
                              uint64_t *pwp, int64_t *quotes, const int count_quotes) {
    uint64_t h = *hp, pw = *pwp;
    for (; end - p >= 8; p += 8) {
        uint64_t w = load_word(p);
        h += (word_terms(w) + ONES[8]) * pw;
        pw *= P8;
        if (count_quotes) *quotes += word_quotes(w);
    }
    Py_ssize_t r = end - p;
    if (r > 0 && limit - p >= 8) {
        uint64_t w = load_word(p) & ((1ULL << (8 * r)) - 1); /* r < 8: the shift is defined */
        h += (word_terms(w) + ONES[r]) * pw;
        pw *= POWERS[r];
        if (count_quotes) *quotes += word_quotes(w); /* masked bytes are 0, never a quote */
    } else {
        for (; p < end; p++) {
            h += ((uint64_t)*p + 1) * pw;
            pw *= HASH_P;
            if (count_quotes) *quotes += *p == '"';
        }
    }
    *hp = h;
    *pwp = pw;
}

/* Every row: its hash into result and, when count_quotes, its CSV size into csv (pyarrow's writer quotes
 * every present value and doubles its quotes; a null is written as nothing; commas and a newline) and, when
 * masks is given, bit c set for each of the first 63 columns whose value is null or empty. */
static inline void hash_all(const column_t *cols, Py_ssize_t k, Py_ssize_t n, uint64_t *result, int64_t *csv,
                            int64_t *masks, const int count_quotes) {
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t h = 0, pw = 1, length = 0, empty = 0;
        int64_t quotes = 0, present = 0;
        for (Py_ssize_t c = 0; c < k; c++) {
            const column_t *col = &cols[c];
            if (c > 0) {
                h += (uint64_t)(SEPARATOR + 1) * pw;
                pw *= HASH_P;
                length += 1;
            }
            if (!is_valid(col, i)) {
                if (c < 63) empty |= 1ULL << c;
                continue;
            }
            int64_t a = offset_at(col, i), b = offset_at(col, i + 1);
            if (a == b && c < 63) empty |= 1ULL << c;
            const uint8_t *data = (const uint8_t *)col->data.buf;
            hash_bytes(data + a, data + b, data + col->data.len, &h, &pw, &quotes, count_quotes);
            length += (uint64_t)(b - a);
            present += 1;
        }
        if (count_quotes) csv[i] = (int64_t)length - (k - 1) + quotes + 2 * present + k;
        if (masks != NULL) masks[i] = (int64_t)empty;
        h ^= length * HASH_GOLDEN;
        result[i] = mix64(h);
    }
}

/* An optional writable output of n int64 (None: not wanted): 0, or -1 with the exception set; *held says
 * whether view must be released. */
static int optional_output(PyObject *obj, Py_buffer *view, int *held, Py_ssize_t n, const char *too_small) {
    if (obj == Py_None) return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) != 0) return -1;
    *held = 1;
    if (view->len < n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, too_small);
        return -1;
    }
    return 0;
}

static PyObject *hash_rows(PyObject *self, PyObject *args) {
    PyObject *columns, *sizes_obj = Py_None, *masks_obj = Py_None, *seq = NULL, *ret = NULL;
    Py_ssize_t n, k = 0, ready = 0;
    Py_buffer out, sizes, masks;
    int has_sizes = 0, has_masks = 0;
    column_t *cols = NULL;
    if (!PyArg_ParseTuple(args, "Onw*|OO", &columns, &n, &out, &sizes_obj, &masks_obj)) return NULL;
    if (n < 0 || out.len < n * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "out must hold n uint64 values");
        goto done;
    }
    if (optional_output(sizes_obj, &sizes, &has_sizes, n, "sizes must hold n int64 values") != 0) goto done;
    if (optional_output(masks_obj, &masks, &has_masks, n, "masks must hold n int64 values") != 0) goto done;
    seq = PySequence_Fast(columns, "columns must be a sequence of column tuples");
    if (seq == NULL) goto done;
    k = PySequence_Fast_GET_SIZE(seq);
    cols = PyMem_Calloc(k ? k : 1, sizeof(column_t));
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < k; ready++) {
        PyObject *validity;
        column_t *c = &cols[ready];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, ready), "y*y*Onp", &c->offsets, &c->data, &validity,
                              &c->offset, &c->large))
            goto done; /* PyArg_ParseTuple released what it had taken */
        if (validity != Py_None) {
            if (PyObject_GetBuffer(validity, &c->validity, PyBUF_SIMPLE) != 0) {
                PyBuffer_Release(&c->offsets);
                PyBuffer_Release(&c->data);
                goto done;
            }
            c->has_validity = 1;
        }
        if (check_column(c, n, ready) != 0) {
            ready++;
            goto done;
        }
    }
    uint64_t *result = (uint64_t *)out.buf;
    int64_t *csv = has_sizes ? (int64_t *)sizes.buf : NULL, *empty = has_masks ? (int64_t *)masks.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (csv != NULL) hash_all(cols, k, n, result, csv, empty, 1);
    else hash_all(cols, k, n, result, NULL, empty, 0);
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    if (cols != NULL) {
        release_columns(cols, ready);
        PyMem_Free(cols);
    }
    Py_XDECREF(seq);
    if (has_sizes) PyBuffer_Release(&sizes);
    if (has_masks) PyBuffer_Release(&masks);
    PyBuffer_Release(&out);
    return ret;
}

/* ------------------------------------------------------------------------------------ hash tables */

static inline Py_ssize_t slot_of(uint64_t h, int bits) { return (Py_ssize_t)((h * HASH_GOLDEN) >> (64 - bits)); }

#define PREFETCH 16 /* needles (keys) looked ahead in the tables' random accesses */

/* log2 of a power-of-two table length, or -1. */
static int table_bits(Py_ssize_t slots) {
    if (slots < 2 || (slots & (slots - 1)) != 0) return -1;
    int bits = 0;
    while (((Py_ssize_t)1 << bits) < slots) bits++;
    return bits;
}

static PyObject *positions_build(PyObject *self, PyObject *args) {
    Py_buffer table, keys;
    if (!PyArg_ParseTuple(args, "w*y*", &table, &keys)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t slots = table.len / (Py_ssize_t)sizeof(int32_t), n = keys.len / (Py_ssize_t)sizeof(uint64_t);
    int bits = table_bits(slots);
    if (bits < 0 || n >= slots || n >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "positions_build: table length must be a power of two above len(keys)");
        goto done;
    }
    int32_t *t = (int32_t *)table.buf;
    const uint64_t *k = (const uint64_t *)keys.buf;
    Py_ssize_t mask = slots - 1;
    Py_BEGIN_ALLOW_THREADS
    memset(t, 0, (size_t)slots * sizeof(int32_t));
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v = k[i];
        if (v == 0) continue;
        Py_ssize_t s = slot_of(v, bits);
        while (t[s] != 0 && k[t[s] - 1] != v) s = (s + 1) & mask;
        if (t[s] == 0) t[s] = (int32_t)(i + 1); /* the first position of a repeated key stays */
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&keys);
    return ret;
}

static PyObject *positions_find(PyObject *self, PyObject *args) {
    Py_buffer table, keys, needles, found, at;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*", &table, &keys, &needles, &found, &at)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t slots = table.len / (Py_ssize_t)sizeof(int32_t), nk = keys.len / (Py_ssize_t)sizeof(uint64_t);
    Py_ssize_t n = needles.len / (Py_ssize_t)sizeof(uint64_t);
    int bits = table_bits(slots);
    if (bits < 0 || nk >= slots || found.len < n || at.len < n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "positions_find: bad table or output sizes");
        goto done;
    }
    const int32_t *t = (const int32_t *)table.buf;
    const uint64_t *k = (const uint64_t *)keys.buf, *q = (const uint64_t *)needles.buf;
    uint8_t *f = (uint8_t *)found.buf;
    int64_t *a = (int64_t *)at.buf;
    Py_ssize_t mask = slots - 1;
    int foreign = 0; /* a table built for other keys: an entry beyond them is refused, never read */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !foreign; i++) {
        /* Two cache misses a needle (its slot, then the key the slot points to), in tables larger than the
         * caches: both are asked for ahead, the slot PREFETCH needles ahead, the key half as far (the slot
         * has arrived by then), so that a look-up rarely waits for memory. */
        if (i + PREFETCH < n && q[i + PREFETCH] != 0) __builtin_prefetch(&t[slot_of(q[i + PREFETCH], bits)]);
        if (i + PREFETCH / 2 < n && q[i + PREFETCH / 2] != 0) {
            int32_t e = t[slot_of(q[i + PREFETCH / 2], bits)];
            if (e > 0 && e <= nk) __builtin_prefetch(&k[e - 1]);
        }
        uint64_t v = q[i];
        f[i] = 0;
        a[i] = 0;
        if (v == 0) continue;
        Py_ssize_t s = slot_of(v, bits), probes = 0;
        while (t[s] != 0 && probes++ < slots) {
            if (t[s] < 0 || t[s] > nk) {
                foreign = 1;
                break;
            }
            if (k[t[s] - 1] == v) {
                f[i] = 1;
                a[i] = t[s] - 1;
                break;
            }
            s = (s + 1) & mask;
        }
    }
    Py_END_ALLOW_THREADS
    if (foreign) {
        PyErr_SetString(PyExc_ValueError, "positions_find: the table does not belong to these keys");
        goto done;
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&needles);
    PyBuffer_Release(&found);
    PyBuffer_Release(&at);
    return ret;
}

/* keyset_add(table, keys, dup) -> added: each key (uint64, not 0) into an open-addressing table of uint64
 * slots (0 = empty, a power of two in length), in order; dup[i] = 1 where the key was there already (added
 * earlier, or earlier in keys), else 0 and the key is added. The caller keeps the table under MAX_LOAD (it
 * grows it with keyset_rehash) and the key 0 out: the duplicate rule's set of kept keys (validate.KeySet). */
static PyObject *keyset_add(PyObject *self, PyObject *args) {
    Py_buffer table, keys, dup;
    if (!PyArg_ParseTuple(args, "w*y*w*", &table, &keys, &dup)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t slots = table.len / (Py_ssize_t)sizeof(uint64_t), n = keys.len / (Py_ssize_t)sizeof(uint64_t);
    int bits = table_bits(slots);
    if (bits < 0 || dup.len < n) {
        PyErr_SetString(PyExc_ValueError, "keyset_add: the table is not a power of two, or dup is too short");
        goto done;
    }
    uint64_t *t = (uint64_t *)table.buf;
    const uint64_t *k = (const uint64_t *)keys.buf;
    uint8_t *d = (uint8_t *)dup.buf;
    Py_ssize_t mask = slots - 1, added = 0;
    int full = 0, zero = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH < n) __builtin_prefetch(&t[slot_of(k[i + PREFETCH], bits)], 1);
        uint64_t v = k[i];
        if (v == 0) {
            zero = 1;
            break;
        }
        Py_ssize_t s = slot_of(v, bits), probes = 0;
        while (t[s] != 0 && t[s] != v && ++probes < slots) s = (s + 1) & mask;
        if (t[s] == v) {
            d[i] = 1;
            continue;
        }
        if (t[s] != 0) {
            full = 1;
            break;
        }
        t[s] = v;
        d[i] = 0;
        added++;
    }
    Py_END_ALLOW_THREADS
    if (zero || full) {
        PyErr_SetString(PyExc_ValueError,
                        zero ? "keyset_add: key 0 is the empty slot" : "keyset_add: the table is full");
        goto done;
    }
    ret = PyLong_FromSsize_t(added);
done:
    PyBuffer_Release(&table);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&dup);
    return ret;
}

/* keyset_rehash(old, new): every key of one keyset_add table into a larger, empty one. */
static PyObject *keyset_rehash(PyObject *self, PyObject *args) {
    Py_buffer old, fresh;
    if (!PyArg_ParseTuple(args, "y*w*", &old, &fresh)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = old.len / (Py_ssize_t)sizeof(uint64_t), slots = fresh.len / (Py_ssize_t)sizeof(uint64_t);
    int bits = table_bits(slots);
    if (bits < 0 || slots <= n) {
        PyErr_SetString(PyExc_ValueError, "keyset_rehash: the new table must be a larger power of two");
        goto done;
    }
    const uint64_t *o = (const uint64_t *)old.buf;
    uint64_t *t = (uint64_t *)fresh.buf;
    Py_ssize_t mask = slots - 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v = o[i];
        if (v == 0) continue;
        Py_ssize_t s = slot_of(v, bits);
        while (t[s] != 0) s = (s + 1) & mask; /* every key is distinct, and there is room */
        t[s] = v;
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&old);
    PyBuffer_Release(&fresh);
    return ret;
}

/* merge_latest(older, newer, at, out): the union of two tables of (key hash, row hash, source hash) rows,
 * int64 each, sorted by key hash: ``older`` (each key once) and the rows ``at`` of ``newer`` (positions, in
 * key order, each key once); the newer row where both have a key. Written into ``out`` (room for both);
 * returns the number of rows. One pass, no temporary arrays: the commit merges a file's rows into the
 * snapshot of a million keys (store/blocks.py). */
static PyObject *merge_latest(PyObject *self, PyObject *args) {
    Py_buffer older, newer, at, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &older, &newer, &at, &out)) return NULL;
    PyObject *ret = NULL;
    const Py_ssize_t row = 3 * (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t n = older.len / row, nn = newer.len / row, m = at.len / (Py_ssize_t)sizeof(int64_t);
    if (older.len % row || newer.len % row || out.len < (n + m) * row) {
        PyErr_SetString(PyExc_ValueError, "merge_latest: rows are 3 int64, and out needs room for both tables");
        goto done;
    }
    const int64_t *o = (const int64_t *)older.buf, *w = (const int64_t *)newer.buf, *a = (const int64_t *)at.buf;
    int64_t *r = (int64_t *)out.buf;
    Py_ssize_t i = 0, j = 0, k = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t q = 0; q < m; q++)
        if (a[q] < 0 || a[q] >= nn) bad = 1;
    while (!bad && (i < n || j < m)) {
        const int64_t *x = i < n ? o + 3 * i : NULL, *y = j < m ? w + 3 * a[j] : NULL;
        const int64_t *pick;
        if (y == NULL || (x != NULL && x[0] < y[0])) {
            pick = x;
            i++;
        } else {
            if (x != NULL && x[0] == y[0]) i++; /* the newer row replaces the older one */
            pick = y;
            j++;
        }
        memcpy(r + 3 * k, pick, (size_t)row);
        k++;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "merge_latest: a position is outside newer");
        goto done;
    }
    ret = PyLong_FromSsize_t(k);
done:
    PyBuffer_Release(&older);
    PyBuffer_Release(&newer);
    PyBuffer_Release(&at);
    PyBuffer_Release(&out);
    return ret;
}

/* argsort_u64(keys, order, signed): the stable sorting order of fewer than 2^31 64-bit keys (uint64, or int64
 * when signed) into order (int64 positions): an LSD radix sort of (key, position) pairs, six passes of 11
 * bits, each a linear scatter. Three to four times as fast as numpy's argsort (introsort, AVX-512 where the
 * CPU has it) for the random 64-bit hashes sorted here: a commit sorts each file's key hashes
 * (store/blocks.py), the duplicate rule each chunk's (validate.py). The pairs are packed in 12 bytes (a
 * 32-bit position): 24 bytes a key while sorting, and half the time of 16-byte pairs. A pass whose digit is
 * the same for every key is skipped. */
#pragma pack(push, 4)
typedef struct {
    uint64_t key;
    int32_t at;
} keyed_t;
#pragma pack(pop)

static PyObject *argsort_u64(PyObject *self, PyObject *args) {
    enum { BITS = 11, BUCKETS = 1 << BITS, PASSES = (64 + BITS - 1) / BITS };
    Py_buffer keys, order;
    int is_signed;
    if (!PyArg_ParseTuple(args, "y*w*p", &keys, &order, &is_signed)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = keys.len / (Py_ssize_t)sizeof(uint64_t);
    keyed_t *a = NULL, *b = NULL;
    int64_t *count = NULL;
    if (keys.len % (Py_ssize_t)sizeof(uint64_t) || order.len < n * (Py_ssize_t)sizeof(int64_t) || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "argsort_u64: keys are 64-bit and fewer than 2^31, and order needs room for one int64 each");
        goto done;
    }
    a = PyMem_RawMalloc(sizeof(keyed_t) * (size_t)(n ? n : 1));
    b = PyMem_RawMalloc(sizeof(keyed_t) * (size_t)(n ? n : 1));
    count = PyMem_RawCalloc((size_t)PASSES * BUCKETS, sizeof(int64_t));
    if (a == NULL || b == NULL || count == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *k = (const uint64_t *)keys.buf, flip = is_signed ? 0x8000000000000000ULL : 0;
    int64_t *out = (int64_t *)order.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        uint64_t v = k[j] ^ flip; /* signed keys in unsigned order */
        a[j].key = v;
        a[j].at = (int32_t)j;
        for (int p = 0; p < PASSES; p++) count[p * BUCKETS + ((v >> (p * BITS)) & (BUCKETS - 1))]++;
    }
    for (int p = 0; p < PASSES; p++) {
        int64_t *c = count + p * BUCKETS, sum = 0;
        int skip = 0;
        for (int d = 0; d < BUCKETS; d++) {
            int64_t here = c[d];
            if (here == n) skip = 1; /* every key has this digit: the order stays */
            c[d] = sum;
            sum += here;
        }
        if (skip) continue;
        for (Py_ssize_t j = 0; j < n; j++) b[c[(a[j].key >> (p * BITS)) & (BUCKETS - 1)]++] = a[j];
        keyed_t *t = a;
        a = b;
        b = t;
    }
    for (Py_ssize_t j = 0; j < n; j++) out[j] = a[j].at;
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyMem_RawFree(a);
    PyMem_RawFree(b);
    PyMem_RawFree(count);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&order);
    return ret;
}

/* ---------------------------------------------------------------- PostgreSQL's hashes, client side */

/* PostgreSQL's hash_bytes_extended() and hash_bytes_uint32_extended() (Bob Jenkins' lookup3 as PostgreSQL
 * seeds and finishes it, on a little-endian server), written from the algorithm's description so that rows
 * read in full get their source hash here, from the values the driver decoded, instead of the server
 * computing it for every row (about 0.3 s of its CPU per million rows of six columns: bench/README.md,
 * session 12). The values must be those PostgreSQL hashes: connectif_sync.extract converts them and the
 * tests compare every kind with the server's own functions. */
#define ROT32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
#define PG_JMIX(a, b, c)                                                                                           \
    do {                                                                                                       \
        a -= c; a ^= ROT32(c, 4); c += b;                                                                      \
        b -= a; b ^= ROT32(a, 6); a += c;                                                                      \
        c -= b; c ^= ROT32(b, 8); b += a;                                                                      \
        a -= c; a ^= ROT32(c, 16); c += b;                                                                     \
        b -= a; b ^= ROT32(a, 19); a += c;                                                                     \
        c -= b; c ^= ROT32(b, 4); b += a;                                                                      \
    } while (0)
#define PG_JFINAL(a, b, c)                                                                                         \
    do {                                                                                                       \
        c ^= b; c -= ROT32(b, 14);                                                                             \
        a ^= c; a -= ROT32(c, 11);                                                                             \
        b ^= a; b -= ROT32(a, 25);                                                                             \
        c ^= b; c -= ROT32(b, 16);                                                                             \
        a ^= c; a -= ROT32(c, 4);                                                                              \
        b ^= a; b -= ROT32(a, 14);                                                                             \
        c ^= b; c -= ROT32(b, 24);                                                                             \
    } while (0)

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* hashtextextended() of a deterministic collation: the value's bytes. */
static uint64_t pg_hash_bytes(const uint8_t *k, uint32_t len, uint64_t seed) {
    uint32_t a, b, c;
    a = b = c = 0x9e3779b9u + len + 3923095u;
    if (seed != 0) {
        a += (uint32_t)(seed >> 32);
        b += (uint32_t)seed;
        PG_JMIX(a, b, c);
    }
    for (; len >= 12; k += 12, len -= 12) {
        a += le32(k);
        b += le32(k + 4);
        c += le32(k + 8);
        PG_JMIX(a, b, c);
    }
    /* The last 0-11 bytes; c's lowest byte stays for the length, as in lookup3. */
    switch (len) {
    case 11: c += (uint32_t)k[10] << 24; /* fall through */
    case 10: c += (uint32_t)k[9] << 16; /* fall through */
    case 9: c += (uint32_t)k[8] << 8; /* fall through */
    case 8: b += (uint32_t)k[7] << 24; /* fall through */
    case 7: b += (uint32_t)k[6] << 16; /* fall through */
    case 6: b += (uint32_t)k[5] << 8; /* fall through */
    case 5: b += k[4]; /* fall through */
    case 4: a += (uint32_t)k[3] << 24; /* fall through */
    case 3: a += (uint32_t)k[2] << 16; /* fall through */
    case 2: a += (uint32_t)k[1] << 8; /* fall through */
    case 1: a += k[0]; /* fall through */
    default: break;
    }
    PG_JFINAL(a, b, c);
    return ((uint64_t)b << 32) | c;
}

/* hashint8extended(): the two halves folded (so that equal int4 and int8 values hash alike), then
 * hash_uint32_extended(). A timestamp is hashed as its int8 microseconds since 2000-01-01. */
static inline uint64_t pg_hash_int8(int64_t v, uint64_t seed) {
    uint32_t lo = (uint32_t)v, hi = (uint32_t)((uint64_t)v >> 32);
    lo ^= v >= 0 ? hi : ~hi;
    uint32_t a, b, c;
    a = b = c = 0x9e3779b9u + 4u + 3923095u;
    if (seed != 0) {
        a += (uint32_t)(seed >> 32);
        b += (uint32_t)seed;
        PG_JMIX(a, b, c);
    }
    a += lo;
    PG_JFINAL(a, b, c);
    return ((uint64_t)b << 32) | c;
}

/* pg_hash_int64(values, validity, offset, n, seed, out): out[i] ^= hashint8extended(values[i], seed), or ^=
 * seed where validity (an Arrow bitmap from bit offset, or None) says NULL (coalesce(hash, seed)). */
static PyObject *pg_hash_int64(PyObject *self, PyObject *args) {
    Py_buffer values, validity, out;
    PyObject *validity_obj, *ret = NULL;
    Py_ssize_t offset, n;
    unsigned long long seed;
    int has_validity = 0;
    if (!PyArg_ParseTuple(args, "y*OnnKw*", &values, &validity_obj, &offset, &n, &seed, &out)) return NULL;
    if (validity_obj != Py_None) {
        if (PyObject_GetBuffer(validity_obj, &validity, PyBUF_SIMPLE) != 0) goto done;
        has_validity = 1;
    }
    if (n < 0 || offset < 0 || values.len < n * (Py_ssize_t)sizeof(int64_t) ||
        out.len < n * (Py_ssize_t)sizeof(uint64_t) || (has_validity && validity.len < (offset + n + 7) / 8)) {
        PyErr_SetString(PyExc_ValueError, "pg_hash_int64: values and out need n 64-bit values, validity n bits");
        goto done;
    }
    const int64_t *v = (const int64_t *)values.buf;
    const uint8_t *bits = has_validity ? (const uint8_t *)validity.buf : NULL;
    uint64_t *h = (uint64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t bit = offset + i;
        int valid = bits == NULL || ((bits[bit >> 3] >> (bit & 7)) & 1);
        h[i] ^= valid ? pg_hash_int8(v[i], (uint64_t)seed) : (uint64_t)seed;
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    if (has_validity) PyBuffer_Release(&validity);
    PyBuffer_Release(&values);
    PyBuffer_Release(&out);
    return ret;
}

/* pg_hash_text(column, n, seed, out): out[i] ^= hashtextextended(value i, seed) over an Arrow string column
 * tuple (as hash_rows takes them), or ^= seed for a NULL. */
static PyObject *pg_hash_text(PyObject *self, PyObject *args) {
    PyObject *spec, *validity = Py_None, *ret = NULL;
    Py_ssize_t n;
    unsigned long long seed;
    Py_buffer out;
    column_t col;
    memset(&col, 0, sizeof col);
    if (!PyArg_ParseTuple(args, "OnKw*", &spec, &n, &seed, &out)) return NULL;
    if (!PyArg_ParseTuple(spec, "y*y*Onp", &col.offsets, &col.data, &validity, &col.offset, &col.large)) {
        PyBuffer_Release(&out);
        return NULL;
    }
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &col.validity, PyBUF_SIMPLE) != 0) goto done;
        col.has_validity = 1;
    }
    if (n < 0 || out.len < n * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "pg_hash_text: out must hold n uint64 values");
        goto done;
    }
    if (check_column(&col, n, 0) != 0) goto done;
    uint64_t *h = (uint64_t *)out.buf;
    const uint8_t *data = (const uint8_t *)col.data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_valid(&col, i)) {
            h[i] ^= (uint64_t)seed;
            continue;
        }
        int64_t a = offset_at(&col, i), b = offset_at(&col, i + 1);
        h[i] ^= pg_hash_bytes(data + a, (uint32_t)(b - a), (uint64_t)seed);
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    release_columns(&col, 1);
    PyBuffer_Release(&out);
    return ret;
}

/* ---------------------------------------------------------------- MariaDB's text CRCs, client side */

/* MariaDB's source hash (connectif_sync.extract.source_hash_sql) is ((CRC32C(t) & 0x7fffffff) << 32) | CRC32(t)
 * of t = CONCAT_WS(CHAR(31), fingerprint, COALESCE(column, ''), ...). mysql_crc_rows builds t here from the
 * values ConnectorX decoded (integers and dates printed as MariaDB prints them, UTF-8 text as its bytes), so
 * that rows read whole do not cost MariaDB its ~0.6 s of CPU per million rows for the hash. CRC32 is zlib's
 * (reflected 0xEDB88320), CRC32C Castagnoli's (reflected 0x82F63B78): both slicing-by-8 tables, built once. */
static uint32_t crc_tables[2][8][256];
static int crc_ready = 0;
static int crc32c_insn_ok = 0; /* set by crc_init */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_CRC32C_INSN 1
#endif

static void crc_init(void) {
    const uint32_t polys[2] = {0xEDB88320u, 0x82F63B78u};
    for (int t = 0; t < 2; t++) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ polys[t] : c >> 1;
            crc_tables[t][0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int s = 1; s < 8; s++)
                crc_tables[t][s][i] = (crc_tables[t][s - 1][i] >> 8) ^ crc_tables[t][0][crc_tables[t][s - 1][i] & 0xff];
    }
#ifdef HAVE_CRC32C_INSN
    __builtin_cpu_init();
    crc32c_insn_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    crc32c_insn_ok = 0;
#endif
    crc_ready = 1;
}

static uint32_t crc_of(const uint32_t tab[8][256], const uint8_t *p, size_t len) {
    uint32_t c = 0xFFFFFFFFu;
    for (; len >= 8; p += 8, len -= 8) {
        uint32_t lo = c ^ le32(p), hi = le32(p + 4);
        c = tab[7][lo & 0xff] ^ tab[6][(lo >> 8) & 0xff] ^ tab[5][(lo >> 16) & 0xff] ^ tab[4][lo >> 24] ^
            tab[3][hi & 0xff] ^ tab[2][(hi >> 8) & 0xff] ^ tab[1][(hi >> 16) & 0xff] ^ tab[0][hi >> 24];
    }
    for (; len; p++, len--) c = (c >> 8) ^ tab[0][(c ^ *p) & 0xff];
    return c ^ 0xFFFFFFFFu;
}

/* CRC32C by the SSE4.2 instruction where the CPU has it (x86-64; checked once, at the first call): about
 * 8x the tables' speed, so a row's two CRCs cost about one; the same values (text_crcs gives both to the tests,
 * which also compare with MariaDB's own). */
#ifdef HAVE_CRC32C_INSN
__attribute__((target("sse4.2"))) static uint32_t crc32c_insn(const uint8_t *p, size_t len) {
    uint64_t c = 0xFFFFFFFFu;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; len; p++, len--) c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32 ^ 0xFFFFFFFFu;
}
#endif

static uint32_t crc32c_of(const uint8_t *p, size_t len) {
#ifdef HAVE_CRC32C_INSN
    if (crc32c_insn_ok) return crc32c_insn(p, len);
#endif
    return crc_of(crc_tables[1], p, len);
}

enum { MY_TEXT = 0, MY_INT = 1, MY_DATE = 2 };

typedef struct {
    int kind;
    column_t text;   /* MY_TEXT */
    Py_buffer values; /* MY_INT: int64; MY_DATE: int32 days since 1970 */
    Py_buffer validity;
    int has_validity;
    Py_ssize_t offset; /* of the validity bitmap (values start at 0) */
    int64_t widest;    /* bytes a value can take */
} my_column_t;

static int my_valid(const my_column_t *c, Py_ssize_t i) {
    if (!c->has_validity) return 1;
    Py_ssize_t bit = c->offset + i;
    return (((const uint8_t *)c->validity.buf)[bit >> 3] >> (bit & 7)) & 1;
}

static size_t put_int(uint8_t *out, int64_t v) {
    uint8_t tmp[20];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (uint8_t)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* YYYY-MM-DD of days since 1970-01-01 (the proleptic Gregorian calendar, as MariaDB prints DATE). */
static size_t put_date(uint8_t *out, int64_t z) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    uint32_t doe = (uint32_t)(z - era * 146097);
    uint32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint32_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    uint32_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    if (y < 0 || y > 9999) return put_int(out, y); /* not a MariaDB date: never equal to one */
    uint32_t yy = (uint32_t)y;
    out[0] = (uint8_t)('0' + yy / 1000);
    out[1] = (uint8_t)('0' + yy / 100 % 10);
    out[2] = (uint8_t)('0' + yy / 10 % 10);
    out[3] = (uint8_t)('0' + yy % 10);
    out[4] = '-';
    out[5] = (uint8_t)('0' + m / 10);
    out[6] = (uint8_t)('0' + m % 10);
    out[7] = '-';
    out[8] = (uint8_t)('0' + d / 10);
    out[9] = (uint8_t)('0' + d % 10);
    return 10;
}

static void release_my(my_column_t *cols, Py_ssize_t k) {
    for (Py_ssize_t c = 0; c < k; c++) {
        if (cols[c].kind == MY_TEXT) {
            release_columns(&cols[c].text, 1);
        } else {
            PyBuffer_Release(&cols[c].values);
            if (cols[c].has_validity) PyBuffer_Release(&cols[c].validity);
        }
    }
}

/* mysql_crc_rows(prefix, columns, n, out): out[i] = MariaDB's source hash of row i, t being prefix (the
 * fingerprint's text) then each column's value after a 0x1f. columns: ("text", column tuple as hash_rows
 * takes) or ("int", int64 values, validity, offset) or ("date", int32 days, validity, offset). */
static PyObject *mysql_crc_rows(PyObject *self, PyObject *args) {
    Py_buffer prefix, out;
    PyObject *columns, *seq = NULL, *ret = NULL;
    Py_ssize_t n, k = 0, ready = 0;
    my_column_t *cols = NULL;
    uint8_t *buf = NULL;
    if (!PyArg_ParseTuple(args, "y*Onw*", &prefix, &columns, &n, &out)) return NULL;
    if (!crc_ready) crc_init();
    if (n < 0 || out.len < n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "mysql_crc_rows: out must hold n int64 values");
        goto done;
    }
    seq = PySequence_Fast(columns, "columns must be a sequence of (kind, ...) tuples");
    if (seq == NULL) goto done;
    k = PySequence_Fast_GET_SIZE(seq);
    cols = PyMem_Calloc(k ? k : 1, sizeof(my_column_t));
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t room = (int64_t)prefix.len;
    for (; ready < k; ready++) {
        my_column_t *c = &cols[ready];
        PyObject *item = PySequence_Fast_GET_ITEM(seq, ready), *spec, *validity;
        const char *kind;
        if (!PyArg_ParseTuple(item, "sO", &kind, &spec)) goto done;
        if (strcmp(kind, "text") == 0) {
            c->kind = MY_TEXT;
            if (!PyArg_ParseTuple(spec, "y*y*Onp", &c->text.offsets, &c->text.data, &validity, &c->text.offset,
                                  &c->text.large))
                goto done;
            if (validity != Py_None) {
                if (PyObject_GetBuffer(validity, &c->text.validity, PyBUF_SIMPLE) != 0) {
                    PyBuffer_Release(&c->text.offsets);
                    PyBuffer_Release(&c->text.data);
                    goto done;
                }
                c->text.has_validity = 1;
            }
            if (check_column(&c->text, n, ready) != 0) {
                ready++;
                goto done;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                int64_t w = offset_at(&c->text, i + 1) - offset_at(&c->text, i);
                if (w > c->widest) c->widest = w;
            }
        } else if (strcmp(kind, "int") == 0 || strcmp(kind, "date") == 0) {
            c->kind = strcmp(kind, "int") == 0 ? MY_INT : MY_DATE;
            Py_ssize_t width = c->kind == MY_INT ? 8 : 4;
            if (!PyArg_ParseTuple(spec, "y*On", &c->values, &validity, &c->offset)) goto done;
            if (validity != Py_None) {
                if (PyObject_GetBuffer(validity, &c->validity, PyBUF_SIMPLE) != 0) {
                    PyBuffer_Release(&c->values);
                    goto done;
                }
                c->has_validity = 1;
            }
            if (c->values.len < n * width || c->offset < 0 ||
                (c->has_validity && c->validity.len < (c->offset + n + 7) / 8)) {
                PyErr_Format(PyExc_ValueError, "column %zd: buffers too short for %zd rows", ready, n);
                ready++;
                goto done;
            }
            c->widest = 24;
        } else {
            PyErr_Format(PyExc_ValueError, "column %zd: kind %s is not text, int or date", ready, kind);
            goto done;
        }
        room += 1 + c->widest;
    }
    buf = PyMem_RawMalloc((size_t)room + 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, prefix.buf, (size_t)prefix.len);
    int64_t *result = (int64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)prefix.len;
        for (Py_ssize_t j = 0; j < k; j++) {
            const my_column_t *c = &cols[j];
            buf[len++] = SEPARATOR;
            if (c->kind == MY_TEXT) {
                if (!is_valid(&c->text, i)) continue;
                int64_t a = offset_at(&c->text, i), b = offset_at(&c->text, i + 1);
                memcpy(buf + len, (const uint8_t *)c->text.data.buf + a, (size_t)(b - a));
                len += (size_t)(b - a);
            } else if (my_valid(c, i)) {
                len += c->kind == MY_INT ? put_int(buf + len, ((const int64_t *)c->values.buf)[i])
                                         : put_date(buf + len, ((const int32_t *)c->values.buf)[i]);
            }
        }
        uint32_t c32c = crc32c_of(buf, len), c32 = crc_of(crc_tables[0], buf, len);
        result[i] = (int64_t)(((uint64_t)(c32c & 0x7fffffffu) << 32) | c32);
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyMem_RawFree(buf);
    if (cols != NULL) {
        release_my(cols, ready);
        PyMem_Free(cols);
    }
    Py_XDECREF(seq);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&out);
    return ret;
}

/* ------------------------------------------------------------------------------------ email addresses */

/* Bytes of the local part connectif_sync.shape.EMAIL_PATTERN allows, and ASCII's spaces that
 * utf8_trim_whitespace trims (shape._ASCII_SPACE). */
static uint8_t email_local_table[256];
static int email_ready = 0;
static void email_init(void) {
    for (int b = 0; b < 256; b++)
        email_local_table[b] = (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
                               (b != 0 && strchr(".!#$%&'*+/=?^_`{|}~-", b) != NULL);
    email_ready = 1;
}
static inline int email_local(uint8_t b) { return email_local_table[b]; }
static int email_space(uint8_t b) { return b == ' ' || (b >= '\t' && b <= '\r') || (b >= 0x1c && b <= 0x1f); }
static int is_alnum(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9'); }
static int is_alpha(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }

/* Whether p[0..len) matches EMAIL_PATTERN: a local part of its characters, one @, then dot-separated labels
 * (1-63 letters, digits or hyphens, a letter or digit at each end), the last of at least two being 2-63
 * letters. The pattern anchors both ends, and no character class of it holds @ or a dot in a label, so the
 * split at the first @ and at every dot after it is the only one it can match. */
static int email_matches(const uint8_t *p, size_t len) {
    size_t i = 0;
    while (i < len && email_local(p[i])) i++;
    if (i == 0 || i == len || p[i] != '@') return 0;
    size_t labels = 0;
    i++;
    for (;;) {
        size_t a = i;
        while (i < len && p[i] != '.') i++;
        size_t w = i - a;
        labels++;
        if (i == len) { /* the last label: the top-level domain */
            if (labels < 2 || w < 2 || w > 63) return 0;
            for (size_t j = a; j < i; j++)
                if (!is_alpha(p[j])) return 0;
            return 1;
        }
        if (w == 0 || w > 63 || !is_alnum(p[a]) || !is_alnum(p[i - 1])) return 0;
        for (size_t j = a; j < i; j++)
            if (!is_alnum(p[j]) && p[j] != '-') return 0;
        i++; /* the dot */
    }
}

/* email_rows(column, n, offsets_out, data_out, status_out) -> bytes written. Every ASCII value trimmed
 * (shape._ASCII_SPACE) and lower-cased into data_out/offsets_out (int32, n + 1), and status_out[i]: 0 a
 * valid address, 1 null or empty once trimmed, 2 an invalid one, 3 not ASCII (nothing written: Unicode's
 * rules are left to Arrow's kernels). What shape.shape_email's ASCII kernels and EMAIL_PATTERN do, in one
 * pass instead of six. */
static PyObject *email_rows(PyObject *self, PyObject *args) {
    column_t col = {0};
    PyObject *validity;
    Py_buffer offs, data, status;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "(y*y*Onp)nw*w*w*", &col.offsets, &col.data, &validity, &col.offset, &col.large, &n,
                          &offs, &data, &status))
        return NULL;
    PyObject *ret = NULL;
    if (!email_ready) email_init();
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &col.validity, PyBUF_SIMPLE) != 0) goto done;
        col.has_validity = 1;
    }
    if (n < 0 || check_column(&col, n, 0) != 0) goto done;
    if (offs.len < (n + 1) * (Py_ssize_t)sizeof(int32_t) || status.len < n ||
        data.len < (n ? offset_at(&col, n) - offset_at(&col, 0) : 0) || data.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "email_rows: output buffers too small (or data over 2 GB)");
        goto done;
    }
    int32_t *o = (int32_t *)offs.buf;
    uint8_t *out = (uint8_t *)data.buf, *st = (uint8_t *)status.buf;
    const uint8_t *in = (const uint8_t *)col.data.buf;
    size_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    o[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_valid(&col, i)) {
            st[i] = 1;
            o[i + 1] = (int32_t)w;
            continue;
        }
        const uint8_t *a = in + offset_at(&col, i), *b = in + offset_at(&col, i + 1);
        uint8_t any = 0;
        for (const uint8_t *q = a; q < b; q++) any |= *q;
        if (any & 0x80) {
            st[i] = 3;
            o[i + 1] = (int32_t)w;
            continue;
        }
        while (a < b && email_space(*a)) a++;
        while (b > a && email_space(b[-1])) b--;
        uint8_t *dst = out + w;
        for (const uint8_t *q = a; q < b; q++) *dst++ = (*q >= 'A' && *q <= 'Z') ? (uint8_t)(*q + 32) : *q;
        size_t len = (size_t)(b - a);
        st[i] = len == 0 ? 1 : email_matches(out + w, len) ? 0 : 2;
        w += len;
        o[i + 1] = (int32_t)w;
    }
    Py_END_ALLOW_THREADS
    ret = PyLong_FromSize_t(w);
done:
    release_columns(&col, 1);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&data);
    PyBuffer_Release(&status);
    return ret;
}

/* The two CRCs of one buffer, CRC32C by the instruction and by the tables: for the tests. */
static PyObject *text_crcs(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    if (!crc_ready) crc_init();
    const uint8_t *p = (const uint8_t *)data.buf;
    size_t len = (size_t)data.len;
    uint32_t c32 = crc_of(crc_tables[0], p, len), tables = crc_of(crc_tables[1], p, len), insn = crc32c_of(p, len);
    PyBuffer_Release(&data);
    return Py_BuildValue("(kkkO)", (unsigned long)c32, (unsigned long)tables, (unsigned long)insn,
                         crc32c_insn_ok ? Py_True : Py_False);
}

/* version_tokens(xmin, ctid, n, seed, out): PostgreSQL row versions as source hashes (client_hash.version_tokens
 * says why): xmin n 4-byte and ctid n 6-byte big-endian values (transaction; block and line), out n uint64:
 * mix64 (SplitMix64's finaliser, _hash64.h) of ((xmin << 32 | block) ^ seed), plus line * golden, mixed again,
 * never 0. */
static PyObject *version_tokens(PyObject *self, PyObject *args) {
    Py_buffer xmin, ctid, out;
    Py_ssize_t n;
    unsigned long long seed;
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "y*y*nKw*", &xmin, &ctid, &n, &seed, &out)) return NULL;
    if (n < 0 || xmin.len < 4 * n || ctid.len < 6 * n || out.len < n * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "version_tokens: xmin needs 4n bytes, ctid 6n, out n 64-bit values");
        goto done;
    }
    const uint8_t *x = (const uint8_t *)xmin.buf, *t = (const uint8_t *)ctid.buf;
    uint64_t *h = (uint64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++, x += 4, t += 6) {
        uint64_t xid = ((uint64_t)x[0] << 24) | ((uint64_t)x[1] << 16) | ((uint64_t)x[2] << 8) | x[3];
        uint64_t block = ((uint64_t)t[0] << 24) | ((uint64_t)t[1] << 16) | ((uint64_t)t[2] << 8) | t[3];
        uint64_t line = ((uint64_t)t[4] << 8) | t[5];
        uint64_t v = mix64(mix64(((xid << 32) | block) ^ (uint64_t)seed) + line * HASH_GOLDEN);
        h[i] = v ? v : 1;
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&xmin);
    PyBuffer_Release(&ctid);
    PyBuffer_Release(&out);
    return ret;
}

static PyMethodDef methods[] = {
    {"email_rows", email_rows, METH_VARARGS,
     "email_rows(column, n, offsets_out, data_out, status_out) -> bytes: ASCII addresses trimmed, lower-cased "
     "and checked against shape.EMAIL_PATTERN in one pass (status 0 valid, 1 null or empty, 2 invalid, 3 not "
     "ASCII)."},
    {"text_crcs", text_crcs, METH_VARARGS,
     "text_crcs(data): (CRC32, CRC32C by tables, CRC32C as mysql_crc_rows computes it, whether that is the "
     "SSE4.2 instruction) of bytes: for the tests."},
    {"hash_rows", hash_rows, METH_VARARGS,
     "hash_rows(columns, n, out, sizes=None, masks=None): the joined-row hash of n rows of Arrow string columns "
     "into out (uint64) and, when given, each row's CSV size into sizes (int64) and its empty-field mask (bit c: "
     "column c < 63 null or empty) into masks (int64)."},
    {"positions_build", positions_build, METH_VARARGS,
     "positions_build(table, keys): index the positions of uint64 keys (not 0) in an int32 table."},
    {"positions_find", positions_find, METH_VARARGS,
     "positions_find(table, keys, needles, found, at): where each needle is in keys (found: uint8, at: int64)."},
    {"keyset_add", keyset_add, METH_VARARGS,
     "keyset_add(table, keys, dup) -> added: uint64 keys (not 0) into an open-addressing table (0 = empty), in "
     "order; dup[i] = 1 where the key was there already."},
    {"keyset_rehash", keyset_rehash, METH_VARARGS, "keyset_rehash(old, new): a keyset_add table into a larger one."},
    {"merge_latest", merge_latest, METH_VARARGS,
     "merge_latest(older, newer, at, out): the union of older and newer[at] (rows of 3 int64 sorted by the "
     "first, each key once), newer's row for a key both have, into out; returns the number of rows."},
    {"argsort_u64", argsort_u64, METH_VARARGS,
     "argsort_u64(keys, order, signed): the stable sorting order of fewer than 2^31 64-bit keys (int64 when "
     "signed, else uint64) into order (int64)."},
    {"version_tokens", version_tokens, METH_VARARGS,
     "version_tokens(xmin, ctid, n, seed, out): PostgreSQL row versions (4- and 6-byte big-endian values) as "
     "64-bit source hashes."},
    {"pg_hash_int64", pg_hash_int64, METH_VARARGS,
     "pg_hash_int64(values, validity, offset, n, seed, out): out[i] ^= PostgreSQL's hashint8extended(values[i], "
     "seed) (int64 values), or ^= seed where the Arrow validity bitmap (or None) says NULL."},
    {"pg_hash_text", pg_hash_text, METH_VARARGS,
     "pg_hash_text(column, n, seed, out): out[i] ^= PostgreSQL's hashtextextended(value, seed) of an Arrow "
     "string column tuple (as hash_rows takes), or ^= seed for a NULL."},
    {"mysql_crc_rows", mysql_crc_rows, METH_VARARGS,
     "mysql_crc_rows(prefix, columns, n, out): MariaDB's ((CRC32C(t) & 0x7fffffff) << 32) | CRC32(t) of each row's "
     "t = prefix + (0x1f + value) per column into out (int64); columns are (\"text\", column tuple), "
     "(\"int\", (int64 values, validity, offset)) or (\"date\", (int32 days, validity, offset))."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hashing", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hashing(void) { return PyModule_Create(&module); }
