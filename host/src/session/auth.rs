//! AUTH PLAIN (RFC 4616) and LOGIN on submission listeners, under TLS only (RFC 4954,
//! RFC 8314). Accounts come from `[[user]]` with argon2id PHC hashes.

use super::Session;
use crate::proto::{Reply, replies};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::OnceLock;
use tokio::sync::Semaphore;

/// The next client line of a SASL exchange.
#[derive(Debug)]
pub(crate) enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword(String),
}

/// RFC 4954 4: a server challenge, `334` without an enhanced status code.
fn challenge(text: &'static str) -> Reply {
    Reply::plain(334, text)
}

impl Session {
    pub(super) async fn handle_auth(
        &mut self,
        mechanism: String,
        initial: Option<String>,
    ) -> Reply {
        if !self.auth_offered() {
            return replies::NOT_IMPLEMENTED;
        }
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return replies::BAD_SEQUENCE;
        }
        if self.auth_user.is_some() {
            return replies::ALREADY_AUTH;
        }
        if self.tx.is_some() {
            return replies::AUTH_IN_TX;
        }
        if self.tls.is_none() {
            return replies::AUTH_NEEDS_TLS;
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => {
                self.sasl = Some(SaslStep::Plain);
                challenge("")
            }
            // RFC 4954 4: "=" is an empty initial response.
            ("PLAIN", Some(resp)) => self.sasl_response(SaslStep::Plain, &resp).await,
            ("LOGIN", None) => {
                self.sasl = Some(SaslStep::LoginUser);
                challenge("VXNlcm5hbWU6")
            }
            ("LOGIN", Some(resp)) => self.sasl_response(SaslStep::LoginUser, &resp).await,
            _ => replies::AUTH_MECH_UNSUPPORTED,
        }
    }

    pub(super) async fn sasl_response(&mut self, step: SaslStep, line: &str) -> Reply {
        // RFC 4954 4: "*" cancels the exchange.
        if line.trim() == "*" {
            return replies::AUTH_CANCELLED;
        }
        let decoded = if line.trim() == "=" {
            Vec::new()
        } else {
            match B64.decode(line.trim()) {
                Ok(d) => d,
                Err(_) => return replies::AUTH_BAD_BASE64,
            }
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return replies::AUTH_FAILED;
        };
        match step {
            SaslStep::Plain => {
                // authzid NUL authcid NUL passwd; acting for someone else is not offered.
                let mut parts = text.split('\0');
                let (Some(authzid), Some(user), Some(pass), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return replies::AUTH_FAILED;
                };
                if !authzid.is_empty() && authzid != user {
                    return replies::AUTH_FAILED;
                }
                self.verify("PLAIN", user.to_string(), pass.to_string())
                    .await
            }
            SaslStep::LoginUser => {
                self.sasl = Some(SaslStep::LoginPassword(text));
                challenge("UGFzc3dvcmQ6")
            }
            SaslStep::LoginPassword(user) => self.verify("LOGIN", user, text).await,
        }
    }

    async fn verify(&mut self, mechanism: &str, user: String, password: String) -> Reply {
        let ip = self.peer.ip();
        // A client that failed too often lately, over any number of connections, is not
        // let try (and costs no argon2 work).
        let ok = !self.ctx.clients.auth_blocked(ip) && {
            let hash = self
                .ctx
                .config
                .user
                .iter()
                .find(|u| u.name == user)
                .map(|u| u.password_hash.clone());
            check_password(hash, password).await
        };
        let decision = self
            .policy(crate::plugin::Call::Auth {
                mechanism,
                user: &user,
                success: ok,
            })
            .await;
        if let Some(refusal) = self.refusal(decision) {
            return refusal;
        }
        if ok {
            tracing::info!(client = %ip, user, "authenticated");
            self.auth_user = Some(user);
            return replies::AUTH_OK;
        }
        tracing::warn!(client = %ip, user, "authentication failed");
        let blocked = self.ctx.clients.auth_blocked(ip);
        self.ctx.clients.auth_failed(ip);
        self.auth_failures += 1;
        if self.auth_failures >= self.ctx.config.limits.auth_failures {
            self.closing = true;
            return replies::TOO_MANY_AUTH_FAILURES;
        }
        if blocked {
            replies::AUTH_THROTTLED
        } else {
            replies::AUTH_FAILED
        }
    }
}

/// argon2 runs at most this many at once, off the reactor threads: a flood of AUTH
/// attempts queues here instead of taking every core and thread.
fn argon2_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

/// Checks `password` against the user's hash; an unknown user (`None`) is checked against
/// a hash of the same cost, so that the answer's timing does not tell which users exist.
async fn check_password(hash: Option<String>, password: String) -> bool {
    let Ok(_slot) = argon2_slots().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        static UNKNOWN_USER: OnceLock<String> = OnceLock::new();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| {
            UNKNOWN_USER
                .get_or_init(|| hash_password("unknown user").unwrap_or_default())
                .clone()
        });
        let matches = PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        known && matches
    })
    .await
    .unwrap_or(false)
}

/// `wasmtp hash-password`: an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}
