/* A SQLite extension: connectif_source_hash(fingerprint, v1, v2, ...), the source hash of one row computed
 * by SQLite itself, so that a full scan can find the rows Connectif already has without building Arrow arrays
 * of all their values (connectif_sync.pipeline, "probe").
 *
 * Why: reading every value of a million rows through ADBC costs about 2.3 CPU seconds, SQLite's own stepping
 * about 0.8; a second run only needs each row's id, updated_at and source hash, then the full values of the
 * ~3% of rows that are not confirmed. The value equals connectif_sync.pipeline.source_hashes() of the same row
 * read through ADBC: the values' text joined with 0x1f (NULL as empty), hashed as connectif_sync.hashing does
 * (sum((byte + 1) * P^i) mod 2^64, xor length * golden ratio, splitmix64), xor the mapping fingerprint,
 * splitmix64 again. SQLite's text of INTEGER and TEXT values is exactly the text Arrow gives them; REAL and
 * BLOB values may be rendered differently, so for a row with one of those the function returns NULL and the
 * caller reads that row in full (tests compare both paths on the sample ERP).
 *
 * Loaded into ADBC's SQLite driver (adbc.sqlite.load_extension.*) with the entry point
 * sqlite3_connectifhash_init. Built by setup.py as an optional extension (it needs sqlite3ext.h, Debian's
 * libsqlite3-dev); without it full scans read every value, as before. PyInit__sqlite_hash only makes the
 * file importable, so that connectif_sync can find its path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#include <stdint.h>

#include "_hash64.h"

static void source_hash(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    if (argc < 1) {
        sqlite3_result_error(ctx, "connectif_source_hash(fingerprint, values...)", -1);
        return;
    }
    uint64_t fingerprint = (uint64_t)sqlite3_value_int64(argv[0]);
    uint64_t h = 0, pw = 1, length = 0;
    for (int c = 1; c < argc; c++) {
        if (c > 1) {
            h += (uint64_t)(SEPARATOR + 1) * pw;
            pw *= HASH_P;
            length += 1;
        }
        int type = sqlite3_value_type(argv[c]);
        if (type == SQLITE_NULL) continue;
        if (type == SQLITE_FLOAT || type == SQLITE_BLOB) { /* Arrow may render these otherwise */
            sqlite3_result_null(ctx);
            return;
        }
        const unsigned char *p = sqlite3_value_text(argv[c]);
        int n = sqlite3_value_bytes(argv[c]);
        if (p == NULL && n > 0) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        for (int i = 0; i < n; i++) {
            h += ((uint64_t)p[i] + 1) * pw;
            pw *= HASH_P;
        }
        length += (uint64_t)n;
    }
    h ^= length * HASH_GOLDEN;
    h = mix64(h) ^ fingerprint;
    sqlite3_result_int64(ctx, (sqlite3_int64)mix64(h));
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_connectifhash_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    (void)err;
    SQLITE_EXTENSION_INIT2(api);
    return sqlite3_create_function(db, "connectif_source_hash", -1,
                                   SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL, source_hash, NULL,
                                   NULL);
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sqlite_hash",
                                    "SQLite extension: connectif_source_hash() (see _sqlite_hash.c).", -1, NULL};

PyMODINIT_FUNC PyInit__sqlite_hash(void) { return PyModule_Create(&module); }
