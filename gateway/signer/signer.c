// mtlsgw-pkcs11: the process that holds a PKCS#11 session for one identity and signs for
// the gateway. The gateway starts it with a control socket as descriptor 3
// (gateway/tls/pkcs11_wire.h says what goes over it) and never loads a PKCS#11 module itself:
// Debian's modules link OpenSSL 3, whose symbols would bind to BoringSSL's libcrypto in
// the gateway's process. Here the module has the process to itself, a crashing module
// takes only this process down, and the gateway starts another.
//
// One request at a time: a token signs serially anyway. The signer ends when the control
// socket closes (the identity was unloaded, or the gateway is gone).
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "gateway/tls/pkcs11_wire.h"

#define MAX_CHANNELS 256
#define CONTROL_FD 3

static CK_FUNCTION_LIST *g_fl;
static P11KitUri *g_uri;
static char g_pin[256];
static int g_have_pin;
static CK_SLOT_ID g_slot;
static CK_SESSION_HANDLE g_session = CK_INVALID_HANDLE;
static CK_OBJECT_HANDLE g_key = CK_INVALID_HANDLE;
static int g_want_key;
static uint32_t g_login_failed;  // CKR of a failed login: never retried
static char g_login_error[700];
static p11w_hello_ok g_info;
static int g_always_authenticate;  // the key wants the PIN again for every signature (CKA_ALWAYS_AUTHENTICATE)
static int g_dropped_uid = -1;     // the user the signer switched to (the gateway's `user`)

typedef struct {
    p11w_head h;
    uint8_t data[P11W_MAX - sizeof(p11w_head)];
} message;

static int send_reply(int fd, uint32_t type, uint32_t id, uint32_t arg, const void *data, size_t len) {
    message m;
    if (len > sizeof(m.data)) {
        len = sizeof(m.data);
    }
    m.h = (p11w_head){type, id, arg, (uint32_t)len};
    memcpy(m.data, data, len);
    return send(fd, &m, sizeof(m.h) + len, MSG_NOSIGNAL) >= 0;
}

static int send_error(int fd, uint32_t type, uint32_t id, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int send_error(int fd, uint32_t type, uint32_t id, uint32_t code, const char *fmt, ...) {
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    return send_reply(fd, type, id, code ? code : P11W_ERR_BAD, text, strlen(text));
}

// ckr_text names the return values an operator may meet, in words.
static const char *ckr_text(CK_RV rv) {
    switch (rv) {
        case CKR_PIN_INCORRECT:
            return "wrong PIN (CKR_PIN_INCORRECT)";
        case CKR_PIN_LOCKED:
            return "the PIN is locked after too many wrong tries (CKR_PIN_LOCKED): unlock it with the SO PIN";
        case CKR_PIN_EXPIRED:
            return "the PIN has expired (CKR_PIN_EXPIRED)";
        case CKR_PIN_LEN_RANGE:
            return "the PIN has a length the token does not take (CKR_PIN_LEN_RANGE)";
        case CKR_USER_PIN_NOT_INITIALIZED:
            return "the token's user PIN is not set (CKR_USER_PIN_NOT_INITIALIZED)";
        case CKR_TOKEN_NOT_PRESENT:
            return "the token is not present (CKR_TOKEN_NOT_PRESENT)";
        case CKR_TOKEN_NOT_RECOGNIZED:
            return "the token is not recognized (CKR_TOKEN_NOT_RECOGNIZED)";
        case CKR_DEVICE_REMOVED:
            return "the token was removed (CKR_DEVICE_REMOVED)";
        case CKR_DEVICE_ERROR:
            return "device error (CKR_DEVICE_ERROR)";
        case CKR_MECHANISM_INVALID:
            return "the token does not offer this mechanism (CKR_MECHANISM_INVALID)";
        case CKR_KEY_TYPE_INCONSISTENT:
            return "the key does not fit the mechanism (CKR_KEY_TYPE_INCONSISTENT)";
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
            return "the key may not sign (CKR_KEY_FUNCTION_NOT_PERMITTED)";
        case CKR_USER_NOT_LOGGED_IN:
            return "not logged in (CKR_USER_NOT_LOGGED_IN)";
        case CKR_SESSION_HANDLE_INVALID:
            return "the session was closed (CKR_SESSION_HANDLE_INVALID)";
        case CKR_DATA_LEN_RANGE:
            return "input of a length the key cannot sign (CKR_DATA_LEN_RANGE)";
        case CKR_TOKEN_WRITE_PROTECTED:
            return "the token is write-protected (CKR_TOKEN_WRITE_PROTECTED)";
        case CKR_TEMPLATE_INCONSISTENT:
            return "the token refused the key template (CKR_TEMPLATE_INCONSISTENT)";
        case CKR_ATTRIBUTE_VALUE_INVALID:
            return "the token refused a key attribute (CKR_ATTRIBUTE_VALUE_INVALID)";
        default: {
            static char buf[40];
            snprintf(buf, sizeof(buf), "PKCS#11 error 0x%lx", (unsigned long)rv);
            return buf;
        }
    }
}

static void trim_copy(char *out, size_t cap, const unsigned char *in, size_t len) {
    while (len > 0 && (in[len - 1] == ' ' || in[len - 1] == '\0')) {
        len--;
    }
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        out[n++] = in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"' && in[i] != '\\' ? (char)in[i] : '?';
    }
    out[n] = '\0';
}

