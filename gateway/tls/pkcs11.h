// pkcs11: client keys that stay in a PKCS#11 token (RFC 7512 URIs as `key`). The module
// runs in a signer process of our own (mtlsgw-pkcs11, see gateway/tls/pkcs11_wire.h for why),
// started per identity load and restarted when it dies. This file parses the URIs (with
// p11-kit), starts and talks to the signer, and turns TLS signature algorithms into what
// the token signs; the asynchronous use during handshakes is gateway/upstream/keyops.c.
#ifndef MTLSGW_PKCS11_H
#define MTLSGW_PKCS11_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/tls/pkcs11_wire.h"

typedef struct gw_p11 gw_p11;

// gw_p11_is_uri says whether a `key` value is a PKCS#11 URI ("pkcs11:...").
int gw_p11_is_uri(const char *s);

// gw_p11_uri_parse checks |uri| with p11-kit's parser. On success returns 1 and, when
// the URI carries them, the module-path into *|out_module| and the pin-source file into
// *|out_pin_file| (malloc'ed; NULL when absent). On failure returns 0 with words in |err|.
int gw_p11_uri_parse(const char *uri, char **out_module, char **out_pin_file, char *err, size_t cap);

// gw_p11_uri_object writes the URI's object= (CKA_LABEL) into |label| and its id= in hex
// into |id_hex| ("" when absent). Returns 0 if |uri| does not parse or a value is too long.
int gw_p11_uri_object(const char *uri, char *label, size_t label_cap, char *id_hex, size_t id_cap);

// gw_p11_uri_describe writes "token=gw object=ops" (the URI's token and object parts,
// for identity list) into |out|.
void gw_p11_uri_describe(const char *uri, char *out, size_t cap);

// gw_p11_open starts a signer for |module| and |uri| that logs in with |pin| (may be
// NULL), running as |uid|/|gid| when this process is root (-1: as this process), and
// waits for its answer. |flags| are P11W_HELLO_* (P11W_HELLO_NO_KEY for key generation).
// Returns NULL with the reason in |err| (a wrong PIN, no such token or key, ...).
gw_p11 *gw_p11_open(const char *module, const char *uri, const char *pin, int uid, int gid, uint32_t flags, char *err,
                    size_t cap);
// gw_p11_free ends the signer and frees |k| (NULL is fine).
void gw_p11_free(gw_p11 *k);

// gw_p11_info returns what the signer found: key type, mechanisms, token and object.
const p11w_hello_ok *gw_p11_info(const gw_p11 *k);
// gw_p11_id returns a number unique to |k| in this process (workers key channels by it).
uint64_t gw_p11_id(const gw_p11 *k);

// gw_p11_sign signs |in| with mechanism |mech| (P11W_MECH_*) on the control socket and
// waits up to |timeout_ms|: for checks and commands, never on a worker's loop. The raw
// signature (r || s for ECDSA) goes to |out|. Returns 1, or 0 with words in |err|.
int gw_p11_sign(gw_p11 *k, uint32_t mech, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len, size_t cap,
                int timeout_ms, char *err, size_t err_cap);

// gw_p11_keygen generates a key pair |kind| (P11W_KEY_*) labelled |label| (id |id_hex|,
// or a random one when empty) on the token; the signer then signs with it. The public key
// (gateway/tls/pkcs11_wire.h, KEYGEN) goes to |out|. Returns 1, or 0 with words in |err|.
int gw_p11_keygen(gw_p11 *k, uint32_t kind, const char *label, const char *id_hex, uint8_t *out, size_t *out_len,
                  size_t cap, char *err, size_t err_cap);

// gw_p11_channel returns a new channel to the signer (a SOCK_SEQPACKET descriptor the
// caller owns, non-blocking), starting a new signer first if the last one died; *|epoch|
// says which signer it reaches. Returns -1 with words in |err|.
int gw_p11_channel(gw_p11 *k, uint64_t *epoch, char *err, size_t cap);
// gw_p11_reap_retired reaps the signers that were stopped (an identity freed, a hung
// signer killed) but had not exited then; one still running after 2 s is killed. Never
// waits. The supervisor calls it on every tick; returns how many are left.
size_t gw_p11_reap_retired(void);

// gw_p11_restart kills the signer of |epoch| if it is still the current one (it did not
// answer in time); the next channel or request starts another.
void gw_p11_restart(gw_p11 *k, uint64_t epoch);
// gw_p11_exit_text says how the signer of |epoch| ended ("killed by signal 9") and
// returns 1, or writes "closed its channel" and returns 0 while that is not known yet (its
// sockets close a moment before it may be reaped: ask again; it never waits).
int gw_p11_exit_text(gw_p11 *k, uint64_t epoch, char *out, size_t cap);

// gw_p11_prepare turns a TLS signature over |in| with |sigalg| (SSL_SIGN_*) into what the
// token signs: the digest (ECDSA, PSS) or the DigestInfo (PKCS#1 v1.5), in |out| (at least
// 128 bytes), and the mechanism. Returns 0 for an algorithm a token key cannot make.
int gw_p11_prepare(uint16_t sigalg, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len,
                   uint32_t *out_mech);
// gw_p11_finish turns the token's raw signature into TLS's form (ECDSA: r || s to DER).
// Returns 0 if it does not fit |max| or is malformed.
int gw_p11_finish(uint32_t mech, const uint8_t *sig, size_t sig_len, uint8_t *out, size_t *out_len, size_t max);

#endif
