// pkcs11_wire: the messages between the gateway and its PKCS#11 signer process
// (mtlsgw-pkcs11, gateway/signer/). Both ends include this header and nothing else of
// each other: the signer links neither BoringSSL nor any layer of the gateway, so the
// OpenSSL 3 that Debian's PKCS#11 modules link is the only libcrypto in its process.
//
// Transport: SOCK_SEQPACKET socketpairs, one message per packet (a head, then |len|
// bytes). The control socket (the signer's fd 3) carries HELLO, KEYGEN, CHANNEL (a new
// socketpair end passed with SCM_RIGHTS) and SIGN; every channel carries SIGN only.
// Replies carry the request's type and id; |arg| is 0 on success, else the PKCS#11 return
// value (CKR_*) or P11W_ERR_*, with the reason in words as the payload.
#ifndef MTLSGW_PKCS11_WIRE_H
#define MTLSGW_PKCS11_WIRE_H

#include <stdint.h>

#define P11W_MAX 4096  // the largest message, head included

enum {
    P11W_HELLO = 1,    // module, URI, PIN, uid, gid: load, find the token, log in, find the key
    P11W_SIGN = 2,     // arg: P11W_MECH_*; payload: what to sign (a digest or a DigestInfo)
    P11W_KEYGEN = 3,   // arg: P11W_KEY_*; payload: label NUL id-hex NUL
    P11W_CHANNEL = 4,  // one SCM_RIGHTS descriptor: a new channel (no reply)
};

// HELLO flags (arg).
enum {
    P11W_HELLO_NO_KEY = 1,    // do not look for the key (KEYGEN follows)
    P11W_HELLO_NO_REPLY = 2,  // a restart: errors go to each SIGN instead of a reply
};

enum {
    P11W_MECH_ECDSA = 1,       // CKM_ECDSA over a digest: r || s comes back
    P11W_MECH_RSA_PKCS = 2,    // CKM_RSA_PKCS over a DigestInfo
    P11W_MECH_PSS_SHA256 = 3,  // CKM_RSA_PKCS_PSS over a digest, MGF1 and salt of the same hash
    P11W_MECH_PSS_SHA384 = 4,
    P11W_MECH_PSS_SHA512 = 5,
};

enum {
    P11W_KEY_EC_P256 = 1,
    P11W_KEY_EC_P384 = 2,
    P11W_KEY_RSA_2048 = 3,
    P11W_KEY_RSA_3072 = 4,
};

// Mechanisms the token offers (HELLO reply's mechs).
enum { P11W_HAS_ECDSA = 1, P11W_HAS_RSA_PKCS = 2, P11W_HAS_RSA_PSS = 4 };

// Errors of our own (beside CKR_* values, which are below 0x80000000).
enum {
    P11W_ERR_MODULE = 0x80000001u,  // the module does not load
    P11W_ERR_NO_TOKEN = 0x80000002u,
    P11W_ERR_NO_KEY = 0x80000003u,
    P11W_ERR_EXISTS = 0x80000004u,  // KEYGEN: the object exists
    P11W_ERR_BAD = 0x80000005u,     // malformed request, URI or state
    P11W_ERR_LOGIN = 0x80000006u,   // an earlier login failed: not retried (a PIN has few tries)
};

typedef struct {
    uint32_t type;
    uint32_t id;  // the requester's; echoed in the reply
    uint32_t arg;
    uint32_t len;  // payload bytes after the head
} p11w_head;

// HELLO request payload: this, then module path NUL, URI NUL, PIN NUL.
typedef struct {
    int32_t uid, gid;  // run as these (when the signer starts as root); -1: as started
} p11w_hello;

// Key types (HELLO reply's key_type).
enum { P11W_KEYTYPE_NONE = 0, P11W_KEYTYPE_EC = 1, P11W_KEYTYPE_RSA = 2 };

// HELLO reply payload on success.
typedef struct {
    uint32_t key_type;  // P11W_KEYTYPE_* (NONE with P11W_HELLO_NO_KEY)
    uint32_t mechs;     // P11W_HAS_*
    char token[33];     // the token's label, trimmed
    char object[95];    // the key's CKA_LABEL, trimmed ("" if none)
} p11w_hello_ok;

// KEYGEN reply payload on success: two length-prefixed (uint32) byte strings, the public
// key: EC: CKA_EC_PARAMS (DER OID), CKA_EC_POINT (DER OCTET STRING); RSA: modulus,
// public exponent (big-endian).

#endif