// ---- token, session, key ----

static CK_RV load_module(const char *path, char *err, size_t cap) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, cap, "pkcs11_module: cannot load %s: %s", path, dlerror());
        return P11W_ERR_MODULE;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
    if (get == NULL || get(&g_fl) != CKR_OK || g_fl == NULL) {
        snprintf(err, cap, "pkcs11_module: %s is not a PKCS#11 module (no C_GetFunctionList)", path);
        return P11W_ERR_MODULE;
    }
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    CK_RV rv = g_fl->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        snprintf(err, cap, "pkcs11_module: %s does not initialize: %s", path, ckr_text(rv));
        return P11W_ERR_MODULE;
    }
    return CKR_OK;
}

static CK_RV find_token(char *err, size_t cap) {
    CK_ULONG n = 0;
    CK_RV rv = g_fl->C_GetSlotList(CK_TRUE, NULL, &n);
    CK_SLOT_ID *slots = rv == CKR_OK && n > 0 ? calloc(n, sizeof(*slots)) : NULL;
    if (slots != NULL) {
        rv = g_fl->C_GetSlotList(CK_TRUE, slots, &n);
    }
    char seen[400] = "";
    size_t matches = 0, used = 0;
    CK_SLOT_ID wanted = p11_kit_uri_get_slot_id(g_uri);
    for (CK_ULONG i = 0; slots != NULL && rv == CKR_OK && i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_SLOT_INFO si;
        if (g_fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK || g_fl->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
            !(ti.flags & CKF_TOKEN_INITIALIZED)) {
            continue;
        }
        char label[33];
        trim_copy(label, sizeof(label), ti.label, sizeof(ti.label));
        if (used + strlen(label) + 5 < sizeof(seen)) {
            used += (size_t)snprintf(seen + used, sizeof(seen) - used, "%s\"%s\"", used ? ", " : "", label);
        }
        if (p11_kit_uri_match_token_info(g_uri, &ti) && p11_kit_uri_match_slot_info(g_uri, &si) &&
            (wanted == (CK_SLOT_ID)-1 || wanted == slots[i])) {
            if (matches++ == 0) {
                g_slot = slots[i];
                snprintf(g_info.token, sizeof(g_info.token), "%s", label);
            }
        }
    }
    free(slots);
    char *want = NULL;
    p11_kit_uri_format(g_uri, P11_KIT_URI_FOR_TOKEN, &want);
    CK_RV result = CKR_OK;
    if (rv != CKR_OK) {
        snprintf(err, cap, "cannot list the module's slots: %s", ckr_text(rv));
        result = rv;
    } else if (matches == 0) {
        char as[120] = "";
        if (g_dropped_uid >= 0) {
            snprintf(as, sizeof(as), "; looked for as uid %d, the config's user: it must be able to use the token",
                     g_dropped_uid);
        }
        snprintf(err, cap, "no token matches %s (tokens present: %s%s)", want ? want : "the URI",
                 seen[0] ? seen : "none", as);
        result = P11W_ERR_NO_TOKEN;
    } else if (matches > 1) {
        snprintf(err, cap, "%zu tokens match %s: name one with token=, serial= or slot-id=", matches,
                 want ? want : "the URI");
        result = P11W_ERR_NO_TOKEN;
    }
    free(want);
    return result;
}

