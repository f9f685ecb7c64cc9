//! AUTH PLAIN (RFC 4616) and LOGIN on submission listeners, under TLS only (RFC 4954,
//! RFC 8314). Accounts come from `[[user]]` with argon2id PHC hashes.

use super::Session;
use crate::proto::{Reply, replies};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

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
        let hash = self
            .ctx
            .config
            .user
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password_hash.clone());
        let ok = match hash {
            // argon2 is slow by design: keep it off the reactor threads.
            Some(hash) => tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false),
            None => false,
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
            tracing::info!(client = %self.peer.ip(), user, "authenticated");
            self.auth_user = Some(user);
            replies::AUTH_OK
        } else {
            tracing::warn!(client = %self.peer.ip(), user, "authentication failed");
            replies::AUTH_FAILED
        }
    }
}

/// `wasmtp hash-password`: an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}
