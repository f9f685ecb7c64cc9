// {{name}}: a wasmtp policy plugin. At MAIL it refuses senders from `blocked_domain`
// (550 5.7.1); every other sender goes on to the next plugin. Config ([plugin.config]):
//
//     blocked_domain = "blocked.invalid"
//
// Build: ./build.sh
// Try:   wasmtp plugin test {{wasm}} --from a@example.com --to b@example.net

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "plugin.h"

// One instance serves one SMTP session, so globals are per session.
static char blocked[256] = "blocked.invalid";

// The string value of `key` in a flat JSON object, when there is one (no escapes).
static void json_string(const plugin_string_t *json, const char *key, char *out, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    size_t n = strlen(pattern);
    for (size_t i = 0; i + n <= json->len; i++) {
        if (memcmp(json->ptr + i, pattern, n) != 0) continue;
        size_t j = i + n, k = 0;
        while (j < json->len && json->ptr[j] != '"' && k + 1 < size) out[k++] = (char)json->ptr[j++];
        out[k] = '\0';
        return;
    }
}

bool exports_wasmtp_plugin_hooks_init(plugin_string_t *config_json, exports_wasmtp_plugin_hooks_list_hook_t *ret,
                                      plugin_string_t *err) {
    (void)err;
    json_string(config_json, "blocked_domain", blocked, sizeof blocked);
    plugin_string_free(config_json);
    // The hooks it is called at; add more and implement them below.
    ret->len = 1;
    ret->ptr = malloc(sizeof(*ret->ptr));
    ret->ptr[0] = WASMTP_PLUGIN_TYPES_HOOK_MAIL;
    return true;
}

static void proceed(wasmtp_plugin_types_verdict_t *ret) { ret->tag = WASMTP_PLUGIN_TYPES_VERDICT_CONTINUE; }

void exports_wasmtp_plugin_hooks_on_mail(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_envelope_from_t *f,
                                         exports_wasmtp_plugin_hooks_spf_results_t *spf,
                                         exports_wasmtp_plugin_hooks_verdict_t *ret) {
    const plugin_string_t *a = &f->address;
    size_t at = a->len;
    while (at > 0 && a->ptr[at - 1] != '@') at--;
    size_t len = a->len - at;
    if (at > 0 && len == strlen(blocked) && strncasecmp((const char *)a->ptr + at, blocked, len) == 0) {
        plugin_string_t msg;
        plugin_string_dup(&msg, "refused a sender from the blocked domain");
        wasmtp_plugin_log_log(WASMTP_PLUGIN_TYPES_LEVEL_INFO, &msg);
        plugin_string_free(&msg);
        ret->tag = WASMTP_PLUGIN_TYPES_VERDICT_REJECT;
        ret->val.reject.code = 550;
        plugin_string_dup(&ret->val.reject.enhanced, "5.7.1");
        plugin_string_dup(&ret->val.reject.text, "Mail from this domain is not accepted here");
    } else {
        proceed(ret);
    }
    exports_wasmtp_plugin_hooks_session_free(s);
    exports_wasmtp_plugin_hooks_envelope_from_free(f);
    exports_wasmtp_plugin_hooks_spf_results_free(spf);
}

// Hooks not asked for in init are never called; they still have to exist.
void exports_wasmtp_plugin_hooks_on_connect(exports_wasmtp_plugin_hooks_session_t *s, exports_wasmtp_plugin_hooks_verdict_t *ret) {
    exports_wasmtp_plugin_hooks_session_free(s);
    proceed(ret);
}
void exports_wasmtp_plugin_hooks_on_helo(exports_wasmtp_plugin_hooks_session_t *s, plugin_string_t *name, bool extended,
                                         exports_wasmtp_plugin_hooks_verdict_t *ret) {
    (void)extended;
    exports_wasmtp_plugin_hooks_session_free(s);
    plugin_string_free(name);
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