static CK_RV login(char *err, size_t cap) {
    if (g_login_failed) {
        size_t n = strlen(g_login_error) < cap ? strlen(g_login_error) : cap - 1;
        memcpy(err, g_login_error, n);
        err[n] = '\0';
        return g_login_failed;
    }
    if (g_session != CK_INVALID_HANDLE) {
        g_fl->C_CloseSession(g_session);
        g_session = CK_INVALID_HANDLE;
    }
    CK_RV rv = g_fl->C_OpenSession(g_slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &g_session);
    if (rv == CKR_TOKEN_WRITE_PROTECTED) {
        rv = g_fl->C_OpenSession(g_slot, CKF_SERIAL_SESSION, NULL, NULL, &g_session);
    }
    if (rv != CKR_OK) {
        snprintf(err, cap, "cannot open a session on token \"%s\": %s", g_info.token, ckr_text(rv));
        return rv;
    }
    rv = g_fl->C_Login(g_session, CKU_USER, g_have_pin ? (CK_UTF8CHAR *)g_pin : NULL, g_have_pin ? strlen(g_pin) : 0);
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
        return CKR_OK;
    }
    snprintf(err, cap, "login to token \"%s\" failed: %s%s", g_info.token, ckr_text(rv),
             !g_have_pin && rv != CKR_PIN_LOCKED ? "; set key_password_file (or pin-source in the URI)" : "");
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE ||
        rv == CKR_ARGUMENTS_BAD || rv == CKR_USER_PIN_NOT_INITIALIZED) {
        g_login_failed = (uint32_t)rv;
        snprintf(g_login_error, sizeof(g_login_error), "%s (not retried: restart or reload to try again)", err);
    }
    return rv;
}

// find_objects collects up to |max| objects matching |tmpl|.
static CK_ULONG find_objects(CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *out, CK_ULONG max) {
    CK_ULONG found = 0;
    if (g_fl->C_FindObjectsInit(g_session, tmpl, n) != CKR_OK) {
        return 0;
    }
    g_fl->C_FindObjects(g_session, out, max, &found);
    g_fl->C_FindObjectsFinal(g_session);
    return found;
}

static CK_RV find_key(char *err, size_t cap) {
    CK_ULONG n_attrs = 0;
    CK_ATTRIBUTE *attrs = p11_kit_uri_get_attributes(g_uri, &n_attrs);
    CK_ATTRIBUTE tmpl[8];
    CK_ULONG n = 0;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    tmpl[n++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    for (CK_ULONG i = 0; i < n_attrs && n < 8; i++) {
        if (attrs[i].type == CKA_CLASS) {
            if (attrs[i].ulValueLen == sizeof(cls) && *(CK_OBJECT_CLASS *)attrs[i].pValue != CKO_PRIVATE_KEY) {
                snprintf(err, cap, "the URI names an object of type other than private");
                return P11W_ERR_BAD;
            }
            continue;
        }
        tmpl[n++] = attrs[i];
    }
    char *want = NULL;
    p11_kit_uri_format(g_uri, P11_KIT_URI_FOR_OBJECT, &want);
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count = find_objects(tmpl, n, found, 2);
    CK_RV result = CKR_OK;
    if (count == 0) {
        snprintf(err, cap, "no private key on token \"%s\" matches %s", g_info.token, want ? want : "the URI");
        result = P11W_ERR_NO_KEY;
    } else if (count > 1) {
        snprintf(err, cap, "several private keys on token \"%s\" match %s: name one with object= or id=", g_info.token,
                 want ? want : "the URI");
        result = P11W_ERR_NO_KEY;
    }
    free(want);
    if (result != CKR_OK) {
        return result;
    }
    g_key = found[0];
    CK_KEY_TYPE kt = 0;
    CK_BBOOL always = CK_FALSE;
    unsigned char label[128];
    CK_ATTRIBUTE get[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)},
                          {CKA_LABEL, label, sizeof(label)},
                          {CKA_ALWAYS_AUTHENTICATE, &always, sizeof(always)}};
    if (g_fl->C_GetAttributeValue(g_session, g_key, get, 1) != CKR_OK) {
        snprintf(err, cap, "cannot read the key's type");
        return P11W_ERR_NO_KEY;
    }
    if (g_fl->C_GetAttributeValue(g_session, g_key, get + 1, 1) == CKR_OK) {
        trim_copy(g_info.object, sizeof(g_info.object), label, get[1].ulValueLen);
    }
    // Smart-card signing keys (PIV slot 9c) want the PIN before every signature.
    g_always_authenticate = g_fl->C_GetAttributeValue(g_session, g_key, get + 2, 1) == CKR_OK && always == CK_TRUE;
    if (kt != CKK_EC && kt != CKK_RSA) {
        snprintf(err, cap, "the key on token \"%s\" is neither EC nor RSA (key type 0x%lx)", g_info.token,
                 (unsigned long)kt);
        return P11W_ERR_NO_KEY;
    }
    g_info.key_type = kt == CKK_EC ? P11W_KEYTYPE_EC : P11W_KEYTYPE_RSA;
    return CKR_OK;
}

