/* The hash both C extensions compute (_hashing.c, _sqlite_hash.c), defined once so that they stay
 * bit-identical: values joined with SEPARATOR (a NULL counts as empty), sum((byte + 1) * HASH_P^i) mod 2^64,
 * xor (length * HASH_GOLDEN), then mix64 (the splitmix64 finaliser). connectif_sync.hashing documents it. */
#ifndef CONNECTIF_HASH64_H
#define CONNECTIF_HASH64_H
#include <stdint.h>

#define HASH_P 0x100000001B3ULL
#define HASH_GOLDEN 0x9E3779B97F4A7C15ULL
#define SEPARATOR 0x1f

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBULL;
    h ^= h >> 31;
    return h;
}
#endif
