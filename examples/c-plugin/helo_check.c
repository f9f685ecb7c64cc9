// A wasmtp policy plugin in C: refuses HELO/EHLO names that are not fully qualified
// domain names or address literals (like Postfix's reject_non_fqdn_helo_hostname), and at
// MAIL refuses clients whose HELO name's SPF record says they may not use it (the server's
// SPF result for the HELO identity is `fail`: 550 5.7.23, RFC 7372).
// Config ([plugin.config]): allow_single_label = true lets "localhost"-style names pass.
//
// Built with Debian's clang and wasi-libc, `wit-bindgen c` and jco's preview1 adapter:
// see build.sh.

#include <stdlib.h>
#include <string.h>
#include "plugin.h"

static bool allow_single_label = false;

static bool contains(const plugin_string_t *s, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= s->len; i++) {
        if (memcmp(s->ptr + i, needle, n) == 0) return true;
    }
    return false;
}

bool exports_wasmtp_plugin_hooks_init(plugin_string_t *config_json, exports_wasmtp_plugin_hooks_list_hook_t *ret,
                                      plugin_string_t *err) {
    (void)err;
    allow_single_label = contains(config_json, "\"allow_single_label\":true");
    plugin_string_free(config_json);
    ret->len = 2;
    ret->ptr = malloc(2 * sizeof(*ret->ptr));
    ret->ptr[0] = WASMTP_PLUGIN_TYPES_HOOK_HELO;
    ret->ptr[1] = WASMTP_PLUGIN_TYPES_HOOK_MAIL;
    return true;
}

// An address literal ("[192.0.2.1]") or a name with a dot that is not a bare IPv4 address.
static bool acceptable(const plugin_string_t *name) {
    if (name->len >= 2 && name->ptr[0] == '[' && name->ptr[name->len - 1] == ']') return true;
    bool dot = false, alpha = false;
    for (size_t i = 0; i < name->len; i++) {
        uint8_t c = name->ptr[i];
        if (c == '.') dot = true;
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-') alpha = true;
        else if (!(c >= '0' && c <= '9')) return false;
    }
    return alpha && (dot || allow_single_label);
}

static void proceed(wasmtp_plugin_types_verdict_t *ret) { ret->tag = WASMTP_PLUGIN_TYPES_VERDICT_CONTINUE; }

void exports_wasmtp_plugin_hooks_on_helo(exports_wasmtp_plugin_hooks_session_t *session, plugin_string_t *name,
                                         bool extended, exports_wasmtp_plugin_hooks_verdict_t *ret) {
    (void)extended;
    if (acceptable(name)) {
        proceed(ret);
    } else {
        plugin_string_t msg;
        plugin_string_dup(&msg, "refused a HELO name that is not a fully qualified domain name");
        wasmtp_plugin_log_log(WASMTP_PLUGIN_TYPES_LEVEL_INFO, &msg);
        plugin_string_free(&msg);
        ret->tag = WASMTP_PLUGIN_TYPES_VERDICT_REJECT;
        ret->val.reject.code = 504;
        plugin_string_dup(&ret->val.reject.enhanced, "5.5.2");
        plugin_string_dup(&ret->val.reject.text, "Helo command rejected: need fully-qualified hostname");
    }
    exports_wasmtp_plugin_hooks_session_free(session);
    plugin_string_free(name);
}

// Hooks not asked for in init are never called; they still have to exist.
void exports_wasmtp_plugin_hooks_on_connect(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_verdict_t *ret) {
    exports_wasmtp_plugin_hooks_session_free(s);
    proceed(ret);
}
void exports_wasmtp_plugin_hooks_on_auth(exports_wasmtp_plugin_hooks_session_t *s, plugin_string_t *m, plugin_string_t *u, bool ok,
                                         exports_wasmtp_plugin_hooks_verdict_t *ret) {
    (void)ok;
    exports_wasmtp_plugin_hooks_session_free(s);
    plugin_string_free(m);
    plugin_string_free(u);
    proceed(ret);
}
void exports_wasmtp_plugin_hooks_on_mail(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_envelope_from_t *f,
                                         exports_wasmtp_plugin_hooks_spf_results_t *spf,
                                         exports_wasmtp_plugin_hooks_verdict_t *ret) {
    if (spf->helo.status == WASMTP_PLUGIN_TYPES_AUTH_STATUS_FAIL) {
        ret->tag = WASMTP_PLUGIN_TYPES_VERDICT_REJECT;
        ret->val.reject.code = 550;
        plugin_string_dup(&ret->val.reject.enhanced, "5.7.23");
        plugin_string_dup(&ret->val.reject.text, "SPF: this client may not use its HELO name");
    } else {
        proceed(ret);
    }
    exports_wasmtp_plugin_hooks_session_free(s);
    exports_wasmtp_plugin_hooks_envelope_from_free(f);
    exports_wasmtp_plugin_hooks_spf_results_free(spf);
}
void exports_wasmtp_plugin_hooks_on_rcpt(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_envelope_from_t *f,
                                         plugin_string_t *r, exports_wasmtp_plugin_hooks_list_param_t *p, plugin_list_string_t *a,
                                         exports_wasmtp_plugin_hooks_verdict_t *ret) {
    exports_wasmtp_plugin_hooks_session_free(s);
    exports_wasmtp_plugin_hooks_envelope_from_free(f);
    plugin_string_free(r);
    exports_wasmtp_plugin_hooks_list_param_free(p);
    plugin_list_string_free(a);
    proceed(ret);
}
void exports_wasmtp_plugin_hooks_on_data(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_envelope_from_t *f,
                                         plugin_list_string_t *r, exports_wasmtp_plugin_hooks_borrow_message_t m,
                                         exports_wasmtp_plugin_hooks_auth_results_t *auth,
                                         exports_wasmtp_plugin_hooks_data_result_t *ret) {
    (void)m;
    exports_wasmtp_plugin_hooks_session_free(s);
    exports_wasmtp_plugin_hooks_envelope_from_free(f);
    plugin_list_string_free(r);
    exports_wasmtp_plugin_hooks_auth_results_free(auth);
    ret->verdict.tag = WASMTP_PLUGIN_TYPES_DATA_VERDICT_CONTINUE;
    ret->changes.ptr = NULL;
    ret->changes.len = 0;
}
void exports_wasmtp_plugin_hooks_on_vrfy(exports_wasmtp_plugin_hooks_session_t *s, plugin_string_t *a, exports_wasmtp_plugin_hooks_verdict_t *ret) {
    exports_wasmtp_plugin_hooks_session_free(s);
    plugin_string_free(a);
    proceed(ret);
}
void exports_wasmtp_plugin_hooks_on_expn(exports_wasmtp_plugin_hooks_session_t *s, plugin_string_t *a, exports_wasmtp_plugin_hooks_verdict_t *ret) {
    exports_wasmtp_plugin_hooks_session_free(s);
    plugin_string_free(a);
    proceed(ret);
}