static void read_mechanisms(void) {
    CK_ULONG n = 0;
    g_info.mechs = 0;
    if (g_fl->C_GetMechanismList(g_slot, NULL, &n) != CKR_OK || n == 0) {
        return;
    }
    CK_MECHANISM_TYPE *m = calloc(n, sizeof(*m));
    if (m != NULL && g_fl->C_GetMechanismList(g_slot, m, &n) == CKR_OK) {
        for (CK_ULONG i = 0; i < n; i++) {
            g_info.mechs |= m[i] == CKM_ECDSA          ? P11W_HAS_ECDSA
                            : m[i] == CKM_RSA_PKCS     ? P11W_HAS_RSA_PKCS
                            : m[i] == CKM_RSA_PKCS_PSS ? P11W_HAS_RSA_PSS
                                                       : 0;
        }
    }
    free(m);
}

// open_all finds the token, logs in and (unless generating a key) finds the key.
static CK_RV open_all(char *err, size_t cap) {
    CK_RV rv = find_token(err, cap);
    if (rv == CKR_OK) {
        read_mechanisms();
        rv = login(err, cap);
    }
    if (rv == CKR_OK && g_want_key) {
        rv = find_key(err, cap);
    }
    return rv;
}

static int drop_to(int32_t uid, int32_t gid, char *err, size_t cap) {
    if (geteuid() != 0 || uid <= 0) {
        return 1;
    }
    if (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0 || setuid((uid_t)uid) != 0) {
        snprintf(err, cap, "cannot switch to uid %d: %s", uid, strerror(errno));
        return 0;
    }
    g_dropped_uid = uid;
    return 1;
}

static void hello(const message *m) {
    char err[600] = "";
    int reply = !(m->h.arg & P11W_HELLO_NO_REPLY);
    g_want_key = !(m->h.arg & P11W_HELLO_NO_KEY);
    if (m->h.len < sizeof(p11w_hello) + 3 || m->data[m->h.len - 1] != '\0' || g_uri != NULL) {
        send_error(CONTROL_FD, P11W_HELLO, m->h.id, P11W_ERR_BAD, "malformed hello");
        exit(2);
    }
    p11w_hello who;
    memcpy(&who, m->data, sizeof(who));
    const char *module = (const char *)m->data + sizeof(who);
    const char *uri = module + strlen(module) + 1;
    const char *pin = uri + strlen(uri) + 1;
    if ((const uint8_t *)pin >= m->data + m->h.len) {
        send_error(CONTROL_FD, P11W_HELLO, m->h.id, P11W_ERR_BAD, "malformed hello");
        exit(2);
    }
    g_have_pin = pin[0] != '\0';
    snprintf(g_pin, sizeof(g_pin), "%s", pin);
    CK_RV rv = P11W_ERR_BAD;
    g_uri = p11_kit_uri_new();
    int pr = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, g_uri);
    // The module and the PIN came in the hello: the URI's query is not the key's name and
    // stays out of messages.
    p11_kit_uri_set_pin_source(g_uri, NULL);
    p11_kit_uri_set_module_path(g_uri, NULL);
    p11_kit_uri_set_module_name(g_uri, NULL);
    if (pr != P11_KIT_URI_OK) {
        snprintf(err, sizeof(err), "not a PKCS#11 URI: %s", p11_kit_uri_message(pr));
    } else if (drop_to(who.uid, who.gid, err, sizeof(err))) {
        rv = load_module(module, err, sizeof(err));
        if (rv == CKR_OK) {
            rv = open_all(err, sizeof(err));
        }
    }
    if (rv != CKR_OK && (rv == P11W_ERR_MODULE || rv == P11W_ERR_BAD || g_fl == NULL) && !g_login_failed) {
        // No module to ask: every request gets the reason until the signer is replaced.
        // (A failed login is never retried either: a PIN has few tries. A token that is
        // not there yet is looked for again at the next request.)
        g_login_failed = (uint32_t)rv;
        snprintf(g_login_error, sizeof(g_login_error), "%s", err);
    }
    if (reply) {
        if (rv == CKR_OK) {
            send_reply(CONTROL_FD, P11W_HELLO, m->h.id, 0, &g_info, sizeof(g_info));
        } else {
            send_error(CONTROL_FD, P11W_HELLO, m->h.id, (uint32_t)rv, "%s", err);
        }
    }
}

