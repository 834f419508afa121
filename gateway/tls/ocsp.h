// ocsp: OCSP staples of upstream servers (RFC 6960), judged during the handshake. The
// installed BoringSSL has no OCSP module: the response is parsed here with its CBS
// functions (a pure parser over bytes: the fuzz harness's entry), then checked against
// the server's verified chain: the responder's signature (the issuer, or a responder
// certificate the issuer signed with id-kp-OCSPSigning), the CertID (hash of the issuer's
// name and key, the serial), thisUpdate and nextUpdate with a skew, and the status.
#ifndef MTLSGW_OCSP_H
#define MTLSGW_OCSP_H

#include <openssl/bytestring.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum { GW_OCSP_OFF = 0, GW_OCSP_IF_STAPLED, GW_OCSP_REQUIRE } gw_ocsp_mode;

typedef enum { GW_OCSP_STATUS_GOOD = 0, GW_OCSP_STATUS_REVOKED, GW_OCSP_STATUS_UNKNOWN } gw_ocsp_status;

#define GW_OCSP_MAX_SINGLES 8
#define GW_OCSP_MAX_CERTS 4

typedef struct {
    CBS hash_oid;  // CertID.hashAlgorithm's OID (contents)
    CBS name_hash, key_hash;
    CBS serial;  // INTEGER contents
    int status;  // gw_ocsp_status
    int64_t revoked_at;
    int reason;  // CRLReason, -1 when not given
    int64_t this_update, next_update;
    int has_next;
} gw_ocsp_single;

typedef struct {
    int response_status;  // OCSPResponseStatus: 0 successful
    CBS tbs;              // ResponseData, as signed (tag and length included)
    int by_key;           // ResponderID: byKey (SHA-1 of the key) or byName (a Name element)
    CBS responder;
    int64_t produced_at;
    gw_ocsp_single singles[GW_OCSP_MAX_SINGLES];
    size_t num_singles;
    CBS sig_oid;  // signatureAlgorithm's OID (contents)
    CBS signature;
    CBS certs[GW_OCSP_MAX_CERTS];  // Certificate elements
    size_t num_certs;
} gw_ocsp_response;

// gw_ocsp_parse parses a DER OCSPResponse whose body is a BasicOCSPResponse. Pure: the
// response points into |der|. Returns 1, or 0 with what is wrong in |err|. A response
// whose status is not successful parses (response_status says which) with no body.
int gw_ocsp_parse(const uint8_t *der, size_t len, gw_ocsp_response *out, char *err, size_t cap);

// gw_ocsp_time parses a GeneralizedTime "YYYYMMDDHHMMSSZ" into Unix time: 1 or 0.
int gw_ocsp_time(const CBS *t, int64_t *out);

// What a staple said, for the access log (`ocsp=`) and the metrics.
typedef enum {
    GW_OCSP_RESULT_NONE = 0,  // not checked (ocsp off)
    GW_OCSP_RESULT_GOOD,
    GW_OCSP_RESULT_NO_STAPLE,
    GW_OCSP_RESULT_REVOKED,
    GW_OCSP_RESULT_UNKNOWN,
    GW_OCSP_RESULT_STALE,          // past nextUpdate (or thisUpdate in the future)
    GW_OCSP_RESULT_BAD_SIGNATURE,  // no valid signature by the issuer or its responder
    GW_OCSP_RESULT_WRONG_CERT,     // names another certificate
    GW_OCSP_RESULT_MALFORMED,      // does not parse, or an unsuccessful response status
    GW_OCSP_RESULT_COUNT
} gw_ocsp_result;

// gw_ocsp_result_name: "good", "none", "revoked", ... ("-" for NONE).
const char *gw_ocsp_result_name(gw_ocsp_result r);

// gw_ocsp_check judges staple |der| for |leaf| issued by |issuer| at |now| with |skew_s|
// seconds of leeway. Returns the result; anything but GOOD with its reason in words
// (revocation time and reason, which update is out of date, ...) in |reason|. |info|
// (may be NULL) gets the responder and times in words for explain.
gw_ocsp_result gw_ocsp_check(const uint8_t *der, size_t len, X509 *leaf, X509 *issuer, time_t now, int skew_s,
                             char *reason, size_t cap, char *info, size_t info_cap);

#endif