// ---- requests ----

static CK_RV sign_once(uint32_t mech, const uint8_t *in, size_t in_len, uint8_t *sig, CK_ULONG *sig_len) {
    CK_RSA_PKCS_PSS_PARAMS pss = {0, 0, 0};
    CK_MECHANISM m = {0, NULL, 0};
    switch (mech) {
        case P11W_MECH_ECDSA:
            m.mechanism = CKM_ECDSA;
            break;
        case P11W_MECH_RSA_PKCS:
            m.mechanism = CKM_RSA_PKCS;
            break;
        case P11W_MECH_PSS_SHA256:
            pss = (CK_RSA_PKCS_PSS_PARAMS){CKM_SHA256, CKG_MGF1_SHA256, 32};
            break;
        case P11W_MECH_PSS_SHA384:
            pss = (CK_RSA_PKCS_PSS_PARAMS){CKM_SHA384, CKG_MGF1_SHA384, 48};
            break;
        case P11W_MECH_PSS_SHA512:
            pss = (CK_RSA_PKCS_PSS_PARAMS){CKM_SHA512, CKG_MGF1_SHA512, 64};
            break;
        default:
            return CKR_MECHANISM_INVALID;
    }
    if (pss.hashAlg != 0) {
        m = (CK_MECHANISM){CKM_RSA_PKCS_PSS, &pss, sizeof(pss)};
    }
    CK_RV rv = g_fl->C_SignInit(g_session, &m, g_key);
    if (rv == CKR_OK && g_always_authenticate) {
        rv = g_fl->C_Login(g_session, CKU_CONTEXT_SPECIFIC, g_have_pin ? (CK_UTF8CHAR *)g_pin : NULL,
                           g_have_pin ? strlen(g_pin) : 0);
    }
    if (rv == CKR_OK) {
        rv = g_fl->C_Sign(g_session, (CK_BYTE *)in, in_len, sig, sig_len);
    }
    return rv;
}

static void sign(int fd, const message *m) {
    char err[600];
    if (g_login_failed) {
        send_error(fd, P11W_SIGN, m->h.id, g_login_failed, "%s", g_login_error);
        return;
    }
    if (g_key == CK_INVALID_HANDLE) {
        // A restart that did not find the token or the key (a smart card not inserted
        // yet): look again.
        g_want_key = 1;
        CK_RV rv = open_all(err, sizeof(err));
        if (rv != CKR_OK) {
            send_error(fd, P11W_SIGN, m->h.id, (uint32_t)(g_login_failed ? g_login_failed : rv), "%s", err);
            return;
        }
    }
    uint8_t sig[1024];
    CK_ULONG sig_len = sizeof(sig);
    CK_RV rv = sign_once(m->h.arg, m->data, m->h.len, sig, &sig_len);
    if (rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
        rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED || rv == CKR_OBJECT_HANDLE_INVALID ||
        rv == CKR_KEY_HANDLE_INVALID) {
        // The token was reset or reinserted: find it and log in again, once.
        g_session = CK_INVALID_HANDLE;
        g_key = CK_INVALID_HANDLE;
        g_want_key = 1;
        CK_RV again = open_all(err, sizeof(err));
        if (again != CKR_OK) {
            send_error(fd, P11W_SIGN, m->h.id, (uint32_t)again, "%s", err);
            return;
        }
        sig_len = sizeof(sig);
        rv = sign_once(m->h.arg, m->data, m->h.len, sig, &sig_len);
    }
    if (rv != CKR_OK) {
        send_error(fd, P11W_SIGN, m->h.id, (uint32_t)rv, "the token did not sign: %s", ckr_text(rv));
        return;
    }
    send_reply(fd, P11W_SIGN, m->h.id, 0, sig, sig_len);
}

static int hex_to_bytes(const char *hex, uint8_t *out, size_t cap, size_t *out_len) {
    size_t n = strlen(hex);
    if (n % 2 != 0 || n / 2 > cap) {
        return 0;
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            return 0;
        }
        out[i] = (uint8_t)v;
    }
    *out_len = n / 2;
    return 1;
}

static size_t put_blob(uint8_t *out, size_t at, size_t cap, const void *p, uint32_t len) {
    if (at + 4 + len > cap) {
        return cap + 1;
    }
    memcpy(out + at, &len, 4);
    memcpy(out + at + 4, p, len);
    return at + 4 + len;
}

static void keygen(const message *m) {
    uint32_t id = m->h.id;
    if (g_session == CK_INVALID_HANDLE || g_login_failed) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "%s", g_login_failed ? g_login_error : "not logged in");
        return;
    }
    if (m->h.len < 2 || m->data[m->h.len - 1] != '\0') {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "malformed request");
        return;
    }
    const char *label = (const char *)m->data;
    const char *hex = label + strlen(label) + 1;
    uint8_t ckid[64];
    size_t ckid_len = 0;
    if ((const uint8_t *)hex >= m->data + m->h.len || (hex[0] && !hex_to_bytes(hex, ckid, sizeof(ckid), &ckid_len))) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "malformed id");
        return;
    }
    // Refuse to add a second object under a label or id already there: the gateway would
    // then find several keys for one URI, or the wrong one.
    CK_OBJECT_HANDLE found[1];
    CK_ATTRIBUTE by_label = {CKA_LABEL, (void *)label, strlen(label)};
    CK_ATTRIBUTE by_id = {CKA_ID, ckid, ckid_len};
    if (find_objects(&by_label, 1, found, 1) > 0) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_EXISTS,
                   "an object labelled \"%s\" already exists on token \"%s\"", label, g_info.token);
        return;
    }
    if (ckid_len > 0 && find_objects(&by_id, 1, found, 1) > 0) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_EXISTS, "an object with id %s already exists on token \"%s\"",
                   hex, g_info.token);
        return;
    }
    if (ckid_len == 0) {
        ckid_len = 8;
        if (getrandom(ckid, ckid_len, 0) != (ssize_t)ckid_len) {
            send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "no random bytes for an id");
            return;
        }
    }
    static const uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    static const uint8_t p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    static const uint8_t f4[] = {0x01, 0x00, 0x01};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = m->h.arg == P11W_KEY_RSA_3072 ? 3072 : 2048;
    int ec = m->h.arg == P11W_KEY_EC_P256 || m->h.arg == P11W_KEY_EC_P384;
    if (!ec && m->h.arg != P11W_KEY_RSA_2048 && m->h.arg != P11W_KEY_RSA_3072) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "unknown key type");
        return;
    }
    CK_ATTRIBUTE pub[6] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, ckid, ckid_len},
    };
    CK_ULONG n_pub = 4;
    if (ec) {
        pub[n_pub++] = m->h.arg == P11W_KEY_EC_P256 ? (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p256, sizeof(p256)}
                                                    : (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p384, sizeof(p384)};
    } else {
        pub[n_pub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        pub[n_pub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)f4, sizeof(f4)};
    }
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)}, {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)}, {CKA_SIGN, &yes, sizeof(yes)},    {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, ckid, ckid_len},
    };
    CK_MECHANISM mech = {ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_OBJECT_HANDLE hpub, hpriv;
    CK_RV rv =
        g_fl->C_GenerateKeyPair(g_session, &mech, pub, n_pub, priv, sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
    if (rv != CKR_OK) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, (uint32_t)rv, "key generation failed: %s", ckr_text(rv));
        return;
    }
    uint8_t a[1024], b[1024];
    CK_ATTRIBUTE get[2] = {{ec ? CKA_EC_PARAMS : CKA_MODULUS, a, sizeof(a)},
                           {ec ? CKA_EC_POINT : CKA_PUBLIC_EXPONENT, b, sizeof(b)}};
    rv = g_fl->C_GetAttributeValue(g_session, hpub, get, 2);
    if (rv != CKR_OK) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, (uint32_t)rv, "cannot read the new public key: %s", ckr_text(rv));
        return;
    }
    uint8_t out[P11W_MAX - sizeof(p11w_head)];
    size_t at = put_blob(out, 0, sizeof(out), a, (uint32_t)get[0].ulValueLen);
    at = at <= sizeof(out) ? put_blob(out, at, sizeof(out), b, (uint32_t)get[1].ulValueLen) : at;
    if (at > sizeof(out)) {
        send_error(CONTROL_FD, P11W_KEYGEN, id, P11W_ERR_BAD, "public key too large");
        return;
    }
    g_key = hpriv;
    g_info.key_type = ec ? P11W_KEYTYPE_EC : P11W_KEYTYPE_RSA;
    send_reply(CONTROL_FD, P11W_KEYGEN, id, 0, out, at);
}

// take_channel receives a descriptor passed with SCM_RIGHTS, or -1.
static int take_channel(message *m, ssize_t *n) {
    struct iovec iov = {m, sizeof(*m)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    *n = recvmsg(CONTROL_FD, &mh, MSG_CMSG_CLOEXEC);
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); *n > 0 && c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
        }
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        fprintf(stderr, "mtlsgw-pkcs11: started by mtlsgw for identities with a pkcs11: key; not a command\n");
        return 2;
    }
    close_range(CONTROL_FD + 1, ~0U, 0);
    signal(SIGPIPE, SIG_IGN);
    struct pollfd fds[MAX_CHANNELS + 1];
    nfds_t nfds = 1;
    fds[0] = (struct pollfd){CONTROL_FD, POLLIN, 0};
    message m;
    for (;;) {
        if (poll(fds, nfds, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (fds[0].revents) {
            ssize_t n;
            int fd = take_channel(&m, &n);
            if (n <= 0) {
                break;  // the gateway closed the control socket: the identity is gone
            }
            if ((size_t)n < sizeof(m.h) || (size_t)n != sizeof(m.h) + m.h.len) {
                if (fd >= 0) {
                    close(fd);
                }
                continue;
            }
            if (m.h.type == P11W_CHANNEL && fd >= 0 && nfds <= MAX_CHANNELS) {
                fds[nfds++] = (struct pollfd){fd, POLLIN, 0};
                fd = -1;
            } else if (m.h.type == P11W_HELLO) {
                hello(&m);
            } else if (m.h.type == P11W_SIGN) {
                sign(CONTROL_FD, &m);
            } else if (m.h.type == P11W_KEYGEN) {
                keygen(&m);
            }
            if (fd >= 0) {
                close(fd);
            }
        }
        for (nfds_t i = 1; i < nfds; i++) {
            if (fds[i].revents == 0) {
                continue;
            }
            ssize_t n = recv(fds[i].fd, &m, sizeof(m), 0);
            if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
                close(fds[i].fd);  // that worker's end is gone
                fds[i--] = fds[--nfds];
                continue;
            }
            if (n > 0 && (size_t)n == sizeof(m.h) + m.h.len && m.h.type == P11W_SIGN) {
                sign(fds[i].fd, &m);
            }
        }
    }
    if (g_fl != NULL) {
        if (g_session != CK_INVALID_HANDLE) {
            g_fl->C_CloseSession(g_session);
        }
        g_fl->C_Finalize(NULL);
    }
    explicit_bzero(g_pin, sizeof(g_pin));
    p11_kit_uri_free(g_uri);
    return 0;
}
